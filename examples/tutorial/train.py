"""The flor tutorial: a small MLP on scikit-learn's bundled digits, recorded by flor.

    python train.py                       # record a run
    python train.py --kwargs hidden=75    # record another with a different hidden size
    flor dataframe hidden loss accuracy   # both runs in one table
"""

import flor
import torch
import torch.nn as nn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

hidden = flor.arg("hidden", 500)
epochs = flor.arg("epochs", 5)
batch_size = flor.arg("batch_size", 32)
lr = flor.arg("lr", 1e-3)
seed = flor.arg("seed", 1717)

torch.manual_seed(seed)
torch.set_num_threads(1)

digits = load_digits()
features = torch.tensor(digits.data / 16.0, dtype=torch.float32)
labels = torch.tensor(digits.target, dtype=torch.long)
x_train, x_test, y_train, y_test = train_test_split(
    features, labels, test_size=0.25, random_state=seed, stratify=labels
)
train_loader = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(x_train, y_train), batch_size=batch_size, shuffle=True
)

net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
optimizer = torch.optim.Adam(net.parameters(), lr=lr)
criterion = nn.CrossEntropyLoss()

with flor.checkpointing(model=net, optimizer=optimizer):
    for epoch in flor.loop("epoch", range(epochs)):
        for step, (inputs, targets) in flor.loop("step", enumerate(train_loader)):
            optimizer.zero_grad()
            loss = criterion(net(inputs), targets)
            loss.backward()
            optimizer.step()
            flor.log("loss", loss.item())

with torch.no_grad():
    predictions = net(x_test).argmax(dim=1)
    accuracy = (predictions == y_test).float().mean().item()
flor.log("accuracy", accuracy)
print(f"hidden={hidden} accuracy={accuracy:.4f}")
