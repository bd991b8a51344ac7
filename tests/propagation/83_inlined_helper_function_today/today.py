import flor
import torch
import torch.nn.functional as F
from data import make_loaders
from model import ConvNet

loader, val_loader = make_loaders(flor.arg("batch_size", 64))
net = ConvNet(flor.arg("channels", 32))
optimizer = torch.optim.SGD(net.parameters(), lr=flor.arg("lr", 0.05), momentum=0.9)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5)

with flor.checkpointing(model=net, opt=optimizer, sched=scheduler):
    for epoch in flor.loop("epoch", range(flor.arg("epochs", 10))):
        net.train()
        for batch_idx, (data, target) in flor.loop("step", enumerate(loader)):
            optimizer.zero_grad()
            loss = F.nll_loss(net(data), target)
            loss.backward()
            optimizer.step()
            flor.log("loss", loss.item())
        flor.log("lr", scheduler.get_last_lr()[0])
        flor.log("param_norm", torch.norm(torch.cat([p.flatten() for p in net.parameters()])).item())
        net.eval()
        with torch.no_grad():
            for vx, vy in flor.loop("val", val_loader):
                correct = (net(vx).argmax(dim=1) == vy).sum().item()
        scheduler.step()
