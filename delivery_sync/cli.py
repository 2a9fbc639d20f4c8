"""The `delivery-sync` command line: parse flags, call one function, render, map errors to exit codes.

Heavy modules (httpx, tenacity, sqlite-utils, rich) are imported inside the
commands that need them, so `query` and `status` start fast.
"""

from __future__ import annotations

import logging
import signal
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Optional

import typer

from .errors import EXIT_FAILED, EXIT_USAGE, DeliverySyncError, UsageError

log = logging.getLogger("delivery_sync")
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C

app = typer.Typer(
    name="delivery-sync",
    help="Keep a fast local SQLite replica of the remote Grab/GoJek delivery statistics.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class Globals:
    """Options given before the command."""

    config: Optional[Path]
    db: Optional[Path]
    verbose: bool
    quiet: bool

    def settings(self, **overrides: Any):
        """Settings with these flag overrides (flag > environment > file > default)."""
        from .config import load_settings

        return load_settings(self.config, database=self.db, **overrides)


@app.callback()
def _globals(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", metavar="PATH", help="TOML config file (default: $DELIVERY_SYNC_CONFIG, else ./config.toml)."),
    db: Optional[Path] = typer.Option(None, "--db", metavar="PATH", help="Replica file (overrides `database`)."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logs, and tracebacks on errors."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only errors and the summary line."),
) -> None:
    _setup_logging(verbose, quiet)  # first: main() logs the traceback of the error below with -v
    if verbose and quiet:
        raise UsageError("-v and -q cannot be used together")
    ctx.obj = Globals(config, db, verbose, quiet)


def _parse_date(value: Optional[str], flag: str) -> Optional[date]:
    """A `YYYY-MM-DD` flag value, or a UsageError naming the flag."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{flag}: {value!r} is not a date (expected YYYY-MM-DD)") from None


def _parse_ids(value: Optional[str]) -> Optional[list[int]]:
    if value is None:
        return None
    try:
        ids = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--clients: {value!r} is not a comma-separated list of client ids (e.g. 12,15)") from None
    if not ids:
        raise UsageError("--clients: no client id given")
    return ids


# --- sync ---------------------------------------------------------------------------


@app.command()
def sync(
    ctx: typer.Context,
    days_back: Optional[int] = typer.Option(None, "--days-back", metavar="N", help="The N calendar days ending today (default sync.days_back = 365)."),
    from_: Optional[str] = typer.Option(None, "--from", metavar="DATE", help="First day, YYYY-MM-DD (instead of --days-back)."),
    to: Optional[str] = typer.Option(None, "--to", metavar="DATE", help="Last day, YYYY-MM-DD (default today)."),
    clients: Optional[str] = typer.Option(None, "--clients", metavar="IDS", help="Only these client ids, e.g. 12,15."),
    incremental: bool = typer.Option(False, "--incremental", help="Start each client at its latest stored day minus sync.lookback_days."),
    prune: bool = typer.Option(False, "--prune", help="Delete local rows in the window that the remote no longer returns."),
    source: Optional[str] = typer.Option(None, "--source", metavar="URL", help="Remote base URL, or 'demo' for the built-in simulated remote."),
    no_aggregate: bool = typer.Option(False, "--no-aggregate", help="Do not rebuild the rollup tables afterwards."),
) -> None:
    """Replicate a window of days from the remote into the replica."""
    from . import render
    from .demo_source import serving_demo
    from .sync import SyncOptions, run_sync
    from .window import resolve_window

    g: Globals = ctx.obj
    start, end, ids = _parse_date(from_, "--from"), _parse_date(to, "--to"), _parse_ids(clients)
    settings = g.settings(source={"url": source})
    window = resolve_window(settings.source.today(), days_back, start, end, flag="--days-back", default=settings.sync.days_back)
    options = SyncOptions(window, ids, incremental, prune, aggregate=not no_aggregate)
    with serving_demo(settings) as settings, render.progress_bar("clients", quiet=g.quiet) as progress:
        result = run_sync(settings, options, progress)
    rollup = result.aggregate
    if rollup:  # cron mail gets one summary line per run, which says when the rollup failed
        log.debug("%s", render.aggregate_summary(rollup))
    render.summary(render.sync_summary(result))
    raise typer.Exit(0 if result.status == "ok" and (rollup is None or rollup.status == "ok") else EXIT_FAILED)


# --- collect and status -----------------------------------------------------------------


@app.command()
def collect(
    ctx: typer.Context,
    timeout: Optional[float] = typer.Option(None, "--timeout", metavar="SECONDS", help="How long to wait for the remote's answer (default collect.timeout = 900)."),
    source: Optional[str] = typer.Option(None, "--source", metavar="URL", help="Remote base URL, or 'demo' for the built-in simulated remote."),
) -> None:
    """Ask the remote to collect fresh data from Grab/GoJek, and wait for its answer (never sent twice)."""
    from . import render
    from .collect import run_collect
    from .demo_source import serving_demo

    if timeout is not None and timeout <= 0:
        raise UsageError(f"--timeout must be more than 0 seconds (got {timeout:g})")
    settings = ctx.obj.settings(source={"url": source}, collect={"timeout": timeout})
    with serving_demo(settings) as settings:
        result = run_collect(settings)
    render.summary(render.collect_summary(result))
    raise typer.Exit(0 if result.status == "ok" else EXIT_FAILED)


@app.command()
def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (for scripts) instead of the view."),
    check: bool = typer.Option(False, "--check", help="Exit 1 unless the replica is fresh and the last sync ok (for monitors and cron)."),
) -> None:
    """What is in the replica, how fresh it is, and how the last runs went (read-only, never waits)."""
    from . import render
    from .status import read_status

    settings = ctx.obj.settings()
    report = read_status(settings.database, settings.source.tz, settings.status.stale_after_hours)
    if as_json:
        render.status_json(report)
    elif check:
        print(render.status_check_line(report))
    else:
        render.show_status(report)
    raise typer.Exit(EXIT_FAILED if check and not report.verdict.ok else 0)


# --- aggregate and query ----------------------------------------------------------------


@app.command()
def aggregate(
    ctx: typer.Context,
    as_of: Optional[str] = typer.Option(None, "--as-of", metavar="DATE", help="Last day of the rolling periods (default today in source.timezone)."),
) -> None:
    """Rebuild the rollup tables (client_aggregates, overall_aggregates) from client_stats."""
    from . import render
    from .aggregate import run_aggregate

    settings = ctx.obj.settings()
    result = run_aggregate(settings.database, _parse_date(as_of, "--as-of") or settings.source.today())
    render.summary(render.aggregate_summary(result))
    raise typer.Exit(0 if result.status == "ok" else EXIT_FAILED)


query_app = typer.Typer(help="Read-only reports from the replica (never asks the remote).", no_args_is_help=True)
app.add_typer(query_app, name="query")

_DAYS = typer.Option(None, "--days", metavar="N", help="The N calendar days ending today (default 30).")
_FROM = typer.Option(None, "--from", metavar="DATE", help="First day, YYYY-MM-DD (instead of --days).")
_TO = typer.Option(None, "--to", metavar="DATE", help="Last day, YYYY-MM-DD (default today).")
_FORMAT = typer.Option("table", "--format", metavar="table|csv|json", help="Output format (csv/json carry exact numbers).")


def _report(ctx: typer.Context, fmt: str, build, days=None, from_=None, to=None, windowed: bool = True) -> None:
    """Open the replica read-only, run `build(conn, window)` in one snapshot, render it."""
    from . import readonly, render
    from .window import resolve_window

    if fmt not in ("table", "csv", "json"):
        raise UsageError(f"--format: {fmt!r} is not one of table, csv, json")
    settings = ctx.obj.settings()
    window = None
    if windowed:
        start, end = _parse_date(from_, "--from"), _parse_date(to, "--to")
        window = resolve_window(settings.source.today(), days, start, end, flag="--days", default=30)
    conn = readonly.open_readonly(settings.database)
    try:
        with readonly.snapshot(conn):
            result = build(conn, window)
    finally:
        conn.close()
    render.report(result, fmt)


@query_app.command("top")
def query_top(
    ctx: typer.Context,
    by: str = typer.Option("total_sales", "--by", metavar="METRIC", help="Metric to rank by (a client_stats metric)."),
    limit: int = typer.Option(10, "--limit", metavar="N", help="How many clients."),
    days: Optional[int] = _DAYS, from_: Optional[str] = _FROM, to: Optional[str] = _TO, fmt: str = _FORMAT,
) -> None:
    """Clients ranked by the sum of METRIC, with their names, sums and ratios."""
    from .reports import top

    _report(ctx, fmt, lambda conn, window: top(conn, window, by, limit), days, from_, to)


@query_app.command("client")
def query_client(
    ctx: typer.Context,
    client_id: int = typer.Argument(..., metavar="ID", help="Client id."),
    daily: bool = typer.Option(False, "--daily", help="One row per day instead of the window's totals."),
    days: Optional[int] = _DAYS, from_: Optional[str] = _FROM, to: Optional[str] = _TO, fmt: str = _FORMAT,
) -> None:
    """One client's totals and ratios over the window, or its daily rows."""
    from .reports import client

    _report(ctx, fmt, lambda conn, window: client(conn, window, client_id, daily), days, from_, to)


@query_app.command("totals")
def query_totals(
    ctx: typer.Context,
    by: Optional[str] = typer.Option(None, "--by", metavar="day|week|month", help="One row per day, week (from Monday) or month."),
    days: Optional[int] = _DAYS, from_: Optional[str] = _FROM, to: Optional[str] = _TO, fmt: str = _FORMAT,
) -> None:
    """All clients together, per platform: one row, or one per day, week or month."""
    from .reports import totals

    _report(ctx, fmt, lambda conn, window: totals(conn, window, by), days, from_, to)


@query_app.command("sql")
def query_sql(
    ctx: typer.Context,
    statement: str = typer.Argument(..., metavar="STATEMENT", help="One SELECT, WITH, EXPLAIN or read-only PRAGMA."),
    max_seconds: float = typer.Option(10, "--max-seconds", metavar="S", help="Interrupt the query after S seconds (exit 1)."),
    fmt: str = _FORMAT,
) -> None:
    """Run one read-only SQL statement against the replica."""
    from .reports import check_statement, sql

    if max_seconds <= 0:
        raise UsageError(f"--max-seconds must be more than 0 (got {max_seconds:g})")
    check_statement(statement)  # before the replica is opened: a refused statement touches no file
    _report(ctx, fmt, lambda conn, _: sql(conn, statement, max_seconds), windowed=False)


# --- demo-source ------------------------------------------------------------------------


@app.command("demo-source")
def demo_source(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (keep it on loopback)."),
    port: int = typer.Option(8765, "--port", help="Port to listen on (0 picks a free one)."),
    clients: int = typer.Option(127, "--clients", min=1, help="How many clients it lists."),
    seed: int = typer.Option(42, "--seed", help="Seed of the deterministic data."),
    latency_ms: float = typer.Option(0, "--latency-ms", min=0, help="Delay added to every answer."),
    error_rate: float = typer.Option(0, "--error-rate", min=0, max=1, help="Share of requests answered with a random 503."),
    rate_limit: Optional[float] = typer.Option(None, "--rate-limit", metavar="RPS", min=0.1, help="Requests per second before it answers 429 + Retry-After."),
    no_batch: bool = typer.Option(False, "--no-batch", help="Answer 404 to POST /api/v1/getBatchStats."),
) -> None:
    """Serve a realistic simulated remote (the API of the real one) on loopback until interrupted."""
    from .demo_source import DemoSource

    try:
        demo = DemoSource(host, port, clients, seed, latency_ms, error_rate, rate_limit, batch=not no_batch)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    log.info("demo-source: serving %d clients on %s (Ctrl-C to stop)", clients, demo.url)
    try:
        demo.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        demo.stop()


# --- helpers ------------------------------------------------------------------------------


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            message = f"error: {message}"
        elif record.levelno >= logging.WARNING:
            message = f"warning: {message}"
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return message


def _setup_logging(verbose: bool, quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO)
    # httpx and httpcore log raw URLs (with any password in them): source.py logs requests instead.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: one clear line on stderr and the spec's exit code for every error."""
    args = sys.argv[1:] if argv is None else argv
    verbose = any(a in ("-v", "--verbose") for a in args)
    # cron's `timeout` and service managers send SIGTERM: stop like Ctrl-C, closing the run.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = app(args=args, prog_name="delivery-sync", standalone_mode=False)
        if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C into this exit code, silently
            _error("interrupted")
    except DeliverySyncError as exc:
        if verbose:
            log.exception("traceback")
        _error(str(exc), exc.hint)
        code = exc.exit_code
    except typer.TyperException as exc:  # click usage errors: bad flag, bad value
        code = getattr(exc, "exit_code", EXIT_USAGE)
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare `delivery-sync` or `query`: the help, as is
            print(exc.format_message(), file=sys.stderr)
        else:
            command = f" {exc.ctx.info_name}" if getattr(exc, "ctx", None) and exc.ctx.parent else ""
            _error(exc.format_message(), f"see 'delivery-sync{command} --help'")
    except KeyboardInterrupt:
        _error("interrupted")
        code = EXIT_INTERRUPTED
    except Exception as exc:  # a bug: still one line unless -v
        if verbose:
            log.exception("unexpected error")
        _error(f"unexpected {type(exc).__name__}: {exc}", "run again with -v for the traceback")
        code = EXIT_FAILED
    sys.exit(code if isinstance(code, int) else 0)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _error(message: str, hint: Optional[str] = None) -> None:
    line = f"error: {message}"
    if hint:
        line += f" ({hint})"
    print(line, file=sys.stderr)
