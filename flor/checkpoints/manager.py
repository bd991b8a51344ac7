"""RecordManager: takes checkpoints of a recording run at the points the outer loop reports.

It asks the policy whether an iteration is due, snapshots the registered objects, the random
state and the small variables of the nested loop (``variables``), and hands the snapshot to
the background writer. The writer reports back; only then is the checkpoint listed in the store,
as local; with ``FLOR_CHECKPOINT_STORE`` set, the uploader (``upload.py``) then copies it there
and marks it uploaded. Every look at a user object goes through ``probe``: a failure leaves the
object out, never raises into training.
"""

from __future__ import annotations

import time

from ..environment import rng, settings
from . import iterators, statehash
from ..errors import FlorError
from ..messages import warn
from . import handoff
from .hooks import Hooks
from .periodic import SourceLearner
from .policy import Policy
from .probe import OBJECT, VARIABLE, Probes
from .snapshot import Snapshotter, gradients, has_state_dict, object_state, pickled_objects, state_size, tree_size
from .variables import (
    capture, capture_globals, changed, fingerprint, gradients_needed, lookup, loop_effect, loop_names, script_mentions,
)
from .remote import remote_store
from .writer import Encoding, Job, Writer, Written

FINISH_TIMEOUT_S = 600.0
AUTO_STATE_BYTES = 256 << 20  # the largest unregistered object kept on its own


