"""Writes data/mnist/{train,test}.pt: a synthetic stand-in for MNIST (28x28 grey images, 10
classes). Each class is a fixed random stroke pattern; samples are that pattern, shifted by up to
two pixels, plus noise. Deterministic (seeded), so every machine gets the same bytes."""

import os

import torch


def make(count: int, generator: torch.Generator, prototypes: torch.Tensor):
    labels = torch.randint(0, 10, (count,), generator=generator)
    images = prototypes[labels].clone()
    shifts = torch.randint(-2, 3, (count, 2), generator=generator)
    for i, (dy, dx) in enumerate(shifts.tolist()):
        images[i] = torch.roll(images[i], shifts=(dy, dx), dims=(1, 2))
    images += 0.3 * torch.rand(images.shape, generator=generator)
    return images.clamp(0, 1), labels


def main():
    generator = torch.Generator().manual_seed(2718)
    prototypes = (torch.rand(10, 1, 28, 28, generator=generator) > 0.8).float()
    os.makedirs("data/mnist", exist_ok=True)
    torch.save(make(384, generator, prototypes), "data/mnist/train.pt")
    torch.save(make(128, generator, prototypes), "data/mnist/test.pt")


if __name__ == "__main__":
    main()
