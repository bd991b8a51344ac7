"""Notebooks: which notebook a kernel runs, the cells a run executed as a script, and today's
.ipynb as a script of its cells.

A notebook has no script that replay could run: what made a run's values is the cells its
kernel executed, in the order it executed them (IPython's input history). A notebook run keeps
them, written as one Python script, in its code version next to the .ipynb
(``train.ipynb`` -> ``train.ipynb.flor.py``); that script is what replay executes. Today's
.ipynb is turned into a script of its code cells in the same way, so that the statement a user
adds to a cell is found and placed by the same matching that serves scripts (replay/propagation).

>>> script_of("nb/train.ipynb")
'nb/train.ipynb.flor.py'
>>> script_of("train.py")
'train.py'
"""

from __future__ import annotations

import ast
import json
import os
import sys
import threading
from pathlib import Path
from typing import Callable, NamedTuple

from ..messages import warn

SCRIPT_SUFFIX = ".flor.py"  # the recorded cells' script, next to the notebook in the run's snapshot
UNKNOWN = "(unknown notebook)"  # the filename of a run whose kernel did not say which notebook it ran
_LEFT_OUT = "pass  # flor: IPython syntax, not run by replay: "
# Both scripts (recorded and today's) begin so: a kernel gives cells `display` as a builtin.
_PREAMBLE = ("try:\n    from IPython.display import display\nexcept ImportError:  # replayed where IPython is not installed\n"
             "    display = print\n")

# The execution counts of the cells that earlier runs of this kernel spanned (first, last): a
# later run's script leaves them out, since replaying it must not run the earlier run's loops.
_ended_spans: list[tuple[int, int]] = []


class Notebook(NamedTuple):
    """The notebook a kernel runs: its folder and file name (UNKNOWN when not said), and how it was told."""

    folder: Path
    filename: str
    how: str  # "JPY_SESSION_NAME", "__session__", "VS Code", "connection file", or "" when unknown


def is_notebook(filename: str) -> bool:
    """Whether a run's filename names a notebook (its code version holds the cells' script)."""
    return filename.endswith(".ipynb") or is_unknown(filename)


def is_unknown(filename: str) -> bool:
    """Whether a run's filename says its kernel was not told its notebook (in the run's folder)."""
    return filename.rpartition("/")[2] == UNKNOWN


def script_of(filename: str) -> str:
    """The file replay reads and executes for a run of ``filename``: the cells' script for a notebook."""
    return filename + SCRIPT_SUFFIX if is_notebook(filename) else filename


def shell():
    """The IPython shell of a Jupyter kernel running this process, or None (a script, a terminal IPython)."""
    if "ipykernel" not in sys.modules:
        return None
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    found = get() if get is not None else None
    return found if found is not None and hasattr(found, "history_manager") else None


def identify() -> Notebook | None:
    """The notebook this kernel runs (None outside a kernel), told by, in order: Jupyter Server's
    ``JPY_SESSION_NAME``, the ``__session__`` ipykernel sets from it, VS Code's
    ``__vsc_ipynb_file__``, and the ``jupyter_session`` a kernel manager writes into the kernel's
    connection file. None of them: the filename is UNKNOWN."""
    ipython = shell()
    if ipython is None:
        return None
    namespace = getattr(ipython, "user_ns", {}) or {}
    told = [("JPY_SESSION_NAME", os.environ.get("JPY_SESSION_NAME")),
            ("__session__", namespace.get("__session__")),
            ("VS Code", namespace.get("__vsc_ipynb_file__")),
            ("connection file", _connection_session())]
    for how, value in told:
        if isinstance(value, str) and value.strip().endswith(".ipynb"):
            path = _resolve(value.strip())
            return Notebook(path.parent, path.name, how)
    return Notebook(Path.cwd(), UNKNOWN, "")


def _connection_session() -> str | None:
    """The ``jupyter_session`` of this kernel's connection file (jupyter_client writes the
    notebook's path there when its manager was given one), or None."""
    try:
        from ipykernel.connect import get_connection_file

        with open(get_connection_file()) as handle:
            return json.load(handle).get("jupyter_session") or None
    except Exception:  # noqa: BLE001 - no app, no file, not JSON: the notebook is not told there
        return None


def _resolve(told: str) -> Path:
    """A notebook path as a kernel is told it: absolute, or relative to the server's root (the
    kernel runs in the notebook's folder, so the name alone is tried there too)."""
    path = Path(told).expanduser()
    if path.is_absolute():
        return path.resolve()
    for candidate in (Path.cwd() / path, Path.cwd() / path.name):
        if candidate.is_file():
            return candidate.resolve()
    return (Path.cwd() / path.name).resolve()


def unknown_warning() -> str:
    """The one line a notebook whose path is not told shows."""
    return ("cannot tell which notebook this kernel runs (no JPY_SESSION_NAME, no session in its connection file): "
            f"the run is recorded as {UNKNOWN!r} with the cells it ran, but `flor replay` cannot read today's notebook "
            "for it; run `%env JPY_SESSION_NAME=NAME.ipynb` before the first flor call")


def current_cell() -> int | None:
    """The execution count of the cell running now (None outside a kernel)."""
    ipython = shell()
    return None if ipython is None else int(getattr(ipython, "execution_count", 0) or 0)


