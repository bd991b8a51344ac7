"""Observer isolation: a statement that replay adds observes the run and never changes it.

A hindsight value means "what the statement computes at that point of the recorded run". The
statements people write after a surprise often disturb the run they look at: a forward pass in
train mode draws dropout masks from torch's generator and moves BatchNorm's running statistics,
iterating a DataLoader draws a seed, an ``evaluate()`` helper leaves the model in eval mode. Any
of these would change every later step, so the replay would drift from the recording and store
nothing. So each placed statement (or hindsight block: the new lines that feed one ``flor.log``)
runs inside ``with __flor_observe__():``, which

* saves the random state of python, numpy, torch CPU and CUDA, and of the script's own generators
  that the statement's frame holds (a DataLoader's ``generator``, ``default_rng()``), and puts it
  back afterwards;
* puts back the train/eval mode of every module the run registered with ``flor.checkpointing``
  or that the statement's frame holds;
* puts back buffers that the statement changed in place (BatchNorm's running statistics): each
  buffer is copied before (up to 64 MiB of them, smallest first) and compared after, since
  BatchNorm's kernel does not bump the version counters of its running statistics; a larger
  buffer is checked by its version counter;
* refuses, naming the tensor, a statement that changed a parameter or a gradient (it called
  ``backward()`` or stepped an optimizer): such a statement trains the run, it does not observe it.

:func:`wrap` is the text side (the session wraps the placed statements before workers run them);
:class:`Observer` is the run-time side, installed as the builtin ``__flor_observe__`` by the
worker. :class:`Effects` counts what observers restored, which the worker reports, so that a drift
that remains can be explained by measurement rather than by a guess.
"""

from __future__ import annotations

import ast
import builtins
import random
import sys
import textwrap
from dataclasses import dataclass, field

from ..errors import ReplayError
from ..environment.imported import imported
from .propagation.syntax import training_call as trains
from .propagation.text import indentation, string_rows

WRAPPER = "__flor_observe__"
BUFFER_COPY_BYTES = 64 << 20  # buffers copied before each statement, smallest first


class ObserverError(ReplayError):
    """A hindsight statement changed what flor cannot put back (a parameter, a gradient)."""


# -- text: wrapping the placed statements -------------------------------------------------------


def training_call(text: str) -> str:
    """What in a placed statement's text trains the run instead of observing it ('' when nothing
    does): ``.backward()``, ``.step()``, ``.zero_grad()``, gradient clipping."""
    try:
        tree = ast.parse(textwrap.dedent(text))
    except SyntaxError:
        return ""
    return trains(tree)


@dataclass
class Group:
    """Lines ``start``..``end`` (1-based, inclusive) of the placed source: one statement, or one
    hindsight block, that runs as one observer."""

    start: int
    end: int


def groups_of(inserted) -> list[Group]:
    """The placed statements (:class:`~flor.replay.propagation.results.InsertedStatement`) as
    observer groups: the lines of one hindsight block that landed next to each other are one
    group; every other statement is its own."""
    placed = sorted((s for s in inserted if s.placed and s.lineno is not None), key=lambda s: s.lineno)
    out: list[Group] = []
    previous_block = None
    for s in placed:
        block = s.statement.block if s.statement is not None else None
        if out and block is not None and block == previous_block and s.lineno == out[-1].end + 1:
            out[-1].end = s.end_lineno
        else:
            out.append(Group(s.lineno, s.end_lineno))
        previous_block = block
    return out


def wrap(source: str, groups: list[Group]) -> str:
    """``source`` with each group's lines inside ``with __flor_observe__():``.

    A group of one simple statement gets the ``with`` on its own first line, so no line moves; a
    block or a compound statement gets a header line and its lines one level deeper (lines inside
    multi-line strings stay as they are). The result must parse, with one observer per group.
    """
    if not groups:
        return source
    lines = source.splitlines(keepends=True)
    rows = string_rows(source)
    try:
        body = {n.lineno: n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.stmt)}
    except SyntaxError as exc:
        raise ReplayError(f"the placed statements do not parse ({exc.msg})") from exc
    for group in sorted(groups, key=lambda g: g.start, reverse=True):
        first = lines[group.start - 1]
        indent = indentation(first)
        node = body.get(group.start)
        simple = node is not None and node.end_lineno == group.end and not _compound(node)
        if simple:
            lines[group.start - 1] = f"{indent}with {WRAPPER}(): {first[len(indent):]}"
            continue
        step = "\t" if "\t" in indent else "    "
        newline = "\r\n" if first.endswith("\r\n") else "\n"
        out = [f"{indent}with {WRAPPER}():{newline}"]
        for row in range(group.start - 1, group.end):
            line = lines[row]
            if row in rows or not line.strip() or not line.startswith(indent):
                out.append(line)  # inside a string, blank, or a continuation line: as it is
            else:
                out.append(indent + step + line[len(indent):])
        lines[group.start - 1 : group.end] = out
    wrapped = "".join(lines)
    try:
        tree = ast.parse(wrapped)
    except SyntaxError as exc:
        raise ReplayError(f"internal check failed: isolating the placed statements breaks the script ({exc.msg})") from exc
    observers = sum(1 for n in ast.walk(tree) if isinstance(n, ast.With) and _is_observer(n))
    if observers != len(groups):
        raise ReplayError("internal check failed: isolating the placed statements changed the script's structure")
    return wrapped


