import argparse

import flor
import torch
from data import get_loader
from model import MLP

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=3)
args = parser.parse_args()

loader = get_loader()
mlp = MLP()
opt = torch.optim.Adam(mlp.parameters())

for epoch in range(args.epochs):
    for i, (x, y) in flor.loop("batch", enumerate(loader)):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(mlp(x), y)
        loss.backward()
        opt.step()
        flor.log("loss", loss.item())
