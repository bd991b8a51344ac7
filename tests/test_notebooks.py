"""Notebooks without a kernel: cells as a script, today's .ipynb as a script, the identity a kernel
is told, the cells' script in a run's code version (tests/test_notebook_replay.py runs real kernels)."""

import json
import linecache
import sys
import types

import pytest

from flor.recording import notebook
from flor.errors import UsageError


def test_cells_become_plain_python_and_ipython_syntax_a_pass_that_says_what_it_was():
    assert notebook.to_python("x = 1\n") == "x = 1"
    converted = notebook.to_python("%time y = 2\nfor i in range(2):\n    !ls\n    z = i\nlen?")
    assert converted.splitlines() == [
        "pass  # flor: IPython syntax, not run by replay: %time y = 2", "for i in range(2):",
        "    pass  # flor: IPython syntax, not run by replay: !ls", "    z = i",
        "pass  # flor: IPython syntax, not run by replay: len?"]
    assert notebook.to_python("%%bash\necho hi") == "# %%bash\n# echo hi"
    # A cell that did not parse ran nothing: kept as comments, so the script still parses.
    assert notebook.to_python("def f(:\n    pass") == "# def f(:\n#     pass"


def test_a_recorded_script_and_todays_notebook_line_up_cell_by_cell():
    script = notebook.recorded_script([(1, "import flor"), (3, "x = flor.arg('x', 1)")], "nb/a.ipynb")
    assert "# In[1]:\nimport flor\n" in script and "# In[3]:\nx = flor.arg('x', 1)\n" in script
    document = {"cells": [{"cell_type": "markdown", "source": "# title"},
                          {"cell_type": "code", "source": ["import flor\n", "%matplotlib inline"]},
                          {"cell_type": "code", "source": "x = flor.arg('x', 1)"}]}
    today = notebook.todays_script(json.dumps(document), "nb/a.ipynb")
    assert "# cell 1:\nimport flor\npass  # flor: IPython syntax" in today and "# cell 2:\nx = flor.arg" in today
    with pytest.raises(UsageError, match="is not a readable notebook"):
        notebook.todays_script("{not json", "nb/a.ipynb")


def test_the_file_replay_runs_for_a_notebook_is_its_cells_script(tmp_path):
    assert notebook.script_of("nb/train.ipynb") == "nb/train.ipynb.flor.py"
    assert notebook.script_of(notebook.UNKNOWN) == notebook.UNKNOWN + ".flor.py"
    assert notebook.script_of("train.py") == "train.py"
    assert notebook.is_notebook("sub/" + notebook.UNKNOWN) and notebook.is_unknown("sub/" + notebook.UNKNOWN)
    (tmp_path / "a.ipynb").write_text(json.dumps({"cells": [{"cell_type": "code", "source": "y = 2"}]}))
    (tmp_path / "b.py").write_text("z = 3\n")
    assert "y = 2" in notebook.todays_source(tmp_path, "a.ipynb")
    assert notebook.todays_source(tmp_path, "b.py") == "z = 3\n"
    assert notebook.todays_source(tmp_path, "gone.ipynb") is None


_CONNECTION_SESSION = notebook._connection_session  # before the kernel fixture stands it in


class _Shell:
    def __init__(self, user_ns, history):
        self.user_ns = user_ns
        self.execution_count = len(history)
        self.history_manager = types.SimpleNamespace(input_hist_raw=history)


@pytest.fixture
def kernel(monkeypatch, tmp_path):
    """A stand-in Jupyter kernel: ipykernel imported, get_ipython() answering."""
    shell = _Shell({}, ["", "import flor", "x = 1", "flor.log('a', x)"])
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(notebook, "_connection_session", lambda: None)
    monkeypatch.setattr(notebook, "_ended_spans", [])
    return shell


def test_a_kernel_is_told_its_notebook_by_session_name_else_says_unknown(kernel, monkeypatch, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "train.ipynb").write_text("{}")
    assert notebook.identify() == notebook.Notebook(tmp_path.resolve(), notebook.UNKNOWN, "")
    kernel.user_ns["__vsc_ipynb_file__"] = str(tmp_path / "sub" / "train.ipynb")
    assert notebook.identify() == notebook.Notebook((tmp_path / "sub").resolve(), "train.ipynb", "VS Code")
    monkeypatch.setenv("JPY_SESSION_NAME", "sub/train.ipynb")  # relative to the server's root
    assert notebook.identify() == notebook.Notebook((tmp_path / "sub").resolve(), "train.ipynb", "JPY_SESSION_NAME")
    monkeypatch.setattr(notebook, "shell", lambda: None)
    assert notebook.identify() is None  # a script, not a kernel


def test_a_later_run_of_the_kernel_leaves_out_the_cells_of_the_runs_before(kernel):
    assert notebook.executed_cells() == [(1, "import flor"), (2, "x = 1"), (3, "flor.log('a', x)")]
    notebook.end_span(2, 3)
    kernel.history_manager.input_hist_raw.append("flor.log('b', 2)")
    assert notebook.executed_cells() == [(1, "import flor"), (4, "flor.log('b', 2)")]


def test_loop_variables_of_a_cell_are_read_from_ipythons_line_cache(monkeypatch):
    from flor.checkpoints import variables

    name = "/tmp/ipykernel_0/cell-never-written.py"
    source = "total = 0\nfor epoch in range(3):\n    total += epoch\n    last = epoch\n"
    monkeypatch.setitem(linecache.cache, name, (len(source), None, source.splitlines(True), name))
    code = compile(source, name, "exec")
    frame = types.SimpleNamespace(f_code=code, f_lineno=2)
    assert set(variables.loop_names(frame)) == {"epoch", "total", "last"}


