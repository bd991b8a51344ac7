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


def evaluate(model, data):
    model.eval()
    with torch.no_grad():
        return sum(criterion(model(x), y).item() for x, y in data) / len(data)


with flor.checkpointing(model=net, optimizer=optimizer):
    for epoch in flor.loop("epoch", range(epochs)):
        net.train()
        for step, (x, y) in flor.loop("step", enumerate(loader)):
            loss = criterion(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            flor.log("loss", loss.item())
        flor.log("val_loss", evaluate(net, val_loader))

torch.save(net.state_dict(), "net.pt")
