"""Shaped like pytorch/examples mnist/main.py, the most copied PyTorch training script: argparse in
main(), train(args, model, device, loader, optimizer, epoch) and test(model, device, loader)
helpers, a small CNN with two dropouts, Adadelta with StepLR stepped once per epoch.

Real-world traits: the epoch loop lives in main(), the step loop inside a helper function; the
scheduler is not registered with flor (the README shows model and optimizer only); test() logs.
The torchvision dataset is replaced by synthetic 28x28 images (prepare.py).

flor edits: import flor, args declared with flor.arg, flor.loop on both loops, flor.log of the
loss and of the test metrics, and the epoch loop wrapped in flor.checkpointing.
"""

import argparse

import flor
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.optim.lr_scheduler import StepLR


class SyntheticMNIST(torch.utils.data.Dataset):
    """Images and labels from prepare.py, normalized per item the way transforms.Normalize does."""

    def __init__(self, path):
        self.images, self.labels = torch.load(path)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return (self.images[index] - 0.1307) / 0.3081, self.labels[index]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, 1)
        self.conv2 = nn.Conv2d(8, 16, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(2304, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


def train(args, model, device, train_loader, optimizer, epoch):
    model.train()
    for batch_idx, (data, target) in flor.loop("step", enumerate(train_loader)):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        # HINDSIGHT e_train_acc: flor.log("train_acc", (model(data).argmax(dim=1) == target).float().mean().item())
        # HINDSIGHT d_step: flor.log("fc2_grad_norm", model.fc2.weight.grad.norm().item())
        flor.log("loss", loss.item())
        if batch_idx % args.log_interval == 0:
            print(f"Train Epoch: {epoch} [{batch_idx * len(data)}/{len(train_loader.dataset)}]\tLoss: {loss.item():.6f}")
            if args.dry_run:
                break


def test(model, device, test_loader):
    model.eval()
    test_loss = 0
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
            # HINDSIGHT b_helper_batch: flor.log("batch_confidence", output.exp().max(dim=1).values.mean().item())

    test_loss /= len(test_loader.dataset)
    # HINDSIGHT b_helper: flor.log("last_batch_confidence", output.exp().max(dim=1).values.mean().item())
    flor.log("test_loss", test_loss)
    flor.log("accuracy", 100.0 * correct / len(test_loader.dataset))
    print(f"\nTest set: Average loss: {test_loss:.4f}, Accuracy: {correct}/{len(test_loader.dataset)}\n")


def main():
    parser = argparse.ArgumentParser(description="PyTorch MNIST Example (synthetic data)")
    parser.add_argument("--batch-size", type=int, default=64, metavar="N")
    parser.add_argument("--test-batch-size", type=int, default=1000, metavar="N")
    parser.add_argument("--epochs", type=int, default=14, metavar="N")
    parser.add_argument("--lr", type=float, default=1.0, metavar="LR")
    parser.add_argument("--gamma", type=float, default=0.7, metavar="M")
    parser.add_argument("--no-cuda", action="store_true", default=False)
    parser.add_argument("--dry-run", action="store_true", default=False)
    parser.add_argument("--seed", type=int, default=1, metavar="S")
    parser.add_argument("--log-interval", type=int, default=10, metavar="N")
    parser.add_argument("--save-model", action="store_true", default=False)
    args = parser.parse_args()
    for key, value in vars(args).items():  # flor: every command-line setting is a recorded arg
        setattr(args, key, flor.arg(key, value))

    use_cuda = not args.no_cuda and torch.cuda.is_available()
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if use_cuda else "cpu")

    train_kwargs = {"batch_size": args.batch_size}
    test_kwargs = {"batch_size": args.test_batch_size}
    if use_cuda:
        cuda_kwargs = {"num_workers": 1, "pin_memory": True, "shuffle": True}
        train_kwargs.update(cuda_kwargs)
        test_kwargs.update(cuda_kwargs)

    dataset1 = SyntheticMNIST("data/mnist/train.pt")
    dataset2 = SyntheticMNIST("data/mnist/test.pt")
    train_loader = torch.utils.data.DataLoader(dataset1, **train_kwargs)
    test_loader = torch.utils.data.DataLoader(dataset2, **test_kwargs)

    model = Net().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)

    with flor.checkpointing(model=model, optimizer=optimizer):
        for epoch in flor.loop("epoch", range(1, args.epochs + 1)):
            train(args, model, device, train_loader, optimizer, epoch)
            # HINDSIGHT e_val_block: val_sum, val_n = 0.0, 0
            # HINDSIGHT e_val_block: with torch.no_grad():
            # HINDSIGHT e_val_block:     for xb, yb in test_loader:
            # HINDSIGHT e_val_block:         val_sum += F.nll_loss(model(xb), yb, reduction="sum").item()
            # HINDSIGHT e_val_block:         val_n += len(yb)
            # HINDSIGHT e_val_block: flor.log("val_loss_train_mode", val_sum / val_n)
            # HINDSIGHT a_epoch: flor.log("weight_norm", sum(p.norm() ** 2 for p in model.parameters()).item() ** 0.5)
            test(model, device, test_loader)
            scheduler.step()

    if args.save_model:
        torch.save(model.state_dict(), "mnist_cnn.pt")


if __name__ == "__main__":
    main()