def test_a_snapshot_keeps_a_file_the_working_tree_lacks(project):
    from flor.environment.vcs import Repo

    project.write("a.ipynb", "{}")
    project.write(".ipynb_checkpoints/a-checkpoint.ipynb", "{}")  # Jupyter's autosave: left out
    snap = Repo(project.root).snapshot("2026-01-01T00:00:00", "test", extra={"a.ipynb.flor.py": "x = 1\n"})
    assert project.git("show", f"{snap.commit}:a.ipynb.flor.py") == "x = 1\n"
    listed = project.git("ls-tree", "--name-only", snap.commit).split()
    assert not (project.root / "a.ipynb.flor.py").exists() and "a.ipynb" in listed and ".ipynb_checkpoints" not in listed


def test_flor_runs_shows_unversioned_whole():
    from flor.reading.runlist import text_rows

    run = types.SimpleNamespace(tstamp="t", status="finished", duration=1.0, filename="a.ipynb", code_commit=None,
                                git_head=None, git_dirty=0, started="s", argv=["a.ipynb"])
    _, rows = text_rows([types.SimpleNamespace(run=run, args={}, world_size=None, ranks=None)])
    assert rows[0][4] == "unversioned"


def _notebook_run(root, filename: str, commit: str | None = None) -> str:
    import time

    from flor.store import Store

    store = Store.open(root / ".flor" / "flor.db")
    run_id, tstamp = store.insert_run(tstamp="2026-01-01T00:00:00", projid="p", filename=filename, argv=[filename],
                                      cwd=".", started=time.time(), args=[])
    store.update_run(run_id, status="finished", ended=time.time(), code_commit=commit)
    store.close()
    return tstamp


def test_a_notebook_run_is_not_resumed_and_an_unknown_notebook_is_refused_with_why(project):
    from flor.recording.resume import resume

    tstamp = _notebook_run(project.root, "sub/" + notebook.UNKNOWN, commit=project.git("rev-parse", "HEAD").strip())
    with pytest.raises(UsageError, match="ran in the notebook .* run its cells again in Jupyter"):
        resume(tstamp, start=project.root)
    done = project.flor("replay", "--dry-run", check=False)
    assert "its kernel did not say which notebook it ran" in done.stdout + done.stderr, done.stdout + done.stderr


class _Events:  # IPython's EventManager, as far as flor uses it
    def __init__(self):
        self.callbacks = []

    def register(self, event, function):
        self.callbacks.append(function)

    def unregister(self, event, function):
        self.callbacks.remove(function)  # ValueError when not registered, as IPython's

    def trigger(self):
        for function in list(self.callbacks):
            function(None)


def test_a_callback_runs_after_each_cell_until_stopped(kernel):
    ran = []
    kernel.events = _Events()
    stop = notebook.after_each_cell(lambda: ran.append(1))
    kernel.events.trigger()
    stop()
    stop()  # twice: harmless
    kernel.events.trigger()
    assert ran == [1]


def test_the_page_shows_and_diffs_a_notebook_runs_cells_not_its_json(project):
    from flor.ui.data import diff_code, read_code
    from flor.environment.vcs import Repo

    project.write("a.ipynb", "{}")
    repo = Repo(project.root)
    old = repo.snapshot("2026-01-01T00:00:00", "one", extra={"a.ipynb.flor.py": "x = 1\n"}).commit
    new = repo.snapshot("2026-01-01T00:00:01", "two", extra={"a.ipynb.flor.py": "x = 2\n"}).commit
    assert read_code(project.root, old, "a.ipynb") == "x = 1\n"
    assert "-x = 1\n+x = 2" in diff_code(project.root, old, new, "a.ipynb")


def test_a_kernel_started_by_a_manager_reads_its_notebook_from_the_connection_file(kernel, monkeypatch, tmp_path):
    connection = tmp_path / "kernel-1.json"
    connection.write_text(json.dumps({"shell_port": 1, "jupyter_session": str(tmp_path / "nb.ipynb")}))
    connect = types.ModuleType("ipykernel.connect")
    connect.get_connection_file = lambda: str(connection)
    monkeypatch.setitem(sys.modules, "ipykernel.connect", connect)
    monkeypatch.setattr(notebook, "_connection_session", _CONNECTION_SESSION)
    assert notebook.identify() == notebook.Notebook(tmp_path.resolve(), "nb.ipynb", "connection file")
    connection.write_text(json.dumps({"shell_port": 1}))  # nbclient without a session name: not told
    assert notebook.identify().filename == notebook.UNKNOWN


def test_a_notebook_run_is_versioned_at_its_first_call_after_each_cell_and_at_its_end(kernel):
    import threading

    kernel.events = _Events()
    taken, done = [], threading.Event()

    def snapshot():
        taken.append(versioning.cells()["nb.ipynb.flor.py"])
        done.set()

    versioning = notebook.Versioning(2, "nb.ipynb", snapshot)
    versioning.begin(is_git=True)
    assert len(taken) == 1 and "# In[3]:\nflor.log('a', x)" in taken[0]
    kernel.history_manager.input_hist_raw.append("y = 2")
    done.clear()
    kernel.events.trigger()  # a cell ran: versioned again in the background
    assert done.wait(5) and "y = 2" in taken[1]
    kernel.execution_count = 4
    versioning.end(wait_s=5)
    assert len(taken) == 3 and kernel.events.callbacks == []
    kernel.history_manager.input_hist_raw.append("z = 3")
    assert notebook.executed_cells() == [(1, "import flor"), (5, "z = 3")]  # the next run: its cells only
    outside = notebook.Versioning(5, "nb.ipynb", snapshot)
    outside.begin(is_git=False)
    outside.end(wait_s=5)
    assert len(taken) == 3  # outside git: nothing taken (the run says so itself)
