"""The slice of a memoized iteration: the statements of the outer loop's body that the new
statements depend on, given the state the checkpoint restores.

Memoization skips the first nested loop and restores its effect; everything else in the body
still runs in every memoized iteration (an evaluation pass, its prints, a scheduler step). Most
hindsight questions read little of it: a weight norm after ``scheduler.step()`` needs the
restored model and the step, not the test pass. This module decides, from the syntax tree of the
placed script, which of the body's statements (its top-level statements: a compound statement is
kept or skipped whole) a memoized iteration must run:

* the statements that hold a new statement (or call a function of the script that does);
* the statement that reaches the skipped nested loop (where the checkpoint is restored);
* transitively, every statement that writes what a kept statement reads. The body is a loop, so
  a write anywhere in it counts (a later statement writes what the next iteration reads:
  loop-carried state), and no write is taken to hide an earlier one.

What a statement reads and writes is *locations*: a name (``n``), an object reached through names
(``o``, with a facet: ``params`` for a module's parameters, ``other`` for the rest of a module:
its mode, buffers and attributes; ``*`` for all of it), and ``world`` (the global random state,
files, library globals). Aliasing follows assignments: ``m = model`` reaches the model;
``optimizer = Adadelta(model.parameters())`` reaches the optimizer and the model's parameters;
``scheduler = StepLR(optimizer)`` reaches both. The functions of the script are followed through
the call graph (their arguments bound to what the call passes, ``global`` names kept); code flor
cannot see is taken to read and write everything reachable from its receiver and arguments, and
the world. What flor assumes of libraries and torch modules is in ``replay/assumptions.py`` (a
table in docs/slicing.md), checked at run time by verification. A module class the script imports
from the project (``from model import GPT``) is read from the run's version (``read_module``).

A ``break``/``continue`` of the outer loop at the body's level (alone or in an ``if`` chain) is
kept with what its condition reads (:attr:`Slice.breaks`: the worker checks where the loop ends).
The body is kept whole where slicing could be wrong in ways verification cannot undo:
such a ``break`` inside ``try``/``with``, ``return``/``yield`` in the body, ``eval``/``exec``/``locals``,
``global``/``nonlocal`` or definitions in the body, or a ``match``.

>>> plan = slice_body(source, {"weight_norm"})                          # doctest: +SKIP
>>> [s.why for s in plan.statements if not s.kept]
['skipped: writes nothing a kept statement reads (prints)']
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from ..errors import FlorError
from .analysis import Layout
from .assumptions import (ADVANCING_BUILTINS, DYNAMIC, IO_FUNCTIONS, LIBRARIES, LOCAL_METHODS, MODE_METHODS,
                          PARAM_READERS, PLAIN_ATTRIBUTES, PURE_BUILTINS, PURE_CALLS, PURE_METHODS, READING_CALLS,
                          SAME_OBJECT, SHUFFLING, constructor, immutable, module_kind)
from .florcalls import is_flor_call
from .independence import RANDOM_FUNCTIONS, dotted_name
from .isolation import WRAPPER
from .slice_restore import bound_otherwise, describe_restores, held_outside, restores

WORLD = ("w",)
PARAMS, OTHER, ALL = "params", "other", "*"


@dataclass(frozen=True)
class Statement:
    """One top-level statement of the outer body, as the slice sees it."""

    line: int
    col: int
    text: str  # its first line, shortened
    kept: bool
    why: str  # why it is kept (what needs it), or what skipping it leaves out


@dataclass(frozen=True)
class Slice:
    """What a memoized iteration runs. ``whole``: the body is kept whole, and why (no slice)."""

    statements: tuple[Statement, ...] = ()
    whole: str = ""
    names: tuple[str, ...] = ()  # names the kept statements assign (put back before a verified full pass)
    objects: tuple[str, ...] = ()  # unregistered objects the kept statements change (snapshotted to verify)
    breaks: tuple[tuple[int, int], ...] = ()  # (line, column) of each kept `break` of the outer loop
    restored: tuple[tuple[str, str], ...] = ()  # registered objects a slice-only iteration restores, and why
    unrestored: tuple[str, ...] = ()  # those it does not (slice_restore.py)

    @property
    def skipped(self) -> list[tuple[int, int]]:
        """(line, column) of each statement a memoized iteration skips."""
        return [] if self.whole else [(s.line, s.col) for s in self.statements if not s.kept]

    def describe(self) -> list[str]:
        """The --dry-run lines: kept and skipped statements, and why."""
        if self.whole:
            return [f"no slice: the body runs whole in memoized iterations ({self.whole})"]
        lines = ["slice of each memoized iteration (the rest of the body is skipped; verified, see docs/slicing.md):"]
        for s in self.statements:
            lines.append(f"  {'keep' if s.kept else 'skip'} line {s.line}: {s.text}  -- {s.why}")
        return lines + describe_restores(self.restored, self.unrestored)


@dataclass
class _Effects:
    reads: set = field(default_factory=set)
    writes: set = field(default_factory=set)
    prints: bool = False
    logs: bool = False  # logs a name the run recorded (not new): not compared where skipped
    restores: bool = False  # reaches the skipped nested loop
    new: bool = False  # holds (or calls a function that holds) a new statement
    whole: str = ""  # a reason to keep the body whole
    returns: frozenset = frozenset()  # what a helper's return value reaches
    ends: list = field(default_factory=list)  # its `break`/`continue` of the outer loop: (line, column, kind)

    def merge(self, other: "_Effects") -> None:
        self.reads |= other.reads
        self.writes |= other.writes
        self.prints |= other.prints
        self.logs |= other.logs
        self.restores |= other.restores
        self.new |= other.new
        self.whole = self.whole or other.whole
        self.ends += other.ends


def _overlap(a: tuple, b: tuple) -> bool:
    if a == b:
        return True
    if a[0] == "o" and b[0] == "o" and a[1] == b[1]:
        return ALL in (a[2], b[2])
    return False


def _restrict(reach, facet: str) -> frozenset:
    return frozenset((root, facet) for root, f in reach if f in (ALL, facet))


def _text(source_lines: list[str], node: ast.stmt) -> str:
    text = source_lines[node.lineno - 1].strip()
    return text if len(text) <= 70 else text[:67] + "..."


class _Analyzer:
    """Reads and writes of statements, in one scope (the outer body's, or a helper's)."""

    def __init__(self, slicer: "_Slicer", env: dict, local: set | None = None, depth: int = 0,
                 owned: dict | None = None) -> None:
        self.s = slicer
        self.env = env  # name -> frozenset of (root, facet) it reaches
        self.owned = owned if owned is not None else {}  # name -> the roots it *is* (not those it holds)
        self.local = local  # a helper's local names (None: the outer body's scope)
        self.depth = depth
        self.loops = 0  # plain loops around the statement being read (a break there is theirs)
        self.guarded = 0  # `try`/`with` blocks around it: a break there may run code on its way out

    def reach(self, name: str) -> frozenset:
        return self.env.get(name, frozenset({(name, ALL)}))

    def owned_of(self, node: ast.AST) -> frozenset:
        """The objects ``node`` is (an alias is its object; a container's item, the container)."""
        if isinstance(node, ast.Name):
            return self.owned.get(node.id, frozenset({node.id}))
        if isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
            return self.owned_of(node.value)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SAME_OBJECT:
            return self.owned_of(node.func.value)
        return frozenset(root for root, _ in self.reach_of(node))

    def reach_of(self, node: ast.AST | None) -> frozenset:
        """What the value of expression ``node`` may reach (conservative: an object made from
        others may hold them)."""
        if node is None:
            return frozenset()
        if isinstance(node, ast.Name):
            return self.reach(node.id)
        if isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
            return self.reach_of(node.value)
        if isinstance(node, ast.Call):
            # What a call returns may hold its receiver and arguments (not the function itself).
            out = set()
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                out |= self.reach_of(arg)
            func = node.func
            if isinstance(func, ast.Attribute):
                dotted = dotted_name(func.value)
                if dotted is not None and dotted.split(".")[0] in self.s.libraries and dotted.split(".")[0] not in self.env:
                    return frozenset(out)  # a function of a numeric library
                if func.attr in PARAM_READERS:
                    return _restrict(self.reach_of(func.value), PARAMS)
                if func.attr in SAME_OBJECT:
                    return self.reach_of(func.value)
                method = self._module_method(func)
                if method is not None:  # `model.configure_optimizers(...)`: what its body returns
                    return self._returns(node, func, method)
                return frozenset(out | self.reach_of(func.value))
            if isinstance(func, ast.Name) and (func.id in self.s.classes or func.id in PURE_BUILTINS
                                               or func.id in self.s.functions):
                return frozenset(out)
            return frozenset(out | self.reach_of(func))
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            bound = {n for g in node.generators for n in _stored(g.target)}
            out = set().union(*(self.reach_of(g.iter) for g in node.generators))
            for part in (getattr(node, "elt", None), getattr(node, "key", None), getattr(node, "value", None)):
                for child in ast.walk(part) if part is not None else ():
                    if isinstance(child, ast.Name) and child.id not in bound:
                        out |= self.reach(child.id)
            return frozenset(out)
        if isinstance(node, (ast.Constant, ast.Compare, ast.UnaryOp, ast.JoinedStr)):
            return frozenset()  # a new plain value
        if isinstance(node, ast.IfExp):
            return self.reach_of(node.body) | self.reach_of(node.orelse)
        if isinstance(node, (ast.BoolOp, ast.List, ast.Tuple, ast.Set)):
            parts = node.values if isinstance(node, ast.BoolOp) else node.elts
            return frozenset().union(*(self.reach_of(part) for part in parts))
        if isinstance(node, ast.Dict):
            return frozenset().union(*(self.reach_of(part) for part in [*node.keys, *node.values] if part is not None))
        out: set = set()
        for child in ast.walk(node):
            if isinstance(child, ast.Name) and child is not node:
                out |= self.reach(child.id)
        return frozenset(out)

    def _module_method(self, func: ast.Attribute) -> ast.FunctionDef | None:
        """The method a call on a torch module of a class the script or project defines runs."""
        roots = self.owned_of(func.value)
        classes = {id(self.s.module_classes.get(root)) for root in roots}
        cls = self.s.module_classes.get(next(iter(roots), None)) if len(classes) == 1 else None
        if cls is None:
            return None
        return next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == func.attr), None)

    def _returns(self, node: ast.Call, func: ast.Attribute, method: ast.FunctionDef) -> frozenset:
        """What a method's return value reaches, ``self`` bound to its receiver."""
        bound = ast.Call(func=ast.Name(id=method.name, ctx=ast.Load()), args=[func.value, *node.args],
                         keywords=node.keywords)
        scratch = _Effects()
        self._helper(bound, method, scratch)
        return scratch.returns

    def _read_objects(self, reach, effects: _Effects) -> None:
        effects.reads |= {("o", root, facet) for root, facet in reach}

    def _write_objects(self, reach, effects: _Effects) -> None:
        effects.writes |= {("o", root, facet) for root, facet in reach}

    def _name_read(self, name: str, effects: _Effects, objects: bool = True) -> None:
        if self.local is None or name not in self.local:
            effects.reads.add(("n", name))
            if name in self.s.imported and name not in self.s.libraries and name not in self.env:
                effects.reads.add(WORLD)  # a module's attributes: its globals, which calls may change
        if objects:
            self._read_objects(self.reach(name), effects)

    # -- expressions -------------------------------------------------------------------------

    def expr(self, node: ast.AST | None, effects: _Effects) -> None:
        if node is None:
            return
        if isinstance(node, ast.Name):
            if node.id in DYNAMIC:
                effects.whole = effects.whole or f"it calls {node.id}()"
            self._name_read(node.id, effects)
            return
        if isinstance(node, ast.Call):
            self.call(node, effects)
            return
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            inner = _Analyzer(self.s, dict(self.env), self.local, self.depth, dict(self.owned))
            bound = set()
            for generator in node.generators:
                inner.expr(generator.iter, effects)
                inner._iterated(generator.iter, effects)
                for name in _stored(generator.target):
                    inner.env[name] = inner.reach_of(generator.iter)
                    bound.add(name)
                for test in generator.ifs:
                    inner.expr(test, effects)
            for part in ("elt", "key", "value"):
                inner.expr(getattr(node, part, None), effects)
            effects.reads -= {("n", name) for name in bound}
            return
        if isinstance(node, ast.Lambda):
            return  # its body runs where it is called: a call of an unknown object
        if isinstance(node, (ast.Yield, ast.YieldFrom, ast.Await)):
            effects.whole = effects.whole or "it yields or awaits"
        for child in ast.iter_child_nodes(node):
            self.expr(child, effects)

    def _args(self, node: ast.Call, effects: _Effects, objects: bool = True) -> frozenset:
        """Evaluate the arguments; ``objects``: a bare name passed reads its object too (False
        where the callee's own body says what it reads of them)."""
        reach: set = set()
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            if isinstance(arg, ast.Starred):
                arg = arg.value
            if isinstance(arg, ast.Name) and not objects:
                self._name_read(arg.id, effects, objects=False)
            else:
                self.expr(arg, effects)
            reach |= self.reach_of(arg)
        return frozenset(reach)

    def _unknown(self, node: ast.Call, receiver: frozenset, effects: _Effects) -> None:
        reach = self._args(node, effects) | receiver
        self._read_objects(reach, effects)
        self._write_objects(reach, effects)
        effects.reads.add(WORLD)
        effects.writes.add(WORLD)

    def call(self, node: ast.Call, effects: _Effects) -> None:
        func, s = node.func, self.s
        if any(is_flor_call(node, attr, s.flor) for attr in ("log", "loop", "arg", "checkpointing", "commit")):
            if is_flor_call(node, "loop", s.flor):
                effects.restores = True
            elif is_flor_call(node, "log", s.flor) and _logs_new(node, s.new_names):
                effects.new = True
            elif is_flor_call(node, "log", s.flor):
                effects.logs = True
            self._args(node, effects)
            return
        if isinstance(func, ast.Name) and func.id == WRAPPER:
            effects.new = True  # a placed statement's observer (isolation.wrap)
            return
        if isinstance(func, ast.Attribute):
            self._method(node, func, effects)
            return
        if not isinstance(func, ast.Name):
            self.expr(func, effects)
            self._unknown(node, self.reach_of(func), effects)
            return
        name = func.id
        if name in DYNAMIC:
            effects.whole = effects.whole or f"it calls {name}()"
            return
        if name in s.functions and (self.local is None or name not in self.local):
            self._helper(node, s.functions[name], effects)
            return
        if name == "print":
            self._args(node, effects)
            effects.prints = True
            return
        if name in PURE_BUILTINS and name not in self.env:
            self._args(node, effects)
            return
        if name in ADVANCING_BUILTINS:
            reach = self._args(node, effects)
            self._read_objects(reach, effects)
            self._write_objects(reach, effects)
            return
        self._name_read(name, effects, objects=False)
        callee = self.reach(name)
        if any(root in s.modules for root, _ in callee):  # calling a torch.nn module: forward
            args = self._args(node, effects)
            self._read_objects(callee | args, effects)
            mutates = any(s.modules.get(root) for root, _ in callee)
            self._write_objects(callee if mutates else _restrict(callee, OTHER), effects)
            effects.reads.add(WORLD)
            effects.writes.add(WORLD)
            return
        self._unknown(node, callee, effects)

    def _method(self, node: ast.Call, func: ast.Attribute, effects: _Effects) -> None:
        s, method = self.s, func.attr
        dotted = dotted_name(func.value)
        if dotted is not None and dotted.split(".")[0] in s.libraries and dotted.split(".")[0] not in self.env:
            # A function of a numeric library (torch.flatten, F.nll_loss, np.mean).
            args = self._args(node, effects)
            if method in RANDOM_FUNCTIONS or method.rstrip("_") in RANDOM_FUNCTIONS or "distributed" in dotted:
                # random (the global generator; `shuffle` and in-place draws change their argument
                # too), or collectives that fill their tensors
                self._read_objects(args, effects)
                if method in SHUFFLING or method.endswith("_") or "distributed" in dotted:
                    self._write_objects(args, effects)
                effects.reads.add(WORLD)
                effects.writes.add(WORLD)
            elif method in IO_FUNCTIONS:  # files: it reads what it saves and never changes a module's parameters
                self._read_objects(args, effects)
                if dotted.split(".")[0] == "torch" and method == "save" and node.args:  # torch.save(obj, f): obj is read
                    args = frozenset().union(*(self.reach_of(a) for a in [*node.args[1:], *(k.value for k in node.keywords)]))
                self._write_objects(_restrict(args, OTHER), effects)
                effects.reads.add(WORLD)
                effects.writes.add(WORLD)
            elif method.endswith("_") and not method.endswith("__"):  # in place (clip_grad_norm_): its arguments
                self._read_objects(args, effects)
                self._write_objects(args, effects)
            return
        if dotted is not None and f"{dotted}.{method}" in PURE_CALLS | READING_CALLS \
                and dotted.split(".")[0] in s.imported and dotted.split(".")[0] not in self.env:
            self._args(node, effects)
            if f"{dotted}.{method}" in READING_CALLS:
                effects.reads.add(WORLD)
            return
        receiver = self.reach_of(func.value)
        if isinstance(func.value, ast.Name):
            self._name_read(func.value.id, effects, objects=False)
        else:
            self.expr(func.value, effects)
        if method in PARAM_READERS:
            self._args(node, effects)
            self._read_objects(_restrict(receiver, PARAMS), effects)
        elif method in MODE_METHODS and any(root in s.modules for root, _ in receiver):
            self._args(node, effects)
            self._write_objects(_restrict(receiver, OTHER), effects)
        elif method in PURE_METHODS:
            self._args(node, effects)
            self._read_objects(receiver, effects)
        elif method in LOCAL_METHODS or (method.endswith("_") and not method.endswith("__")
                                         and method.rstrip("_") not in RANDOM_FUNCTIONS):
            # changes its receiver and arguments (an in-place method: `add_`, GradScaler's `unscale_`)
            reach = self._args(node, effects) | receiver
            self._read_objects(reach, effects)
            self._write_objects(reach, effects)
        else:
            self._unknown(node, receiver, effects)

    def _helper(self, node: ast.Call, function: ast.FunctionDef, effects: _Effects) -> None:
        """A function of the script: its body's effects, its parameters bound to the arguments."""
        s = self.s
        args = self._args(node, effects, objects=False)
        if self.depth >= 8 or function in s.active:
            self._unknown(node, frozenset(), effects)  # deep or recursive: taken as unknown
            return
        env = dict(s.globals_env)
        params = [a.arg for a in [*function.args.posonlyargs, *function.args.args, *function.args.kwonlyargs]]
        for position, param in enumerate(params):
            if position < len(node.args) and not isinstance(node.args[position], ast.Starred):
                env[param] = self.reach_of(node.args[position])
            else:
                keyword = next((k for k in node.keywords if k.arg == param), None)
                env[param] = self.reach_of(keyword.value) if keyword is not None else args
        for extra in (function.args.vararg, function.args.kwarg):
            if extra is not None:
                env[extra.arg] = args
        declared = {n for sub in ast.walk(function) if isinstance(sub, (ast.Global, ast.Nonlocal)) for n in sub.names}
        local = (set(params) | {x.arg for x in (function.args.vararg, function.args.kwarg) if x is not None}
                 | {n for sub in ast.walk(function) for n in _stored(sub)}) - declared
        owned = dict(s.globals_owned)
        for position, param in enumerate(params):
            if position < len(node.args) and not isinstance(node.args[position], ast.Starred):
                owned[param] = self.owned_of(node.args[position])
        inner = _Analyzer(s, env, local, self.depth + 1, owned)
        body = _Effects()
        s.active.add(function)
        try:
            inner.block(function.body, body)
        finally:
            s.active.discard(function)
        if function.lineno in s.new_functions:
            body.new = True
        effects.merge(body)
        effects.returns = effects.returns | body.returns

    def _iterated(self, node: ast.AST, effects: _Effects) -> None:
        """Iterating advances an iterator made outside (a data loader draws its base seed)."""
        targets = [node]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("enumerate", "zip", "iter"):
            targets = list(node.args)
        for target in targets:
            if isinstance(target, ast.Attribute) and target.attr in PLAIN_ATTRIBUTES:
                self._write_objects({(root, ALL) for root in self.owned_of(target)}, effects)
            elif isinstance(target, (ast.Name, ast.Attribute)):
                self._write_objects({(root, ALL) for root in self.owned_of(target)}, effects)
                effects.reads.add(WORLD)
                effects.writes.add(WORLD)

    # -- statements ------------------------------------------------------------------------

    def block(self, statements: list[ast.stmt], effects: _Effects) -> None:
        for statement in statements:
            self.statement(statement, effects)

    def _assign(self, target: ast.AST, value: ast.AST | None, effects: _Effects, reach=None) -> None:
        if isinstance(target, ast.Name):  # in the body, a name is a root of the object it names now (made here or not)
            if self.local is None or target.id not in self.local:
                effects.writes.add(("n", target.id))
            self.env[target.id] = reach if reach is not None else self.reach_of(value)
            self.owned[target.id] = self.owned_of(value) if reach is None and value is not None else frozenset({target.id})
            if self.local is None:
                self.env[target.id] = self.env[target.id] | {(target.id, ALL)}
                self.owned[target.id] = self.owned[target.id] | {target.id}
        elif isinstance(target, (ast.Tuple, ast.List)):
            whole = reach if reach is not None else self.reach_of(value)
            for element in target.elts:
                self._assign(element, None, effects, whole)
        elif isinstance(target, ast.Starred):
            self._assign(target.value, value, effects, reach)
        else:  # an attribute or item of an object: the object changes
            self.expr(target.value, effects)
            if isinstance(target, ast.Subscript):
                self.expr(target.slice, effects)
            self._write_objects(self.reach_of(target.value), effects)

    def statement(self, node: ast.stmt, effects: _Effects) -> None:
        if isinstance(node, ast.Expr):
            self.expr(node.value, effects)
        elif isinstance(node, ast.Assign):
            self.expr(node.value, effects)
            for target in node.targets:
                self._assign(target, node.value, effects)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            self.expr(node.value, effects)
            if isinstance(node, ast.AugAssign) or node.value is not None:
                self.expr(node.target if isinstance(node, ast.AugAssign) else None, effects)
                if isinstance(node.target, ast.Name):  # `x += y` may change x's object in place
                    self._write_objects({(root, ALL) for root in self.owned_of(node.target)}, effects)
                self._assign(node.target, node.value, effects,
                             self.reach_of(node.target) | self.reach_of(node.value))
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self.expr(node.iter, effects)
            flor_loop = isinstance(node.iter, ast.Call) and is_flor_call(node.iter, "loop", self.s.flor)
            if flor_loop and not self.s.nested_skipped:
                self.s.nested_skipped = True  # memoization skips it and restores its effect
                effects.restores = True
                return
            self._iterated(node.iter, effects)
            self._assign(node.target, node.iter, effects)
            self.loops += 1
            self.block(node.body, effects)
            self.loops -= 1
            self.block(node.orelse, effects)
        elif isinstance(node, ast.While):
            self.expr(node.test, effects)
            self.loops += 1
            self.block(node.body, effects)
            self.loops -= 1
            self.block(node.orelse, effects)
        elif isinstance(node, ast.If):
            self.expr(node.test, effects)
            self.block(node.body, effects)
            self.block(node.orelse, effects)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                self.expr(item.context_expr, effects)
                if item.optional_vars is not None:
                    self._assign(item.optional_vars, item.context_expr, effects)
            self.guarded += 1
            self.block(node.body, effects)
            self.guarded -= 1
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            self.guarded += 1
            self.block(node.body, effects)
            for handler in node.handlers:
                self.expr(handler.type, effects)
                if handler.name:
                    self.env[handler.name] = frozenset()
                self.block(handler.body, effects)
            self.block(node.orelse, effects)
            self.block(node.finalbody, effects)
            self.guarded -= 1
        elif isinstance(node, (ast.Break, ast.Continue)):
            kind = type(node).__name__.lower()
            if self.loops:
                pass  # it ends a loop inside the body, not the outer one
            elif self.guarded:  # leaving a `with`/`try` runs code the slice cannot order
                effects.whole = effects.whole or f"line {node.lineno} may end the iteration early ({kind} inside try/with)"
            else:  # at the body's level, in an if/elif/else chain: kept, with what its condition reads
                effects.ends.append((node.lineno, node.col_offset, kind))
        elif isinstance(node, ast.Return):
            self.expr(node.value, effects)
            effects.returns = effects.returns | self.reach_of(node.value)
            if self.local is None:
                effects.whole = effects.whole or f"line {node.lineno} returns from inside the loop"
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                name = (alias.asname or alias.name).split(".")[0]
                if self.local is None or name not in self.local:
                    effects.writes.add(("n", name))
        elif isinstance(node, (ast.Pass,)):
            pass
        elif isinstance(node, (ast.Raise, ast.Assert, ast.Delete)):
            for child in ast.iter_child_nodes(node):
                self.expr(child, effects)
            if isinstance(node, ast.Delete):
                for target in node.targets:
                    self._assign(target, None, effects, frozenset())
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            if self.local is None:
                effects.whole = effects.whole or f"line {node.lineno} declares {type(node).__name__.lower()} names"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and self.local is not None:
            pass  # a helper's own local definition: calling it is a call of an unknown object
        else:  # definitions, match and the rest: not sliced
            effects.whole = effects.whole or f"line {node.lineno} holds a {type(node).__name__} statement"


