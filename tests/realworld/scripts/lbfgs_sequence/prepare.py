"""Writes traindata.npy: sine waves starting at random phases (PyTorch-examples'
generate_sine_wave.py, smaller: 6 waves of 30 points), with a seeded numpy generator.
Deterministic. (The original torch.save's a numpy array, which torch.load's default
weights_only refuses today; np.save keeps the same data.)"""

import numpy as np

np.random.seed(2)
T, L, N = 20, 30, 6
x = np.empty((N, L), "int64")
x[:] = np.array(range(L)) + np.random.randint(-4 * T, 4 * T, N).reshape(N, 1)
data = np.sin(x / 1.0 / T).astype("float64")
np.save("traindata.npy", data)
