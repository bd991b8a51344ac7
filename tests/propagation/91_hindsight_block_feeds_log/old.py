import flor
import torch
import torch.nn as nn
from data import load_data
from model import Net

hidden = flor.arg("hidden", 500)
lr = flor.arg("lr", 1e-3)
epochs = flor.arg("epochs", 5)

loader, val_loader, test_loader = load_data(batch_size=32)
model = Net(hidden)
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=lr)


def evaluate(model, data):
    correct = total = 0
    with torch.no_grad():
        for x, y in data:
            pred = model(x).argmax(dim=1)
            correct += (pred == y).sum().item()
            total += len(y)
    return correct / total


with flor.checkpointing(model=model, optimizer=optimizer):
    for epoch in flor.loop("epoch", range(epochs)):
        model.train()
        for step, (x, y) in flor.loop("step", enumerate(loader)):
            loss = criterion(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            flor.log("loss", loss.item())
        acc = evaluate(model, val_loader)
        flor.log("val_acc", acc)

flor.log("accuracy", evaluate(model, test_loader))
