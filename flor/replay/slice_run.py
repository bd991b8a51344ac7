"""Running the slice in a replay worker, verified.

The planner's slice (``replay/slice.py``) names the statements of the outer body a memoized
iteration may skip. The worker compiles the placed script with each of them behind
``if __flor_full_body__():`` (:func:`compile_sliced`, line numbers kept), and :class:`SliceRun`
answers that call: false while a memoized iteration runs its slice, true otherwise.

**Verified, never trusted.** ``verify`` memoized iterations of a segment (the first, and the
others spread evenly to its last) run twice from the same state: the slice first, with what it logs held apart, its loop instances discarded, and
what it changes put back afterwards (the names the kept statements assign, the unregistered
objects they change, by ``state_dict`` or a deep copy, and the random state); then the full body,
whose values are the ones stored (the nested loop's checkpoint is restored again). The new
statements' values of both passes must be equal; at the first difference (or where the state
cannot be put back) the run falls back to full memoization for the rest of the segment, and the
result says where and why. Recorded values that skipped statements would have logged are not
compared: the result counts them.
"""

from __future__ import annotations

import ast
import builtins
import copy
import ctypes
import io
import math
import sys
import time

from ..environment import rng
from .. import values
from ..errors import ReplayError
from ..logged import LoggedValue

GUARD = "__flor_full_body__"
ENDS = "__flor_slice_ends__"
_MISSING = object()
STOP_MARGIN_S = 0.25  # what the slice must be expected to lose before it is stopped (_judge_cost)


def compile_sliced(source: str, filename: str, skip: list, breaks: list = ()) -> object:
    """The code of ``source`` with each statement at ``skip`` ((line, column) pairs) run only
    where ``__flor_full_body__()`` is true, and each ``break`` at ``breaks`` (the outer loop's,
    kept by the slice) asking ``__flor_slice_ends__()`` first: in a slice pass that the whole
    body will check, it becomes ``continue`` (the whole body then runs, and breaks or not)."""
    tree = ast.parse(source, filename)
    wanted = {tuple(position) for position in skip}
    ends = {tuple(position) for position in breaks}
    found = set()
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            block = getattr(node, name, None)
            if not isinstance(block, list):
                continue
            for index, statement in enumerate(block):
                position = (getattr(statement, "lineno", None), getattr(statement, "col_offset", None))
                if position in wanted:
                    test = ast.Call(func=ast.Name(id=GUARD, ctx=ast.Load()), args=[], keywords=[])
                    guarded = ast.If(test=test, body=[statement], orelse=[])
                    block[index] = ast.copy_location(guarded, statement)
                    found.add(position)
                elif position in ends and isinstance(statement, ast.Break):
                    test = ast.Call(func=ast.Name(id=ENDS, ctx=ast.Load()), args=[], keywords=[])
                    asked = ast.If(test=test, body=[ast.copy_location(ast.Continue(), statement)], orelse=[statement])
                    block[index] = ast.copy_location(asked, statement)
                    found.add(position)
    if found != wanted | ends:
        raise ReplayError(f"the slice names statements the placed script does not hold ({sorted((wanted | ends) - found)}); "
                          "run `flor replay --no-slice`")
    return compile(ast.fix_missing_locations(tree), filename, "exec")


def run_path(code, script: str) -> None:
    """Execute ``code`` as ``python script`` would (``__main__``, its ``__file__``)."""
    import types

    module = types.ModuleType("__main__")
    module.__file__ = script
    module.__builtins__ = builtins
    module.__loader__ = None
    module.__spec__ = None
    sys.modules["__main__"] = module
    exec(code, module.__dict__)


