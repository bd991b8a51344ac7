"""Shaped like the Hugging Face `*_no_trainer.py` examples (e.g. run_glue_no_trainer.py), the most
copied plain-PyTorch fine-tuning loop: a per-step LR schedule (here OneCycleLR, warmup then
annealing, which also cycles the momentum), gradient accumulation inside the step loop with the
optimizer and scheduler stepped every `accum` batches, a `completed_steps` counter and a
`total_loss` tensor accumulated in the step loop and read after it, evaluation every
`eval_every` epochs.

Real-world traits: the scheduler changes the optimizer's lr and momentum at every step, so its
state and the optimizer's must match after a skipped epoch; values assigned in the step loop
(total_loss, completed_steps) are read in the epoch body. The careful user registered the
scheduler with flor too, as HF's accelerator.save_state would save it.

flor edits: import flor, flor.arg for the settings, flor.loop on both loops, flor.log of the
loss and the eval metrics, and flor.checkpointing(model, optimizer, scheduler).
"""

import argparse
import math

import flor
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


def make_dataset(n, dim, classes, seed):
    """Gaussian clusters around fixed random class centres; the samples depend on the seed."""
    centres = np.random.RandomState(2024).normal(0, 0.6, size=(classes, dim))
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, classes, size=n)
    features = centres[labels] + rng.normal(0, 1.0, size=(n, dim))
    return TensorDataset(torch.tensor(features, dtype=torch.float32), torch.tensor(labels))


class Classifier(nn.Module):
    """A small MLP classifier that returns its loss the way HF models do (outputs["loss"])."""

    def __init__(self, dim, hidden, classes, dropout):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, classes),
        )

    def forward(self, inputs, labels=None):
        logits = self.net(inputs)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


parser = argparse.ArgumentParser(description="one-cycle training of a classifier")
parser.add_argument("--learning_rate", type=float, default=0.1)
parser.add_argument("--per_device_train_batch_size", type=int, default=32)
parser.add_argument("--gradient_accumulation_steps", type=int, default=2)
parser.add_argument("--num_train_epochs", type=int, default=4)
parser.add_argument("--eval_every", type=int, default=2)
parser.add_argument("--hidden", type=int, default=64)
parser.add_argument("--seed", type=int, default=42)
args = parser.parse_args()
learning_rate = flor.arg("learning_rate", args.learning_rate)
batch_size = flor.arg("batch_size", args.per_device_train_batch_size)
accum = flor.arg("gradient_accumulation_steps", args.gradient_accumulation_steps)
num_epochs = flor.arg("num_train_epochs", args.num_train_epochs)
eval_every = flor.arg("eval_every", args.eval_every)
hidden = flor.arg("hidden", args.hidden)

torch.manual_seed(args.seed)
train_dataset = make_dataset(768, 16, 4, seed=0)
eval_dataset = make_dataset(256, 16, 4, seed=1)
train_dataloader = DataLoader(train_dataset, shuffle=True, batch_size=batch_size)
eval_dataloader = DataLoader(eval_dataset, batch_size=64)

model = Classifier(16, hidden, 4, dropout=0.1)
no_decay = ["bias", "LayerNorm.weight", "net.1.weight"]
optimizer_grouped_parameters = [
    {"params": [p for n, p in model.named_parameters() if not any(nd in n for nd in no_decay)], "weight_decay": 1e-4},
    {"params": [p for n, p in model.named_parameters() if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
]
optimizer = torch.optim.SGD(optimizer_grouped_parameters, lr=learning_rate, momentum=0.9, nesterov=True)
num_update_steps_per_epoch = math.ceil(len(train_dataloader) / accum)
max_train_steps = num_epochs * num_update_steps_per_epoch
scheduler = torch.optim.lr_scheduler.OneCycleLR(
    optimizer, max_lr=learning_rate, total_steps=max_train_steps, pct_start=0.3, anneal_strategy="cos"
)

completed_steps = 0
with flor.checkpointing(model=model, optimizer=optimizer, scheduler=scheduler):
    for epoch in flor.loop("epoch", range(num_epochs)):
        model.train()
        total_loss = 0
        for step, (inputs, labels) in flor.loop("step", enumerate(train_dataloader)):
            outputs = model(inputs, labels)
            loss = outputs["loss"]
            total_loss += loss.detach().float()
            loss = loss / accum
            loss.backward()
            if (step + 1) % accum == 0 or step == len(train_dataloader) - 1:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                completed_steps += 1
            # HINDSIGHT d_step: flor.log("lr", scheduler.get_last_lr()[0])
            flor.log("loss", loss.item())
        # HINDSIGHT a_epoch: flor.log("momentum", optimizer.param_groups[0]["momentum"])
        # HINDSIGHT a_train_loss: flor.log("train_loss", total_loss.item() / len(train_dataloader))

        if epoch % eval_every == 0 or epoch == num_epochs - 1:
            model.eval()
            correct = 0
            for inputs, labels in eval_dataloader:
                with torch.no_grad():
                    predictions = model(inputs)["logits"].argmax(dim=-1)
                correct += (predictions == labels).sum().item()
            # HINDSIGHT c_eval: flor.log("lr_at_eval", scheduler.get_last_lr()[0])
            flor.log("eval_accuracy", correct / len(eval_dataset))
            print(f"epoch {epoch}: accuracy {correct / len(eval_dataset):.4f}, steps {completed_steps}")
