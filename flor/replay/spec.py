"""WorkerSpec: everything one replay worker needs to execute one segment of one run.

The session builds it, the executor hands it over as JSON (a file today; the payload of a cluster
task later), and the worker reads it back. One typed object, so that the three agree on every
field and a missing one fails at once with its name.

>>> spec = WorkerSpec.from_json(text)                    # doctest: +SKIP
>>> spec.segment.actions
{0: 'memo', 1: 'memo'}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from ..errors import ReplayError
from .plan import Segment


@dataclass
class WorkerSpec:
    """One segment of one run, as a worker executes it."""

    run_id: int
    tstamp: str
    root: str  # the user's project (its files are read, never written)
    db: str  # the project's store
    workspace: str  # the run's code version laid out for this replay
    filename: str  # the script, relative to the root
    cwd: str  # the run's working directory, relative to the root
    argv: list[str]
    names: list[str]  # the new names to store
    recorded_names: list[str]  # names the run recorded: compared, not stored
    outer_name: str | None
    checkpoints: dict[int, dict[str, str]]  # outer iteration -> point -> location
    segment: Segment
    result_path: str
    progress_path: str

    def to_json(self) -> str:
        """The spec as JSON text (integer keys become strings, as JSON requires)."""
        data = asdict(self)
        data["checkpoints"] = {str(k): v for k, v in self.checkpoints.items()}
        data["segment"]["actions"] = {str(k): v for k, v in self.segment.actions.items()}
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> "WorkerSpec":
        """Read a spec that :meth:`to_json` wrote."""
        try:
            data = json.loads(text)
            segment = dict(data["segment"])
            segment["actions"] = {int(k): v for k, v in segment["actions"].items()}
            data["segment"] = Segment(**segment)
            data["checkpoints"] = {int(k): v for k, v in data["checkpoints"].items()}
            missing = [f.name for f in fields(cls) if f.name not in data]
            if missing:
                raise KeyError(", ".join(missing))
            return cls(**{f.name: data[f.name] for f in fields(cls)})
        except (ValueError, KeyError, TypeError) as exc:
            raise ReplayError(f"a replay worker got a malformed spec ({exc}); run `flor replay` again") from exc
