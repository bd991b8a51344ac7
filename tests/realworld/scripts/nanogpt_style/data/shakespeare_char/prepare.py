"""Writes train.bin, val.bin (uint16 token ids) and meta.pkl (vocabulary) next to this file, the
way nanoGPT's data/shakespeare_char/prepare.py does; the text is synthetic: a seeded character
Markov chain, so nothing is downloaded and every machine gets the same bytes."""

import os
import pickle

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
rng = np.random.RandomState(1337)
chars = sorted(set("abcdefghij klmnop\n.,"))
vocab_size = len(chars)
# Each character prefers a few successors: enough structure for a tiny model to learn.
transitions = rng.dirichlet(np.full(vocab_size, 0.3), size=vocab_size)
ids = [0]
for _ in range(20_000 - 1):
    ids.append(rng.choice(vocab_size, p=transitions[ids[-1]]))
data = np.array(ids, dtype=np.uint16)
n = len(data)
data[: int(n * 0.9)].tofile(os.path.join(here, "train.bin"))
data[int(n * 0.9):].tofile(os.path.join(here, "val.bin"))
stoi = {ch: i for i, ch in enumerate(chars)}
itos = {i: ch for i, ch in enumerate(chars)}
with open(os.path.join(here, "meta.pkl"), "wb") as f:
    pickle.dump({"vocab_size": vocab_size, "itos": itos, "stoi": stoi}, f)
print(f"{n:,} characters, vocab size {vocab_size}")