def _compound(node: ast.stmt) -> bool:
    return any(isinstance(getattr(node, f, None), list) and getattr(node, f) for f in ("body", "orelse", "finalbody", "handlers", "cases"))


def _is_observer(node: ast.With) -> bool:
    if len(node.items) != 1:
        return False
    call = node.items[0].context_expr
    return isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == WRAPPER


# -- run time: the observer ---------------------------------------------------------------------


@dataclass
class Effects:
    """What the observers of one worker found and put back (reported with its result)."""

    calls: int = 0
    drew: set[str] = field(default_factory=set)  # generators the statements drew from
    modes: set[str] = field(default_factory=set)  # modules whose train/eval mode they changed
    buffers: set[str] = field(default_factory=set)  # buffers they changed in place
    error: str = ""  # the first change that could not be put back

    def as_dict(self) -> dict:
        return {"calls": self.calls, "drew": sorted(self.drew), "modes": sorted(self.modes),
                "buffers": sorted(self.buffers), "error": self.error}


def describe(effects: dict) -> str:
    """One clause on what the new statements did to the run, from :meth:`Effects.as_dict`
    (merged over workers): 'drew random numbers from torch (put back) ...' or that they changed
    nothing flor watches."""
    if not effects or not effects.get("calls"):
        return "the new statement did not run before the drift"
    parts = []
    if effects.get("drew"):
        parts.append(f"drew random numbers from {', '.join(effects['drew'])}")
    if effects.get("modes"):
        parts.append(f"switched the train/eval mode of {_few(effects['modes'])}")
    if effects.get("buffers"):
        parts.append(f"changed the buffers {_few(effects['buffers'])}")
    if not parts:
        return ("the new statement changed nothing flor watches (random state, modes, parameters, buffers, "
                "gradients); look for state it shares with the run (an iterator it advances, an object it "
                "mutates) or for nondeterministic operations")
    return ("the new statement " + " and ".join(parts) + "; flor put that back, so the drift comes from "
            "other state it touched (an iterator it advances, an object it mutates) or from nondeterminism")


def _few(names: list[str]) -> str:
    shown = ", ".join(names[:4])
    return shown + (f" and {len(names) - 4} more" if len(names) > 4 else "")