class SliceRun:
    """A worker's memoized iterations: the slice, verified (see the module docstring)."""

    def __init__(self, run, skip: list, iterations: list[int], names: list[str], objects: list[str],
                 verify: int, breaks: bool = False, last: int = -1, unrestored: list[str] = ()) -> None:
        self.run = run
        self.on = bool(skip)
        self.skipped_statements = len(skip)
        self.names = list(names)
        self.objects = list(objects)
        self.allowed = set(iterations)  # plan.sliceable: the others run their whole body
        self.to_verify = _sample(sorted(self.allowed), int(verify))
        self.slicing = False
        self.sliced: list[int] = []  # iterations that ran the slice only
        self._sliced: set[int] = set()  # the same, asked once per settled iteration (worker_run)
        self.verified: list[int] = []  # iterations where slice and full body agreed
        self.fell_back: dict | None = None
        self.last = last  # the recording's last outer iteration: where the slice's `break` may end the loop
        self.index: int | None = None  # the memoized iteration running now
        self.checking = False  # a slice pass the whole body checks after it
        self.ended: int | None = None  # the iteration where that slice pass reached a kept `break`
        self.loop_ended: int | None = None  # a verified iteration where slice and whole body both ended the loop
        self.unrestored = frozenset(unrestored)  # registered objects no kept statement reads or writes
        self.partial: list[int] = []  # iterations that restored only what the slice reads or writes
        self.stopped: dict | None = None  # where the slice was found not to pay, and its timings
        if self.on:
            setattr(builtins, GUARD, self.full_body)
            if breaks:
                setattr(builtins, ENDS, self.slice_ends)

    def slice_ends(self) -> bool:
        """``__flor_slice_ends__()``, asked by a kept ``break`` of the outer loop: true turns it
        into ``continue``. In a slice pass that the whole body checks, the break is noted and the
        whole body runs next (from the same state), which breaks or not: *whether and where the
        loop ended* is compared like the values. In a slice-only iteration the loop may end only
        where the recording's ended; anywhere else the slice is wrong, and this iteration cannot
        be run again (its state was not kept): the replay stops with the error."""
        if not self.slicing:
            return False  # the whole body (or no slice): the break is the script's
        if self.checking:
            self.ended = self.index
            return True
        if self.index == self.last:
            return False
        raise ReplayError(f"the slice ended the loop at {self.run.outer_name or 'iteration'} {self.index}, where the "
                          "recording went on; replay this run with `flor replay --no-slice`")

    def not_restored(self, index: int) -> frozenset:
        """The registered objects the checkpoint of memoized iteration ``index`` leaves as they are:
        while it runs the slice, those no kept statement reads or writes (their decoding and
        copying is most of a restore: an optimizer's moments are 2/3 of AdamW's state). Nothing
        carries over: every memoized iteration restores again at its nested loop. The iteration
        before a verified one, and the recording's last, restore everything: the whole body that
        runs next (or the state compared at the loop's end) reads all of it."""
        if not (self.on and self.slicing and self.unrestored) or index != self.index:
            return frozenset()
        if index + 1 in self.to_verify or index == self.last:
            return frozenset()
        return self.unrestored

    def ran_slice_only(self, index: int) -> bool:
        """Whether iteration ``index`` ran the slice alone (no check of it yet)."""
        return index in self._sliced

    def full_body(self) -> bool:
        """``__flor_full_body__()``: whether the statements the slice skips run now."""
        return not self.slicing

    def iteration(self, index: int, item):
        """Drive one memoized outer iteration (a generator: the body runs at each yield)."""
        self.index = index
        if not self.on or index not in self.allowed:
            yield item
            return
        if index not in self.to_verify:
            self.slicing = True
            try:
                yield item
            finally:
                self.slicing = False
            self.sliced.append(index)
            self._sliced.add(index)
            return
        saved, why = self._snapshot()
        if saved is None:
            self._fall_back(index, why)
            yield item
            return
        run, loops = self.run, self.run.loops
        held: list = []
        push_log, push_special = run.push_log, run.push_special
        push_instance, push_start, next_ctx = loops.push_instance, loops.push_start, loops.next_ctx
        run.push_log = run.push_special = held.append
        loops.push_instance = loops.push_start = (lambda entry: None)
        self.slicing = self.checking = True
        self.ended = None
        began, restored = time.perf_counter(), self._restore_s()
        try:
            yield item  # a kept `break` comes back here as `continue` (slice_ends)
        finally:
            self.slicing = self.checking = False
            run.push_log, run.push_special = push_log, push_special
            loops.push_instance, loops.push_start, loops.next_ctx = push_instance, push_start, next_ctx
        slice_s = time.perf_counter() - began - (self._restore_s() - restored)
        sliced_ended = self.ended == index
        why = self._put_back(saved)
        if why:
            self._fall_back(index, why)  # the full pass below is today's memoized iteration
        full: list = []
        run.push_log = lambda entry: (full.append(entry), push_log(entry))
        run.push_special = lambda entry: (full.append(entry), push_special(entry))
        run._nested_done = False
        full_ended = True  # until the whole body comes back to the loop
        began, restored = time.perf_counter(), self._restore_s()
        try:
            yield item
            full_ended = False
        finally:  # a `break` of the whole body (GeneratorExit) passes through here too
            run.push_log, run.push_special = push_log, push_special
            if self.fell_back is None:
                difference = _differ(self._new_values(held), self._new_values(full))
                if not difference and sliced_ended != full_ended:
                    loop = self.run.outer_name or "iteration"
                    difference = (f"the slice {'ended' if sliced_ended else 'did not end'} the loop at {loop} {index} "
                                  f"and the full body {'did' if full_ended else 'did not'}")
                if difference:
                    self._fall_back(index, difference)
                else:
                    self.verified.append(index)
                    if full_ended:
                        self.loop_ended = index
                    self._judge_cost(index, slice_s, time.perf_counter() - began - (self._restore_s() - restored))

    def _restore_s(self) -> float:
        """The worker's time in restores so far (worker_run.ReplayManager adds to it)."""
        return getattr(self.run, "timings", {}).get("restore_s", 0.0)

    def _judge_cost(self, index: int, slice_s: float, full_s: float) -> None:
        """Stop slicing where it cannot pay: each later check runs the slice and then the whole
        body, and each slice-only iteration saves the whole body's time less the slice's. On
        nanoGPT's evaluation statement the slice keeps the evaluation (most of the body), and its
        two checks made the replay 14.0 s against 11.2 s with --no-slice; now the first check's
        timings say so and the rest runs whole, as --no-slice does. Both passes are timed without
        their restores (the whole body's re-reads the checkpoint its slice pass just decoded). The
        first slice pass of a worker may pay one-time work (first forward passes and allocations:
        nanoGPT's parameter-norm slice took 1.37-2.18 s against the whole body's 1.18-1.86 s), so
        a slice that would have paid a little may be stopped: the replay then
        costs what --no-slice does and one slice pass. Not a fall-back: the slice was equal where
        checked, and the iterations it ran alone are released by that check."""
        later = [i for i in self.allowed if i > index]
        checks = sum(1 for i in later if i in self.to_verify)
        saved = (len(later) - checks) * (full_s - slice_s)
        # Only a loss worth the name: on small bodies both are noise, and the slice is kept.
        if later and checks * slice_s - saved > STOP_MARGIN_S:
            self.on = False
            self.stopped = {"iteration": index, "slice_s": round(slice_s, 3), "full_s": round(full_s, 3)}

    # -- putting the state back ------------------------------------------------------------

    def _snapshot(self) -> tuple[dict | None, str]:
        frame = self.run.outer_frame
        if frame is None:
            return None, "the loop's frame is unknown"
        saved = {"names": {}, "objects": {}, "rng": rng.capture()}
        scope = frame.f_locals
        for name in self.names:
            saved["names"][name] = scope.get(name, _MISSING)
        kept = _registered(self.run)
        # The registered objects too: the full pass restores them at the nested loop, but the
        # statements before it (nanoGPT's eval branch) read what the slice pass left in them.
        for manager in getattr(self.run, "managers", []):
            for name, obj in manager.objects.items():
                try:
                    saved["objects"][f"registered {name}"] = (obj, _state_of(obj))
                except Exception as exc:  # noqa: BLE001
                    return None, f"`{name}` cannot be copied to verify the slice ({type(exc).__name__})"
                modes = getattr(obj, "modules", None)
                if callable(modes) and not isinstance(obj, type):
                    saved["modes"] = saved.get("modes", []) + [(m, m.training) for m in modes()]
        for name in self.objects:
            obj = scope.get(name, frame.f_globals.get(name, _MISSING))
            if obj is _MISSING:
                continue
            try:
                saved["objects"][name] = (obj, _state_of(obj, kept))
            except Exception as exc:  # noqa: BLE001 - any failure to copy: no verification, no slice
                return None, f"`{name}` cannot be copied to verify the slice ({type(exc).__name__})"
        return saved, ""

    def _put_back(self, saved: dict) -> str:
        frame = self.run.outer_frame
        try:
            for name, value in saved["names"].items():
                if value is not _MISSING:
                    _set_name(frame, name, value)
            for name, (obj, state) in saved["objects"].items():
                _set_state(obj, state)
            for module, training in saved.get("modes", []):
                module.training = training
            rng.restore(saved["rng"])
        except Exception as exc:  # noqa: BLE001
            return f"the state the slice changed cannot be put back ({type(exc).__name__}: {exc})"
        return ""

    def _fall_back(self, index: int, why: str) -> None:
        self.on = False
        self.fell_back = {"iteration": index, "why": why}

    def _new_values(self, entries: list) -> dict[str, list]:
        out: dict[str, list] = {}
        for entry in entries:
            if isinstance(entry, LoggedValue):
                name, value = entry.name, values.decode(entry.value, entry.vtype)
            else:
                name, value = entry[0], entry[1]
            if name in self.run.new_names:
                out.setdefault(name, []).append(value)
        return out

    def result(self) -> dict:
        """What the worker's result says of the slice."""
        return {"statements": self.skipped_statements, "sliced": self.sliced, "verified": self.verified,
                "partial": sorted(set(self.partial)), "unrestored": sorted(self.unrestored),
                "fell_back": self.fell_back, "uncompared": self._uncompared(), "loop_ended": self.loop_ended,
                "stopped": self.stopped}

    def _uncompared(self) -> int:
        """Recorded values at the outer loop's level, in iterations that ran the slice only,
        that were not logged again (their statements were skipped): not compared."""
        run = self.run
        outer = run._original.get((None, None, run.outer_name, 0))
        count = 0
        for name, by_context in run._recorded.items():
            if name in run.new_names:
                continue
            for index in self.sliced:
                count += max(0, len(by_context.get((outer, index), [])) - run._seen.get((name, outer, index), 0))
        return count