class _Slicer:
    """The whole script's facts the analysis needs."""

    def __init__(self, layout: Layout, new_names: set[str], new_lines: set[int], read_module=None) -> None:
        tree = layout.tree
        self.read_module = read_module  # dotted module name -> its syntax tree in the run's version (or None)
        # `from model import GPT`: a class of the project's own modules, read to tell a torch
        # module (whose forward is checked as the script's own are) from code flor cannot see.
        self.from_project = {a.asname or a.name: (node.module, a.name) for node in tree.body
                             if isinstance(node, ast.ImportFrom) and not node.level and node.module
                             and node.module.split(".")[0] not in LIBRARIES for a in node.names}
        self.flor = layout.names
        self.new_names = new_names
        self.functions: dict[str, ast.FunctionDef] = {}
        self.classes: dict[str, ast.ClassDef] = {}
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions[node.name] = node
            elif isinstance(node, ast.ClassDef):
                self.classes[node.name] = node
        self.imported = {(a.asname or a.name).split(".")[0] for node in ast.walk(tree)
                         if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names}
        # Names bound to modules of the numeric libraries, whose functions compute from their
        # arguments (`import torch.nn.functional as F`, `from torch import nn`); the project's
        # own modules and every other import are code flor cannot see.
        self.libraries = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                self.libraries |= {(a.asname or a.name).split(".")[0] for a in node.names
                                   if a.name.split(".")[0] in LIBRARIES}
            elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] in LIBRARIES:
                self.libraries |= {a.asname or a.name for a in node.names if a.name != "*"
                                   and (a.name[:1].islower() or a.name in ("nn", "F"))}
        self.new_functions = {f.lineno for f in self.functions.values()
                              if any(f.lineno <= line <= f.end_lineno for line in new_lines)}
        self.active: set = set()
        self.nested_skipped = False
        self.modules: dict[str, bool] = {}  # root -> whether its forward may change its parameters
        self.module_classes: dict[str, ast.ClassDef] = {}  # root -> its class, where the script or project defines it
        self.globals_env: dict = {}
        self.globals_owned: dict = {}
        self.registered: set[str] = set()
        self.registered_as: dict[str | None, str | None] = {}  # flor.checkpointing's names -> the script's (slice_restore)
        self._environment(layout)

    def _environment(self, layout: Layout) -> None:
        """What each name assigned outside the outer loop reaches, and which are modules."""
        outer = layout.outer
        scopes = [layout.tree.body] + [f.body for f in layout.functions if _encloses(f, outer)]
        analyzer = _Analyzer(self, self.globals_env, owned=self.globals_owned)
        assigned: dict[str, list] = {}  # every value a name is given outside the loop
        for body in scopes:
            for node in _walk_statements(body):
                if isinstance(node, ast.Assign) and node is not outer:
                    for target in node.targets:
                        for name in _stored(target):
                            single = isinstance(target, ast.Name)
                            assigned.setdefault(name, []).append(node.value if single else None)
                elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For, ast.With)) and node is not outer:
                    for name in _stored(getattr(node, "target", None) or ast.Pass()):
                        assigned.setdefault(name, []).append(None)
        for body in scopes:
            for node in (node for node in _walk_statements(body) if node is not outer):
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    name = node.targets[0].id
                    self.globals_env[name] = analyzer.reach_of(node.value) | {(name, ALL)}
                    if immutable(node.value) and all(immutable(other) for other in assigned.get(name, ())):
                        self.globals_env[name] = frozenset()  # a number or a string: nothing of it can change
                    self.globals_owned[name] = frozenset({name})
                    kind = self._module_kind(node.value)
                    if kind is not None:
                        self.modules[name] = kind
                        cls = self._class_of(node.value)
                        if cls is not None:
                            self.module_classes[name] = cls
                    if isinstance(node.value, ast.Name):  # an alias: the same object
                        self.globals_env[name] = analyzer.reach(node.value.id)
                        self.globals_owned[name] = analyzer.owned_of(node.value)
                        if node.value.id in self.modules:
                            self.modules[name] = self.modules[node.value.id]
                        if node.value.id in self.module_classes:
                            self.module_classes[name] = self.module_classes[node.value.id]
                else:  # `m, opt = model, optimizer`, `for opt in ...`: any object the value reaches
                    bound_otherwise(node, analyzer.reach_of, self.globals_env, self.globals_owned, ALL)
                if isinstance(node, (ast.With, ast.AsyncWith)):
                    for item in node.items:
                        if is_flor_call(item.context_expr, "checkpointing", self.flor):
                            call = item.context_expr
                            self.registered |= {k.value.id for k in call.keywords if isinstance(k.value, ast.Name)}
                            named = [*((str(i), a) for i, a in enumerate(call.args)), *((k.arg, k.value) for k in call.keywords)]
                            for key, arg in named:
                                self.registered_as[None if isinstance(arg, ast.Starred) else key] = getattr(arg, "id", None)
        held_outside(layout.tree, outer, analyzer.reach_of, self.globals_env, ALL)  # `state["opt"] = optimizer`

    def _project_class(self, name: str) -> ast.ClassDef | None:
        found = self.from_project.get(name)
        if found is None or self.read_module is None:
            return None
        try:
            tree = self.read_module(found[0])
        except (SyntaxError, ValueError, OSError, FlorError):
            return None
        return next((node for node in getattr(tree, "body", []) if isinstance(node, ast.ClassDef)
                     and node.name == found[1]), None)

    def _class_of(self, value: ast.AST) -> ast.ClassDef | None:
        dotted = constructor(value)
        return None if dotted is None else self.classes.get(dotted) or self._project_class(dotted)

    def _module_kind(self, value: ast.AST) -> bool | None:
        """None: not a torch module; else whether its forward may change its own parameters."""
        dotted = constructor(value)
        if dotted is not None and dotted.startswith(("nn.", "torch.nn.")):
            return False
        return module_kind(self._class_of(value))


