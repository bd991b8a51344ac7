"""Shaped like torchvision's references/classification/train.py: train_one_epoch(...) and
evaluate(...) helpers, a ResNet-style CNN with BatchNorm, SGD with momentum and weight decay,
label smoothing, a cosine LR schedule stepped per epoch, RandomSampler, a random horizontal flip,
evaluation every --eval-freq epochs, and a checkpoint written every epoch to --output-dir
(model_{epoch}.pth and checkpoint.pth) with torch.save.

Real-world traits: BatchNorm running statistics are module buffers, updated only in train mode;
model.train() in train_one_epoch and model.eval() in evaluate switch them; the user's own
checkpoint files are written in the epoch body.

flor edits: import flor, flor.arg for the settings, flor.loop on the epoch loop and on the step
loop inside train_one_epoch, flor.log of the loss and the accuracy, and
flor.checkpointing(model, optimizer, lr_scheduler) (the objects torchvision saves).
"""

import argparse
import os

import flor
import numpy as np
import torch
import torch.nn as nn


class ImageDataset(torch.utils.data.Dataset):
    def __init__(self, images, labels, train):
        self.images, self.labels, self.train = torch.from_numpy(images), torch.from_numpy(labels), train

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = self.images[index]
        if self.train and torch.rand(1) < 0.5:  # what transforms.RandomHorizontalFlip does
            image = image.flip(-1)
        return (image - 0.5) / 0.25, self.labels[index]


class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetTiny(nn.Module):
    def __init__(self, num_classes=4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def train_one_epoch(model, criterion, optimizer, data_loader, device, epoch, args):
    model.train()
    for i, (image, target) in flor.loop("step", enumerate(data_loader)):
        image, target = image.to(device), target.to(device)
        output = model(image)
        loss = criterion(output, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        # HINDSIGHT e_bn_forward: flor.log("train_logit_mean", model(image).mean().item())
        # HINDSIGHT d_step: flor.log("bn1_running_mean", model.bn1.running_mean.abs().mean().item())
        flor.log("loss", loss.item())
        if i % args.print_freq == 0:
            print(f"Epoch: [{epoch}] [{i}/{len(data_loader)}] loss {loss.item():.4f} lr {optimizer.param_groups[0]['lr']:.4f}")


def evaluate(model, criterion, data_loader, device):
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    with torch.inference_mode():
        for image, target in data_loader:
            image, target = image.to(device), target.to(device)
            output = model(image)
            loss_sum += criterion(output, target).item() * image.shape[0]
            correct += (output.argmax(1) == target).sum().item()
            total += image.shape[0]
    # HINDSIGHT b_helper: flor.log("eval_logit_std", output.std().item())
    print(f"Test: Acc@1 {100.0 * correct / total:.3f} loss {loss_sum / total:.4f}")
    return 100.0 * correct / total


def get_args_parser():
    parser = argparse.ArgumentParser(description="PyTorch Classification Training (tiny)")
    parser.add_argument("--data-path", default="data/images.npz", type=str)
    parser.add_argument("--device", default="cpu", type=str)
    parser.add_argument("-b", "--batch-size", default=32, type=int)
    parser.add_argument("--epochs", default=4, type=int)
    parser.add_argument("-j", "--workers", default=0, type=int)
    parser.add_argument("--lr", default=0.1, type=float)
    parser.add_argument("--momentum", default=0.9, type=float)
    parser.add_argument("--wd", "--weight-decay", default=1e-4, type=float, dest="weight_decay")
    parser.add_argument("--label-smoothing", default=0.1, type=float)
    parser.add_argument("--print-freq", default=4, type=int)
    parser.add_argument("--eval-freq", default=2, type=int)
    parser.add_argument("--output-dir", default="output", type=str)
    parser.add_argument("--seed", default=0, type=int)
    return parser


def main(args):
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)

    arrays = np.load(args.data_path)
    dataset = ImageDataset(arrays["train_x"], arrays["train_y"], train=True)
    dataset_test = ImageDataset(arrays["test_x"], arrays["test_y"], train=False)
    data_loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, sampler=torch.utils.data.RandomSampler(dataset), num_workers=args.workers
    )
    data_loader_test = torch.utils.data.DataLoader(
        dataset_test, batch_size=64, sampler=torch.utils.data.SequentialSampler(dataset_test), num_workers=args.workers
    )

    model = ResNetTiny(num_classes=4).to(device)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)

    with flor.checkpointing(model=model, optimizer=optimizer, lr_scheduler=lr_scheduler):
        for epoch in flor.loop("epoch", range(args.epochs)):
            train_one_epoch(model, criterion, optimizer, data_loader, device, epoch, args)
            # HINDSIGHT e_eval_helper: flor.log("train_set_acc", evaluate(model, criterion, data_loader, device=device))
            # HINDSIGHT a_epoch: flor.log("bn1_running_var", model.bn1.running_var.mean().item())
            lr_scheduler.step()
            if (epoch + 1) % args.eval_freq == 0 or epoch == args.epochs - 1:
                # HINDSIGHT c_eval: flor.log("layer2_batches_tracked", int(model.layer2[0].bn1.num_batches_tracked))
                flor.log("acc1", evaluate(model, criterion, data_loader_test, device=device))
            if args.output_dir:
                checkpoint = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "lr_scheduler": lr_scheduler.state_dict(),
                    "epoch": epoch,
                    "args": args,
                }
                torch.save(checkpoint, os.path.join(args.output_dir, f"model_{epoch}.pth"))
                torch.save(checkpoint, os.path.join(args.output_dir, "checkpoint.pth"))


if __name__ == "__main__":
    args = get_args_parser().parse_args()
    for key in ("batch_size", "epochs", "lr", "momentum", "weight_decay", "label_smoothing", "seed"):
        setattr(args, key, flor.arg(key, getattr(args, key)))  # flor: the settings worth a column
    main(args)
