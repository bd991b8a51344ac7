"""Time tests/realworld/truth.py's observed() (the corpus's ground-truth isolation), two versions
alternately, around a small CNN and a shuffled DataLoader:

    python -W ignore benchmarks/truth_observer.py OLD_truth.py NEW_truth.py

(e.g. the old one from `git show 9b46b61~1:tests/realworld/truth.py`). Prints the median and
range of 8 calls of each.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time


def _load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    import torch
    import torch.utils.data

    versions = {"old": _load(sys.argv[1], "old_truth"), "new": _load(sys.argv[2], "new_truth")}
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 26 * 26, 10))
    loader = torch.utils.data.DataLoader(list(range(100)), shuffle=True, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {name: [] for name in versions}
    for _ in range(8):
        for name, truth in versions.items():
            started = time.perf_counter()
            with truth.observed():
                pass
            times[name].append(time.perf_counter() - started)
    del model, loader
    for name, seconds in times.items():
        print(f"{name} median {statistics.median(seconds):.3f} s, range {min(seconds):.3f}-{max(seconds):.3f}")


if __name__ == "__main__":
    main()
