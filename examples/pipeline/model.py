"""The classifier shared by train.py and infer.py: softmax regression in numpy."""

import numpy as np

FEATURES = ["n_words", "avg_word_len", "long_words"]


def document_matrix(pages):
    """(document names, one row of mean page features per document) from the feature store."""
    docs = pages.groupby("document")[FEATURES].mean()
    return list(docs.index), docs.to_numpy(float)


class Softmax:
    """Standardizes its inputs with the training set's mean and spread (kept in its state)."""

    def __init__(self, features: int, classes: int) -> None:
        self.W = np.zeros((features + 1, classes))
        self.mean = np.zeros(features)
        self.scale = np.ones(features)

    def state_dict(self) -> dict:
        return {"W": self.W, "mean": self.mean, "scale": self.scale}

    def load_state_dict(self, state: dict) -> None:
        self.W, self.mean, self.scale = (np.array(state[k]) for k in ("W", "mean", "scale"))

    def fit_scaling(self, X) -> None:
        self.mean, self.scale = X.mean(0), X.std(0) + 1e-9

    def inputs(self, X):
        Z = (X - self.mean) / self.scale
        return np.hstack([Z, np.ones((len(Z), 1))])

    def probabilities(self, X):
        z = self.inputs(X) @ self.W
        z -= z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    def step(self, X, y, lr: float) -> None:
        p = self.probabilities(X)
        p[np.arange(len(y)), y] -= 1
        self.W -= lr * self.inputs(X).T @ p / len(y)
