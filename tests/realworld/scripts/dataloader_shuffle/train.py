"""Shaped like the recipe in PyTorch's reproducibility notes (docs/notes/randomness) as copied into
countless training scripts: a map-style Dataset that reads a memory-mapped .npy file and augments
each item with numpy's random generator inside the DataLoader workers, a DataLoader with
shuffle=True, num_workers=2, worker_init_fn=seed_worker and a seeded torch.Generator.

Real-world traits: the shuffle order comes from the loader's own torch.Generator, not from the
global random state, and advances once per epoch; the augmentation runs in worker processes
seeded from it; a validate() helper runs after the step loop.

flor edits: import flor, flor.arg for the settings, flor.loop on both loops, flor.log of the
losses, and flor.checkpointing(model, optimizer).
"""

import argparse
import random

import flor
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset


class SignalDataset(Dataset):
    def __init__(self, root, augment):
        self.signals = np.load(f"{root}/signals.npy", mmap_mode="r")
        self.labels = np.load(f"{root}/labels.npy")
        self.augment = augment

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        signal = np.array(self.signals[index])
        if self.augment:  # random gain and circular time shift
            signal = signal * np.random.uniform(0.8, 1.2)
            signal = np.roll(signal, np.random.randint(0, len(signal)))
        return torch.from_numpy(signal).unsqueeze(0), int(self.labels[index])


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def validate(model, loader):
    model.eval()
    total, correct, loss_sum = 0, 0, 0.0
    with torch.no_grad():
        for signal, target in loader:
            logits = model(signal)
            loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
            correct += (logits.argmax(1) == target).sum().item()
            total += len(target)
    # HINDSIGHT b_helper: flor.log("val_mean_max_prob", logits.softmax(1).max(1).values.mean().item())
    model.train()
    return loss_sum / total, correct / total


parser = argparse.ArgumentParser()
parser.add_argument("--data", default="data")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--lr", type=float, default=1e-2)
parser.add_argument("--num-workers", type=int, default=2)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
epochs = flor.arg("epochs", args.epochs)
batch_size = flor.arg("batch_size", args.batch_size)
lr = flor.arg("lr", args.lr)
seed = flor.arg("seed", args.seed)

torch.manual_seed(seed)
np.random.seed(seed)
random.seed(seed)
g = torch.Generator()
g.manual_seed(seed)

indices = np.random.permutation(480)
train_set = Subset(SignalDataset(args.data, augment=True), indices[:384].tolist())
val_set = Subset(SignalDataset(args.data, augment=False), indices[384:].tolist())
train_loader = DataLoader(
    train_set, batch_size=batch_size, shuffle=True, num_workers=args.num_workers,
    worker_init_fn=seed_worker, generator=g,
)
val_loader = DataLoader(val_set, batch_size=64)  # no augmentation: the main process is enough

model = nn.Sequential(
    nn.Conv1d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
    nn.Conv1d(8, 16, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(4),
    nn.Flatten(), nn.Linear(64, 3),
)
optimizer = torch.optim.Adam(model.parameters(), lr=lr)

with flor.checkpointing(model=model, optimizer=optimizer):
    for epoch in flor.loop("epoch", range(epochs)):
        model.train()
        for step, (signal, target) in flor.loop("step", enumerate(train_loader)):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(signal), target)
            loss.backward()
            optimizer.step()
            # HINDSIGHT d_step: flor.log("batch_label_mean", target.float().mean().item())
            flor.log("loss", loss.item())
        # HINDSIGHT a_epoch: flor.log("conv1_weight_mean", model[0].weight.mean().item())
        val_loss, val_acc = validate(model, val_loader)
        flor.log("val_loss", val_loss)
        flor.log("val_acc", val_acc)
        print(f"epoch {epoch}: val loss {val_loss:.4f} acc {val_acc:.3f}")
