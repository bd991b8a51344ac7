"""Periodic branches read from the source: the ``if`` tests in the outer loop's body that hold
every N iterations (``if iter_num % eval_interval == 0:``), and the bound a ``break`` sets.

Hindsight questions land in those branches, and replaying one of their iterations costs the
iterations since the checkpoint before it. Learning their period from iteration times (the
policy's fallback) is fragile under load: every slow moment supposes a period, a busy machine
hides a real one, and the first is known only after two evaluations. The source says it before
the first iteration ends. The shapes read, where ``it`` is a counter and N, R are values:

- ``it % N == R`` (either side), ``(it + c) % N == R``, ``it % N == N - 1``, ``not it % N``;
- any of them as one conjunct of an ``and`` (``it > 0 and it % N == 0``, ``... and master_process``):
  the others only keep the branch from running some time, which costs a checkpoint, never a value.

A counter is a name of the loop's target (the loop variable, an ``enumerate`` index, ``epoch``)
or a name the body advances by one (``iter_num += 1``, ``step = step + 1``, a statement of the
body itself, not inside a branch). That it steps by one is not taken from the source: the value
the test sees is observed at the end of the first :data:`OBSERVED` iterations, and only a counter
that moved by exactly one each time is believed. N and R are evaluated in the loop's frame then,
by :func:`safe_value`: names, attributes (read without running a property or ``__getattr__``),
subscripts of plain dicts, lists and tuples by an int or a string (another key's ``__hash__`` would
run), literals and integer arithmetic; never a call. A test
with a call in it is not evaluated at all.

A statement of the body ``if it + c > M: break`` (``>=``, ``==``) also tells the loop's length
(nanoGPT's ``while True`` with ``if iter_num > max_iters: break``), which the disk budget
spreads its bytes over.

Out of scope: branches inside functions the body calls (MNIST's ``train()`` logs every
``log_interval`` batches), tests on values that do not step by one (``if step % N == 0`` with
``step += batch_size``), and ``while`` loops (flor.loop runs ``for`` loops). For those the
policy keeps learning from iteration times.
"""

from __future__ import annotations

import ast
import inspect
from typing import NamedTuple

from .variables import _stamp, _tree, for_loop_at

OBSERVED = 2  # iterations whose counter values must step by one before a test is believed
MAX_PERIOD = 2**53  # a longer period never fires (and overflows the policy's float arithmetic)
_ARITHMETIC = {ast.Add: int.__add__, ast.Sub: int.__sub__, ast.Mult: int.__mul__, ast.FloorDiv: int.__floordiv__,
               ast.Mod: int.__mod__}


class Unsafe(Exception):
    """An expression :func:`safe_value` will not evaluate (a call, an operator, a descriptor)."""


class BranchTest(NamedTuple):
    """One periodic test read from the source: ``(counter + shift) % modulus == residue``."""

    counter: str
    shift: int
    modulus: ast.expr  # N, evaluated in the frame
    residue: ast.expr  # R, evaluated in the frame
    sees_advanced: bool  # the body advances the counter before the test: it sees the value after
    text: str  # the test's source, for flor show


class BreakBound(NamedTuple):
    """``if counter + shift <op> bound: break``, a statement of the loop's body."""

    counter: str
    shift: int
    bound: ast.expr
    inclusive: bool  # ``>=`` or ``==``: the loop's last counter value is bound - shift
    sees_advanced: bool


class Branch(NamedTuple):
    """A periodic branch: it runs at outer iterations whose index % period == phase."""

    period: int
    phase: int
    text: str


class Learned(NamedTuple):
    """What the source says of the outer loop, once its counters were seen stepping by one."""

    branches: tuple[Branch, ...]
    total: int | None  # the loop's length a break bound implies (None: none read)


