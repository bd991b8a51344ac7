"""Writes data/images.npz: a synthetic stand-in for CIFAR (3x16x16 colour images, 4 classes). Each
class has its own colour and texture; samples add noise. Deterministic (seeded)."""

import os

import numpy as np

rng = np.random.RandomState(7)
prototypes = rng.uniform(0, 1, size=(4, 3, 16, 16)).astype(np.float32)


def make(count):
    labels = rng.randint(0, 4, size=count)
    images = prototypes[labels] + rng.normal(0, 0.35, size=(count, 3, 16, 16)).astype(np.float32)
    return images.clip(0, 1), labels.astype(np.int64)


os.makedirs("data", exist_ok=True)
train_x, train_y = make(256)
test_x, test_y = make(128)
np.savez("data/images.npz", train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)