def slice_body(source: str, new_names: set[str], new_lines: set[int] = frozenset(), read_module=None) -> Slice:
    """The slice of the outer loop's body of ``source`` (the placed script) for the new
    statements: those logging ``new_names``, or on ``new_lines``. ``read_module``: a dotted
    module name -> its syntax tree in the run's version, or None (the project's classes it imports from)."""
    layout = Layout.of(source)
    outer = layout.outer
    if outer is None:
        return Slice(whole="the script has no outer flor.loop")
    slicer = _Slicer(layout, set(new_names), set(new_lines), read_module)
    body = outer.body
    analyzer = _Analyzer(slicer, dict(slicer.globals_env), owned=dict(slicer.globals_owned))
    items = outer.iter  # `flor.loop("epoch", range(n))` yields the items of `range(n)`
    if isinstance(items, ast.Call) and is_flor_call(items, "loop", slicer.flor) and len(items.args) >= 2:
        items = items.args[1]
    analyzer._assign(outer.target, items, _Effects())
    effects = []
    for statement in body:
        one = _Effects()
        analyzer.statement(statement, one)
        if any(statement.lineno <= line <= statement.end_lineno for line in new_lines):
            one.new = True
        if one.whole:
            return Slice(whole=one.whole)
        effects.append(one)
    if not slicer.nested_skipped:
        return Slice(whole="no nested flor.loop is skipped in its body")
    lines = source.splitlines()
    why: dict[int, str] = {}
    for index, one in enumerate(effects):
        if one.new:
            why[index] = "a new statement"
        elif one.restores:
            why[index] = "reaches the skipped nested loop (where the checkpoint is restored)"
        elif one.ends:
            # Control dependence: whether the statements after it run, and whether the loop goes
            # on, follow its condition; so it stays, with every statement writing what that reads.
            line, _, kind = one.ends[0]
            why[index] = f"may end the {'loop' if kind == 'break' else 'iteration'} ({kind} at line {line})"
    if not any(one.new for one in effects):
        return Slice(whole="no new statement is in the body (or a function it calls)")
    changed = True
    while changed:  # a write anywhere in the body reaches a read (the body repeats)
        changed = False
        for index, one in enumerate(effects):
            if index in why:
                continue
            for kept in sorted(why, key=lambda i: (not effects[i].new, not effects[i].restores)):
                shared = next((loc for loc in one.writes for read in effects[kept].reads if _overlap(loc, read)), None)
                if shared is not None:
                    why[index] = f"writes {_shown(shared)}, read by line {body[kept].lineno}"
                    changed = True
                    break
    statements = []
    for index, (node, one) in enumerate(zip(body, effects)):
        if index in why:
            statements.append(Statement(node.lineno, node.col_offset, _text(lines, node), True, why[index]))
        else:
            notes = [note for flag, note in ((one.prints, "it prints"), (one.logs, "its flor.log values are not compared"))
                     if flag]
            statements.append(Statement(node.lineno, node.col_offset, _text(lines, node), False,
                                        "writes nothing a kept statement reads" + (f" ({'; '.join(notes)})" if notes else "")))
    if all(s.kept for s in statements):
        return Slice(statements=tuple(statements), whole="every statement of the body is needed")
    kept = [effects[i] for i in why]
    names = sorted({loc[1] for one in kept for loc in one.writes if loc[0] == "n"})
    defined = set(slicer.functions) | set(slicer.classes) | slicer.imported
    objects = sorted({loc[1] for one in kept for loc in one.writes if loc[0] == "o"} - slicer.registered - defined)
    breaks = tuple((line, col) for one in kept for line, col, kind in one.ends if kind == "break")
    restored, unrestored = restores(slicer.registered_as, slicer.globals_owned, body, effects, why)
    return Slice(statements=tuple(statements), names=tuple(names), objects=tuple(objects), breaks=breaks,
                 restored=restored, unrestored=unrestored)


def _shown(location: tuple) -> str:
    if location[0] == "n":
        return f"`{location[1]}`"
    if location[0] == "o":
        return f"`{location[1]}`" + ("" if location[2] == ALL else f" ({location[2]})")
    return "the global state (random numbers, files)"


def _logs_new(node: ast.Call, new_names: set[str]) -> bool:
    first = node.args[0] if node.args else None
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value in new_names
    return True  # a computed name: may be a new one


def _stored(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def _walk_statements(body: list[ast.stmt]):
    for node in body:
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for name in ("body", "orelse", "finalbody"):
            yield from _walk_statements(getattr(node, name, []) or [])
        for handler in getattr(node, "handlers", []) or []:
            yield from _walk_statements(handler.body)


def _encloses(outer: ast.AST, inner: ast.AST | None) -> bool:
    return inner is not None and any(node is inner for node in ast.walk(outer))
