"""What the slicer (``replay/slice.py``) assumes of code it cannot see: which builtins, methods
and library functions only compute, which change their receiver or arguments, which read or
change the world (the global random state, files, the clock). docs/slicing.md shows them as a
table; verification (``replay/slice_run.py``) checks, at run time, the slices built on them."""

from __future__ import annotations

import ast

from .independence import dotted_name

PURE_BUILTINS = frozenset({
    "len", "sum", "min", "max", "abs", "float", "int", "str", "bool", "round", "range", "enumerate", "zip",
    "sorted", "list", "tuple", "dict", "set", "frozenset", "isinstance", "issubclass", "format", "repr",
    "any", "all", "map", "filter", "reversed", "type", "hash", "divmod", "pow", "hasattr", "id", "chr", "ord",
    "hex", "bin", "oct", "complex", "slice", "getattr", "callable", "super", "object",
})
ADVANCING_BUILTINS = frozenset({"next", "iter"})  # change the iterator they are given
DYNAMIC = frozenset({"eval", "exec", "locals", "vars", "globals", "__import__", "compile", "breakpoint"})
PURE_METHODS = frozenset({
    "item", "sum", "mean", "argmax", "argmin", "max", "min", "eq", "ne", "lt", "le", "gt", "ge", "view_as",
    "view", "reshape", "float", "double", "half", "long", "int", "bool", "cpu", "detach", "numpy", "tolist",
    "norm", "size", "dim", "exp", "log", "abs", "sqrt", "pow", "std", "var", "numel", "nelement", "isnan",
    "isfinite", "any", "all", "clone", "copy", "keys", "values", "items", "get", "format", "join", "split",
    "strip", "lower", "upper", "startswith", "endswith", "count", "index", "t", "transpose", "permute",
    "squeeze", "unsqueeze", "flatten", "softmax", "log_softmax", "topk", "sort", "contiguous", "type", "to",
    "cuda", "data_ptr", "get_last_lr", "square", "prod", "cumsum", "round", "clamp", "float32", "amax",
    "amin", "sigmoid", "tanh", "relu", "matmul", "mm", "dot", "expand", "expand_as", "repeat",
    "chunk", "narrow", "masked_fill", "gather", "where", "nonzero", "unique", "bincount", "allclose",
    "state_dict",  # the live tensors, not copies: what it returns reaches its receiver (reach_of)
})
LOCAL_METHODS = frozenset({
    "step", "zero_grad", "backward", "load_state_dict", "append", "extend", "insert", "pop",
    "popitem", "remove", "clear", "update", "add", "discard", "setdefault", "appendleft", "extendleft",
    "add_param_group", "register_buffer", "add_", "mul_", "sub_", "div_", "zero_", "fill_", "copy_",
    "clamp_", "requires_grad_", "set_", "__setitem__", "__delitem__",
})
SAME_OBJECT = frozenset({"to", "cuda", "cpu", "train", "eval", "float", "half", "double", "requires_grad_"})
MODE_METHODS = frozenset({"eval", "train"})
PARAM_READERS = frozenset({"parameters", "named_parameters"})
LIBRARIES = frozenset({"torch", "numpy", "math", "statistics", "scipy", "einops", "operator", "itertools"})
IO_FUNCTIONS = frozenset({"save", "load", "open", "write", "print", "dump", "savez", "savetxt", "imwrite"})
# Functions of the standard library that compute from their arguments, and ones that read the
# world (the clock, the file system) without changing it.
PURE_CALLS = frozenset({"os.path.join", "os.path.basename", "os.path.dirname", "os.path.splitext",
                        "os.path.normpath"})
READING_CALLS = frozenset({"time.time", "time.perf_counter", "time.monotonic", "time.process_time",
                           "os.path.exists", "os.path.isfile", "os.path.isdir", "os.getcwd"})
SHUFFLING = frozenset({"shuffle", "permutation", "seed", "manual_seed"})  # may change what they are given
PLAIN_ATTRIBUTES = frozenset({"param_groups"})  # lists an object holds: iterating one runs no code of its own


def constructor(value: ast.AST) -> str | None:
    """The dotted name of the class a value is made by (``Net().to(device)``: ``Net``), or None."""
    while isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr in SAME_OBJECT:
        value = value.func.value
    return (dotted_name(value.func) or "") if isinstance(value, ast.Call) else None


def module_kind(cls: ast.ClassDef | None) -> bool | None:
    """None: not a torch module (as far as its class says); else whether its ``forward`` may
    change the module's own parameters: it assigns to an attribute or item, calls an in-place
    method, or touches ``.data``. Calling a module whose forward may not changes its buffers only."""
    if cls is None or not any("Module" in (dotted_name(base) or "") for base in cls.bases):
        return None
    forward = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "forward"), None)
    if forward is None:
        return True
    for sub in ast.walk(forward):
        if isinstance(sub, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
            if any(isinstance(t, (ast.Attribute, ast.Subscript)) for t in targets):
                return True
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr.endswith("_") \
                and not sub.func.attr.endswith("__"):
            return True
        if isinstance(sub, ast.Attribute) and sub.attr == "data":
            return True
    return False


def immutable(value: ast.AST | None) -> bool:
    """A value no statement can change in place: a number, a string, None, or a tuple of them."""
    if isinstance(value, ast.Constant):
        return True
    if isinstance(value, ast.UnaryOp):
        return immutable(value.operand)
    if isinstance(value, ast.Tuple):
        return all(immutable(element) for element in value.elts)
    return False
