import flor
import torch
import torch.nn.functional as F
from data import make_loaders
from model import ConvNet

loader, val_loader = make_loaders(flor.arg("batch_size", 64))
model = ConvNet(flor.arg("channels", 32))
opt = torch.optim.SGD(model.parameters(), lr=flor.arg("lr", 0.05), momentum=0.9)

with flor.checkpointing(model=model, opt=opt):
    for epoch in flor.loop("epoch", range(flor.arg("epochs", 10))):
        model.train()
        for batch_idx, (data, target) in flor.loop("step", enumerate(loader)):
            opt.zero_grad()
            loss = F.nll_loss(model(data), target)
            loss.backward()
            opt.step()
            flor.log("loss", loss.item())
