"""Shaped like karpathy/makemore makemore.py: argparse, a CharDataset of names split into train
and test, an MLP language model, an InfiniteDataLoader that keeps one DataLoader iterator (a
RandomSampler with replacement and 1e10 samples, on its own seeded torch.Generator) for the whole
run, a `while True` loop with a step counter, loss printed every 10 steps, evaluation every N
steps that saves out/model.pt when the test loss improves, and `break` at --max-steps.

Real-world traits: the data iterator is made once, before the loop, and advanced with next() in
every step: its position and its generator are state that lives across outer iterations; the
loop has no length (itertools.count + break, the breaking iteration is the last); the values
logged are sparse (every 10th step and every eval); the eval branch writes the user's file.

flor edits: import flor, `while True` rewritten as flor.loop over itertools.count with the same
break, flor.log of the losses, and the loop wrapped in flor.checkpointing.
"""

import argparse
import itertools
import os

import flor
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.sampler import RandomSampler


class CharDataset(Dataset):
    def __init__(self, words, chars, max_word_length):
        self.words = words
        self.chars = chars
        self.max_word_length = max_word_length
        self.stoi = {ch: i + 1 for i, ch in enumerate(chars)}

    def __len__(self):
        return len(self.words)

    def get_vocab_size(self):
        return len(self.chars) + 1  # all the possible characters and special 0 token

    def get_output_length(self):
        return self.max_word_length + 1  # <START> token followed by words

    def encode(self, word):
        return torch.tensor([self.stoi[w] for w in word], dtype=torch.long)

    def __getitem__(self, idx):
        word = self.words[idx]
        ix = self.encode(word)
        x = torch.zeros(self.max_word_length + 1, dtype=torch.long)
        y = torch.zeros(self.max_word_length + 1, dtype=torch.long)
        x[1:1 + len(ix)] = ix
        y[:len(ix)] = ix
        y[len(ix) + 1:] = -1  # index -1 will mask the loss at the inactive locations
        return x, y


def create_datasets(input_file):
    with open(input_file, "r") as f:
        words = [w.strip() for w in f.read().splitlines() if w.strip()]
    chars = sorted(set("".join(words)))
    max_word_length = max(len(w) for w in words)
    test_set_size = min(200, int(len(words) * 0.1))
    rp = torch.randperm(len(words)).tolist()
    train_words = [words[i] for i in rp[:-test_set_size]]
    test_words = [words[i] for i in rp[-test_set_size:]]
    return CharDataset(train_words, chars, max_word_length), CharDataset(test_words, chars, max_word_length)


class InfiniteDataLoader:
    """A DataLoader that draws batches forever (makemore's): one iterator for the whole run."""

    def __init__(self, dataset, generator, **kwargs):
        train_sampler = RandomSampler(dataset, replacement=True, num_samples=int(1e10), generator=generator)
        self.train_loader = DataLoader(dataset, sampler=train_sampler, **kwargs)
        self.data_iter = iter(self.train_loader)

    def next(self):
        try:
            batch = next(self.data_iter)
        except StopIteration:  # this will technically only happen after 1e10 samples...
            self.data_iter = iter(self.train_loader)
            batch = next(self.data_iter)
        return batch


class MLP(nn.Module):
    def __init__(self, vocab_size, block_size, n_embd, n_hidden):
        super().__init__()
        self.block_size = block_size
        self.vocab_size = vocab_size
        self.wte = nn.Embedding(vocab_size + 1, n_embd)  # +1 for a special <BLANK> token
        self.mlp = nn.Sequential(nn.Linear(block_size * n_embd, n_hidden), nn.Tanh(), nn.Linear(n_hidden, vocab_size))

    def forward(self, idx, targets=None):
        embs = []
        for _ in range(self.block_size):
            embs.append(self.wte(idx))
            idx = torch.roll(idx, 1, 1)
            idx[:, 0] = self.vocab_size  # special <BLANK> token
        x = torch.cat(embs, -1)
        logits = self.mlp(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss


@torch.inference_mode()
def evaluate(model, dataset, batch_size=50, max_batches=None):
    model.eval()
    loader = DataLoader(dataset, shuffle=True, batch_size=batch_size, num_workers=0)
    losses = []
    for i, batch in enumerate(loader):
        X, Y = batch
        logits, loss = model(X, Y)
        losses.append(loss.item())
        if max_batches is not None and i >= max_batches:
            break
    mean_loss = torch.tensor(losses).mean().item()
    model.train()
    return mean_loss


parser = argparse.ArgumentParser(description="Make More")
parser.add_argument("--input-file", "-i", type=str, default="names.txt")
parser.add_argument("--work-dir", "-o", type=str, default="out")
parser.add_argument("--max-steps", type=int, default=120)
parser.add_argument("--eval-every", type=int, default=40)
parser.add_argument("--seed", type=int, default=3407)
parser.add_argument("--block-size", type=int, default=3)
parser.add_argument("--n-embd", type=int, default=24)
parser.add_argument("--n-hidden", type=int, default=192)
parser.add_argument("--batch-size", "-b", type=int, default=32)
parser.add_argument("--learning-rate", "-l", type=float, default=5e-3)
parser.add_argument("--weight-decay", "-w", type=float, default=0.01)
args = parser.parse_args()

torch.manual_seed(args.seed)
os.makedirs(args.work_dir, exist_ok=True)

train_dataset, test_dataset = create_datasets(args.input_file)
vocab_size = train_dataset.get_vocab_size()
model = MLP(vocab_size, args.block_size, args.n_embd, args.n_hidden)
optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay,
                              betas=(0.9, 0.99), eps=1e-8)
batch_loader = InfiniteDataLoader(train_dataset, torch.Generator().manual_seed(args.seed), batch_size=args.batch_size,
                                  pin_memory=False, num_workers=0)

best_loss = None
with flor.checkpointing(model=model, optimizer=optimizer):
    for step in flor.loop("step", itertools.count()):  # was: step = 0; while True:
        batch = batch_loader.next()
        X, Y = batch
        logits, loss = model(X, Y)
        model.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # HINDSIGHT d_step: flor.log("step_loss", loss.item())

        if step % 10 == 0:
            print(f"step {step} | loss {loss.item():.4f}")
            flor.log("loss", loss.item())

        if step > 0 and step % args.eval_every == 0:
            train_loss = evaluate(model, train_dataset, batch_size=50, max_batches=4)
            test_loss = evaluate(model, test_dataset, batch_size=50, max_batches=4)
            flor.log("test_loss", test_loss)
            print(f"step {step} train loss: {train_loss} test loss: {test_loss}")
            # HINDSIGHT c_eval: flor.log("wte_norm_at_eval", model.wte.weight.norm().item())
            if best_loss is None or test_loss < best_loss:
                out_path = os.path.join(args.work_dir, "model.pt")
                print(f"test loss {test_loss} is the new best so far, saving model to {out_path}")
                torch.save(model.state_dict(), out_path)
                best_loss = test_loss

        if step + 1 >= args.max_steps:  # was: step += 1; if args.max_steps >= 0 and step >= args.max_steps: break
            break

# HINDSIGHT a_after: flor.log("final_train_loss", evaluate(model, train_dataset, batch_size=50, max_batches=2))
print(f"best test loss {best_loss}")
