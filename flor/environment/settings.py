"""Every ``FLOR_*`` environment variable flor reads, in one place.

Each setting is read through a function here, which refuses a bad value with one line (a
:class:`~flor.errors.UsageError` naming the variable and what it expects) instead of falling back
silently. Settings that shape a recording (checkpoint budget, period, handoff, snapshot cap) are
read when the run begins, before anything is recorded, so a typo stops the script at once.

=============================  =========================================================
``FLOR_CKPT_BUDGET``           fraction of training time checkpoints may cost (0.01)
``FLOR_CKPT_PERIOD``           checkpoint every N outer iterations instead (unset)
``FLOR_CKPT_DISK``             checkpoint bytes a run may keep: bytes, or a multiple of its state such as 20x (20x, at most 4 GiB)
``FLOR_CKPT_DISK_TOTAL``       checkpoint bytes the project may keep; ``flor gc`` thins the oldest runs to it (unbounded)
``FLOR_CKPT_COMPRESS``         1/0: compress checkpoint arrays (zstd after a byte shuffle) where it pays (1)
``FLOR_CKPT_FULL_EVERY``       K: arrays are deltas against the previous checkpoint, standalone every K (4; 1: no deltas)
``FLOR_CKPT_HANDOFF``          1/0: write the last big checkpoint from a forked process (1)
``FLOR_CKPT_HANDOFF_BYTES``    smallest state handed off, in bytes (67108864)
``FLOR_SNAPSHOT_MAX_BYTES``    untracked files larger than this stay out of a code version
``FLOR_ARGPARSE``              1/0: record the script's argparse options as args (1)
``FLOR_REPLAY_CONFINE``        auto/namespace/copy/none: how replay confines old code's writes (auto)
``FLOR_REPLAY_ISOLATE``        1/0: run replayed statements as observers that change nothing (1)
``FLOR_EXECUTOR``              local/ray: where replay segments run (local)
``FLOR_CHECKPOINT_STORE``      an fsspec URL keeping a copy of every checkpoint (unset: .flor/ only)
``FLOR_STORE_CHECK_S``         seconds the run's first check of that store may take (5)
``FLOR_UPLOAD_WAIT_S``         seconds a run waits at its end for uploads still in flight (5)
``FLOR_QUERY_MAX_S``           seconds one ``flor query`` statement may run (60)
``FLOR_QUERY_MAX_BYTES``       the largest result ``flor query`` keeps in memory (268435456: 256 MiB)
``FLOR_RAY_ADDRESS``           the Ray cluster of ``--executor ray`` (Ray's own lookup)
``FLOR_RAY_RETRIES``           restarts of a Ray task whose worker died (3)
``FLOR_CAPTURE``               1/0: keep what the run prints (stdout, stderr, logging) (1)
``FLOR_CAPTURE_MAX_BYTES``     the most captured output one run keeps (33554432: 32 MiB)
``FLOR_TRACKERS``              1/0: also record what the script logs to TensorBoard, MLflow, W&B (1)
``FLOR_QUIET``                 1/0: say nothing at the end of a recorded run (0)
=============================  =========================================================

Internal variables (set by flor for its own child processes, or by tests):
``FLOR_RESUMED_FROM``, ``FLOR_RESUME_CHECKPOINT`` (``flor resume``), ``FLOR_REPLAY_PRELOAD``
(warm replay workers), ``FLOR_WORKER_LAUNCHED`` (when the executor started a worker),
``FLOR_CKPT_HANDOFF_HOLD`` (tests hold a handed-off writer).

>>> ckpt_budget()          # FLOR_CKPT_BUDGET unset
0.01
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import UsageError

DEFAULT_CKPT_BUDGET = 0.01
DEFAULT_HANDOFF_BYTES = 64 << 20
DEFAULT_SNAPSHOT_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_CAPTURE_MAX_BYTES = 32 << 20
_ON, _OFF = ("1", "true", "yes", "on", ""), ("0", "false", "no", "off")


def _raw(name: str, environ=None) -> str | None:
    raw = (os.environ if environ is None else environ).get(name)
    return raw if raw and raw.strip() else None


def int_setting(name: str, default: int | None, minimum: int, expected: str) -> int | None:
    """The whole number in the environment variable ``name`` (``default`` when unset or empty),
    refused with a one-line :class:`UsageError` unless it is a number of at least ``minimum``."""
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise UsageError(f"{name}={raw!r}: expected {expected}") from None
    if value < minimum:
        raise UsageError(f"{name}={raw!r}: expected {minimum} or more")
    return value


def switch_setting(name: str, default: bool) -> bool:
    """An on/off environment variable (1/0, true/false, yes/no, on/off)."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _OFF:
        return False
    if lowered in _ON:
        return True if lowered else default
    raise UsageError(f"{name}={raw!r}: expected 1 (on) or 0 (off)")


