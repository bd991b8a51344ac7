"""The ``flor ui`` command: registered with the CLI, which imports this module lazily.

>>> from flor.cli import main
>>> main(["ui", "--no-browser", "--port", "8080"])      # doctest: +SKIP
flor ui: http://127.0.0.1:8080/  (read-only; Ctrl+C stops it)
"""

from __future__ import annotations

from pathlib import Path

from ..cli import command
from ..errors import StoreError, UsageError


def register(subparsers) -> None:
    """Add the ``ui`` subcommand to the CLI's subparsers."""
    ui = subparsers.add_parser(
        "ui", help="browse, compare and chart runs in a local web page (read-only)",
        description="Serve a read-only web page of this project's runs on this machine.",
    )
    ui.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    ui.add_argument(
        "--host", default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; widen it on purpose)",
    )
    ui.add_argument("--no-browser", action="store_true", help="print the address without opening a browser")


def handler(args) -> int:
    """Find the project's store and serve it until Ctrl+C; returns the exit status."""
    from ..vcs import find_root

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    root, _ = find_root(Path.cwd())
    db_path = root / ".flor" / "flor.db"
    if not db_path.exists():
        raise StoreError(f"no flor runs recorded under {root} yet; run a script that imports flor first")
    try:
        from .server import serve
    except ImportError as exc:  # flask is a dependency, but a stripped install may lack it
        raise UsageError(f"flor ui needs Flask ({exc}); install it with: pip install flask") from exc
    return serve(db_path, root, host=args.host, port=args.port, open_browser=not args.no_browser)


command("ui", register, handler)
