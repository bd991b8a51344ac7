import flor
import torch
from data import load_data
from model import Net

loader = load_data(batch_size=64)
net = Net(flor.arg("hidden", 500))
optimizer = torch.optim.Adam(net.parameters())
criterion = torch.nn.CrossEntropyLoss()
global_step = 0

with flor.checkpointing(model=net, optimizer=optimizer):
    for epoch in flor.loop("epoch", range(flor.arg("epochs", 5))):
        batches = iter(loader)
        while True:
            batch = next(batches, None)
            if batch is None:
                break
            x, y = batch
            loss = criterion(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            global_step += 1
        flor.log("loss", loss.item())
