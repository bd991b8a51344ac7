"""Training helpers with module-level state, the way many scripts keep a TensorBoard-style global
step: train_step() increments trainstate.global_step through a `global` statement."""

import torch.nn.functional as F

global_step = 0


def train_step(model, optimizer, x, y):
    global global_step
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    global_step += 1
    return loss
