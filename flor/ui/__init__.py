"""``flor ui``: a local, read-only web page to browse runs, compare them and see their curves.

    flor ui                      # serve on a free port of 127.0.0.1 and open a browser
    flor ui --port 8080 --no-browser
    flor ui --host 0.0.0.0       # on purpose only: anyone who can reach the machine can read runs

Modules: ``server`` (Flask app and API), ``data`` (what the page shows, through the store's
read-only pool), ``curves`` (series of one name), ``downsample`` (min/max per bucket),
``static/`` (the page and the vendored uPlot). Filters use flor's one filter language,
:mod:`flor.filters`. Flask is imported only when the page is served.

>>> serve_project(port=8080, open_browser=False)      # doctest: +SKIP
flor ui: http://127.0.0.1:8080/  (read-only; Ctrl+C stops it)
"""

from __future__ import annotations

from pathlib import Path

from ..errors import StoreError, UsageError


def serve_project(start: Path | None = None, *, host: str = "127.0.0.1", port: int = 0, open_browser: bool = True) -> int:
    """Serve the page of the project that contains ``start`` (default: the working directory)
    until Ctrl+C; returns the exit status."""
    from ..paths import ProjectPaths
    from ..vcs import find_root

    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {port}")
    root, _ = find_root(Path.cwd() if start is None else Path(start))
    db_path = ProjectPaths(root).db
    if not db_path.exists():
        raise StoreError(f"no flor runs recorded under {root} yet; run a script that imports flor first")
    # Opened once as every other command opens it: a database of a newer schema (or a damaged
    # one) is refused in one line here, not served with columns this flor misreads.
    from ..store import Store

    Store.open(db_path, readonly=True).close()
    try:
        from .server import serve
    except ImportError as exc:  # flask is a dependency, but a stripped install may lack it
        raise UsageError(f"flor ui needs Flask ({exc}); install it with: pip install flask") from exc
    return serve(db_path, root, host=host, port=port, open_browser=open_browser)
