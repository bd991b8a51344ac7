"""Which registered objects an iteration that runs the slice only restores (issue 30).

Restoring a checkpoint decodes, verifies and copies every registered object, and most of it may
be state the slice never looks at: AdamW's two moments are 2/3 of a model's training state, and a
statement reading only the parameters after the nested loop needs none of them. An iteration that
runs the slice only (``slice_run.SliceRun.not_restored``) restores the objects some kept
statement reads or writes; the others keep whatever they held, because nothing reads them before
the next memoized iteration restores them again. The whole body (a verified iteration's second
pass, and the iteration before it) restores everything.

What a kept statement reads is only as good as what the slicer knows a name outside the loop
holds: :func:`bound_otherwise` and :func:`held_outside` widen that (for the slice's statements
too) beyond `name = value`, to unpacking, `for`/`with` targets, containers filled, attributes set.
"""

from __future__ import annotations


def restores(registered_as: dict, owned: dict, body: list, effects: list, why: dict) -> tuple[tuple, tuple]:
    """((name, why) of each registered object restored, names of those not restored).

    ``registered_as``: flor.checkpointing's names -> the script's name of each object (None where
    it is an expression, or the key None for ``**objects``); ``owned``: the script's names -> the
    objects they are; ``effects``/``why``: the body's statements' effects and the kept ones. An
    object some kept statement reads or writes (any part of it) is restored; the skipped nested
    loop's body is not among the kept statements' effects (it does not run). An object flor
    cannot name is always restored, and with ``**objects`` or ``*objects`` (the positions after it
    are unknown) every object is."""
    if None in registered_as:
        return (), ()
    touched: dict[str, int] = {}  # object -> the first kept statement reading or writing it
    for index in sorted(why):
        for location in effects[index].reads | effects[index].writes:
            if location[0] == "o":
                touched.setdefault(location[1], body[index].lineno)
    restored, unrestored = [], []
    for key, name in registered_as.items():
        roots = owned.get(name) if name is not None else None
        if not roots:
            restored.append((key, "flor cannot tell which object it is"))
            continue
        lines = sorted(touched[root] for root in roots if root in touched)
        if lines:
            restored.append((key, f"line {lines[0]} reads or writes it"))
        else:
            unrestored.append(key)
    return tuple(restored), tuple(unrestored)


def describe_restores(restored: tuple, unrestored: tuple) -> list[str]:
    """The --dry-run line on restores, where some object is left unrestored."""
    if not unrestored:
        return []
    return ["restored in an iteration that runs the slice only: "
            + (", ".join(f"`{name}` ({why})" for name, why in restored) or "none")
            + "; not restored: " + ", ".join(f"`{name}`" for name in unrestored)
            + " (no kept statement reads or writes it; the whole body's iterations restore everything)"]


def bound_otherwise(node, reach_of, env: dict, owned: dict, every) -> None:
    """Widen ``env``/``owned`` (the slicer's names outside the loop) for a name bound other than
    by `name = value` (`m, opt = model, optimizer`, `opt: Any = optimizer`, `for opt in
    [optimizer]`, `with x as opt`): it may be any object its value reaches. Without this it was a
    root of its own, and a kept statement reading `opt.state` read nothing registered, so the
    optimizer was left unrestored and the statement read the previous checkpoint's state."""
    import ast

    if isinstance(node, ast.Assign):
        bound = [(target, node.value) for target in node.targets]
    elif isinstance(node, ast.AnnAssign):
        bound = [(node.target, node.value)]
    elif isinstance(node, (ast.For, ast.AsyncFor)):
        bound = [(node.target, node.iter)]
    elif isinstance(node, (ast.With, ast.AsyncWith)):
        bound = [(item.optional_vars, item.context_expr) for item in node.items if item.optional_vars is not None]
    else:
        return
    for target, value in bound:
        reach = reach_of(value)
        for name in {n.id for n in ast.walk(target) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}:
            env[name] = env.get(name, frozenset()) | reach | {(name, every)}
            owned[name] = owned.get(name, frozenset()) | {root for root, _ in reach} | {name}


def held_outside(tree, outer, reach_of, env: dict, every) -> None:
    """Widen ``env`` for the objects a name comes to hold outside the outer loop other than by
    binding it: `state["opt"] = optimizer`, `Net.opt = optimizer`, `holders.append(optimizer)`,
    `print(opt := optimizer)`, a function's `global opt; opt = optimizer`, a call of the script's
    function that does one of these to a global or a parameter (`keep(optimizer)`). The slicer reads only
    bindings there; without this a kept statement reading `holders[0].state` read nothing
    registered and the optimizer was left unrestored (the previous checkpoint's state read)."""
    import ast

    def base(node):
        while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
            node = node.value
        return node.id if isinstance(node, ast.Name) else None

    modules = {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
               for a in n.names}  # `torch.manual_seed(0)`, `flor.log(...)`: a module holds nothing of its arguments

    fills: dict[str, set] = {}  # a function of the script -> the names its body fills (globals, parameters)
    params: dict[str, list] = {}
    calls: list = []  # calls of a function by its name, outside the outer loop

    def hold(name, values, filled: set) -> None:
        reach = frozenset().union(*(reach_of(value) for value in values)) if values else frozenset()
        if name is not None and name not in modules:
            filled.add(name)
            if reach:
                env[name] = env.get(name, frozenset({(name, every)})) | reach | {(name, every)}

    def visit(node, globals_: set, filled: set) -> None:
        if node is outer:
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            declared = {n for s in ast.walk(node) if isinstance(s, ast.Global) for n in s.names}
            inner = fills.setdefault(getattr(node, "name", ""), set())
            arguments = node.args
            params.setdefault(getattr(node, "name", ""), []).extend(
                a.arg for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs])
            for child in ast.iter_child_nodes(node):
                visit(child, declared, inner)
            return
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and node.value is not None:
            for target in getattr(node, "targets", None) or [node.target]:
                for element in ast.walk(target):
                    if isinstance(element, (ast.Attribute, ast.Subscript)) and isinstance(element.ctx, ast.Store):
                        hold(base(element), [node.value], filled)
                    elif isinstance(element, ast.Name) and element.id in globals_:
                        hold(element.id, [node.value], filled)
        elif isinstance(node, ast.NamedExpr):
            hold(node.target.id, [node.value], filled)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            hold(base(node.func.value), [*node.args, *(k.value for k in node.keywords)], filled)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            calls.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child, globals_, filled)

    visit(tree, set(), set())
    for call in calls:  # `keep(optimizer)` where `def keep(o): holders.append(o)`: holders holds it
        arguments = [*call.args, *(k.value for k in call.keywords)]
        names = params.get(call.func.id, [])
        by_name = {**dict(zip(names, call.args)), **{k.arg: k.value for k in call.keywords if k.arg}}
        for name in fills.get(call.func.id, ()):
            hold(base(by_name[name]) if name in names and name in by_name else name, arguments, set())
