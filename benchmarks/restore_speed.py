"""Reading consecutive checkpoints of one recording, as a replay worker's memoized iterations do
(issue 30): the whole delta chain per restore on one thread (`before`: what restores did until
then), against the last restore's arrays kept and the arrays decoded on threads (`after`), and
that with the model only (`after, model only`: what an iteration running a slice that reads only
the model restores). The three run alternately, RANGE checkpoints each, over rounds.

    python benchmarks/restore_speed.py PROJECT/.flor RUN_ID FIRST LAST [--rounds 3]

(the checkpoints `checkpoints/RUN_ID/<iteration>-nested.json` from FIRST to LAST; record one with
`FLOR_CKPT_PERIOD=1`, e.g. the `nanogpt_real` case of slice_replay.py)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flor.checkpoints import objects, restore  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("flor_dir", type=Path)
    parser.add_argument("run_id")
    parser.add_argument("first", type=int)
    parser.add_argument("last", type=int)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    locations = [f"checkpoints/{args.run_id}/{i:08d}-nested.json" for i in range(args.first, args.last + 1)]
    prefetch = objects.Reader.prefetch
    modes = {"before": (False, None), "after": (True, None), "after, model only": (True, frozenset({"model"}))}
    seen: dict[str, list[float]] = {name: [] for name in modes}
    for round_ in range(args.rounds):
        for name in (list(modes) if round_ % 2 == 0 else list(reversed(list(modes)))):
            keep, only = modes[name]
            objects.Reader.prefetch = prefetch if keep else (lambda self, digests: None)
            restore._recent.clear()
            restore.read_manifest(args.flor_dir, locations[0], trusted=True, keep=keep, only=only)
            started = time.perf_counter()
            for location in locations[1:]:
                restore.read_manifest(args.flor_dir, location, trusted=True, keep=keep, only=only)
            seen[name].append((time.perf_counter() - started) / (len(locations) - 1))
    for name, values in seen.items():
        print(f"{name}: median {statistics.median(values) * 1000:.0f} ms per checkpoint "
              f"({min(values) * 1000:.0f}-{max(values) * 1000:.0f}), load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    # A script that imports flor is a run that flor keeps: measure in a child with no script.
    import subprocess

    sys.exit(subprocess.call([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                              f"import restore_speed; sys.exit(restore_speed.main({sys.argv[1:]!r}))"]))
