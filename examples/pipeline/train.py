"""Stage 2: a topic classifier over the page features, read from the feature store.

flor.dataframe(..., latest=True) gives the latest value of each feature for every (document,
page), whichever featurize run computed it (and flor records which runs this one read)."""

import numpy as np

import flor
from model import FEATURES, Softmax, document_matrix

pages = flor.dataframe(*FEATURES, latest=True).dropna(subset=FEATURES)
labels = flor.dataframe("label", latest=True).set_index("document")["label"]
names, X = document_matrix(pages)
y = labels.loc[names].to_numpy(int)

lr = flor.arg("lr", 0.5)
epochs = flor.arg("epochs", 40)
order = np.random.default_rng(flor.arg("seed", 0)).permutation(len(X))
split = max(1, int(0.7 * len(X)))
train, val = order[:split], order[split:]

model = Softmax(X.shape[1], 3)
model.fit_scaling(X[train])
with flor.checkpointing(model=model):
    for epoch in flor.loop("epoch", range(epochs)):
        model.step(X[train], y[train], lr)
        accuracy = (model.probabilities(X[val]).argmax(1) == y[val]).mean() if len(val) else 0.0
        flor.log("val_acc", float(accuracy))
print(f"trained on {len(train)} documents, validated on {len(val)}: val_acc {accuracy:.3f}")
