import flor
import torch
from data import load_data
from model import Net

loader, val_loader = load_data(batch_size=32)
criterion = torch.nn.CrossEntropyLoss()


class Trainer:
    def __init__(self, net, optimizer):
        self.model = net
        self.opt = optimizer

    def step(self, x, y):
        loss = criterion(self.model(x), y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()


net = Net(flor.arg("hidden", 500))
trainer = Trainer(net, torch.optim.Adam(net.parameters(), lr=flor.arg("lr", 1e-3)))
with flor.checkpointing(model=net, optimizer=trainer.opt):
    for epoch in flor.loop("epoch", range(flor.arg("epochs", 5))):
        for step, (x, y) in flor.loop("step", enumerate(loader)):
            flor.log("loss", trainer.step(x, y))
