"""flor checkpoint export: a run's registered objects at one iteration, written to a file that
serving code or a model registry reads, without flor.

``.safetensors``: every tensor and array of the registered objects' state, named
``OBJECT.PATH`` (``model.fc.weight``, ``optimizer.state.0.exp_avg``), or with ``--object NAME``
that object's own keys (``net.load_state_dict(safetensors.torch.load_file(path))``). The header
metadata says where it came from: ``flor.tstamp``, ``flor.iteration``, ``flor.code_commit``,
``flor.projid``, ``flor.objects``; state leaves that are not tensors (an optimizer's ``lr``) go
into ``flor.extras`` as JSON, so nothing is dropped silently.

``.pt`` (``torch.save``): ``{OBJECT: state, ..., "flor": metadata}``, or with ``--object`` that
object's state alone (load_state_dict-ready). Written to a temporary name and renamed: a failed
export never leaves a half file where the model should be.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

FORMATS = (".safetensors", ".pt")


@dataclass(frozen=True)
class ExportedCheckpoint:
    path: Path
    tstamp: str
    iteration: int
    objects: list[str]
    tensors: int
    extras: int  # state leaves kept as JSON in the metadata (safetensors) rather than as tensors


def export_checkpoint(run: str, to: str, *, iteration: int | None = None, obj: str | None = None,
                      trusted: bool = False) -> ExportedCheckpoint:
    """Write the state of ``run``'s registered objects at ``iteration`` (default: its last
    checkpoint) to ``to`` (``.safetensors`` or ``.pt``)."""
    from ..reading.query import project_store
    from .restore import load_checkpoint

    path = Path(to)
    if path.suffix not in FORMATS:
        raise UsageError(f"--to {to}: name a .safetensors or .pt file")
    if not path.parent.is_dir():
        raise UsageError(f"--to {to}: the folder {path.parent} does not exist")
    checkpoint = load_checkpoint(run, iteration, trusted=trusted)
    store = project_store()
    try:
        row = store.run(checkpoint.run_id)
    finally:
        store.close()
    names = list(checkpoint.keys())
    if obj is not None:
        if obj not in names:
            raise UsageError(f"the checkpoint has no object {obj!r}; it has {', '.join(names) or 'none'}")
        names = [obj]
    states = {name: checkpoint[name] for name in names}
    metadata = {"flor.tstamp": row.tstamp, "flor.iteration": str(checkpoint.iteration),
                "flor.code_commit": row.code_commit or "unversioned", "flor.projid": row.projid,
                "flor.objects": json.dumps(names)}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if path.suffix == ".safetensors":
            tensors, extras = _flatten(states[obj] if obj else states, "")
            _save_safetensors(tensors, {**metadata, "flor.extras": json.dumps(extras)}, temporary)
            counts = (len(tensors), len(extras))
        else:
            import torch

            torch.save(states[obj] if obj else {**states, "flor": metadata}, temporary)
            counts = (sum(1 for _ in _leaves(states)), 0)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return ExportedCheckpoint(path, row.tstamp, checkpoint.iteration, names, *counts)


def _is_array(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, (int, float))


def _leaves(value, prefix: str = ""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{prefix}{key}.")
    elif isinstance(value, (list, tuple)) and any(_is_array(v) or isinstance(v, (dict, list, tuple)) for v in value):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{prefix}{index}.")
    else:
        yield prefix[:-1], value


def _flatten(state, prefix: str) -> tuple[dict, dict]:
    """Tensors by dotted path, and the other leaves (JSON-able, else their repr) by dotted path."""
    tensors, extras = {}, {}
    for key, value in _leaves(state, prefix):
        if _is_array(value):
            tensors[key] = value
        else:
            try:
                json.dumps(value)
                extras[key] = value
            except (TypeError, ValueError):
                extras[key] = repr(value)
    return tensors, extras


def _save_safetensors(tensors: dict, metadata: dict, path: Path) -> None:
    from ..environment.imported import imported

    torch = imported("torch")
    if torch is None and any(type(t).__module__.startswith("torch") for t in tensors.values()):
        import torch
    if torch is not None:
        from safetensors.torch import save_file

        # Own, contiguous CPU copies: safetensors refuses tensors that share memory (tied weights).
        ready = {k: (v if isinstance(v, torch.Tensor) else torch.from_numpy(v.copy())).detach().cpu().contiguous().clone()
                 for k, v in tensors.items()}
    else:
        import numpy as np
        from safetensors.numpy import save_file

        ready = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    save_file(ready, str(path), metadata=metadata)