def ckpt_budget() -> float:
    """``FLOR_CKPT_BUDGET``: the fraction of training time that checkpoints may cost."""
    raw = _raw("FLOR_CKPT_BUDGET")
    if raw is None:
        return DEFAULT_CKPT_BUDGET
    try:
        budget = float(raw)
    except ValueError:
        raise UsageError(f"FLOR_CKPT_BUDGET={raw!r}: expected a fraction such as 0.01") from None
    if not 0 < budget <= 1:
        raise UsageError(f"FLOR_CKPT_BUDGET={raw!r}: expected a fraction in (0, 1], such as 0.01")
    return budget


def ckpt_period() -> int | None:
    """``FLOR_CKPT_PERIOD``: a fixed checkpoint period in outer iterations, or None (adaptive)."""
    return int_setting("FLOR_CKPT_PERIOD", None, 1, "a whole number of iterations")


# The default disk budget, a multiple of the largest raw checkpoint. Measured on the nanoGPT-shaped corpus case
# (benchmarks/disk_budget.py, docs/checkpoints.md) once checkpoints went before evaluations: 12x replayed its eval
# question at a median 30.2 % of the recording (24.4-44.5 %) against 24.6 % (16.3-29.0 %) for the code before at
# 20x, 0.056 above, just past the 0.05 allowed (10x, 8x, 6x further), so the default stays 20x. With the
# evaluation's period read from the source (checkpoints/periodic.py), two runs fit 60 MB at 4x (47.4 MB) and 6x
# took 68.6 MB, but 6x replayed the eval question at 54.8 % against 38.6 % for the code before at 20x in the same
# (loaded, provisional) pass: still 20x (docs/checkpoints.md, RESULTS.md's disk_budget_source).
DEFAULT_CKPT_DISK_TIMES = 20.0
DEFAULT_CKPT_DISK_CAP = 4 << 30  # the default's cap: a 1.5 GB state keeps two or three checkpoints, not 30 GB
DEFAULT_FULL_EVERY = 4  # at most 3 deltas to decode: restore time grows with the chain


@dataclass(frozen=True)
class DiskBudget:
    """A checkpoint disk budget: ``bytes``, or ``times`` the state's size (capped at ``cap``)."""

    bytes: int | None = None
    times: float | None = None
    cap: int | None = None
    text: str = ""

    def of(self, state_bytes: int) -> int | None:
        """The budget in bytes for a state of ``state_bytes`` (None: unbounded)."""
        if self.bytes is not None:
            return self.bytes
        if self.times is None:
            return None
        found = int(self.times * max(state_bytes, 1))
        return min(found, self.cap) if self.cap else found


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


