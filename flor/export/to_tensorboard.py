"""Values into TensorBoard: scalar summaries in a new event file (``*.flor``) in the log dir
of the run's ``SummaryWriter`` (as noted at record time), else in ``LOG_DIR/<tstamp>`` (default
``flor-tensorboard/<tstamp>`` under the project). TensorBoard merges every event file of a log
dir, so hindsight values appear beside the recorded curves. A (tag, step) that the log dir
already holds is not written again, so exporting twice adds nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import UsageError
from .points import RunPoints


def write(found: RunPoints, *, log_dir: str | None = None, root: Path) -> tuple[str, int]:
    """Write ``found``'s points; returns (where: the log dir, how many scalars were written)."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        raise UsageError("flor export --to tensorboard needs tensorboard: pip install tensorboard") from None
    noted = (found.trackers.get("tensorboard") or {}).get("log_dir")
    if log_dir is not None:
        target = Path(log_dir) / found.run.tstamp.replace(":", "-")
    elif noted:
        target = Path(noted)
    else:
        target = root / "flor-tensorboard" / found.run.tstamp.replace(":", "-")
    have: set = set()
    if target.is_dir():
        existing = EventAccumulator(str(target), size_guidance={"scalars": 0})
        existing.Reload()
        for tag in existing.Tags().get("scalars", []):
            have |= {(tag, event.step) for event in existing.Scalars(tag)}
    fresh = [p for p in found.points if (p.name, p.step) not in have]
    if not fresh:
        return str(target), 0
    target.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(target), filename_suffix=".flor")
    try:
        wall = time.time()
        for point in fresh:
            summary = Summary(value=[Summary.Value(tag=point.name, simple_value=point.value)])
            writer.add_event(Event(wall_time=wall, step=point.step, summary=summary))
    finally:
        writer.close()
    return str(target), len(fresh)
