"""The numeric environment of a run: what decides its floating-point arithmetic besides its code.

Float reductions give different bits with a different number of threads, and so do other
settings: deterministic algorithms, cuDNN's choices, the default dtype, TF32 matmuls. A replay
that is to give the recorded values exactly must run with the recorded ones, so the run records
them where it begins (:func:`capture`) and every replay worker sets them before the old code runs
(:func:`apply`). The environment variables that size thread pools are recorded too; the replay
executor starts its workers with them.

>>> capture()["threads"]           # doctest: +SKIP
2
"""

from __future__ import annotations

import os

from .imported import imported

# Variables that size the thread pools of torch, OpenMP and the BLAS libraries numpy uses.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS")


def cores() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def capture() -> dict:
    """The numeric environment of this process now (torch's part only when torch is imported)."""
    found: dict = {"env": {name: os.environ.get(name) for name in THREAD_VARIABLES}, "cores": cores()}
    torch = imported("torch")
    if torch is None or not hasattr(torch, "get_num_threads"):
        return found
    found.update(
        threads=torch.get_num_threads(),
        interop_threads=torch.get_num_interop_threads(),
        deterministic=torch.are_deterministic_algorithms_enabled(),
        deterministic_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
        default_dtype=str(torch.get_default_dtype()).replace("torch.", ""),
        matmul_precision=torch.get_float32_matmul_precision(),
    )
    backends = getattr(torch, "backends", None)
    cudnn = getattr(backends, "cudnn", None)
    if cudnn is not None:
        found.update(cudnn_deterministic=bool(cudnn.deterministic), cudnn_benchmark=bool(cudnn.benchmark))
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and cuda.is_available() and cuda.is_initialized():
        found["device"] = cuda.get_device_name(cuda.current_device())
    else:
        found["device"] = "cpu"
    return found


def threads(numeric: dict) -> int:
    """The threads a run computed with (1 when it recorded nothing)."""
    return max(1, int(numeric.get("threads") or 1))


def apply(numeric: dict) -> None:
    """Set what :func:`capture` recorded, in this process (before the old code runs)."""
    if not numeric or "threads" not in numeric:
        return
    import torch

    if torch.get_num_threads() != numeric["threads"]:
        torch.set_num_threads(int(numeric["threads"]))
    interop = numeric.get("interop_threads")
    if interop and torch.get_num_interop_threads() != interop:
        try:
            torch.set_num_interop_threads(int(interop))
        except RuntimeError:  # the pool already ran work; inter-op threads do not split one op
            pass
    # Only what differs is set: use_deterministic_algorithms imports torch's compiler (1.2 s).
    deterministic = (bool(numeric.get("deterministic")), bool(numeric.get("deterministic_warn_only")))
    if deterministic != (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()):
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
    dtype = numeric.get("default_dtype")
    if dtype and str(torch.get_default_dtype()) != f"torch.{dtype}":
        torch.set_default_dtype(getattr(torch, dtype))
    precision = numeric.get("matmul_precision")
    if precision and torch.get_float32_matmul_precision() != precision:
        torch.set_float32_matmul_precision(precision)
    if "cudnn_deterministic" in numeric:
        torch.backends.cudnn.deterministic = numeric["cudnn_deterministic"]
        torch.backends.cudnn.benchmark = numeric["cudnn_benchmark"]


def thread_env(numeric: dict) -> dict[str, str | None]:
    """The thread-pool variables a worker must start with to compute as the run did."""
    return dict(numeric.get("env") or {name: None for name in THREAD_VARIABLES})