def parse_bytes(name: str, raw: str, multiples: bool = False) -> DiskBudget:
    """``raw`` as a number of bytes (``500M``, ``2G``, ``123456``) or, with ``multiples``, a
    multiple of the state size (``20x``); a one-line UsageError otherwise."""
    import re

    text = raw.strip().lower()
    expected = "bytes such as 500M or 2G" + (", or a multiple of the state size such as 20x" if multiples else "")
    if multiples and text.endswith("x"):
        try:
            times = float(text[:-1])
        except ValueError:
            raise UsageError(f"{name}={raw!r}: expected {expected}") from None
        if not times > 0:
            raise UsageError(f"{name}={raw!r}: expected a multiple above 0, such as 20x")
        return DiskBudget(times=times, text=raw.strip())
    match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([a-z]*)", text)
    if not match or match.group(2) not in _UNITS:
        raise UsageError(f"{name}={raw!r}: expected {expected}")
    value = int(float(match.group(1)) * _UNITS[match.group(2)])
    if value <= 0:
        raise UsageError(f"{name}={raw!r}: expected more than 0 bytes")
    return DiskBudget(bytes=value, text=raw.strip())


def ckpt_disk() -> DiskBudget:
    """``FLOR_CKPT_DISK``: the checkpoint bytes one run may keep (default ``DEFAULT_CKPT_DISK_TIMES``
    times its state, at most 4 GiB)."""
    raw = _raw("FLOR_CKPT_DISK")
    if raw is None:
        return DiskBudget(times=DEFAULT_CKPT_DISK_TIMES, cap=DEFAULT_CKPT_DISK_CAP,
                          text=f"default {DEFAULT_CKPT_DISK_TIMES:g}x, at most 4 GiB")
    if raw.strip().lower() in ("none", "unbounded", "off"):
        return DiskBudget(text=raw.strip())
    return parse_bytes("FLOR_CKPT_DISK", raw, multiples=True)


def ckpt_disk_total() -> int | None:
    """``FLOR_CKPT_DISK_TOTAL``: the checkpoint bytes of the whole project (None: unbounded)."""
    raw = _raw("FLOR_CKPT_DISK_TOTAL")
    if raw is None or raw.strip().lower() in ("none", "unbounded", "off"):
        return None
    return parse_bytes("FLOR_CKPT_DISK_TOTAL", raw).bytes


def ckpt_compress() -> bool:
    """``FLOR_CKPT_COMPRESS``: whether checkpoint arrays are compressed where it pays."""
    return switch_setting("FLOR_CKPT_COMPRESS", True)


def ckpt_full_every() -> int:
    """``FLOR_CKPT_FULL_EVERY``: a standalone copy of each array every K checkpoints (1: no deltas)."""
    return int_setting("FLOR_CKPT_FULL_EVERY", DEFAULT_FULL_EVERY, 1, "a whole number of checkpoints such as 4")


def ckpt_handoff() -> bool:
    """``FLOR_CKPT_HANDOFF``: whether the last checkpoint of a big state may be handed off."""
    return switch_setting("FLOR_CKPT_HANDOFF", True)


def ckpt_handoff_bytes() -> int:
    """``FLOR_CKPT_HANDOFF_BYTES``: the smallest state whose last checkpoint is handed off."""
    return int_setting("FLOR_CKPT_HANDOFF_BYTES", DEFAULT_HANDOFF_BYTES, 0, "a number of bytes such as 67108864")


def snapshot_max_bytes() -> int:
    """``FLOR_SNAPSHOT_MAX_BYTES``: untracked files larger than this stay out of a code version."""
    return int_setting("FLOR_SNAPSHOT_MAX_BYTES", DEFAULT_SNAPSHOT_MAX_BYTES, 0, "a number of bytes such as 5242880")


def handoff_hold() -> str | None:
    """``FLOR_CKPT_HANDOFF_HOLD`` (tests): a handed-off writer waits until this file exists."""
    return _raw("FLOR_CKPT_HANDOFF_HOLD")


def resumed_from() -> int | None:
    """``FLOR_RESUMED_FROM``: the run id that ``flor resume`` continues in this process."""
    raw = _raw("FLOR_RESUMED_FROM")
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise UsageError("FLOR_RESUMED_FROM is malformed; start the run with `flor resume RUN`")
    return int(raw)