def _sample(memoized: list[int], count: int) -> set[int]:
    """The memoized iterations that verify the slice: the first, and the rest of ``count`` spread
    evenly to the last (a slice wrong only later in the run is caught there)."""
    if count <= 0 or not memoized:
        return set()
    if count == 1 or len(memoized) == 1:
        return {memoized[0]}
    last = len(memoized) - 1
    return {memoized[round(k * last / (count - 1))] for k in range(count)}


def _registered(run) -> dict:
    """A deep copy's memo that keeps the registered objects, their parameters and buffers as they
    are: the checkpoint restores them for the full pass, and a copy put back in their place (an
    optimizer's param group holding copies of the parameters) would cut them off the model."""
    memo: dict = {}
    for manager in getattr(run, "managers", []):
        for obj in manager.objects.values():
            memo[id(obj)] = obj
            for getter in ("parameters", "buffers"):
                if callable(getattr(obj, getter, None)) and not isinstance(obj, type):
                    memo.update((id(tensor), tensor) for tensor in getattr(obj, getter)())
            for group in getattr(obj, "param_groups", None) or []:
                memo.update((id(tensor), tensor) for tensor in group.get("params", []))
    return memo


def _state_of(obj, kept: dict | None = None):
    if hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict") and not isinstance(obj, type):
        return ("state_dict", copy.deepcopy(obj.state_dict()))
    if isinstance(obj, (list, dict, set, bytearray)):
        return ("container", copy.deepcopy(obj, dict(kept or {})))
    if isinstance(obj, (str, bytes, tuple, frozenset)) or values.is_plain(obj):
        return ("immutable", None)
    if isinstance(obj, io.IOBase) and obj.closed:  # `with open(...) as f` after its block: nothing of it changes
        return ("immutable", None)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return ("attributes", copy.deepcopy(vars(obj), dict(kept or {})))
    raise TypeError(type(obj).__name__)


def _set_state(obj, state) -> None:
    how, saved = state
    if how == "state_dict":
        obj.load_state_dict(copy.deepcopy(saved))
    elif how == "container":
        if isinstance(obj, (list, bytearray)):
            obj[:] = saved
        else:
            obj.clear()
            obj.update(saved)
    elif how == "attributes":
        vars(obj).clear()
        vars(obj).update(saved)


def _set_name(frame, name: str, value) -> None:
    if frame.f_locals is frame.f_globals:  # module level
        frame.f_globals[name] = value
        return
    frame.f_locals[name] = value
    if sys.version_info < (3, 13):  # 3.13's f_locals writes through (PEP 667)
        ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))


def _differ(sliced: dict, full: dict) -> str:
    for name in sorted(set(sliced) | set(full)):
        a, b = sliced.get(name, []), full.get(name, [])
        if len(a) != len(b):
            return f"{name} was logged {len(a)} time(s) by the slice and {len(b)} by the full body"
        for x, y in zip(a, b):
            if not _same(x, y):
                return f"{name} was {_shown(x)} by the slice and {_shown(y)} by the full body"
    return ""


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - arrays and the like: compared by their text
        return repr(a) == repr(b)


def _shown(value) -> str:
    text = f"{value:.6g}" if isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