def after_each_cell(callback):
    """Call ``callback()`` after each cell the kernel runs from now on; returns what stops it."""
    ipython = shell()
    events = getattr(ipython, "events", None)
    if events is None:
        return lambda: None

    def ran(result=None) -> None:
        callback()

    events.register("post_run_cell", ran)

    def stop() -> None:
        try:
            events.unregister("post_run_cell", ran)
        except ValueError:  # already gone (the kernel's shell torn down)
            pass

    return stop


def end_span(first: int | None, last: int | None) -> None:
    """A run of this kernel ended: its cells are left out of later runs' scripts."""
    if first is not None and last is not None:
        _ended_spans.append((first, last))


def executed_cells() -> list[tuple[int, str]]:
    """(execution count, source as typed) of the cells this kernel executed so far, in order,
    less those of the runs that ended before (``end_span``)."""
    ipython = shell()
    if ipython is None:
        return []
    history = list(ipython.history_manager.input_hist_raw)
    return [(count, history[count]) for count in range(1, len(history))
            if not any(first <= count <= last for first, last in _ended_spans)]


def recorded_script(cells: list[tuple[int, str]], notebook: str) -> str:
    """The cells a run executed as one script (what its snapshot keeps and replay executes)."""
    parts = [f"# flor: the cells {notebook} executed for this run, in the order they ran.\n", _PREAMBLE]
    parts += [f"\n# In[{count}]:\n{to_python(source)}\n" for count, source in cells]
    return "".join(parts)


def todays_script(text: str, notebook: str) -> str:
    """Today's .ipynb (its JSON text) as a script of its code cells, in notebook order."""
    from ..errors import UsageError

    try:
        document = json.loads(text)
        cells = [cell for cell in document.get("cells", []) if cell.get("cell_type") == "code"]
        sources = ["".join(cell.get("source", "")) if isinstance(cell.get("source"), list) else str(cell.get("source", ""))
                   for cell in cells]
    except (ValueError, AttributeError, TypeError) as exc:
        raise UsageError(f"{notebook} is not a readable notebook ({exc}); save it from Jupyter and replay again") from None
    parts = [f"# flor: the code cells of today's {notebook}.\n", _PREAMBLE]
    parts += [f"\n# cell {number}:\n{to_python(source)}\n" for number, source in enumerate(sources, 1)]
    return "".join(parts)


def to_python(source: str) -> str:
    """A cell as plain Python: IPython's own syntax (``%magic``, ``!shell``, ``%%cell`` magics)
    becomes a ``pass`` that says what it was, since replay runs the script without IPython; a
    cell that does not parse (it failed when typed, so it ran nothing) is kept as comments."""
    lines = source.rstrip("\n").split("\n")
    if lines and lines[0].lstrip().startswith("%%"):
        return "\n".join("# " + line for line in lines)
    out = []
    for line in lines:
        stripped = line.lstrip()
        if stripped.startswith(("%", "!")) or (stripped.endswith("?") and stripped[:-1].strip().isidentifier()):
            out.append(line[: len(line) - len(stripped)] + _LEFT_OUT + stripped)
        else:
            out.append(line)
    text = "\n".join(out)
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):
        return "\n".join("# " + line for line in text.split("\n"))
    return text


def todays_source(root: Path, filename: str) -> str | None:
    """What replay matches a run's code version against: today's script, or for a notebook
    its code cells as a script; None when the file does not exist today."""
    path = root / filename
    if not path.is_file():
        return None
    text = path.read_text()
    return todays_script(text, filename) if is_notebook(filename) else text


class Versioning:
    """How a notebook's run is versioned: in the cell of its first training call (why a version
    cannot be kept is said in that cell's output), again in the background after each cell it
    runs (the kernel may be killed before the run ends), and when it ends, each time with the
    cells run so far (``cells``). ``snapshot`` is the run's own, which asks for ``cells``."""

    def __init__(self, first_cell: int, rel_file: str, snapshot: Callable[[], None]) -> None:
        self.first_cell = first_cell
        self.rel_file = rel_file
        self._snapshot = snapshot
        self._thread: threading.Thread | None = None
        self._stop: Callable[[], None] = lambda: None
        self._versioned = False
        self._ended = False

    def cells(self) -> dict[str, str]:
        """The cells the run executed, as the script its code version keeps next to the notebook."""
        return {script_of(self.rel_file): recorded_script(executed_cells(), self.rel_file)}

    def begin(self, is_git: bool) -> None:
        if is_unknown(self.rel_file):
            warn(unknown_warning())
        self._versioned = is_git  # outside git the run says so itself
        if is_git:
            self._snapshot()
            self._stop = after_each_cell(self._cell_ran)

    def _cell_ran(self) -> None:
        if self._ended or (self._thread is not None and self._thread.is_alive()):
            return  # the end versions every cell; a version still being taken is not queued behind
        self._thread = threading.Thread(target=self._snapshot, name="flor-snapshot", daemon=True)
        self._thread.start()

    def end(self, wait_s: float) -> None:
        """Version the run with every cell it ran, and leave those cells out of the kernel's next run."""
        self._ended = True
        self._stop()
        if self._thread is not None:
            self._thread.join(timeout=wait_s)
        if self._versioned:
            self._snapshot()
        end_span(self.first_cell, current_cell())
