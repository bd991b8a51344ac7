"""Shaped like Hugging Face Accelerate's `examples/nlp_example.py`, the script Accelerate's README
points to: `training_function(config, args)` with an `Accelerator`, a BERT sequence classifier,
AdamW and a linear warmup schedule stepped every batch, and *everything* passed through
`accelerator.prepare` (model, optimizer, both data loaders, scheduler); the step loop is
`outputs = model(**batch)`, `accelerator.backward(loss)`, `optimizer.step()`,
`lr_scheduler.step()`, `optimizer.zero_grad()`; evaluation every epoch with
`accelerator.gather_for_metrics` into a metric object.

Real-world traits: Accelerate's prepared loaders (`DataLoaderShard`) have a `state_dict()` that
raises unless the loader is stateful, and iterating them changes them; the model returns a
`ModelOutput` (not plain data), assigned to `outputs` in the step loop and again in the
evaluation loop; batches are `BatchEncoding`s moved with `batch.to(device)`; the scheduler is
Accelerate's `AcceleratedScheduler` wrapper.

Differences from the original, to run offline in seconds: the model is a 2-layer BERT with hidden
size 32 built from a `BertConfig` (no pretrained weights), the data are synthetic token
sequences of varying length whose label says whether a marker token occurs (MRPC and the
tokenizer would be downloaded), padded by a collate function as `tokenizer.pad` would, and the
GLUE metric (the `evaluate` package) is a small accuracy class with the same `add_batch` /
`compute` calls.

flor edits: import flor, flor.arg for the config, flor.loop on both loops, flor.log of the loss
and the eval accuracy, flor.checkpointing(model, optimizer, lr_scheduler).
"""

import argparse

import flor
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.optim import AdamW
from torch.utils.data import DataLoader, Dataset
from transformers import BatchEncoding, BertConfig, BertForSequenceClassification, get_linear_schedule_with_warmup

MAX_GPU_BATCH_SIZE = 16
EVAL_BATCH_SIZE = 16
VOCAB, MARKER, PAD = 64, 7, 0


class SyntheticPairs(Dataset):
    """Token sequences of 6 to 12 tokens; the label is whether the marker token occurs."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.examples = []
        for _ in range(n):
            length = int(torch.randint(6, 13, (1,), generator=g))
            ids = torch.randint(8, VOCAB, (length,), generator=g)
            label = int(torch.rand(1, generator=g) < 0.5)
            if label:
                ids[int(torch.randint(1, length, (1,), generator=g))] = MARKER
            self.examples.append((ids.tolist(), label))

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, index):
        ids, label = self.examples[index]
        return {"input_ids": ids, "labels": label}


def collate_fn(examples):
    """Pad to the longest sequence of the batch, as tokenizer.pad(..., return_tensors="pt") does."""
    longest = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), longest), PAD, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for row, example in enumerate(examples):
        input_ids[row, :len(example["input_ids"])] = torch.tensor(example["input_ids"])
        attention_mask[row, :len(example["input_ids"])] = 1
    labels = torch.tensor([e["labels"] for e in examples])
    return BatchEncoding({"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels})


def get_dataloaders(accelerator: Accelerator, batch_size: int = 16):
    train_dataset, eval_dataset = SyntheticPairs(64, seed=1), SyntheticPairs(32, seed=2)
    train_dataloader = DataLoader(train_dataset, shuffle=True, collate_fn=collate_fn, batch_size=batch_size,
                                  drop_last=True)
    eval_dataloader = DataLoader(eval_dataset, shuffle=False, collate_fn=collate_fn, batch_size=EVAL_BATCH_SIZE,
                                 drop_last=False)
    return train_dataloader, eval_dataloader


class Accuracy:
    """The calls of `evaluate.load("glue", "mrpc")` that the example makes."""

    def __init__(self):
        self.correct, self.total = 0, 0

    def add_batch(self, predictions, references):
        self.correct += int((predictions == references).sum())
        self.total += len(references)

    def compute(self):
        result = {"accuracy": self.correct / max(1, self.total)}
        self.correct, self.total = 0, 0
        return result


def training_function(config, args):
    accelerator = Accelerator(cpu=args.cpu, mixed_precision=args.mixed_precision)
    lr = flor.arg("lr", config["lr"])
    num_epochs = flor.arg("num_epochs", int(config["num_epochs"]))
    seed = flor.arg("seed", int(config["seed"]))
    batch_size = flor.arg("batch_size", int(config["batch_size"]))

    metric = Accuracy()
    gradient_accumulation_steps = 1
    if batch_size > MAX_GPU_BATCH_SIZE and accelerator.distributed_type != "XLA":
        gradient_accumulation_steps = batch_size // MAX_GPU_BATCH_SIZE
        batch_size = MAX_GPU_BATCH_SIZE

    set_seed(seed)
    train_dataloader, eval_dataloader = get_dataloaders(accelerator, batch_size)
    bert = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=32, num_labels=2)
    model = BertForSequenceClassification(bert)
    model = model.to(accelerator.device)
    optimizer = AdamW(params=model.parameters(), lr=lr)
    lr_scheduler = get_linear_schedule_with_warmup(
        optimizer=optimizer, num_warmup_steps=2,
        num_training_steps=(len(train_dataloader) * num_epochs) // gradient_accumulation_steps,
    )
    model, optimizer, train_dataloader, eval_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader, lr_scheduler
    )

    with flor.checkpointing(model=model, optimizer=optimizer, lr_scheduler=lr_scheduler):
        for epoch in flor.loop("epoch", range(num_epochs)):
            model.train()
            for step, batch in flor.loop("step", enumerate(train_dataloader)):
                batch.to(accelerator.device)
                outputs = model(**batch)
                loss = outputs.loss
                loss = loss / gradient_accumulation_steps
                accelerator.backward(loss)
                if step % gradient_accumulation_steps == 0:
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad()
                # HINDSIGHT d_step: flor.log("lr", lr_scheduler.get_last_lr()[0])
                flor.log("loss", loss.item())

            model.eval()
            for step, batch in enumerate(eval_dataloader):
                batch.to(accelerator.device)
                with torch.no_grad():
                    outputs = model(**batch)
                predictions = outputs.logits.argmax(dim=-1)
                predictions, references = accelerator.gather_for_metrics((predictions, batch["labels"]))
                metric.add_batch(predictions=predictions, references=references)

            eval_metric = metric.compute()
            accelerator.print(f"epoch {epoch}:", eval_metric)
            flor.log("eval_accuracy", eval_metric["accuracy"])
            # HINDSIGHT a_epoch: flor.log("classifier_norm", accelerator.unwrap_model(model).classifier.weight.norm().item())
    accelerator.end_training()


def main():
    parser = argparse.ArgumentParser(description="Simple example of training script.")
    parser.add_argument("--mixed_precision", type=str, default=None, choices=["no", "fp16", "bf16", "fp8"])
    parser.add_argument("--cpu", action="store_true", help="If passed, will train on the CPU.")
    parser.add_argument("--num_epochs", type=int, default=3)
    args = parser.parse_args()
    config = {"lr": 2e-3, "num_epochs": args.num_epochs, "seed": 42, "batch_size": 16}
    training_function(config, args)


if __name__ == "__main__":
    main()
