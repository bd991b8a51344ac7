import flor
import torch
from nets import Discriminator, Generator
from data import real_batches


def grad_norm(module):
    return sum(p.grad.norm() ** 2 for p in module.parameters() if p.grad is not None) ** 0.5


netD, netG = Discriminator(), Generator()
opt_d = torch.optim.Adam(netD.parameters(), lr=2e-4)
opt_g = torch.optim.Adam(netG.parameters(), lr=2e-4)
bce = torch.nn.BCEWithLogitsLoss()

with flor.checkpointing(D=netD, G=netG, opt_d=opt_d, opt_g=opt_g):
    for epoch in flor.loop("epoch", range(flor.arg("epochs", 20))):
        for step, real in flor.loop("step", enumerate(real_batches())):
            fake = netG(torch.randn(real.shape[0], 64))
            d_loss = bce(netD(real), torch.ones(len(real), 1)) + bce(netD(fake.detach()), torch.zeros(len(real), 1))
            opt_d.zero_grad()
            d_loss.backward()
            flor.log("d_grad_norm", grad_norm(netD))
            opt_d.step()
            g_loss = bce(netD(fake), torch.ones(len(real), 1))
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
            flor.log("d_loss", d_loss.item())
            flor.log("g_loss", g_loss.item())
