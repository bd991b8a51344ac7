"""Keep a replay worker from importing torch's compiler when the script never compiles.

torch marks some of its functions with ``torch._disable_dynamo`` (``Optimizer.add_param_group``,
``zero_grad``, ``state_dict``, ``load_state_dict``, the optimizers' step kernels, ...). The mark
imports ``torch._dynamo`` at the first call, to wrap the function so that a compiled region does
not trace into it. Creating any optimizer calls ``add_param_group``, so every training script pays
that import: 1.2 s on our 2-core machine, as much as ``import torch`` itself, and most of what a
memoized replay costs.

Until ``torch._dynamo`` is imported nothing can be compiling (``torch.compile`` imports it), and
the wrapper it would build only switches off a frame hook that is not installed. So a function
called while ``torch._dynamo`` is absent may run unwrapped. :func:`defer_dynamo_import` gives each
marked function a stand-in for that wrapper which calls the function directly while
``torch._dynamo`` is absent and builds the real wrapper, exactly as torch would, once it is
present. Nothing changes for a script that compiles; a script that never does skips the import.

``DistributedDataParallel(...)`` reads the compiler too, in its constructor:
``torch._dynamo.utils.get_optimize_ddp_mode() == "python_reducer"``, another 1-2 s of one core
per gang on our machine (issue 28: half of a job gang's imports). That mode comes from
``torch._dynamo.config.optimize_ddp``, a plain default (``True``: ``"ddp_optimizer"``) that no
environment variable sets, so while ``torch._dynamo`` is absent nobody can have changed it and
the answer is the default's. :func:`defer_ddp_probe` puts a stand-in at ``torch._dynamo`` that
gives that one answer while the compiler is absent and imports the compiler for anything else
(its first other use, or an ``import torch._dynamo``, replaces the stand-in with the real module).

``optimizer.step()`` reads the compiler at every call: torch wraps each optimizer's ``step`` in
``_use_grad_for_differentiable``, whose wrapper runs ``import torch._dynamo`` only to call
``torch._dynamo.graph_break()`` before and after the step, a marker for the tracer that does
nothing when nothing traces (its body is a docstring). A worker re-executing a step paid the
compiler's import there (1.2-1.9 s here). :func:`defer_optimizer_import` gives those wrappers a
body that, while ``torch._dynamo`` is absent, does what torch's does less the two markers, and
once it is present runs torch's own (so a script that compiles later is traced as before).
"""

from __future__ import annotations

import gc
import importlib
import sys
import types


def defer_dynamo_import() -> int:
    """Give the ``_disable_dynamo`` functions of the torch already imported a lazy wrapper.

    Returns how many functions got one; 0 when torch is not imported, ``torch._dynamo`` already is,
    or this torch marks its functions differently than we expect (then nothing is changed).
    """
    compile_module = sys.modules.get("torch._compile")
    if compile_module is None or "torch._dynamo" in sys.modules:
        return 0
    try:
        marked_code = compile_module._disable_dynamo(lambda: None).__code__
    except Exception:  # noqa: BLE001 - another torch: leave it as it is
        return 0
    if marked_code.co_freevars != ("fn", "recursive"):
        return 0
    count = 0
    # The marked functions live in class bodies and closures too, so search every function
    # (about 170,000 objects after `import torch`: 35 ms, against 1.2 s for the import).
    for obj in gc.get_objects():
        if type(obj) is not types.FunctionType or obj.__code__ is not marked_code:
            continue
        try:
            fn, recursive = (cell.cell_contents for cell in obj.__closure__)
            if getattr(fn, "__dynamo_disable", None) is None:
                fn.__dynamo_disable = _lazy_disable(fn, recursive)
                count += 1
        except (ValueError, AttributeError, TypeError):  # an empty cell, a callable without attributes
            continue  # torch imports the compiler for this one, as it would anyway
    return count


def _lazy_disable(fn, recursive: bool):
    """What torch caches as ``fn.__dynamo_disable``: ``fn`` itself until ``torch._dynamo`` is
    imported, then (and cached from then on) the wrapper torch builds."""

    def call(*args, **kwargs):
        dynamo = sys.modules.get("torch._dynamo")
        disable = getattr(dynamo, "disable", None)
        if disable is None:
            return fn(*args, **kwargs)
        wrapped = disable(fn, recursive, wrapping=False)
        fn.__dynamo_disable = wrapped
        return wrapped(*args, **kwargs)

    return call


# torch._dynamo.utils.get_optimize_ddp_mode() for config.optimize_ddp's default (True).
_DEFAULT_DDP_MODE = "ddp_optimizer"


def _real_dynamo():
    return importlib.import_module("torch._dynamo")


