"""Shaped like PyTorch-examples' time_sequence_prediction/train.py: two LSTMCells and a linear
layer in float64 learn sine waves; LBFGS (lr 0.8) steps with a closure that zeroes the grads,
runs forward and backward and prints the loss, up to 20 times per step; after each step a
no_grad prediction runs `future` steps past the test waves and prints the test loss.

Real-world traits: the optimizer calls the user's closure (defined in the step loop body) several
times per step, so a value logged in it repeats within one loop context; LBFGS keeps its curvature
history (old_dirs, old_stps, ro, H_diag, prev_flat_grad, d, t) in its state, which every later step
reads; the data are one full batch, loaded once.

Differences from the original, to run in seconds: 6 waves of 30 points (prepare.py writes them
as the original's generate_sine_wave.py does, with np.save), 12 hidden units, 20 future steps,
no plot; argparse keeps --steps; CPU only, on one thread (`torch.set_num_threads(1)`: on a
loaded 2-core machine these 3x12 tensors took 5 times longer on two threads).

flor edits: import flor, flor.loop on the step loop, flor.log of the closure's loss and the test
loss, the loop wrapped in flor.checkpointing(model, optimizer).
"""

import argparse

import flor
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim

HIDDEN = 12


class Sequence(nn.Module):
    def __init__(self):
        super(Sequence, self).__init__()
        self.lstm1 = nn.LSTMCell(1, HIDDEN)
        self.lstm2 = nn.LSTMCell(HIDDEN, HIDDEN)
        self.linear = nn.Linear(HIDDEN, 1)

    def forward(self, input, future=0):
        outputs = []
        h_t = torch.zeros(input.size(0), HIDDEN, dtype=torch.double)
        c_t = torch.zeros(input.size(0), HIDDEN, dtype=torch.double)
        h_t2 = torch.zeros(input.size(0), HIDDEN, dtype=torch.double)
        c_t2 = torch.zeros(input.size(0), HIDDEN, dtype=torch.double)

        for input_t in input.split(1, dim=1):
            h_t, c_t = self.lstm1(input_t, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs += [output]
        for i in range(future):  # if we should predict the future
            h_t, c_t = self.lstm1(output, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs += [output]
        outputs = torch.cat(outputs, dim=1)
        return outputs


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=15, help="steps to run")
    opt = parser.parse_args()
    torch.set_num_threads(1)  # tiny tensors: a second thread only waits (the original runs on a GPU)
    # set random seed to 0
    np.random.seed(0)
    torch.manual_seed(0)
    # load data and make training set
    data = torch.from_numpy(np.load("traindata.npy"))
    input = data[3:, :-1]
    target = data[3:, 1:]
    test_input = data[:3, :-1]
    test_target = data[:3, 1:]
    # build the model
    seq = Sequence().double()
    criterion = nn.MSELoss()
    # use LBFGS as optimizer since we can load the whole data to train
    optimizer = optim.LBFGS(seq.parameters(), lr=0.8)
    # begin to train
    with flor.checkpointing(model=seq, optimizer=optimizer):
        for i in flor.loop("step", range(opt.steps)):
            print("STEP: ", i)

            def closure():
                optimizer.zero_grad()
                out = seq(input)
                loss = criterion(out, target)
                print("loss:", loss.item())
                flor.log("closure_loss", loss.item())
                loss.backward()
                # HINDSIGHT d_closure: flor.log("closure_grad_norm", torch.cat([p.grad.flatten() for p in seq.parameters()]).norm().item())
                return loss

            optimizer.step(closure)
            # HINDSIGHT d_step: flor.log("lbfgs_history", len(optimizer.state[seq.lstm1.weight_ih]["old_dirs"]))
            # begin to predict, no need to track gradient here
            with torch.no_grad():
                future = 20
                pred = seq(test_input, future=future)
                loss = criterion(pred[:, :-future], test_target)
                print("test loss:", loss.item())
                flor.log("test_loss", loss.item())
                y = pred.detach().numpy()
    # HINDSIGHT a_after: flor.log("final_prediction_std", float(y[:, -future:].std()))
