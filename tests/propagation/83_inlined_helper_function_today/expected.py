import flor
import torch
import torch.nn.functional as F
from data import make_loaders
from model import ConvNet

loader, val_loader = make_loaders(flor.arg("batch_size", 64))
model = ConvNet(flor.arg("channels", 32))
opt = torch.optim.SGD(model.parameters(), lr=flor.arg("lr", 0.05), momentum=0.9)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5)


def run_epoch(m, batches, o):
    m.train()
    for batch_idx, (data, target) in flor.loop("step", enumerate(batches)):
        o.zero_grad()
        loss = F.nll_loss(m(data), target)
        loss.backward()
        o.step()
        flor.log("loss", loss.item())


with flor.checkpointing(model=model, opt=opt, sched=sched):
    for epoch in flor.loop("epoch", range(flor.arg("epochs", 10))):
        run_epoch(model, loader, opt)
        flor.log("lr", sched.get_last_lr()[0])
        flor.log("param_norm", torch.norm(torch.cat([p.flatten() for p in model.parameters()])).item())
        sched.step()
