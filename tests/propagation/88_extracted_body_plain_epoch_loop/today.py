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


def one_epoch(model, optimizer):
    for i, (x, y) in flor.loop("batch", enumerate(loader)):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        flor.log("loss", loss.item())


for epoch in range(args.epochs):
    one_epoch(mlp, opt)
    flor.log("bias_mean", mlp.out.bias.mean().item())
