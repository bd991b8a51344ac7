"""Writes data/signals.npy and data/labels.npy: 1-D signals (length 64) of three classes, a sine,
a square and a sawtooth wave at random frequencies and phases, plus noise. Deterministic."""

import os

import numpy as np

rng = np.random.RandomState(11)
count, length = 480, 64
t = np.linspace(0, 1, length, endpoint=False)
labels = rng.randint(0, 3, size=count)
freq = rng.uniform(2, 6, size=(count, 1))
phase = rng.uniform(0, 2 * np.pi, size=(count, 1))
angle = 2 * np.pi * freq * t + phase
waves = np.stack([np.sin(angle), np.sign(np.sin(angle)), (angle / np.pi) % 2 - 1])
signals = waves[labels, np.arange(count)] + rng.normal(0, 0.3, size=(count, length))
os.makedirs("data", exist_ok=True)
np.save("data/signals.npy", signals.astype(np.float32))
np.save("data/labels.npy", labels.astype(np.int64))
