"""Shaped like the Lightning docs' image classifier (LitClassifier, the most copied Lightning
script): a LightningModule with save_hyperparameters(), training_step / validation_step that
self.log, configure_optimizers returning an optimizer and a StepLR scheduler, the docs' pattern of
keeping step outputs in a list for on_train_epoch_end, and a Trainer built in main() with
argparse. Synthetic data, so nothing downloads.

flor edits: import flor, FlorLogger as the Trainer's logger and FlorCallback among its callbacks.
"""

import argparse

import flor  # noqa: F401  (flor.log in hindsight statements)
import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from flor.integrations.lightning import FlorCallback, FlorLogger


class LitClassifier(L.LightningModule):
    def __init__(self, hidden_dim=32, learning_rate=0.05, gamma=0.8):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(20, hidden_dim), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden_dim, 4))
        self.training_step_outputs = []

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        self.training_step_outputs.append(loss.detach())
        # HINDSIGHT d_step: flor.log("batch_input_mean", x.mean().item())
        return loss

    def on_train_epoch_end(self):
        epoch_mean = torch.stack(self.training_step_outputs).mean()
        self.log("train_loss_mean", epoch_mean)
        # HINDSIGHT a_epoch: flor.log("weight_norm", sum(p.norm() ** 2 for p in self.parameters()).item() ** 0.5)
        # HINDSIGHT b_epoch_mean: flor.log("epoch_mean_again", epoch_mean.item())
        self.training_step_outputs.clear()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean())
        # HINDSIGHT c_val: flor.log("val_confidence", logits.softmax(dim=1).max(dim=1).values.mean().item())

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.learning_rate, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=self.hparams.gamma)
        return [optimizer], [scheduler]


def make_data(n, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=generator)
    y = (x[:, :4].argmax(dim=1) + (x[:, 4] > 1).long()) % 4
    return TensorDataset(x, y)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--train_size", type=int, default=512)
    args = parser.parse_args()

    L.seed_everything(7)
    train = DataLoader(make_data(args.train_size, 0), batch_size=args.batch_size, shuffle=True)
    val = DataLoader(make_data(128, 1), batch_size=64)
    model = LitClassifier()
    trainer = L.Trainer(max_epochs=args.epochs, logger=FlorLogger(), callbacks=[FlorCallback()], accelerator="cpu",
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=4,
                        default_root_dir="lightning_out")
    trainer.fit(model, train, val)


if __name__ == "__main__":
    main()
