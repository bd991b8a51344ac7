import flor
import torch
import torch.nn.functional as F
from data import make_loaders
from model import ConvNet

loader, val_loader = make_loaders(flor.arg("batch_size", 64))
device = "cuda" if torch.cuda.is_available() else "cpu"
net = ConvNet(flor.arg("channels", 32)).to(device)
optimizer = torch.optim.SGD(net.parameters(), lr=flor.arg("lr", 0.05), momentum=0.9)


def train_one_epoch(m, batches, o):
    m.train()
    for batch_idx, (data, target) in flor.loop("step", enumerate(batches)):
        data, target = data.to(device), target.to(device)
        o.zero_grad()
        loss = F.nll_loss(m(data), target)
        loss.backward()
        o.step()
        flor.log("loss", loss.item())


with flor.checkpointing(model=net, opt=optimizer):
    for epoch in flor.loop("epoch", range(flor.arg("epochs", 10))):
        train_one_epoch(net, loader, optimizer)
        flor.log("lr", optimizer.param_groups[0]["lr"])
        flor.log("param_norm", torch.norm(torch.cat([p.flatten() for p in net.parameters()])).item())
