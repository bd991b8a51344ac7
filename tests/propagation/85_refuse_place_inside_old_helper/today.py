import flor
import torch
import torch.nn as nn
from data import load_data
from model import Net, evaluate

loader, val_loader = load_data(batch_size=32)
net = Net(flor.arg("hidden", 500))
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(net.parameters(), lr=flor.arg("lr", 0.1))
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=flor.arg("epochs", 20))

with flor.checkpointing(model=net, opt=optimizer, sched=scheduler):
    for epoch in flor.loop("epoch", range(flor.arg("epochs", 20))):
        net.train()
        for step, (x, y) in flor.loop("step", enumerate(loader)):
            loss = criterion(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            flor.log("loss", loss.item())
        flor.log("lr", scheduler.get_last_lr()[0])
        scheduler.step()
        flor.log("val_acc", evaluate(net, val_loader))
