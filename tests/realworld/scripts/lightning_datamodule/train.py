"""Shaped like Lightning's own examples with the trimmings real projects add: a LightningDataModule,
torchmetrics Accuracy objects logged with self.log, gradient accumulation and clipping,
ReduceLROnPlateau monitoring val_loss, EarlyStopping and a ModelCheckpoint that keeps the best two
by val_loss. Synthetic data, so nothing downloads.

flor edits: import flor, FlorLogger as the Trainer's logger and FlorCallback among its callbacks.
"""

import argparse

import flor  # noqa: F401  (flor.log in hindsight statements)
import lightning.pytorch as L
import torch
import torch.nn.functional as F
import torchmetrics
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from flor.integrations.lightning import FlorCallback, FlorLogger


class BlobsDataModule(L.LightningDataModule):
    def __init__(self, batch_size=16, n_train=384):
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage=None):
        generator = torch.Generator().manual_seed(11)
        centers = torch.randn(3, 8, generator=generator) * 2
        def blobs(n):
            labels = torch.randint(0, 3, (n,), generator=generator)
            return TensorDataset(centers[labels] + torch.randn(n, 8, generator=generator), labels)
        self.train_set, self.val_set = blobs(self.hparams.n_train), blobs(96)

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=48)


class Classifier(L.LightningModule):
    def __init__(self, lr=0.02, dropout=0.3):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(8, 24), nn.ReLU(), nn.Dropout(dropout), nn.Linear(24, 3))
        self.train_acc = torchmetrics.Accuracy(task="multiclass", num_classes=3)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=3)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc(logits, y)
        self.log("train_loss", loss)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        # HINDSIGHT d_step: flor.log("logit_spread", (logits.max() - logits.min()).item())
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.val_acc(logits, y)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", self.val_acc)

    def on_validation_epoch_end(self):
        # HINDSIGHT a_epoch: flor.log("first_layer_norm", self.net[0].weight.norm().item())
        # HINDSIGHT b_lr: flor.log("lr_now", self.optimizers().param_groups[0]["lr"])
        pass

    def on_train_epoch_end(self):
        # HINDSIGHT c_metrics: flor.log("train_acc_seen", float(self.trainer.callback_metrics["train_acc"]))
        pass

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0, factor=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": plateau, "monitor": "val_loss"}}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--max_epochs", type=int, default=6)
    args = parser.parse_args()
    L.seed_everything(5)
    trainer = L.Trainer(max_epochs=args.max_epochs, accumulate_grad_batches=2, gradient_clip_val=1.0,
                        logger=FlorLogger(), accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                        log_every_n_steps=5, default_root_dir="runs",
                        callbacks=[FlorCallback(), EarlyStopping(monitor="val_loss", patience=2),
                                   ModelCheckpoint(monitor="val_loss", save_top_k=2)])
    trainer.fit(Classifier(), datamodule=BlobsDataModule())


if __name__ == "__main__":
    main()
