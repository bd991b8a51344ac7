import flor
import torch
import torch.nn as nn
from data import load_data
from model import Net, evaluate

loader, val_loader = load_data(batch_size=32)
model = Net(flor.arg("hidden", 500))
criterion = nn.CrossEntropyLoss()
opt = torch.optim.SGD(model.parameters(), lr=flor.arg("lr", 0.1))
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=flor.arg("epochs", 20))


def train_epoch(m, o, s):
    m.train()
    for step, (x, y) in flor.loop("step", enumerate(loader)):
        loss = criterion(m(x), y)
        o.zero_grad()
        loss.backward()
        o.step()
        flor.log("loss", loss.item())
    s.step()


with flor.checkpointing(model=model, opt=opt, sched=sched):
    for epoch in flor.loop("epoch", range(flor.arg("epochs", 20))):
        train_epoch(model, opt, sched)
        flor.log("val_acc", evaluate(model, val_loader))
