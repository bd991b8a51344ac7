"""Shaped like Hugging Face's text-classification examples (run_glue.py and the course's Trainer
chapter): a model built from a config (here a 2-layer BertConfig, so nothing downloads), a
tokenized dataset of input_ids / attention_mask / labels, compute_metrics for accuracy,
TrainingArguments with evaluation every epoch, and Trainer.train(). The data are synthetic token
sequences whose label depends on the tokens.

flor edits: import flor, and FlorCallback among the Trainer's callbacks.
"""

import argparse

import flor  # noqa: F401  (flor.log in hindsight statements)
import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

from flor.integrations.transformers import FlorCallback


class TokenDataset(torch.utils.data.Dataset):
    def __init__(self, n, seed, length=16, vocab=64):
        generator = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(4, vocab, (n, length), generator=generator)
        self.labels = ((self.input_ids[:, :4] > vocab // 2).sum(dim=1) >= 2).long()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        ids = self.input_ids[index]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": self.labels[index]}


class WeightWatcher(TrainerCallback):
    """A user's own callback, as scripts add them for extra logging."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # HINDSIGHT d_step: flor.log("step_classifier_norm", model.classifier.weight.norm().item())
        return control

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        # HINDSIGHT a_epoch: flor.log("epoch_classifier_norm", model.classifier.weight.norm().item())
        return control


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    predictions = np.argmax(logits, axis=-1)
    # HINDSIGHT c_metrics: flor.log("eval_positive_rate", float((predictions == 1).mean()))
    return {"accuracy": float((predictions == labels).mean())}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train_size", type=int, default=256)
    cli = parser.parse_args()

    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=2)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    args = TrainingArguments(output_dir="hf_out", num_train_epochs=cli.epochs, per_device_train_batch_size=16,
                             per_device_eval_batch_size=32, learning_rate=2e-3, eval_strategy="epoch",
                             logging_strategy="steps", logging_steps=4, save_strategy="no", report_to=[],
                             use_cpu=True, disable_tqdm=True, seed=3)
    trainer = Trainer(model=model, args=args, train_dataset=TokenDataset(cli.train_size, 0),
                      eval_dataset=TokenDataset(64, 1), compute_metrics=compute_metrics, callbacks=[WeightWatcher(), FlorCallback()])
    trainer.train()
    # HINDSIGHT a_after: flor.log("classifier_norm", model.classifier.weight.norm().item())


if __name__ == "__main__":
    main()
