"""``flor ui``: a local, read-only web page to browse runs, compare them and see their curves.

    flor ui                      # serve on a free port of 127.0.0.1 and open a browser
    flor ui --port 8080 --no-browser
    flor ui --host 0.0.0.0       # on purpose only: anyone who can reach the machine can read runs

Modules: ``commands`` (the CLI command), ``server`` (Flask app and API), ``data`` (read-only
SQL and caches), ``downsample`` (min/max per bucket), ``static/`` (the page and the vendored
uPlot). Filters use flor's one filter language, :mod:`flor.filters`. Flask is imported only when
the command runs.
"""