class Observer:
    """``with Observer(...)``: run the body so that the run cannot tell (see the module docstring).

    ``objects`` returns the objects the run registered (name -> object); ``frames`` the frames
    whose generators count besides the statement's own (the outer loop's)."""

    def __init__(self, objects, frames, effects: Effects):
        self._objects, self._frames, self.effects = objects, frames, effects

    def __enter__(self) -> "Observer":
        from ..environment import rng

        frame = sys._getframe(1)
        self.effects.calls += 1
        self._python = random.getstate()
        numpy = imported("numpy")
        self._numpy = numpy.random.get_state() if numpy is not None else None
        self._numpy_words = _mt_words(numpy) if numpy is not None else None
        torch = imported("torch")
        self._torch_mod = torch if torch is not None and hasattr(torch, "get_rng_state") else None
        self._torch = self._cuda = None
        if self._torch_mod is not None:
            self._torch = torch.get_rng_state()
            cuda = getattr(torch, "cuda", None)
            if cuda is not None and cuda.is_available() and cuda.is_initialized():
                self._cuda = cuda.get_rng_state_all()
        found = rng.generators_in([frame, *self._frames()])
        self._generators = [(key, obj, rng.generator_state(obj)) for key, obj in found.items()]
        self._modules = self._modules_of(frame) if self._torch_mod is not None else []
        self._modes, self._params, self._buffers = self._walk()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        from ..environment import rng

        effects = self.effects
        if random.getstate() != self._python:
            effects.drew.add("python")
            random.setstate(self._python)
        if self._numpy is not None:
            numpy = imported("numpy")
            # The generator's words in memory tell a draw for a fraction of get_state's cost; only
            # a cached Gaussian (has_gauss) can change without them, so then the whole state is read.
            words = _mt_words(numpy)
            if words is None or words != self._numpy_words or self._numpy[3]:
                now = numpy.random.get_state()
                if now[2] != self._numpy[2] or now[3:] != self._numpy[3:] or not numpy.array_equal(now[1], self._numpy[1]):
                    effects.drew.add("numpy")
                    numpy.random.set_state(self._numpy)
        torch = self._torch_mod
        if torch is not None:
            if not torch.equal(torch.get_rng_state(), self._torch):
                effects.drew.add("torch")
                torch.set_rng_state(self._torch)
            if self._cuda is not None:
                torch.cuda.set_rng_state_all(self._cuda)
        for key, obj, state in self._generators:
            if not rng.same_generator_state(obj, state):
                effects.drew.add(key)
                rng.set_generator_state(obj, state)
        for name, module, training in self._modes:
            if module.training != training:
                module.training = training
                effects.modes.add(name)
        problem = self._put_back_tensors()
        if problem and exc_type is None:
            effects.error = effects.error or problem
            raise ObserverError(problem)
        return False

    # -- what the statement can reach -------------------------------------------------------

    def _modules_of(self, frame) -> list[tuple[str, object]]:
        """(name, module) of the registered modules and those the statement's frame holds."""
        Module = self._torch_mod.nn.Module
        out, seen = [], set()
        candidates = list(self._objects().items())
        candidates += list(frame.f_locals.items())
        if frame.f_globals is not frame.f_locals:
            candidates += list(frame.f_globals.items())
        for name, value in candidates:
            if isinstance(value, Module) and id(value) not in seen:
                seen.add(id(value))
                out.append((name, value))
        return out

    def _walk(self):
        """One walk over the modules: (path, module, mode) of every submodule, and its parameters
        and buffers with their version counters (names are built only for a message)."""
        modes, params, buffers, seen = [], [], [], set()
        for name, root in self._modules:
            for path, module in root.named_modules(prefix=name):
                if id(module) in seen:
                    continue
                seen.add(id(module))
                modes.append((path, module, module.training))
                for key, p in module._parameters.items():
                    if p is not None and id(p) not in seen:
                        seen.add(id(p))
                        grad = p.grad
                        params.append((path, key, p, p._version, grad, None if grad is None else grad._version))
                for key, b in module._buffers.items():
                    if b is not None and id(b) not in seen:
                        seen.add(id(b))
                        buffers.append([path, key, b, b._version, None])
        budget = BUFFER_COPY_BYTES
        for entry in sorted(buffers, key=lambda e: e[2].numel() * e[2].element_size()):
            size = entry[2].numel() * entry[2].element_size()
            if size > budget:
                break
            budget -= size
            entry[4] = entry[2].detach().clone()
        return modes, params, buffers

    def _put_back_tensors(self) -> str:
        torch = self._torch_mod
        problem = ""
        for path, key, b, version, copy in self._buffers:
            # BatchNorm's kernel updates running_mean/var without bumping their version counters,
            # so a kept copy is compared by content; only a buffer too large to copy relies on them.
            if b._version == version and (copy is None or torch.equal(b, copy)):
                continue
            name = f"{path}.{key}"
            if copy is None:
                problem = problem or (f"the new statement changed the buffer `{name}` in place, and it is too large "
                                      "for flor to keep a copy; compute the value without changing it")
                continue
            with torch.no_grad():
                b.copy_(copy)
            self.effects.buffers.add(name)
        for path, key, p, version, grad, grad_version in self._params:
            if p._version != version:
                return (f"the new statement changed the parameter `{path}.{key}` (an optimizer step?): a hindsight "
                        "statement may observe training, not take part in it")
            if p.grad is not grad or (grad is not None and grad._version != grad_version):
                return (f"the new statement changed the gradient of `{path}.{key}` (a backward()?): a hindsight "
                        "statement may observe training, not take part in it")
        return problem


def _mt_words(numpy) -> bytes | None:
    """The raw words and position of numpy's global MT19937 generator (None where numpy's global
    generator is not one, or its memory cannot be read)."""
    try:
        generator = numpy.random.mtrand._rand._bit_generator
        if type(generator).__name__ != "MT19937":
            return None
        import ctypes

        return ctypes.string_at(generator.ctypes.state_address, 624 * 4 + 4)
    except Exception:  # noqa: BLE001 - another numpy: fall back to reading the whole state
        return None


def install(run, effects: Effects) -> None:
    """Make ``__flor_observe__`` the observer of ``run`` (a replay worker's run) in every module."""

    def objects() -> dict:
        merged: dict = {}
        for manager in getattr(run, "managers", []):
            merged.update(getattr(manager, "objects", {}) or {})
        return merged

    def frames() -> list:
        return [run.outer_frame] if getattr(run, "outer_frame", None) is not None else []

    setattr(builtins, WRAPPER, lambda: Observer(objects, frames, effects))
