import flor
import torch
import torch.nn as nn
from data import load_data
from model import Net

hidden = flor.arg("hidden", 500)
lr = flor.arg("lr", 1e-3)
epochs = flor.arg("epochs", 5)

loader, val_loader, test_loader = load_data(batch_size=32)
net = Net(hidden)
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(net.parameters(), lr=lr)


def train_epoch(net, loader, optimizer):
    net.train()
    for step, (x, y) in flor.loop("step", enumerate(loader)):
        loss = criterion(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        flor.log("loss", loss.item())


with flor.checkpointing(model=net, optimizer=optimizer):
    for epoch in flor.loop("epoch", range(epochs)):
        train_epoch(net, loader, optimizer)
        flor.log("weight_norm", sum(p.norm() ** 2 for p in net.parameters()) ** 0.5)
        net.eval()
        with torch.no_grad():
            for i, (vx, vy) in flor.loop("val", enumerate(val_loader)):
                flor.log("val_loss", criterion(net(vx), vy).item())

torch.save(net.state_dict(), "net.pt")
