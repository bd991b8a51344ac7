import flor
import torch
import torch.nn as nn
from data import clean_loader, noisy_loader
from model import Net

net = Net(flor.arg("hidden", 256))
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(net.parameters(), lr=flor.arg("lr", 1e-3))


def fit(batches):
    for x, y in batches:
        loss = criterion(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss


with flor.checkpointing(model=net, optimizer=optimizer):
    for epoch in flor.loop("epoch", range(flor.arg("epochs", 8))):
        fit(clean_loader)
        flor.log("clean_weight_norm", sum(p.norm() ** 2 for p in net.parameters()) ** 0.5)
        loss = fit(noisy_loader)
        flor.log("loss", loss.item())
