"""The `delivery-sync` command line: parse flags, call one function, render, map errors to exit codes.

    app.py      the Typer app, global options, shared flag parsers
    writers.py  sync, collect, aggregate
    status.py   status
    query.py    query top|client|totals|sql
    demo.py     demo-source
    logs.py     log lines on stderr
    main.py     the entry point: errors to one line and an exit code

Heavy modules (httpx, tenacity, sqlite-utils, rich) are imported inside the
commands that need them, so `query` and `status` start fast.
"""

# Each module registers its commands on `app`; this order is the order `--help` lists them in.
from . import writers, status, query, demo  # noqa: F401, I001
from .app import app
from .main import main

__all__ = ["app", "main"]