class RecordManager(Hooks):
    """Checkpointing for a recording run."""

    def __init__(self, run, objects: dict[str, object]) -> None:
        self.run = run
        self.objects = objects
        self.policy = Policy()
        self.handoff_bytes = handoff.min_bytes()  # read now: a bad setting stops before training
        self.encoding = Encoding(settings.ckpt_compress(), settings.ckpt_full_every())
        self.disk_total = settings.ckpt_disk_total()  # the project's bound: older runs thinned at the end
        self.snapshotter = Snapshotter()
        self.probes = Probes(run)
        self.writer: Writer | None = None
        self.total: int | None = None
        self.index: int | None = None
        self.iteration_started = 0.0
        self.nested_seen = False
        self.last_checkpointed: int | None = None
        self.last_point: str | None = None
        self.held = None  # the checkpoint of an iteration that broke out of the loop, until the block is left
        self.skipped = 0
        self.failures: list[str] = []
        self.active = False
        self.outer_frame = None
        self.outer_names: tuple[str, ...] | None = None
        self.periodic: SourceLearner | None = None  # reads the loop's periodic branches (periodic.py)
        self.before_nested: dict | None = None
        self.iterators_said: set[str] = set()
        self.lacking: set[int] = set()  # iterations whose checkpoint lacks a data iterator
        # A framework drives the loops (flor.integrations): no user frame holds their variables;
        # what the loops change is in the registered objects.
        self.frameless = False
        self.uploader = None
        self.not_uploaded: set[tuple] = set()  # checkpoints listed as local only (store down, failed, behind)
        self._upload_warned = False

    # -- hooks from Run.loop ----------------------------------------------------------------

    def outer_loop_started(self, run, total, frame):
        if self.active:
            return
        self.active = True
        self.total = total
        self.policy.total = total
        if self.frameless:
            self.outer_frame, self.outer_names = None, ()
            return
        self.outer_frame = frame
        self.outer_names = loop_names(frame) if frame is not None else None
        self.periodic = self._guarded(SourceLearner.of, frame) if frame is not None else None
        self.policy.source_pending = self.periodic is not None

    def outer_iteration_started(self, run, index):
        if not self.active:
            return
        self.index = index
        self.iteration_started = time.perf_counter()
        self.nested_seen = False
        self.before_nested = None

    def nested_loop_started(self, run):
        if not self.active or self.nested_seen or self.index is None or self.frameless:
            return
        # What the loop changes and flor does not keep is found by comparing before and after.
        self.before_nested = fingerprint(self.outer_frame, self.run.root, tuple(self.objects.values()),
                                         on_error=self._variable_failed("inspecting it"))

    def nested_loop_ended(self, run, frame):
        if not self.active or self.nested_seen or self.index is None:
            return
        self.nested_seen = True
        self._maybe_checkpoint("nested", None if self.frameless else frame)

    def outer_iteration_ended(self, run, index):
        if not self.active:
            return
        if self.periodic is not None:
            learned = self._guarded(self.periodic.observe, index)
            # Done once it has read something, or nothing more is to be read (or it failed:
            # _guarded dropped it).
            if learned is not None or self.periodic is None or self.periodic.frame is None:
                self.periodic = None  # what it read is the policy's now
                self.policy.source_pending = False
            if learned is not None:
                self.policy.know_branches(learned.branches, index, learned.total)
        if not self.nested_seen:
            self._maybe_checkpoint("end", None)
        now = time.perf_counter()
        overlap = self.writer.busy_within(self.iteration_started, now) if self.writer is not None else 0.0
        self.policy.observe_iteration(now - self.iteration_started, overlap, index)

    def outer_loop_ended(self, run, last_index, frame):
        if not self.active:
            return
        self.active = False
        if last_index is not None and self.last_checkpointed != last_index:
            # The loop had no length, so its last iteration was unknown until now: keep the end state.
            self.index = last_index
            self._checkpoint("end", None, force=True)

    def outer_loop_closed(self, run, index):
        if not self.active:
            return
        self.active = False
        if self.last_checkpointed == index and self.last_point == "end":
            return
        # The iteration that breaks is the last one: keep its end state, as for a loop with a
        # length. Whether it was a `break` or an exception is known only when the block is left,
        # so the snapshot is taken now and handed to the writer then (leave).
        self.index = index
        self._checkpoint("end", None, force=True, hold=True)

    def leave(self, run, failed):
        self.active = False
        held, self.held = self.held, None
        if held is not None:
            if failed:
                self.snapshotter.recycle(held.snapshot.buffers)
            else:
                self._submit(held)

    def finish(self, run):
        if self.writer is not None:
            if not self.writer.close(FINISH_TIMEOUT_S):
                warn(f"checkpoints still being written after {FINISH_TIMEOUT_S:.0f}s were abandoned")
        self._finish_uploads()
        if self.disk_total is not None:
            self._thin_older_runs()
        # Why checkpoints fell where they did, for `flor show`.
        run.environment["checkpoints"] = self.policy.summary()
        # For replay: which checkpoints lack a data iterator (no segment starts after them), and the
        # registered state's fingerprint at the end, against which code after the loop is verified.
        run.environment["iterators_missing"] = sorted(self.lacking)
        if not self.frameless:
            run.environment["state_end"] = statehash.at_end(self.objects)

    # -- taking checkpoints -----------------------------------------------------------------

    def _maybe_checkpoint(self, point: str, frame) -> None:
        index = self.index
        elapsed = max(time.perf_counter() - self.iteration_started, 1e-6)
        if self.policy.train_s is None:
            # Before the first checkpoint: judge the snapshot by the size of the state, before
            # copying any of it.
            self.policy.state_bytes = state_size(self.objects, on_error=self._object_failed)
        is_last = self.total is not None and index == self.total - 1
        due = self.policy.due(index, self.last_checkpointed, is_last=is_last, elapsed_s=elapsed)
        if getattr(self.run, "job", None) is not None:
            from ..recording.job import in_step

            # Every rank of a job checkpoints at the same iterations: the first decides (flor/recording/job.py).
            due = in_step(self.run, index, point, due or is_last)
            is_last = is_last or due  # a rank never skips the job's checkpoint for a busy writer
        if not due:
            return
        self._checkpoint(point, frame, force=is_last)

    def _checkpoint(self, point: str, frame, force: bool = False, hold: bool = False) -> None:
        began = time.perf_counter()  # all of this runs in the training thread: the policy charges it
        if self.writer is None:
            self.writer = Writer(self.run.root, self._written, self._failed, self.snapshotter.recycle, self.encoding)
        if not force and self.writer.pending() >= 2:
            if not self.policy.fixed_period:
                self.skipped += 1  # the writer is behind: throttle it rather than stall training
                self.policy.throttled()
                return
            # A period the user fixed is a promise: wait for the writer instead of skipping.
            self.writer.wait_below(2, FINISH_TIMEOUT_S)
        # The loop's effect includes plain variables that the nested loop and the outer body
        # assign or mutate (the last loss, a list of losses): keep the small ones, list the others.
        registered = tuple(self.objects.values())
        inspect_failed = self._variable_failed("inspecting it")
        effect = loop_effect(frame) if frame is not None else ((), frozenset())
        nested_names, inplace = effect if effect is not None else (None, frozenset())
        nested_kept, nested_missing = (capture(frame, nested_names, registered, inspect_failed) if nested_names
                                       else ({}, []))
        outer_frame, outer_names = self.outer_frame, self.outer_names or ()
        outer_kept, outer_missing = (capture(outer_frame, outer_names, registered, inspect_failed)
                                     if outer_frame is not None else ({}, []))
        if outer_frame is frame:
            outer_kept = {k: v for k, v in outer_kept.items() if k not in nested_kept}
        module_kept, module_missing = capture_globals(self.run.root, inspect_failed)
        unrestored: list[str] = []
        auto: dict = {}
        if frame is not None and self.before_nested is not None:
            after = fingerprint(self.outer_frame, self.run.root, registered, on_error=inspect_failed)
            kept_names = set(nested_kept) | set(outer_kept) | {f"{m}:{n}" for m, values in module_kept.items() for n in values}
            unrestored = sorted(changed(self.before_nested, after) - kept_names - set(nested_missing) - set(outer_missing))
        # Objects with a state_dict that the loops change but the script did not register (a
        # GradScaler, a scheduler stepped per batch, a second network): kept like registered ones.
        missing = sorted(set(nested_missing) | set(outer_missing) | set(module_missing) | set(unrestored))
        for name in list(missing):
            if name in self.probes.unkept:
                continue  # its state could not be read before: not asked again every iteration
            obj = lookup(frame if name in nested_missing else self.outer_frame, name)
            if not has_state_dict(obj):
                continue
            ok, kept = self.probes.call(name, VARIABLE, "its state_dict()", object_state, obj, index=self.index)
            if ok and tree_size(kept) <= AUTO_STATE_BYTES:
                auto[name] = kept
                missing.remove(name)
        known = self.outer_names is not None and (frame is None or nested_names is not None)
        variables = {"nested": nested_kept, "outer": outer_kept, "inplace": sorted(inplace & set(nested_kept)),
                     "globals": module_kept}
        state = {}
        for name, obj in self.objects.items():
            ok, kept = self.probes.call(name, OBJECT, _reading(obj), object_state, obj, index=self.index)
            if ok:
                state[name] = kept
        # The gradients the skipped loop accumulated: the optimizer may step after it (gradient
        # accumulation), and a state_dict does not hold them.
        ok, generators = self.probes.call(
            "random generators", OBJECT, "finding the script's generators", rng.capture_generators,
            (frame, self.outer_frame), self._variable_failed("looking for a random generator in it"),
            index=self.index, default={})
        # Data iterators that live across iterations (one DataLoader iterator for the whole run):
        # their creation record and the batches drawn, to rebuild them (iterators.py).
        kept_iterators, missing_iterators = self._iterators(frame, registered)
        if missing_iterators:
            self.lacking.add(self.index)
        tree = {"objects": state, "rng": rng.capture(), "variables": variables, "grads": self._gradients(point),
                "generators": generators, "auto": auto, "iterators": kept_iterators}
        extra = {"variables_missing": missing, "variables_known": known, "iterators_missing": missing_iterators,
                 "objects_missing": sorted(set(self.objects) - set(state))}
        if force and not hold and self._hand_off(point, tree, extra):
            return
        try:
            snapshot = self.snapshotter.take(tree)
        except FlorError as exc:
            self._report(f"checkpoint of iteration {self.index} not taken: {exc}")
            return
        self._dropped(snapshot, extra)
        self.policy.state_bytes = snapshot.nbytes
        now = time.perf_counter()
        self.policy.observe_checkpoint(now - began, None, snapshot.nbytes, elapsed_s=now - self.iteration_started,
                                       copy_s=snapshot.seconds)
        job = Job(self.run.run_id, self.run.tstamp, self.index, point, snapshot, extra)
        self.last_checkpointed, self.last_point = self.index, point
        if hold:
            self.held = job
            return
        self._submit(job)

    def _submit(self, job: Job) -> None:
        if not self.writer.submit(job):
            self.writer.close(FINISH_TIMEOUT_S)
            self.writer.submit(job)

    def _iterators(self, frame, registered: tuple) -> tuple[dict, list[str]]:
        """The data iterators the loop's frames hold: kept ones, and those flor cannot keep (said
        once per run: replay will not start a segment after a checkpoint that lacks them)."""
        if self.frameless:
            return {}, []
        frames = (frame, self.outer_frame)
        advances = any(f is not None and script_mentions(f, ("next(",)) for f in frames)
        try:
            kept, missing = iterators.capture(frames, registered, advances)
        except Exception as exc:  # noqa: BLE001 - a probe of a user object never stops training
            kept, missing = {}, [f"(data iterators: {type(exc).__name__}: {exc})"]
        new = [name for name in missing if name not in self.iterators_said]
        if new:
            self.iterators_said.update(new)
            warn(f"flor cannot keep the position of the iterator(s) {', '.join(f'`{n}`' for n in new)} with its "
                 "checkpoints (only DataLoader iterators made after `import flor` are kept); a replay re-executes "
                 "from the start rather than from a checkpoint that lacks them")
        return kept, missing

    def _gradients(self, point: str) -> dict:
        """The gradients to keep: at the end of a nested loop, when the rest of the body may read
        them; at the end of an iteration, unless the loop zeroes them (the next iteration starts
        from none, or overwrites them)."""
        frame = self.outer_frame
        if self.frameless:
            # The frameworks zero gradients before each step (and before validation).
            return {}
        steppers = tuple(name for name, value in (frame.f_locals.items() if frame is not None else ())
                         if any(value is obj for obj in self.objects.values()) and _steps(value))
        if point == "end":
            needed = not _zeroes_gradients(frame)
        else:
            needed = gradients_needed(frame, steppers)
        return gradients(self.objects, on_error=self._object_failed) if needed else {}

    # -- probes that failed -------------------------------------------------------------------

    def _guarded(self, read, *args):
        """What the source learner returns; None when it fails (it never raises into training:
        the policy then learns periods from iteration times)."""
        try:
            return read(*args)
        except Exception:
            self.periodic = None
            self.policy.source_pending = False
            return None

    def _object_failed(self, name: str, exc: BaseException) -> None:
        self.probes.failed(name, OBJECT, _reading(self.objects.get(name)), exc, self.index)

    def _variable_failed(self, what: str):
        return lambda name, exc: self.probes.failed(name, VARIABLE, what, exc, self.index)

    def _dropped(self, snapshot, extra: dict) -> None:
        """Note the objects the snapshot left out (a pickle that raised) in the manifest."""
        for section, name, exc in snapshot.dropped:
            if section == "objects":
                self.probes.failed(name, OBJECT, "pickling it", exc, self.index)
                extra["objects_missing"] = sorted(set(extra.get("objects_missing", [])) | {name})
            else:
                self.probes.failed(name, VARIABLE, "pickling its state", exc, self.index)
                extra["variables_missing"] = sorted(set(extra.get("variables_missing", [])) | {name})

    def _hand_off(self, point: str, tree: dict, extra: dict) -> bool:
        """Write the last checkpoint of a big state from a forked process (see handoff.py);
        False when that does not apply here, and the writer thread takes it as usual."""
        threshold = self.handoff_bytes
        if (threshold is None or self.run.store is None
                or state_size(self.objects, on_error=self._object_failed) < threshold):
            return False
        # Holding the store's lock keeps the flush thread out of SQLite while the process forks.
        with self.run.store.lock:
            try:
                snapshot = self.snapshotter.take(tree, copy=False)
            except FlorError as exc:
                self._report(f"checkpoint of iteration {self.index} not taken: {exc}")
                return True
            self._dropped(snapshot, extra)
            job = Job(self.run.run_id, self.run.tstamp, self.index, point, snapshot, extra)
            try:
                handoff.hand_off(self.run.root, self.run.store.path, job, snapshot.seconds)
            except OSError as exc:  # no memory to fork, too many processes: write it here instead
                self._report(f"checkpoint of iteration {self.index} is written before exit ({exc})")
                return False
        self.last_checkpointed, self.last_point = self.index, point
        return True

    def _written(self, done: Written) -> None:
        # The writer mostly waits on the disk; what competes with training is its CPU time.
        # The disk budget charges what the run keeps, another run's objects it shares included.
        kept = done.written if done.kept is None else done.kept
        self.policy.observe_checkpoint(0.0, done.cpu_seconds, writer_share=done.share, written_bytes=kept,
                                       raw_bytes=done.nbytes)
        job = done.job
        key = (job.run_id, job.iteration, job.point)
        try:
            remote = remote_store()
        except FlorError:
            remote = None  # an unusable store URL was reported when the run began
        try:
            # Listed as local at once: the local copy is whole, whatever the checkpoint store does.
            self.run.store.add_checkpoint(
                job.run_id, job.iteration, job.point, done.location, done.nbytes, done.written,
                job.snapshot.seconds, done.seconds, pickled_objects(job.snapshot.skeleton),
                sha256=done.sha256, uploaded=None if remote is None else 0,
            )
        except FlorError as exc:
            self._report(f"checkpoint of iteration {job.iteration} written but not listed: {exc}")
            return
        if remote is None:
            return
        if remote.unreachable is not None:
            self.not_uploaded.add(key)  # said once when the run began
            return
        if self.uploader is None:
            from .upload import Uploader

            self.uploader = Uploader(self.run.store.paths.flor_dir, remote, self._uploaded, self._upload_failed)
        if not self.uploader.submit(key, done.location):
            self.not_uploaded.add(key)
            self._warn_upload(f"uploads to {remote.url} are behind: checkpoint of iteration {job.iteration} stays in "
                              ".flor/ only, listed as local; `flor doctor --repair` uploads it")

    def _uploaded(self, key: tuple) -> None:
        try:
            self.run.store.mark_uploaded(*key)
        except FlorError:
            pass  # it stays marked local; `flor doctor` finds the copy in the store whole

    def _upload_failed(self, key: tuple, exc: Exception) -> None:
        self.not_uploaded.add(key)
        self._warn_upload(f"checkpoint of iteration {key[1]} is written to .flor/ but not uploaded: {exc}; it stays "
                          "listed as local and `flor doctor --repair` uploads it")

    def _warn_upload(self, message: str) -> None:
        if not self._upload_warned:  # one line, not one per checkpoint; the end of the run counts them
            self._upload_warned = True
            self._report(message)

    def _finish_uploads(self) -> None:
        """Wait for uploads in flight up to FLOR_UPLOAD_WAIT_S, then name what remains in one line."""
        try:
            remote = remote_store()
        except FlorError:
            return
        if remote is None:
            return
        remaining: list[tuple] = []
        if self.uploader is not None:
            try:
                wait_s = settings.upload_wait_s()
            except FlorError:
                wait_s = 5
            self.uploader.wait(wait_s)
            remaining = self.uploader.remaining()
        local_only = self.not_uploaded | set(remaining)
        if local_only:
            shown = ", ".join(str(k[1]) for k in sorted(local_only)[:8]) + (" ..." if len(local_only) > 8 else "")
            warn(f"{len(local_only)} checkpoint(s) of run {self.run.tstamp} (iteration {shown}) not uploaded to "
                 f"{remote.url}: they are in .flor/, listed as local; run `flor doctor --repair` to upload them")

    def _thin_older_runs(self) -> None:
        """FLOR_CKPT_DISK_TOTAL: thin the oldest runs (never this one, still running) until the
        project's checkpoints fit, as `flor gc` would; said in one line."""
        from ..environment.paths import ProjectPaths
        from .gc import collect

        try:
            done = collect(self.run.store, ProjectPaths(self.run.root).flor_dir, budget=self.disk_total,
                           this_run=self.run.run_id)
        except (FlorError, OSError) as exc:
            self._report(f"FLOR_CKPT_DISK_TOTAL: older runs not thinned ({exc})")
            return
        if done.frees:
            warn(f"FLOR_CKPT_DISK_TOTAL: {done.describe()[0]} (older runs thinned; `flor gc --dry-run` shows them)")

    def _failed(self, job: Job, exc: Exception) -> None:
        self._report(f"checkpoint of iteration {job.iteration} not written: {exc}")

    def _report(self, message: str) -> None:
        self.failures.append(message)
        warn(message)


def _reading(obj) -> str:
    """How flor reads an object's state, for a warning."""
    return "its state_dict()" if has_state_dict(obj) else "reading its state"


def _steps(value) -> bool:
    """Whether ``value`` looks like an optimizer or a gradient scaler (its step reads gradients)."""
    try:
        return hasattr(value, "param_groups") or hasattr(value, "unscale_")
    except Exception:  # a __getattr__ that raises something else: not one
        return False


def _zeroes_gradients(frame) -> bool:
    """Whether the script zeroes gradients somewhere (``zero_grad``, ``.grad = None``)."""
    return frame is not None and script_mentions(frame, ("zero_grad(", ".grad = None", "grad=None"))