def resume_checkpoint() -> dict | None:
    """``FLOR_RESUME_CHECKPOINT``: the checkpoint ``flor resume`` asked this process to continue from."""
    raw = _raw("FLOR_RESUME_CHECKPOINT")
    if raw is None:
        return None
    import json

    try:
        point = json.loads(raw)
        pickled = point.get("pickled")
        return {"iteration": int(point["iteration"]), "point": str(point["point"]), "location": str(point["location"]),
                "pickled": None if pickled is None else [str(name) for name in pickled]}
    except (ValueError, KeyError, TypeError):
        raise UsageError("FLOR_RESUME_CHECKPOINT is malformed; start the run with `flor resume RUN`") from None


def replay_preload() -> list[str]:
    """``FLOR_REPLAY_PRELOAD``: modules a warm replay worker imports before its task arrives."""
    return [name for name in (_raw("FLOR_REPLAY_PRELOAD") or "").split(",") if name]


def replay_confinement() -> str:
    """``FLOR_REPLAY_CONFINE``: how replay keeps old code's writes away from the user's files:
    ``namespace`` (a private view of the file system; the default where the kernel allows it),
    ``copy`` (a workspace of copies, writes elsewhere refused by Landlock) or ``none`` (a
    workspace of copies and nothing that stops a write by absolute path: only on request, see
    docs/reliability.md)."""
    raw = (_raw("FLOR_REPLAY_CONFINE") or "").strip().lower()
    if raw in ("", "auto"):
        return "auto"
    if raw not in ("namespace", "copy", "none"):
        raise UsageError(f"FLOR_REPLAY_CONFINE={raw!r}: expected namespace, copy, none or auto")
    return raw


def replay_isolation() -> bool:
    """``FLOR_REPLAY_ISOLATE``: run each replayed statement as an observer whose random draws, mode
    switches and buffer updates are put back (docs/hindsight.md); 0 runs them bare, for measuring."""
    return switch_setting("FLOR_REPLAY_ISOLATE", True)


def checkpoint_store(environ=None) -> str | None:
    """``FLOR_CHECKPOINT_STORE``: an fsspec URL (``s3://bucket/prefix``) that keeps a copy of every
    checkpoint and serves them to replay workers on other machines (unset: ``.flor/`` only).
    ``environ``: the environment a task will run with, when it is not this process's own."""
    raw = (_raw("FLOR_CHECKPOINT_STORE", environ) or "").strip()
    if not raw:
        return None
    if "://" not in raw:
        raise UsageError(f"FLOR_CHECKPOINT_STORE={raw!r}: expected a URL such as s3://bucket/prefix")
    return raw


def store_check_s() -> int:
    """``FLOR_STORE_CHECK_S``: how long the check of ``FLOR_CHECKPOINT_STORE`` when a run begins
    may take (endpoint and credentials); past it the store counts as unreachable for this run."""
    return int_setting("FLOR_STORE_CHECK_S", 5, 1, "a number of seconds such as 5")


def upload_wait_s() -> int:
    """``FLOR_UPLOAD_WAIT_S``: how long a run waits at its end for checkpoint uploads still in
    flight; what remains is named in one line and stays in ``.flor/`` (``flor doctor --repair``
    uploads it)."""
    return int_setting("FLOR_UPLOAD_WAIT_S", 5, 0, "a number of seconds such as 5")


def query_max_s() -> int:
    """``FLOR_QUERY_MAX_S``: how long one ``flor query`` statement may run."""
    return int_setting("FLOR_QUERY_MAX_S", 60, 1, "a number of seconds such as 60")


def query_max_bytes() -> int:
    """``FLOR_QUERY_MAX_BYTES``: the largest result of ``flor query`` (about, in memory)."""
    return int_setting("FLOR_QUERY_MAX_BYTES", 256 << 20, 1, "a number of bytes such as 268435456")


