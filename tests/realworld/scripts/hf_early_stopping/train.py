"""Shaped like Hugging Face fine-tuning scripts that keep the best model: gradient accumulation, a
warmup schedule, logging and saving every epoch, EarlyStoppingCallback with
load_best_model_at_end and metric_for_best_model, a Trainer subclass that overrides compute_loss
(class weights, as people do for imbalanced data). A 2-layer DistilBERT-style model built from a
config; synthetic token sequences, so nothing downloads.

flor edits: import flor, and FlorCallback among the Trainer's callbacks.
"""

import argparse

import flor  # noqa: F401  (flor.log in hindsight statements)
import numpy as np
import torch
from transformers import (BertConfig, BertForSequenceClassification, EarlyStoppingCallback, Trainer,
                          TrainerCallback, TrainingArguments)

from flor.integrations.transformers import FlorCallback


class Sequences(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(3, 48, (n, 12), generator=generator)
        self.labels = (self.ids[:, 0] % 3 == 0).long()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(12, dtype=torch.long), "labels": self.labels[i]}


class WeightedTrainer(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        weights = torch.tensor([1.0, 2.0])
        loss = torch.nn.functional.cross_entropy(outputs.logits, labels, weight=weights)
        # HINDSIGHT d_loss: flor.log("logits_abs_mean", outputs.logits.abs().mean().item())
        return (loss, outputs) if return_outputs else loss


class EpochProbe(TrainerCallback):
    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        # HINDSIGHT a_eval: flor.log("pooler_norm", model.bert.pooler.dense.weight.norm().item())
        return control


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    predictions = np.argmax(logits, axis=-1)
    # HINDSIGHT c_metrics: flor.log("predicted_positive", int((predictions == 1).sum()))
    return {"accuracy": float((predictions == labels).mean())}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=6)
    cli = parser.parse_args()
    config = BertConfig(vocab_size=48, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=16, num_labels=2)
    torch.manual_seed(1)
    model = BertForSequenceClassification(config)
    args = TrainingArguments(output_dir="checkpoints", num_train_epochs=cli.epochs, per_device_train_batch_size=8,
                             gradient_accumulation_steps=2, learning_rate=3e-3, warmup_steps=4, eval_strategy="epoch",
                             save_strategy="epoch", logging_strategy="epoch", load_best_model_at_end=True,
                             metric_for_best_model="eval_loss", greater_is_better=False, save_total_limit=2,
                             report_to=[], use_cpu=True, disable_tqdm=True, seed=4)
    trainer = WeightedTrainer(model=model, args=args, train_dataset=Sequences(160, 0), eval_dataset=Sequences(48, 1),
                              compute_metrics=compute_metrics,
                              callbacks=[FlorCallback(), EpochProbe(), EarlyStoppingCallback(early_stopping_patience=1)])
    trainer.train()
    # HINDSIGHT a_best: flor.log("best_checkpoint_norm", model.classifier.weight.norm().item())


if __name__ == "__main__":
    main()
