"""Shaped like karpathy/nanoGPT train.py (single process, no DDP): configuration as module-level
globals overridden by configurator.py (--key=value), data read through np.memmap of .bin files,
a `while True` loop with an eval branch that saves out/ckpt.pt with torch.save, gradient
accumulation with a GradScaler, then gradient clipping and the optimizer step after the
micro-step loop, and zero_grad(set_to_none=True).

Real-world traits: the optimizer step and the clipping read p.grad, which only the micro-step loop
produces; the eval branch writes the user's checkpoint through torch.save (C++ file I/O); the
token embedding is tied to the output head; the loop has no length (itertools.count + break).

flor edits: import flor, the config values declared with flor.arg, `while True` rewritten as
flor.loop over itertools.count with the same break, flor.loop on the micro steps, flor.log of the
losses, and the loop wrapped in flor.checkpointing.
"""

import itertools
import math
import os
import pickle
import time
from contextlib import nullcontext

import flor
import numpy as np
import torch

from model import GPT, GPTConfig

# -----------------------------------------------------------------------------
# default config values: a tiny character-level model
out_dir = "out"
eval_interval = 4
log_interval = 1
eval_iters = 4
eval_only = False
always_save_checkpoint = False
dataset = "shakespeare_char"
gradient_accumulation_steps = 2
batch_size = 8
block_size = 16
n_layer = 2
n_head = 2
n_embd = 32
dropout = 0.1
bias = False
learning_rate = 1e-2
max_iters = 16
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.99
grad_clip = 1.0
decay_lr = True
warmup_iters = 4
lr_decay_iters = 16
min_lr = 1e-3
device = "cpu"
dtype = "float32"
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))]
exec(open("configurator.py").read())  # overrides from the command line
config = {k: flor.arg(k, globals()[k]) for k in config_keys}  # flor: record every config value
globals().update(config)
# -----------------------------------------------------------------------------

os.makedirs(out_dir, exist_ok=True)
torch.manual_seed(1337)
device_type = "cuda" if "cuda" in device else "cpu"
ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
ctx = nullcontext() if device_type == "cpu" else torch.amp.autocast(device_type=device_type, dtype=ptdtype)

data_dir = os.path.join("data", dataset)


def get_batch(split):
    # recreate the np.memmap every batch, as nanoGPT does to avoid a memory leak
    data = np.memmap(os.path.join(data_dir, f"{split}.bin"), dtype=np.uint16, mode="r")
    ix = torch.randint(len(data) - block_size, (batch_size,))
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64)) for i in ix])
    return x.to(device), y.to(device)


iter_num = 0
best_val_loss = 1e9

with open(os.path.join(data_dir, "meta.pkl"), "rb") as f:
    meta_vocab_size = pickle.load(f)["vocab_size"]

model_args = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                  bias=bias, vocab_size=meta_vocab_size, dropout=dropout)
model = GPT(GPTConfig(**model_args))
model.to(device)
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16"))
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
raw_model = model


@torch.no_grad()
def estimate_loss():
    out = {}
    model.eval()
    for split in ["train", "val"]:
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            X, Y = get_batch(split)
            with ctx:
                logits, loss = model(X, Y)
            losses[k] = loss.item()
        out[split] = losses.mean()
    # HINDSIGHT b_helper: flor.log("generalization_gap", (out["val"] - out["train"]).item())
    model.train()
    return out


def get_lr(it):
    # linear warmup, then cosine decay down to min_lr
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


X, Y = get_batch("train")  # fetch the very first batch
t0 = time.time()
local_iter_num = 0
with flor.checkpointing(model=model, optimizer=optimizer):
    for iter_num in flor.loop("iter", itertools.count(iter_num)):  # was: while True
        lr = get_lr(iter_num) if decay_lr else learning_rate
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr

        if iter_num % eval_interval == 0:
            losses = estimate_loss()
            print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            flor.log("val_loss", losses["val"].item())
            # HINDSIGHT c_eval: flor.log("wte_norm_at_eval", raw_model.transformer.wte.weight.norm().item())
            if losses["val"] < best_val_loss or always_save_checkpoint:
                best_val_loss = losses["val"]
                if iter_num > 0:
                    checkpoint = {
                        "model": raw_model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "model_args": model_args,
                        "iter_num": iter_num,
                        "best_val_loss": best_val_loss,
                        "config": config,
                    }
                    print(f"saving checkpoint to {out_dir}")
                    torch.save(checkpoint, os.path.join(out_dir, "ckpt.pt"))
        if iter_num == 0 and eval_only:
            break

        for micro_step in flor.loop("micro", range(gradient_accumulation_steps)):
            with ctx:
                logits, loss = model(X, Y)
                loss = loss / gradient_accumulation_steps  # scale the loss to account for accumulation
            X, Y = get_batch("train")  # prefetch the next batch
            scaler.scale(loss).backward()
            # HINDSIGHT d_step: flor.log("micro_loss", loss.item())
        if grad_clip != 0.0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            # HINDSIGHT a_gradnorm: flor.log("grad_norm", torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None]).item())
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        # HINDSIGHT a_epoch: flor.log("param_norm", torch.sqrt(sum(p.detach().norm() ** 2 for p in model.parameters())).item())

        t1 = time.time()
        dt = t1 - t0
        t0 = t1
        if iter_num % log_interval == 0:
            lossf = loss.item() * gradient_accumulation_steps
            print(f"iter {iter_num}: loss {lossf:.4f}, time {dt * 1000:.2f}ms")
            flor.log("loss", lossf)
        local_iter_num += 1

        if iter_num + 1 > max_iters:  # was: iter_num += 1; if iter_num > max_iters: break
            break