def executor() -> str:
    """``FLOR_EXECUTOR``: where replay segments run, ``local`` (the default) or ``ray``."""
    raw = (_raw("FLOR_EXECUTOR") or "local").strip().lower()
    if raw not in ("local", "ray"):
        raise UsageError(f"FLOR_EXECUTOR={raw!r}: expected local or ray")
    return raw


def ray_address() -> str | None:
    """``FLOR_RAY_ADDRESS``: the Ray cluster of ``--executor ray`` (default: Ray's own lookup)."""
    return _raw("FLOR_RAY_ADDRESS") or None


def ray_retries() -> int:
    """``FLOR_RAY_RETRIES``: how often a Ray task whose worker died is started again (3)."""
    raw = _raw("FLOR_RAY_RETRIES")
    if raw is None or not raw.strip():
        return 3
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise UsageError(f"FLOR_RAY_RETRIES={raw!r}: expected a whole number, 0 or more")
    return value


def capture() -> bool:
    """``FLOR_CAPTURE``: keep what a recording run prints (1, the default) or not (0)."""
    return switch_setting("FLOR_CAPTURE", True)


def capture_max_bytes() -> int:
    """``FLOR_CAPTURE_MAX_BYTES``: the most captured output (text bytes) one run keeps."""
    return int_setting("FLOR_CAPTURE_MAX_BYTES", DEFAULT_CAPTURE_MAX_BYTES, 0, "a number of bytes such as 33554432")


def argparse_capture() -> bool:
    """``FLOR_ARGPARSE``: record the script's argparse options as args (1, the default) or not (0)."""
    return switch_setting("FLOR_ARGPARSE", True)


# -- what flor sets for its own child processes (read back by the functions above) ----------------


def worker_env(preload: list[str], confinement: str) -> dict[str, str]:
    """The settings a replay worker starts with: read back there by :func:`replay_preload` and
    :func:`replay_confinement`."""
    return {"FLOR_REPLAY_PRELOAD": ",".join(preload), "FLOR_REPLAY_CONFINE": confinement}


def worker_launched_env(when: float) -> dict[str, str]:
    """When the executor started a replay worker (``time.time()``): read back there by
    :func:`worker_launched`, so the worker can say how long its interpreter took to start."""
    return {"FLOR_WORKER_LAUNCHED": repr(when)}


def worker_launched() -> float | None:
    """``FLOR_WORKER_LAUNCHED`` (set by the executor, see :func:`worker_launched_env`), or None."""
    try:
        return float(_raw("FLOR_WORKER_LAUNCHED") or "")
    except ValueError:
        return None


def checkpoint_store_env() -> dict[str, str]:
    """The checkpoint store, and how to reach it (AWS_*, FSSPEC_*), as this machine knows them:
    what a node of a cluster needs to read the same checkpoints (docs/scale-out.md)."""
    return {k: v for k, v in os.environ.items() if k == "FLOR_CHECKPOINT_STORE" or k.startswith(("AWS_", "FSSPEC_"))}


def resume_env(run_id: int, checkpoint: dict) -> dict[str, str]:
    """What ``flor resume`` tells the script it restarts: read back there by :func:`resumed_from`
    and :func:`resume_checkpoint`."""
    import json

    return {"FLOR_RESUMED_FROM": str(run_id), "FLOR_RESUME_CHECKPOINT": json.dumps(checkpoint)}


def trackers() -> bool:
    """FLOR_TRACKERS: whether values the script logs through SummaryWriter.add_scalar(s),
    mlflow.log_metric(s) and wandb.log are also recorded by flor (flor/trackers)."""
    return switch_setting("FLOR_TRACKERS", True)


def quiet() -> bool:
    """FLOR_QUIET: whether a recorded run ends without its one line on stderr (what was kept)."""
    return switch_setting("FLOR_QUIET", False)
