"""The web server of ``flor ui``: a Flask app that serves the page and a JSON API.

It answers only GET (and HEAD); any other method is 405, except, with ``--allow-edit``, POSTs of
run annotations that carry the server's edit token. It listens on 127.0.0.1 unless told
otherwise, and then also refuses requests whose Host header is neither a loopback name nor one
named with ``--allow-host``, so that a web page elsewhere cannot reach it through DNS rebinding.
Nothing it serves can change a recorded value.

API (all GET, all JSON)::

    /api/version                          {version, runs, running, running_runs}; the page polls it
    /api/runs?where=&brush=&archived=&sort=&desc=&offset=&limit=
                                          one page of the runs table, filtered and sorted; each
                                          log column holds the run's last value (store/lastvalue.py),
                                          `sources` per row the columns whose last value was
                                          replayed or extracted; brush=NAME:LOW:HIGH;...
                                          keeps runs inside every range; archived=1 keeps
                                          archived runs (left out otherwise)
    /api/runs.csv?where=&brush=&sort=&desc=&columns=
                                          the whole matching table as CSV, with `hindsight`
    /api/values?names=lr,accuracy&where=  chosen columns of every matching run (scatter view)
    /api/series?runs=T1,T2&name=loss&points=2000&xmin=&xmax=&x=iteration|step|time
                                          curves, downsampled; recorded, replayed and extracted
                                          values apart; each run's last value and its source
    /api/runs/<tstamp>                    one run: args, status, error, logs, checkpoints
    /api/runs/<tstamp>/code               the script at the run's code version
    /api/runs/<tstamp>/output?grep=&stream=&limit=
                                          what the run printed: {lines, matched, total, shown}
    /api/diff?a=T1&b=T2                   git diff of the script between two runs
    POST /api/runs/<tstamp>/annotations   {name, tags, note, archived} (--allow-edit, with the
                                          X-Flor-Token header the page carries)

>>> server, app = make_server(Path(".flor/flor.db"), Path("."), port=0)   # doctest: +SKIP
>>> server.serve_forever()                                                 # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import re
import secrets
import sys
from pathlib import Path

from flask import Flask, Response, request

from ..errors import FlorError, RunNotFoundError, StoreError, UsageError, VersionControlError
from ..store import ReadPool
from .curves import SeriesReader
from .data import RunsTable, diff_code, note_json, read_code, run_detail, sort_key, table_csv
from ..reading.filters import FilterError, compile_filter

STATIC = Path(__file__).with_name("static")
MAX_PAGE = 1000
MAX_COMPARED = 100  # a page of the table: the default chart draws every visible run
FIRST_ANSWER_WAIT_S = 0.15
CSV_WAIT_S = 300.0  # a download of the whole table waits this long for the pass over the logs
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
_COMMIT = re.compile(r"^[0-9a-fA-F]{4,64}$")
_EDIT_PATH = re.compile(r"^/api/runs/.+/annotations$")
_NOTE_FIELDS = {"name", "tags", "note", "archived"}
_ASSET = re.compile(r'(src|href)="static/([^"?]+)"')


def _index_html(edit_token: str | None) -> str:
    """The page, with each asset's URL carrying a hash of its content (a new flor's page never
    runs an old cached script) and, when editing is allowed, the edit token."""
    text = (STATIC / "index.html").read_text(encoding="utf-8")

    def hashed(match: re.Match) -> str:
        digest = hashlib.sha256((STATIC / match.group(2)).read_bytes()).hexdigest()[:12]
        return f'{match.group(1)}="static/{match.group(2)}?v={digest}"'

    text = _ASSET.sub(hashed, text)
    return text.replace('<meta name="flor-edit-token" content="">',
                        f'<meta name="flor-edit-token" content="{edit_token or ""}">')


class UIData:
    """The store as the server sees it: a read-only connection pool, the runs table, curves.

    >>> data = UIData.open(Path(".flor/flor.db"), Path("."))        # doctest: +SKIP
    >>> data.table.refresh()                                        # doctest: +SKIP
    True
    """

    def __init__(self, db: ReadPool, root: Path) -> None:
        self.db = db
        self.root = Path(root)
        self.table = RunsTable(db)
        self.series = SeriesReader(db, self.table)

    @classmethod
    def open(cls, db_path: Path, root: Path) -> "UIData":
        """Open ``db_path`` read-only; ``root`` is the project root where git runs."""
        return cls(ReadPool(db_path), root)

    def load(self, wait: float | None = 0.0) -> bool:
        """Read runs and args now and start reading logged values; wait up to ``wait`` seconds
        (None: until done) for those. True when the whole table is loaded."""
        self.table.refresh()
        self.table.rows()
        return self.table.wait_loaded(wait)

    def close(self) -> None:
        """Stop the pass over the logs, then close the database connections."""
        self.table.stop()
        self.db.close()


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'.

    >>> is_loopback("127.0.0.1"), is_loopback("0.0.0.0")
    (True, False)
    """
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hostname(host_header: str) -> str:
    """The name in a Host header, without the port: '[::1]:8080' -> '::1'."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _json(payload: object, status: int = 200) -> Response:
    # allow_nan=False: a NaN would be invalid JSON for the browser; data.py turns them into text.
    body = json.dumps(payload, separators=(",", ":"), allow_nan=False, default=str)
    return Response(body, status=status, mimetype="application/json")


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise UsageError(f"{name} must be between {low} and {high}")
    return value


def _float_arg(name: str) -> float | None:
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {raw!r}")
    return value


def _list_arg(name: str) -> list[str]:
    return [item for item in request.args.get(name, "").split(",") if item]


def create_app(data: UIData, *, loopback_only: bool = True, edit_token: str | None = None,
               allowed_hosts: tuple[str, ...] = ()) -> Flask:
    """The Flask app over ``data``; with ``loopback_only`` it refuses Host headers that are
    neither loopback names nor in ``allowed_hosts`` (the names a proxy forwards, see
    ``--base-path``). With ``edit_token`` it also takes POSTs of run annotations that carry the
    token in an ``X-Flor-Token`` header (the page reads it from its own HTML, which no other
    origin can read); without, it answers only GET.

    >>> app = create_app(UIData.open(Path(".flor/flor.db"), Path(".")))   # doctest: +SKIP
    >>> app.test_client().get("/api/runs").json["total"]                   # doctest: +SKIP
    2
    """
    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")
    app.config["FLOR_DATA"] = data
    table = data.table

    hosts = {name.lower() for name in allowed_hosts}

    @app.before_request
    def guard():
        if loopback_only:
            name = _hostname(request.host or "")
            if not is_loopback(name) and name.lower() not in hosts:
                return _error("flor ui answers only requests addressed to localhost"
                              + (f" or {', '.join(sorted(hosts))}" if hosts else "")
                              + f", not {name!r} (behind a proxy that forwards that name, start it with "
                              f"--allow-host {name})", 403)
        if request.method in ("GET", "HEAD"):
            return None
        if edit_token is None or request.method != "POST" or not _EDIT_PATH.match(request.path):
            response = _error("flor ui is read-only: only GET requests are served"
                              + ("" if edit_token else " (start it with --allow-edit to name, tag and note runs)"), 405)
            response.headers["Allow"] = "GET, HEAD"
            return response
        # CSRF: another site can make a browser POST here, but cannot read the page to learn the
        # token, and cannot send a JSON body or a custom header without the server's consent.
        if not hmac.compare_digest(request.headers.get("X-Flor-Token", ""), edit_token):
            return _error("refused: the request lacks this server's edit token (reload the page)", 403)
        if request.mimetype != "application/json":
            return _error("send the annotations as application/json", 415)
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        # Everything the page needs is served from here: no other origin may load or frame it.
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(FlorError)
    def flor_error(exc: FlorError):
        status = 404 if isinstance(exc, RunNotFoundError) else 400
        return _error(str(exc), status)

    @app.errorhandler(405)
    def not_allowed(_exc):
        return _error("flor ui is read-only: only GET requests are served", 405)

    @app.errorhandler(404)
    def not_found(_exc):
        return _error("not found", 404)

    page = _index_html(edit_token)

    @app.get("/")
    def index():
        response = Response(page, mimetype="text/html")
        response.headers["Cache-Control"] = "no-store"  # it carries the edit token
        return response

    @app.post("/api/runs/<path:tstamp>/annotations")
    def annotate(tstamp: str):
        from ..store import Store

        table.refresh()
        run_id = table.run_id(tstamp)
        fields = request.get_json(silent=True)
        if not isinstance(fields, dict) or not fields or set(fields) - _NOTE_FIELDS:
            raise UsageError(f"send a JSON object with some of: {', '.join(sorted(_NOTE_FIELDS))}")
        store = Store.open(data.db.path)
        try:
            store.annotate_run(run_id, **fields)
        finally:
            store.close()
        table.refresh()
        return _json(note_json(table.note(run_id)))

    @app.get("/api/version")
    def version():
        table.refresh()
        rows = table.rows()
        if table.load_error:
            raise StoreError(table.load_error)
        running = [row["tstamp"] for row in rows if row["status"] == "running"]
        return _json({"version": table.version, "runs": len(rows), "running": len(running), "edit": edit_token is not None,
                      "running_runs": running[-MAX_COMPARED:], "loading": table.loading,
                      "root": str(data.root), "project": data.root.name})

    def matching_rows() -> tuple[list[dict], list[tuple[str, str]]]:
        table.refresh()
        # A small store is read in a blink: answer with the whole table rather than a first
        # version without logged values. A large one answers at once and fills in later (the
        # page's own rows are read for it meanwhile, see RunsTable.page_while_loading).
        if table.quick_pass or not table.charts_ready:
            table.wait_loaded(FIRST_ANSWER_WAIT_S)
        columns = table.columns()
        try:
            keep = compile_filter(request.args.get("where", ""), [name for name, _ in columns])
        except FilterError as exc:
            if table.loading and "unknown column" in str(exc):
                raise FilterError(f"{exc}; logged values are still being read, try again in a moment") from None
            raise
        inside = _brushes(request.args.get("brush", ""), {name for name, _ in columns})
        return [row for row in shown_rows() if keep(row) and inside(row)], columns

    def shown_rows() -> list[dict]:
        # Archived runs are left out unless asked for (archived=1).
        if request.args.get("archived") == "1":
            return table.rows()
        return [row for row in table.rows() if not row["_archived"]]

    def sorted_rows() -> tuple[list[dict], list[tuple[str, str]], str, bool]:
        rows, columns = matching_rows()
        names = [name for name, _ in columns]
        sort = request.args.get("sort") or "tstamp"
        if sort not in names:
            if not table.loading:
                raise UsageError(f"cannot sort by unknown column {sort!r}")
            sort = "tstamp"  # a logged name not read yet: sort by time until it is
        descending = request.args.get("desc", "0") in ("1", "true")
        if sort == "tstamp":  # the rows are kept in tstamp order, and every run has one
            return (rows[::-1] if descending else rows), columns, sort, descending
        # Missing values go last in both directions: sort present values, then append the rest.
        present = [row for row in rows if row.get(sort) is not None]
        missing = [row for row in rows if row.get(sort) is None]
        present.sort(key=lambda row: sort_key(row.get(sort)), reverse=descending)
        return present + missing, columns, sort, descending

    @app.get("/api/runs")
    def runs():
        ordered, columns, sort, descending = sorted_rows()
        names = [name for name, _ in columns]
        offset = _int_arg("offset", 0, 0, 10**9)
        limit = _int_arg("limit", 100, 1, MAX_PAGE)
        page = ordered[offset:offset + limit]
        shown = [{"name": name, "kind": kind} for name, kind in columns]
        cells = [[row.get(name) for name in names] for row in page]
        sources = [row["_sources"] for row in page]
        if table.loading and table.charts_ready:
            # The first rows show the page's logged values before the pass has read every run's.
            extra, values, sources = table.page_while_loading(page, names)
            shown += [{"name": name, "kind": "log"} for name in extra]
            cells = [row + more for row, more in zip(cells, values)]
        return _json({
            "version": table.version,
            "loading": table.loading,
            "total": len(shown_rows()),
            "archived": sum(row["_archived"] for row in table.rows()),
            "matched": len(ordered),
            "offset": offset,
            "limit": limit,
            "sort": sort,
            "desc": descending,
            "charts_ready": table.charts_ready,
            "columns": shown,
            "metrics": table.metric_names(),
            "rows": cells,
            "sources": sources,
        })

    @app.get("/api/runs.csv")
    def runs_csv():
        # The whole table, logged values and their sources included: those come from the pass over
        # the logs, so a download waits for it (the first rows' early values are the page's only).
        if not table.wait_loaded(CSV_WAIT_S):
            raise UsageError("the table is still being read from the logs; download it again in a minute")
        ordered, columns, _, _ = sorted_rows()
        known = [name for name, _ in columns]
        chosen = _list_arg("columns") or known
        unknown = [name for name in chosen if name not in known]
        if unknown:
            raise UsageError(f"unknown columns: {', '.join(unknown)}")
        response = Response(table_csv(ordered, chosen), mimetype="text/csv")
        response.headers["Content-Disposition"] = f'attachment; filename="{data.root.name or "flor"}-runs.csv"'
        return response

    @app.get("/api/values")
    def column_values():
        rows, columns = matching_rows()
        known = {name for name, _ in columns}
        names = _list_arg("names")
        unknown = [name for name in names if name not in known]
        if unknown:
            raise UsageError(f"unknown columns: {', '.join(unknown)}")
        return _json({
            "version": table.version,
            "runs": [row["tstamp"] for row in rows],
            "columns": {name: [row.get(name) for row in rows] for name in names},
        })

    @app.get("/api/series")
    def series():
        table.refresh()
        tstamps = _list_arg("runs")
        name = request.args.get("name", "")
        if not tstamps or not name:
            raise UsageError("give runs=TSTAMP[,TSTAMP...] and name=LOGGED_NAME")
        if len(tstamps) > MAX_COMPARED:
            raise UsageError(f"compare at most {MAX_COMPARED} runs at once")
        points = _int_arg("points", 2000, 2, 100_000)
        xmin, xmax = _float_arg("xmin"), _float_arg("xmax")
        x_mode = request.args.get("x") or "iteration"
        out, label, integer = [], None, True
        run_ids = [table.run_id(tstamp) for tstamp in tstamps]
        # Before the pass is done, the runs' last values are read for these runs only, at once.
        lasts = table.lasts_of(run_ids, [name]) if table.loading else {}
        curves = data.series.curves(run_ids, name)  # a few reads for all the runs, not several per run
        for tstamp, run_id in zip(tstamps, run_ids):
            curve = data.series.series(run_id, name, points, xmin, xmax, x_mode, curve=curves[run_id],
                                       last=lasts.get(run_id, {}).get(name, (None, None)) if table.loading else None)
            if curve["x_label"] != "run":
                label = label or curve["x_label"]
                integer = integer and curve["integer_x"]
            out.append({"run": tstamp, "parts": curve["parts"], "run_level": curve["run_level"], "last": curve["last"]})
        return _json({"name": name, "x": x_mode, "x_label": label or "iteration", "integer_x": integer,
                      "series": out, "version": table.version})

    @app.get("/api/runs/<path:tstamp>/code")
    def code(tstamp: str):
        table.refresh()
        detail = run_detail(data.db, table, table.run_id(tstamp))
        commit = _checked_commit(detail["commit"])
        return _json({"tstamp": detail["tstamp"], "filename": detail["filename"], "commit": commit,
                      "text": read_code(data.root, commit, detail["filename"])})

    @app.get("/api/runs/<path:tstamp>/output")
    def output(tstamp: str):
        from ..reading.console import lines

        table.refresh()
        run_id = table.run_id(tstamp)
        limit = _int_arg("limit", 2000, 1, 20000)
        grep = request.args.get("grep") or None
        streams = _list_arg("stream") or None
        shown, matched = [], 0
        for line in lines(data.db, run_id, streams=streams, grep=grep):
            matched += 1
            if len(shown) < limit:
                shown.append(line.to_json())
        total = data.db.output_line_count(run_id)
        return _json({"tstamp": tstamp, "lines": shown, "matched": matched, "total": total})

    @app.get("/api/runs/<path:tstamp>")
    def run(tstamp: str):
        table.refresh()
        return _json(run_detail(data.db, table, table.run_id(tstamp)))

    @app.get("/api/diff")
    def diff():
        table.refresh()
        a, b = request.args.get("a", ""), request.args.get("b", "")
        if not a or not b:
            raise UsageError("give a=TSTAMP and b=TSTAMP")
        old, new = run_detail(data.db, table, table.run_id(a)), run_detail(data.db, table, table.run_id(b))
        files = list(dict.fromkeys([old["filename"], new["filename"]]))
        text = "".join(
            diff_code(data.root, _checked_commit(old["commit"]), _checked_commit(new["commit"]), f) for f in files
        )
        return _json({"a": old["tstamp"], "b": new["tstamp"], "files": files, "text": text})

    return app


def _brushes(text: str, known: set[str]):
    """A predicate over rows from ``name:low:high;...`` (the parallel coordinates' brushes): a
    row is kept when each named value is a number within its range."""
    ranges = []
    for item in filter(None, text.split(";")):
        name, _, bounds = item.rpartition(":")
        name, _, low = name.rpartition(":")
        try:
            low_value, high_value = float(low), float(bounds)
        except ValueError:
            raise UsageError(f"a brush is NAME:LOW:HIGH with numbers, got {item!r}") from None
        if name not in known:
            raise UsageError(f"cannot brush unknown column {name!r}")
        ranges.append((name, low_value, high_value))

    def inside(row: dict) -> bool:
        for name, low_value, high_value in ranges:
            value = row.get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low_value <= value <= high_value:
                return False
        return True

    return inside


def _checked_commit(commit: str | None) -> str | None:
    """A commit from the store, refused unless it is hex (never an option to git)."""
    if commit is not None and not _COMMIT.match(commit):
        raise VersionControlError(f"the recorded code version {commit!r} is not a commit hash")
    return commit


def normal_base_path(base_path: str) -> str:
    """'/proxy/8080' from '/proxy/8080/', 'proxy/8080' or ''; refused when it is not a plain path.

    >>> normal_base_path("proxy/8080/"), normal_base_path("/")
    ('/proxy/8080', '')
    """
    path = "/" + base_path.strip().strip("/")
    if path == "/":
        return ""
    if not re.fullmatch(r"(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+", path) or "/../" in path + "/" or "/./" in path + "/":
        raise UsageError(f"--base-path must be a URL path such as /proxy/8080, got {base_path!r}")
    return path


class BasePath:
    """WSGI middleware for a path-prefix proxy: requests under ``base`` are served with the prefix
    moved to SCRIPT_NAME; ``base`` itself is redirected to ``base/`` (the page's URLs are relative
    to it). Requests without the prefix are served as they are, for proxies that strip it
    (jupyter-server-proxy's /proxy/PORT/)."""

    def __init__(self, app, base: str) -> None:
        self.app = app
        self.base = base

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == self.base:
            start_response("308 Permanent Redirect", [("Location", self.base.rsplit("/", 1)[-1] + "/"),
                                                       ("Content-Length", "0")])
            return [b""]
        if path.startswith(self.base + "/"):
            environ = dict(environ, SCRIPT_NAME=environ.get("SCRIPT_NAME", "") + self.base,
                           PATH_INFO=path[len(self.base):])
        return self.app(environ, start_response)


def _check_can_listen(host: str, port: int) -> None:
    """Bind once to see whether ``host:port`` is free; werkzeug would print and exit instead."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {host}: unknown address ({exc.strerror}); use --host 127.0.0.1") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port or leave it out"
            ) from exc


def check_options(host: str, allow_edit: bool, base_path: str) -> str:
    """Refuse --allow-edit off loopback and a --base-path that is not a plain path; returns the
    normalised base path."""
    if allow_edit and not is_loopback(host):
        raise UsageError("--allow-edit serves only on this machine: leave out --host (or give a loopback address)")
    return normal_base_path(base_path)


def make_server(db_path: Path, root: Path, host: str = "127.0.0.1", port: int = 0, *, allow_edit: bool = False,
                base_path: str = "", allowed_hosts: tuple[str, ...] = ()):
    """(werkzeug server, app) bound to ``host:port`` (port 0: a free one), the store being read.
    ``allow_edit``: runs can be named, tagged, noted and archived from the page (loopback only);
    ``base_path``: the prefix a proxy serves the page under; ``allowed_hosts``: Host names
    accepted besides loopback ones (what such a proxy forwards).

    >>> server, app = make_server(Path(".flor/flor.db"), Path("."))   # doctest: +SKIP
    >>> server.server_port                                           # doctest: +SKIP
    53117
    """
    import logging

    from werkzeug.serving import make_server as werkzeug_server

    # One line per request would bury the address in the terminal; errors still show.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # Check the address before reading anything: a refusal then leaves no background reader
    # running while the interpreter exits.
    base = check_options(host, allow_edit, base_path)
    _check_can_listen(host, port)
    data = UIData.open(db_path, root)
    try:
        data.load()  # runs and args now; logged values in the background
        token = secrets.token_urlsafe(32) if allow_edit else None
        app = create_app(data, loopback_only=is_loopback(host), edit_token=token, allowed_hosts=tuple(allowed_hosts))
        app.config["FLOR_BASE_PATH"] = base
        try:
            server = werkzeug_server(host, port, BasePath(app, base) if base else app, threaded=True)
        except (OSError, SystemExit) as exc:  # werkzeug exits on a port in use, after our check raced
            raise UsageError(f"cannot listen on {host}:{port}; choose another --port or leave it out") from exc
    except BaseException:
        data.close()
        raise
    return server, app


def serve(db_path: Path, root: Path, host: str = "127.0.0.1", port: int = 0, open_browser: bool = True, *,
          allow_edit: bool = False, base_path: str = "", allowed_hosts: tuple[str, ...] = ()) -> int:
    """Run the server until interrupted; print its address and optionally open a browser.

    >>> serve(Path(".flor/flor.db"), Path("."), open_browser=False)   # doctest: +SKIP
    flor ui: http://127.0.0.1:53117/  (read-only; Ctrl+C stops it)
    """
    print(f"flor ui: reading {db_path} ...", file=sys.stderr, flush=True)
    server, app = make_server(db_path, root, host, port, allow_edit=allow_edit, base_path=base_path,
                              allowed_hosts=allowed_hosts)
    shown_host = host if ":" not in host else f"[{host}]"
    base = app.config["FLOR_BASE_PATH"]
    url = f"http://{shown_host}:{server.server_port}{base}/"
    if not is_loopback(host):
        print(f"flor ui: warning: listening on {host}; anyone who can reach this machine can read these runs",
              file=sys.stderr)
        if host in ("0.0.0.0", "::"):
            url = f"http://127.0.0.1:{server.server_port}{base}/"
    mode = "runs can be named, tagged, noted and archived" if allow_edit else "read-only"
    print(f"flor ui: {url}  ({mode}; Ctrl+C stops it)", flush=True)
    if open_browser:
        import webbrowser

        try:
            webbrowser.open(url)
        except Exception:  # a missing browser must not stop the server
            pass
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.config["FLOR_DATA"].close()
    return 0