def safe_value(node: ast.expr, frame) -> object:
    """The value of ``node`` in ``frame`` without running any of the script's code (see the
    module docstring); :class:`Unsafe` for anything else."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        local = frame.f_locals
        if node.id in local:
            return local[node.id]
        if node.id in frame.f_globals:
            return frame.f_globals[node.id]
        raise Unsafe(f"{node.id} is not defined")
    if isinstance(node, ast.Attribute):
        owner = safe_value(node.value, frame)
        try:
            value = inspect.getattr_static(owner, node.attr)  # no property, no __getattr__ runs
        except AttributeError:
            raise Unsafe(f"no attribute {node.attr}") from None
        if hasattr(type(value), "__get__") and not isinstance(value, (int, float, str)):
            raise Unsafe(f"{node.attr} is computed")  # a property or method: reading it would run code
        return value
    if isinstance(node, ast.Subscript):
        container = safe_value(node.value, frame)
        key = safe_value(node.slice, frame)
        if type(container) not in (dict, list, tuple):
            raise Unsafe("a subscript of a user type")  # its __getitem__ would run
        if type(key) not in (int, str):
            raise Unsafe("a key of another type")  # its __hash__ and __eq__ (a list's: __index__) would run
        try:
            return container[key]
        except (KeyError, IndexError, TypeError):
            raise Unsafe("no such item") from None
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right = _integer(safe_value(node.left, frame)), _integer(safe_value(node.right, frame))
        if isinstance(node.op, (ast.FloorDiv, ast.Mod)) and right == 0:
            raise Unsafe("division by zero")
        return _ARITHMETIC[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_integer(safe_value(node.operand, frame))
    raise Unsafe(type(node).__name__)


def _integer(value) -> int:
    if type(value) is not int:  # bool is not a count; numpy ints and floats are left alone
        raise Unsafe("not an int")
    return value


# -- reading the source ----------------------------------------------------------------------

def _counter_plus(node: ast.expr) -> tuple[str, int] | None:
    """``it`` -> (it, 0); ``it + 2`` / ``2 + it`` -> (it, 2); ``it - 1`` -> (it, -1)."""
    if isinstance(node, ast.Name):
        return node.id, 0
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        left, right = node.left, node.right
        if isinstance(node.op, ast.Add) and isinstance(left, ast.Constant):
            left, right = right, left
        if isinstance(left, ast.Name) and isinstance(right, ast.Constant) and type(right.value) is int:
            return left.id, right.value if isinstance(node.op, ast.Add) else -right.value
    return None


def _has_call(node: ast.AST) -> bool:
    return any(isinstance(sub, (ast.Call, ast.Lambda, ast.NamedExpr, ast.Await)) for sub in ast.walk(node))


def _modulo_tests(test: ast.expr) -> list[tuple[str, int, ast.expr, ast.expr]]:
    """(counter, shift, N, R) of each periodic conjunct of an ``if`` test."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return [found for value in test.values for found in _modulo_tests(value)]
    if _has_call(test):
        return []  # never evaluated: a call would run the script's code
    zero = ast.Constant(0)
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        pairs = [(test.operand, zero)]
    elif isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
        pairs = [(test.left, test.comparators[0]), (test.comparators[0], test.left)]
    else:
        return []
    for modulo, residue in pairs:
        if isinstance(modulo, ast.BinOp) and isinstance(modulo.op, ast.Mod):
            counter = _counter_plus(modulo.left)
            if counter is not None:
                return [(counter[0], counter[1], modulo.right, residue)]
    return []


def _break_bound(statement: ast.stmt) -> tuple[str, int, ast.expr, bool] | None:
    """(counter, shift, M, inclusive) of ``if it + c > M: break`` (``>=``, ``==``)."""
    if not isinstance(statement, ast.If) or statement.orelse or _has_call(statement.test):
        return None
    if not any(isinstance(s, ast.Break) for s in statement.body):
        return None
    test = statement.test
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return None
    op, left, right = test.ops[0], test.left, test.comparators[0]
    flipped = {ast.Lt: ast.Gt, ast.LtE: ast.GtE}  # ``M < it`` is ``it > M``
    if type(op) in flipped and _counter_plus(right) is not None:
        op, left, right = flipped[type(op)](), right, left
    counter = _counter_plus(left)
    if counter is None or not isinstance(op, (ast.Gt, ast.GtE, ast.Eq)):
        return None
    return counter[0], counter[1], right, not isinstance(op, ast.Gt)


def _advanced(body: list[ast.stmt]) -> dict[str, int]:
    """Names a statement of the body (or of a ``with`` in it) advances by one: name -> its line."""
    found: dict[str, int] = {}
    for statement in body:
        if isinstance(statement, (ast.With, ast.AsyncWith)):
            found.update(_advanced(statement.body))
        elif (isinstance(statement, ast.AugAssign) and isinstance(statement.op, ast.Add)
              and isinstance(statement.target, ast.Name) and isinstance(statement.value, ast.Constant)
              and statement.value.value == 1 and type(statement.value.value) is int):
            found.setdefault(statement.target.id, statement.lineno)
        elif (isinstance(statement, ast.Assign) and len(statement.targets) == 1
              and isinstance(statement.targets[0], ast.Name)
              and _counter_plus(statement.value) == (statement.targets[0].id, 1)):
            found.setdefault(statement.targets[0].id, statement.lineno)
    return found


