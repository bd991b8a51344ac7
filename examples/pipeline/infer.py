"""Stage 3: load the best checkpoint through the model registry and label every document."""

import flor
from model import FEATURES, Softmax, document_matrix

best = flor.best("val_acc", mode="max", checkpointed=True)
print(f"best val_acc {best.value:.3f}: run {best.tstamp}, epoch {best.iteration}")
pages = flor.dataframe(*FEATURES, latest=True).dropna(subset=FEATURES)
names, X = document_matrix(pages)
model = Softmax(X.shape[1], 3)
best.load(model=model)
predicted = model.probabilities(X).argmax(1)
for name, label in flor.loop("document", list(zip(names, predicted)), key=lambda item: item[0]):
    flor.log("predicted", int(label))
print(f"labelled {len(names)} document(s)")
