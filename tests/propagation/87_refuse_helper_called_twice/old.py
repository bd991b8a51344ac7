import flor
import torch
import torch.nn as nn
from data import clean_loader, noisy_loader
from model import Net

net = Net(flor.arg("hidden", 256))
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(net.parameters(), lr=flor.arg("lr", 1e-3))

with flor.checkpointing(model=net, optimizer=optimizer):
    for epoch in flor.loop("epoch", range(flor.arg("epochs", 8))):
        for x, y in clean_loader:
            loss = criterion(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        for x, y in noisy_loader:
            loss = criterion(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        flor.log("loss", loss.item())
