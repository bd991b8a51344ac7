import flor
import torch
from data import chunked_loader
from model import Net

net = Net(flor.arg("hidden", 500))
optimizer = torch.optim.SGD(net.parameters(), lr=flor.arg("lr", 0.1))
criterion = torch.nn.CrossEntropyLoss()
chunks = chunked_loader(batch_size=8, accumulate=4)

with flor.checkpointing(model=net, optimizer=optimizer):
    for epoch in flor.loop("epoch", range(flor.arg("epochs", 3))):
        for step, batches in flor.loop("step", enumerate(chunks)):
            optimizer.zero_grad()
            for xb, yb in batches:
                loss = criterion(net(xb), yb) / len(batches)
                loss.backward()
                flor.log("micro_size", len(yb))
            optimizer.step()
        flor.log("loss", loss.item())
