"""Shaped like the DDP path of karpathy/nanoGPT's train.py and PyTorch's DDP tutorial
(pytorch/examples distributed/ddp-tutorial-series/multigpu_torchrun.py), launched with
``torchrun --nproc-per-node 2 train.py ...`` (gloo on CPU here).

Real-world traits: ``ddp = int(os.environ.get("RANK", -1)) != -1`` and ``init_process_group`` at
module level, ``master_process = ddp_rank == 0`` and a per-rank ``seed_offset`` (nanoGPT), a
``DistributedSampler`` with ``set_epoch(epoch)`` at the top of each epoch, the model wrapped in
``DistributedDataParallel`` and reached through ``raw_model = model.module``, a train loss
``all_reduce``d at the end of each epoch, a rank-0-only eval branch (``if master_process:``) that
``torch.save``s ``out/ckpt.pt``, ``destroy_process_group`` at the end. A small MLP on a synthetic
regression set made in the script (seeded, the same on every rank).

flor edits: import flor, the argparse settings declared with flor.arg, flor.loop on both loops,
flor.log of the step loss, the reduced epoch loss and the eval loss, and the epoch loop wrapped in
flor.checkpointing.
"""

import argparse
import os

import flor
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset


def synthetic(train: int, val: int, seed: int) -> tuple[TensorDataset, TensorDataset]:
    """A regression task, y = sin(x @ w) + noise, split in two: the same bytes on every rank."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(16, 1, generator=g)
    x = torch.randn(train + val, 16, generator=g)
    y = torch.sin(x @ w) + 0.05 * torch.randn(train + val, 1, generator=g)
    return TensorDataset(x[:train], y[:train]), TensorDataset(x[train:], y[train:])


class MLP(nn.Module):
    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(16, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        x = self.dropout(F.gelu(self.fc1(x)))
        x = F.gelu(self.fc2(x))
        return self.head(x)


@torch.no_grad()
def evaluate(model, loader):
    model.eval()
    total, count = 0.0, 0
    for x, y in loader:
        total += F.mse_loss(model(x), y, reduction="sum").item()
        count += len(y)
    model.train()
    return total / count


parser = argparse.ArgumentParser(description="DDP regression (torchrun)")
parser.add_argument("--epochs", type=int, default=4)
parser.add_argument("--batch-size", type=int, default=16)
parser.add_argument("--lr", type=float, default=3e-3)
parser.add_argument("--hidden", type=int, default=64)
parser.add_argument("--dropout", type=float, default=0.1)
parser.add_argument("--seed", type=int, default=1337)
parser.add_argument("--out-dir", default="out")
args = parser.parse_args()
for key, value in vars(args).items():  # flor: every command-line setting is a recorded arg
    setattr(args, key, flor.arg(key, value))

ddp = int(os.environ.get("RANK", -1)) != -1  # is this a ddp run?
if ddp:
    dist.init_process_group(backend="gloo")
    ddp_rank = int(os.environ["RANK"])
    ddp_local_rank = int(os.environ["LOCAL_RANK"])
    ddp_world_size = int(os.environ["WORLD_SIZE"])
    master_process = ddp_rank == 0  # this process will do logging, checkpointing etc.
    seed_offset = ddp_rank  # each process gets a different seed
else:
    ddp_rank, ddp_world_size, master_process, seed_offset = 0, 1, True, 0
torch.manual_seed(args.seed + seed_offset)
if master_process:
    os.makedirs(args.out_dir, exist_ok=True)

train_set, val_set = synthetic(256, 64, 0)
sampler = DistributedSampler(train_set, num_replicas=ddp_world_size, rank=ddp_rank, shuffle=True, seed=args.seed)
train_loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler)
val_loader = DataLoader(val_set, batch_size=64)

model = MLP(args.hidden, args.dropout)
if ddp:
    model = DDP(model)
raw_model = model.module if ddp else model  # unwrap DDP container if needed
optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
best_val_loss = 1e9

with flor.checkpointing(model=model, optimizer=optimizer):
    for epoch in flor.loop("epoch", range(args.epochs)):
        sampler.set_epoch(epoch)  # a new shuffle per epoch, the same on every rank
        train_loss = torch.zeros(2)
        for step, (x, y) in flor.loop("step", enumerate(train_loader)):
            optimizer.zero_grad(set_to_none=True)
            loss = F.mse_loss(model(x), y)
            loss.backward()  # DDP all_reduces the gradients here
            optimizer.step()
            # HINDSIGHT d_step: flor.log("head_grad_norm", raw_model.head.weight.grad.norm().item())
            train_loss += torch.tensor([loss.item() * len(y), len(y)])
            flor.log("loss", loss.item())
        if ddp:
            dist.all_reduce(train_loss, op=dist.ReduceOp.SUM)
        flor.log("train_loss", (train_loss[0] / train_loss[1]).item())
        # HINDSIGHT a_epoch: flor.log("fc1_weight_norm", raw_model.fc1.weight.norm().item())
        if master_process:
            val_loss = evaluate(raw_model, val_loader)
            flor.log("val_loss", val_loss)
            # HINDSIGHT c_eval: flor.log("head_bias_at_eval", raw_model.head.bias.item())
            if val_loss < best_val_loss:
                best_val_loss = val_loss
                checkpoint = {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                              "epoch": epoch, "best_val_loss": best_val_loss, "config": vars(args)}
                print(f"saving checkpoint to {args.out_dir}")
                torch.save(checkpoint, os.path.join(args.out_dir, "ckpt.pt"))

if ddp:
    dist.destroy_process_group()
