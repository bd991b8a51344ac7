import flor
import torch
import torch.nn as nn
from data import load_data
from model import Net

loader, val_loader = load_data(batch_size=32)
net = Net(flor.arg("hidden", 500))
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(net.parameters(), lr=flor.arg("lr", 1e-3))


def train_epoch():
    for step, (x, y) in flor.loop("step", enumerate(loader)):
        loss = criterion(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        flor.log("loss", loss.item())


with flor.checkpointing(model=net, optimizer=optimizer):
    for epoch in flor.loop("epoch", range(flor.arg("epochs", 5))):
        train_epoch()
        flor.log("weight_norm", sum(p.norm() ** 2 for p in net.parameters()) ** 0.5)
        net.update_running_stats(val_loader)
