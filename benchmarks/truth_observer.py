"""Time tests/realworld/truth.py's observed() (the corpus's ground-truth isolation), two versions
alternately: `python -W ignore benchmarks/truth_observer.py OLD_truth.py NEW_truth.py` (e.g. the
old one from `git show 9b46b61~1:tests/realworld/truth.py`). Prints median and range of 8 calls each."""
import time, sys, importlib.util, torch, torch.utils.data
def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path); m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
old = load(sys.argv[1], "old_truth"); new = load(sys.argv[2], "new_truth")
model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Flatten(), torch.nn.Linear(8*26*26, 10))
loader = torch.utils.data.DataLoader(list(range(100)), shuffle=True, generator=torch.Generator().manual_seed(0))
r = {"old": [], "new": []}
for i in range(8):
    for name, mod in (("old", old), ("new", new)):
        t = time.perf_counter()
        with mod.observed():
            pass
        r[name].append(time.perf_counter() - t)
import statistics
for k, v in r.items(): print(k, "median %.3f s, range %.3f-%.3f" % (statistics.median(v), min(v), max(v)))
