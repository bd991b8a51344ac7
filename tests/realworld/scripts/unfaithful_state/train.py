"""Deliberately unfaithful to memoization: state that the skipped step loop changes and that flor
cannot see. Shaped like tutorial and notebook code: a Keras-style `history` dict of lists created
before training and appended to in the step loop, and a global step counter kept as a module
attribute (trainstate.global_step) incremented inside a helper through `global`.

Neither is registered with flor.checkpointing nor assigned in the loops' own code, so a replay
that skips the step loop and restores the checkpoint leaves both as they were before the loop.
A correct replay of a statement that reads them must re-execute, or refuse naming them.

A third piece of state is invisible to any analysis: a file that the step loop appends to and the
epoch body counts (`steps.log`, the way some scripts keep a CSV of their own). Only the recorded
value that depends on it (`steps_on_disk`) can show that a memoized epoch got it wrong.
"""

import flor
import numpy as np
import torch
import torch.nn as nn

import trainstate

epochs = flor.arg("epochs", 3)
lr = flor.arg("lr", 0.05)

rng = np.random.RandomState(0)
features = torch.tensor(rng.normal(size=(256, 10)), dtype=torch.float32)
labels = torch.tensor((features[:, 0] + features[:, 1] > 0).long().numpy())
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(features, labels), batch_size=32, shuffle=True)

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
history = {"loss": []}
open("steps.log", "w").close()

with flor.checkpointing(model=model, optimizer=optimizer):
    for epoch in flor.loop("epoch", range(epochs)):
        for step, (x, y) in flor.loop("step", enumerate(loader)):
            loss = trainstate.train_step(model, optimizer, x, y)
            history["loss"].append(loss.item())
            # HINDSIGHT d_list: flor.log("running_loss", sum(history["loss"]) / len(history["loss"]))
            flor.log("loss", loss.item())
            with open("steps.log", "a") as handle:
                handle.write(f"{step}\n")
        # HINDSIGHT a_list: flor.log("epoch_loss", sum(history["loss"][-len(loader):]) / len(loader))
        # HINDSIGHT a_counter: flor.log("global_step", trainstate.global_step)
        with open("steps.log") as handle:
            steps_on_disk = sum(1 for _ in handle)
        flor.log("steps_on_disk", steps_on_disk)
        # HINDSIGHT a_file: flor.log("steps_on_disk_x2", 2 * steps_on_disk)
        print(f"epoch {epoch}: {len(history['loss'])} steps so far, global step {trainstate.global_step}")
