"""Shaped like config-driven training repos (Hydra / OmegaConf / mmcv-style): every setting lives
in a committed config file (JSON here: the same nested shape as the usual YAML), the command line
names the file and overrides dotted keys (--set optim.lr=0.01), the model is built from the
config, ReduceLROnPlateau is stepped on the validation loss in the eval branch, and metrics are
appended to <output_dir>/<experiment>/metrics.jsonl.

Real-world traits: hyper-parameters come from a file in the repository, not from argv; the
scheduler's state (best loss, bad epochs) only changes in the eval branch; the user's metrics file
is written with Python's open() in append mode.

flor edits: import flor, every flattened config value declared with flor.arg, flor.loop on both
loops, flor.log of the losses, flor.checkpointing(model, optimizer, scheduler).
"""

import argparse
import json
import os

import flor
import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset, random_split


def load_config(path, overrides):
    with open(path) as f:
        cfg = json.load(f)
    for item in overrides:  # key.sub=value, the value parsed as JSON when it can be
        key, _, raw = item.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return cfg


def flatten(cfg, prefix=""):
    flat = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}_"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def build_model(cfg):
    layers, width = [], 8
    for hidden in cfg["hidden"]:
        layers += [nn.Linear(width, hidden), nn.SiLU(), nn.Dropout(cfg["dropout"])]
        width = hidden
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def evaluate(model, loader, loss_fn):
    model.eval()
    total, count, abs_error = 0.0, 0, 0.0
    with torch.no_grad():
        for x, y in loader:
            prediction = model(x)
            total += loss_fn(prediction, y).item() * len(x)
            abs_error += (prediction - y).abs().sum().item()
            count += len(x)
    # HINDSIGHT b_helper: flor.log("val_mae", abs_error / count)
    model.train()
    return total / count


parser = argparse.ArgumentParser()
parser.add_argument("--config", default="configs/default.json")
parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
cli = parser.parse_args()
cfg = load_config(cli.config, cli.set)
for key, value in flatten(cfg).items():  # flor: every config value is a recorded arg
    flor.arg(key, value)

torch.manual_seed(cfg["seed"])
arrays = np.load(cfg["data"]["path"])
dataset = TensorDataset(torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"]))
n_val = int(len(dataset) * cfg["data"]["val_fraction"])
train_set, val_set = random_split(dataset, [len(dataset) - n_val, n_val], generator=torch.Generator().manual_seed(cfg["seed"]))
train_loader = DataLoader(train_set, batch_size=cfg["train"]["batch_size"], shuffle=True)
val_loader = DataLoader(val_set, batch_size=128)

model = build_model(cfg["model"])
optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["optim"]["lr"], weight_decay=cfg["optim"]["weight_decay"])
scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
    optimizer, mode="min", factor=cfg["scheduler"]["factor"], patience=cfg["scheduler"]["patience"]
)
loss_fn = nn.MSELoss()
run_dir = os.path.join(cfg["output_dir"], cfg["experiment"])
os.makedirs(run_dir, exist_ok=True)

with flor.checkpointing(model=model, optimizer=optimizer, scheduler=scheduler):
    for epoch in flor.loop("epoch", range(cfg["train"]["epochs"])):
        for step, (x, y) in flor.loop("step", enumerate(train_loader)):
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            total_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["optim"]["clip"])
            optimizer.step()
            # HINDSIGHT d_step: flor.log("grad_norm", total_norm.item())
            flor.log("loss", loss.item())
        # HINDSIGHT a_epoch: flor.log("first_layer_norm", model[0].weight.norm().item())
        if (epoch + 1) % cfg["train"]["eval_every"] == 0:
            val_loss = evaluate(model, val_loader, loss_fn)
            scheduler.step(val_loss)
            # HINDSIGHT c_eval: flor.log("plateau_bad_epochs", scheduler.num_bad_epochs)
            flor.log("val_loss", val_loss)
            with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
                f.write(json.dumps({"epoch": epoch, "val_loss": val_loss, "lr": optimizer.param_groups[0]["lr"]}) + "\n")
            print(f"epoch {epoch}: val loss {val_loss:.4f}")