def _ifs(body: list[ast.stmt]):
    """Every ``if`` statement in the body, at any depth, not inside a function or class defined there."""
    stack = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, ast.If):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def read_loop(loop: ast.For) -> tuple[list[BranchTest], list[BreakBound], frozenset[str]]:
    """The periodic tests and break bounds of a ``for`` statement's body on its counters, and the
    counters the body advances."""
    targets = {n.id for n in ast.walk(loop.target) if isinstance(n, ast.Name)}
    advanced = _advanced(loop.body)
    counters = targets | set(advanced)

    def sees_advanced(name: str, line: int) -> bool:
        return name in advanced and advanced[name] < line

    tests = []
    for node in _ifs(loop.body):
        for counter, shift, modulus, residue in _modulo_tests(node.test):
            if counter in counters:
                tests.append(BranchTest(counter, shift, modulus, residue, sees_advanced(counter, node.lineno),
                                        ast.unparse(node.test)))
    bounds = []
    for statement in loop.body:
        found = _break_bound(statement)
        if found is not None and found[0] in counters:
            bounds.append(BreakBound(*found, sees_advanced(found[0], statement.lineno)))
    return tests, bounds, frozenset(advanced)


# -- learning while the loop runs ----------------------------------------------------------------

class SourceLearner:
    """Reads the outer loop's tests once, then observes its counters over the first iterations."""

    def __init__(self, frame, tests: list[BranchTest], bounds: list[BreakBound],
                 advanced: frozenset[str] = frozenset()) -> None:
        self.frame = frame
        self.tests = tests
        self.bounds = bounds
        self.advanced = advanced  # counters the body advances (not the loop's target)
        self.seen: dict[str, list[tuple[int, object]]] = {}  # counter -> (index, value the test saw)
        self.observed = 0  # iterations observed

    @classmethod
    def of(cls, frame) -> SourceLearner | None:
        """A learner for the ``for`` statement ``frame`` is executing, or None (no periodic test,
        no source, a notebook cell gone)."""
        filename = frame.f_code.co_filename
        if _stamp(filename) is None:
            return None
        tree = _tree(filename)
        loop = for_loop_at(tree, frame.f_lineno) if tree is not None else None
        if loop is None:
            return None
        tests, bounds, advanced = read_loop(loop)
        return cls(frame, tests, bounds, advanced) if tests else None

    def observe(self, index: int) -> Learned | None:
        """Outer iteration ``index`` ended: None for the first :data:`OBSERVED` - 1 of them, then
        what the source says of the counters that stepped by one (the learner is done)."""
        local = self.frame.f_locals
        for name in {t.counter for t in self.tests} | {b.counter for b in self.bounds}:
            if name in local or name in self.frame.f_globals:
                value = local[name] if name in local else self.frame.f_globals[name]
                self.seen.setdefault(name, []).append((index, value))
        self.observed += 1
        if self.observed < OBSERVED:
            return None
        return self._learned()

    def _offset(self, counter: str, sees_advanced: bool, advanced: bool) -> int | None:
        """d such that the value the test sees in iteration k is k + d, if the counter stepped
        by one over the observed iterations (None: it did not)."""
        seen = self.seen.get(counter, [])
        if len(seen) < OBSERVED or any(type(value) is not int for _, value in seen):
            return None
        offsets = {value - index for index, value in seen}
        if len(offsets) != 1:
            return None
        # Observed at the end of the iteration: a counter the body advances after the test had
        # one less when the test read it.
        return offsets.pop() - (1 if advanced and not sees_advanced else 0)

    def _learned(self) -> Learned:
        advanced = self.advanced
        branches: dict[tuple[int, int], Branch] = {}
        for test in self.tests:
            offset = self._offset(test.counter, test.sees_advanced, test.counter in advanced)
            try:
                period, residue = _integer(safe_value(test.modulus, self.frame)), _integer(safe_value(test.residue, self.frame))
            except Unsafe:
                continue
            if offset is None or period < 2 or period > MAX_PERIOD:
                continue  # every iteration, or none, is no periodic branch
            phase = (residue - test.shift - offset) % period
            branches.setdefault((period, phase), Branch(period, phase, test.text))
        total = None
        for bound in self.bounds:
            offset = self._offset(bound.counter, bound.sees_advanced, bound.counter in advanced)
            try:
                limit = _integer(safe_value(bound.bound, self.frame))
            except Unsafe:
                continue
            if offset is not None:
                # The counter's value in the iteration that breaks, as an index.
                last = limit - bound.shift + (0 if bound.inclusive else 1) - offset
                if last >= 0:
                    total = last + 1 if total is None else min(total, last + 1)
        self.frame = None  # nothing more to read
        return Learned(tuple(sorted(branches.values())), total)
