"""Values into Weights & Biases. A W&B run's history only moves forward (a finished run cannot
take new points at old steps), so each flor run's values go to a new W&B run *linked* to the one
the script logged to: same entity and project, named ``flor <tstamp>``, job type ``flor-export``,
its config holding the run's args, ``flor.tstamp``, ``flor.code_commit`` and ``flor.linked_run``
(the original run's path). Steps are the tracker's steps, as in the original run, so the two
line up in W&B's charts. Each export makes a new linked run (W&B cannot tell what it already
holds without its server); WANDB_MODE=offline keeps it on disk for ``wandb sync``.
"""

from __future__ import annotations

from ..errors import UsageError
from .points import RunPoints


def write(found: RunPoints, *, project: str | None = None, directory: str | None = None) -> tuple[str, int]:
    """Write ``found``'s points to a new linked W&B run; returns (its path, points written)."""
    try:
        import wandb
    except ImportError:
        raise UsageError("flor export --to wandb needs wandb: pip install wandb") from None
    noted = found.trackers.get("wandb") or {}
    linked = noted.get("path") or ""
    parts = linked.split("/")
    entity = parts[0] if len(parts) == 3 else None
    project = project or (parts[-2] if len(parts) >= 2 else None) or "flor"
    run = found.run
    config = {**{str(k): v for k, v in found.args.items()}, "flor.tstamp": run.tstamp,
              "flor.code_commit": run.code_commit or "unversioned", "flor.linked_run": linked or None}
    target = wandb.init(entity=entity, project=project, name=f"flor {run.tstamp}", job_type="flor-export",
                        config=config, tags=["flor"], dir=directory, reinit="create_new")
    try:
        by_step: dict[int, dict] = {}
        for point in found.points:
            by_step.setdefault(point.step, {})[point.name] = point.value
        for step in sorted(by_step):  # W&B's steps only increase
            target.log(by_step[step], step=step)
        where = f"wandb run {target.path}"
    finally:
        target.finish()
    return where, len(found.points)
