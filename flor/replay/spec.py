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
from dataclasses import asdict, dataclass, field, fields

from ..errors import ReplayError
from .plan import Segment


@dataclass
class WorkerSpec:
    """One segment of one run, as a worker executes it."""

    run_id: int
    tstamp: str
    root: str  # the user's project (its files are read, never written)
    filename: str  # the script, relative to the root
    cwd: str  # the run's working directory, relative to the root
    argv: list[str]
    names: list[str]  # the new names to store
    recorded_names: list[str]  # names the run recorded: compared, not stored
    outer_name: str | None
    checkpoints: dict[int, dict[str, str]]  # outer iteration -> point -> location
    segment: Segment
    records_path: str  # the run's recorded args, random state, loop instances and values (JSON)
    run_tree: str  # the run's code version, today's statements placed in it
    scratch: str  # an empty folder for this worker's scratch layers
    confinement: str  # "namespace" (a private view), "copy" (copies, Landlock-guarded) or "none" (copies, unguarded)
    hide: list[str] = field(default_factory=list)  # today's code files the run's version did not have
    main_module: str | None = None  # the run was started as `python -m main_module`
    numeric: dict = field(default_factory=dict)  # the run's numeric environment (threads, flags, dtype)
    accept_drift: bool = False  # store values even where recorded values drifted
    pickled: dict[str, list | None] = field(default_factory=dict)  # checkpoint location -> objects kept as pickles
    digests: dict[str, str | None] = field(default_factory=dict)  # checkpoint location -> its manifest's sha256
    # The slice of memoized iterations (slice.py, slice_run.py): statements skipped by (line, column),
    # the names and unregistered objects the kept ones change, and how many iterations verify it.
    slice_skip: list = field(default_factory=list)
    slice_iterations: list[int] = field(default_factory=list)  # the memoized iterations that may run it (plan.sliceable)
    slice_names: list[str] = field(default_factory=list)
    slice_objects: list[str] = field(default_factory=list)
    slice_breaks: list = field(default_factory=list)  # (line, column) of the kept `break`s of the outer loop
    slice_unrestored: list[str] = field(default_factory=list)  # registered objects a slice-only iteration does not restore
    slice_last: int = -1  # the recording's last outer iteration (where a `break` of the slice may end the loop)
    verify_slice: int = 2
    # Variables set in the task's own process before the script runs: a job rank's identity and its
    # segment's rendezvous (replay/job.py). Not the worker's start environment, so that one warm
    # gang serves every segment and attempt, each with a fresh rendezvous.
    environ: dict[str, str] = field(default_factory=dict)

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
            names = {f.name for f in fields(cls)}
            unknown = sorted(set(data) - names)
            if unknown:
                raise KeyError(", ".join(unknown))
            return cls(**data)
        except (ValueError, KeyError, TypeError) as exc:
            raise ReplayError(f"a replay worker got a malformed spec ({exc}); run `flor replay` again") from exc
