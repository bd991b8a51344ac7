"""``flor ui``: a local, read-only web page to browse runs, compare them and see their curves.

    flor ui                      # serve on a free port of 127.0.0.1 and open a browser
    flor ui --port 8080 --no-browser
    flor ui --host 0.0.0.0       # on purpose only: anyone who can reach the machine can read runs
    flor ui --allow-edit         # runs can be named, tagged, noted and archived from the page
    flor ui --base-path /proxy/8080 --allow-host notebooks.example.com   # behind a path-prefix proxy

Modules: ``server`` (Flask app and API), ``data`` (what the page shows, through the store's
read-only pool), ``curves`` (series of one name), ``axes`` (x by iteration, step or wall time; gaps),
``downsample`` (min/max per bucket),
``static/`` (the page and the vendored uPlot). Filters use flor's one filter language,
:mod:`flor.reading.filters`. Flask is imported only when the page is served.

>>> serve_project(port=8080, open_browser=False)      # doctest: +SKIP
flor ui: http://127.0.0.1:8080/  (read-only; Ctrl+C stops it)
"""

from __future__ import annotations

from pathlib import Path

from ..errors import StoreError, UsageError


def serve_project(start: Path | None = None, *, host: str = "127.0.0.1", port: int = 0, open_browser: bool = True,
                  allow_edit: bool = False, base_path: str = "", allowed_hosts: tuple[str, ...] = ()) -> int:
    """Serve the page of the project that contains ``start`` (default: the working directory)
    until Ctrl+C; returns the exit status. ``allow_edit``: the page may write run names, tags,
    notes and archiving to the store (loopback only); ``base_path``, ``allowed_hosts``: for a
    path-prefix proxy (docs/ui.md)."""
    from ..environment.paths import ProjectPaths
    from ..environment.vcs import find_root

    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {port}")
    try:
        from .server import check_options, serve
    except ImportError as exc:  # flask is a dependency, but a stripped install may lack it
        raise UsageError(f"flor ui needs Flask ({exc}); install it with: pip install flask") from exc
    check_options(host, allow_edit, base_path)  # before the store is opened (for writing, with --allow-edit)
    root, _ = find_root(Path.cwd() if start is None else Path(start))
    db_path = ProjectPaths(root).db
    if not db_path.exists():
        raise StoreError(f"no flor runs recorded under {root} yet; run a script that imports flor first")
    # Opened once as every other command opens it: a database of a newer schema (or a damaged
    # one) is refused in one line here, not served with columns this flor misreads.
    from ..store import Store

    # With --allow-edit the store is opened for writing once here, which also brings an older
    # database up to the schema that has the annotations table.
    Store.open(db_path, readonly=not allow_edit).close()
    return serve(db_path, root, host=host, port=port, open_browser=open_browser, allow_edit=allow_edit,
                 base_path=base_path, allowed_hosts=tuple(allowed_hosts))
