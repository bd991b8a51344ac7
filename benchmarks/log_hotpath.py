"""flor.log's hot path in two checkouts, compared: process CPU time per call of flor.log inside two
nested flor.loops (200 x 1000 calls, best of 3), minus the same loops calling a plain function, in
a fresh process and a fresh git repository per measurement; the checkouts alternate (the order
swaps every repetition). Prints median (min-max) per checkout.

    python benchmarks/log_hotpath.py BEFORE_CHECKOUT AFTER_CHECKOUT [REPETITIONS]

(A checkout: a folder holding flor/, e.g. `git archive REV | tar -x -C DIR`.) FLOR_CAPTURE=0.
"""
import os
import statistics
import subprocess
import sys
import tempfile
CHILD = r'''
import time, sys
import flor
def plain(name, value):
    return value
outer, inner = 200, 1000
best_log = best_plain = None
for rep in range(3):
    c0 = time.process_time()
    for epoch in flor.loop("epoch", range(outer)):
        for step in flor.loop("step", range(inner)):
            flor.log("loss", step * 0.5)
    t_log = time.process_time() - c0
    c0 = time.process_time()
    for epoch in flor.loop("epoch2", range(outer)):
        for step in flor.loop("step2", range(inner)):
            plain("loss", step * 0.5)
    t_plain = time.process_time() - c0
    best_log = t_log if best_log is None else min(best_log, t_log)
    best_plain = t_plain if best_plain is None else min(best_plain, t_plain)
print((best_log - best_plain) / (outer * inner) * 1e6)
'''
env0 = {k: v for k, v in os.environ.items() if not k.startswith("FLOR_")}
env0.update(GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x",
            GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@x", FLOR_CAPTURE="0")
checkouts = {"before": sys.argv[1], "after": sys.argv[2]}
results: dict[str, list[float]] = {"before": [], "after": []}
for rep in range(int(sys.argv[3]) if len(sys.argv) > 3 else 7):
    for variant in (("before", "after") if rep % 2 == 0 else ("after", "before")):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["git", "init", "-q", tmp], check=True, env=env0)
            open(os.path.join(tmp, "t.py"), "w").write(CHILD)
            subprocess.run(["git", "-C", tmp, "add", "-A"], check=True, env=env0)
            subprocess.run(["git", "-C", tmp, "commit", "-qm", "x"], check=True, env=env0)
            env = dict(env0, PYTHONPATH=checkouts[variant])
            out = subprocess.run([sys.executable, "t.py"], cwd=tmp, env=env, capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-2000:])
                sys.exit(1)
            results[variant].append(float(out.stdout.strip().splitlines()[-1]))
for v, xs in results.items():
    print(f"{v} ({checkouts[v]}): {statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f}) us/call, n={len(xs)}: "
          + ", ".join(f"{x:.3f}" for x in xs))
