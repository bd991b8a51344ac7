"""Writes data/regression.npz: 8 input features and a smooth nonlinear target plus noise."""

import os

import numpy as np

rng = np.random.RandomState(5)
x = rng.uniform(-2, 2, size=(512, 8)).astype(np.float32)
y = np.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2] - 0.3 * x[:, 3] ** 2 + rng.normal(0, 0.1, size=512)
os.makedirs("data", exist_ok=True)
np.savez("data/regression.npz", x=x, y=y.astype(np.float32)[:, None])