class _LazyUtils:
    """``torch._dynamo.utils`` as DDP's constructor reads it, before the compiler is imported."""

    def get_optimize_ddp_mode(self) -> str:
        if "torch._dynamo" in sys.modules:  # imported since: the config may have been changed
            return _real_dynamo().utils.get_optimize_ddp_mode()
        return _DEFAULT_DDP_MODE

    def __getattr__(self, name: str):
        return getattr(_real_dynamo().utils, name)


class _LazyDynamo(types.ModuleType):
    """What ``torch._dynamo`` names until the compiler is imported (the module docstring)."""

    def __getattr__(self, name: str):
        if name == "utils" and "torch._dynamo" not in sys.modules:
            return _LazyUtils()
        return getattr(_real_dynamo(), name)


def defer_ddp_probe() -> bool:
    """Put the stand-in at ``torch._dynamo`` (see the module docstring); False when torch is not
    imported, the compiler already is, or this torch's DDP reads its mode elsewhere."""
    torch = sys.modules.get("torch")
    if torch is None or "torch._dynamo" in sys.modules or "_dynamo" in vars(torch):
        return False
    distributed = sys.modules.get("torch.nn.parallel.distributed")  # imported by a job's gang (replay/job.py)
    if distributed is None:
        return False
    try:
        import inspect

        if "torch._dynamo.utils.get_optimize_ddp_mode()" not in inspect.getsource(distributed.DistributedDataParallel.__init__):
            return False  # another torch: leave DDP to import the compiler as it would
    except Exception:  # noqa: BLE001 - no source, no torch.distributed: nothing changed
        return False
    torch._dynamo = _LazyDynamo("torch._dynamo")
    return True


def _lazy_use_grad_factory(func):
    """Only its inner function's code is used: it replaces the code of torch's ``_use_grad``
    wrappers (same free variable, ``func``; run with torch.optim.optimizer's globals, where
    ``torch`` is the module torch). With the compiler present it is torch's body as is."""

    def _use_grad(*args, **kwargs):
        dynamo = None
        if "torch._dynamo" in __import__("sys").modules:
            __import__("torch._dynamo")  # not `import torch._dynamo`: that would make `torch` a local name
            dynamo = torch._dynamo  # noqa: F821 - torch.optim.optimizer's global
        self = args[0]
        prev_grad = torch.is_grad_enabled()  # noqa: F821
        try:
            torch.set_grad_enabled(self.defaults["differentiable"])  # noqa: F821
            if dynamo is not None:
                dynamo.graph_break()
            ret = func(*args, **kwargs)
        finally:
            if dynamo is not None:
                dynamo.graph_break()
            torch.set_grad_enabled(prev_grad)  # noqa: F821
        return ret

    return _use_grad


# torch's wrapper, line by line (comments and blank lines aside): another torch is left alone.
_USE_GRAD_SOURCE = [
    "def _use_grad_for_differentiable(func: Callable[_P, _T]) -> Callable[_P, _T]:",
    "def _use_grad(*args: _P.args, **kwargs: _P.kwargs) -> _T:",
    "import torch._dynamo",
    "self = cast(Optimizer, args[0])  # assume first positional arg is `self`",
    "prev_grad = torch.is_grad_enabled()",
    "try:",
    'torch.set_grad_enabled(self.defaults["differentiable"])',
    "torch._dynamo.graph_break()",
    "ret = func(*args, **kwargs)",
    "finally:",
    "torch._dynamo.graph_break()",
    "torch.set_grad_enabled(prev_grad)",
    "return ret",
    "functools.update_wrapper(_use_grad, func)",
    "return _use_grad",
]


def defer_optimizer_import() -> int:
    """Give torch's optimizers' ``step`` wrappers the body above (the module docstring). Returns how
    many wrappers got it; 0 when torch.optim is not imported, the compiler already is, or this
    torch's wrapper is not the one we know (then nothing is changed)."""
    optimizer = sys.modules.get("torch.optim.optimizer")
    if optimizer is None or "torch._dynamo" in sys.modules:
        return 0
    try:
        import inspect

        factory = optimizer._use_grad_for_differentiable
        source = inspect.getsource(factory)
        code = factory(lambda *args, **kwargs: None).__code__
    except Exception:  # noqa: BLE001 - another torch: leave it as it is
        return 0
    lines = [line.strip() for line in source.splitlines() if line.strip() and not line.strip().startswith("#")]
    if (code.co_freevars != ("func",) or getattr(optimizer, "torch", None) is not sys.modules.get("torch")
            or lines != _USE_GRAD_SOURCE):
        return 0
    replacement = _lazy_use_grad_factory.__code__.co_consts
    replacement = next(c for c in replacement if isinstance(c, types.CodeType) and c.co_name == "_use_grad")
    count = 0
    for obj in gc.get_objects():
        if type(obj) is types.FunctionType and obj.__code__ is code:
            obj.__code__ = replacement
            count += 1
    return count
