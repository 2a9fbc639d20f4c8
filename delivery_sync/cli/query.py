"""The `query` reports: read-only, in one snapshot of the replica."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import typer

from ..errors import UsageError
from ..metrics import METRICS
from .app import app, argument, examples, option, parse_date, with_global_options

log = logging.getLogger("delivery_sync")
query_app = typer.Typer(
    help="Read-only reports from the replica (never asks the remote, works while it is down).",
    no_args_is_help=True,
    epilog=examples("delivery-sync query top --limit 5", "delivery-sync query totals --by week --days 28 --format csv"),
)
app.add_typer(query_app, name="query")

_DAYS = option(None, "--days", metavar="N", help="The N calendar days ending today (default: 30).")
_FROM = option(None, "--from", metavar="DATE", help="First day, YYYY-MM-DD (instead of --days).")
_TO = option(None, "--to", metavar="DATE", help="Last day, YYYY-MM-DD, not after today (default: today in source.timezone).")
_FORMAT = option("table", "--format", metavar="table|csv|json", help="table for people, csv or json (exact numbers) for scripts (default: table).")
_COLUMNS = option(None, "--columns", metavar="A,B,C", help="Only these columns, in this order, in every format (default: the report's own).")


def _report(ctx: typer.Context, fmt: str, columns: str | None, build, days=None, from_=None, to=None, windowed: bool = True) -> None:
    """Open the replica read-only, run `build(conn, window)` in one snapshot, render it."""
    from .. import readonly, render
    from ..status import read_freshness
    from ..window import resolve_window

    if fmt not in ("table", "csv", "json"):
        raise UsageError(f"--format: {fmt!r} is not one of table, csv, json")
    wanted = [c.strip() for c in columns.split(",") if c.strip()] if columns is not None else None
    if wanted == []:
        raise UsageError("--columns: no column given")
    settings = ctx.obj.settings()
    window = None
    if windowed:
        start, end = parse_date(from_, "--from"), parse_date(to, "--to")
        window = resolve_window(settings.source.today(), days, start, end, flag="--days", default=30)
    conn = readonly.open_readonly(settings.database)
    try:
        with readonly.snapshot(conn):
            result = build(conn, window)
            fresh = read_freshness(conn, datetime.now(UTC), settings.status.stale_after_hours)
    finally:
        conn.close()
    _warn_unless_fresh(fresh, settings.status.stale_after_hours)
    render.report(result.select(wanted) if wanted else result, fmt)


def _warn_unless_fresh(fresh, stale_after_hours: float) -> None:
    """One line on stderr when the figures may be behind the remote; stdout stays the report."""
    from ..status import stamp_text

    if fresh.freshness == "never":
        log.warning("%s", with_global_options(
            "no sync of this replica has ended ok yet: these figures may be incomplete (see 'delivery-sync status')"))
    elif fresh.freshness == "stale":
        why = (f"last ok sync finished {stamp_text(fresh.last_ok_sync_at)}" if fresh.sync_too_old
               else f"{len(fresh.stale_clients)} active clients not confirmed")
        log.warning("%s", with_global_options(f"the replica is stale ({why}; stale after {stale_after_hours:g} h): these "
                                              "figures may be behind the remote (see 'delivery-sync status')"))


@query_app.command("top", epilog=examples(
    "delivery-sync query top --limit 5 --days 7",
    "delivery-sync query top --by gojek_orders --from 2026-01-01 --to 2026-01-31 --format csv",
))
def query_top(
    ctx: typer.Context,
    by: str = option("total_sales", "--by", metavar="METRIC", help=f"Metric to rank by, one of: {', '.join(METRICS)} (default: total_sales)."),
    limit: int = option(10, "--limit", metavar="N", help="How many clients (default: 10)."),
    days: int | None = _DAYS, from_: str | None = _FROM, to: str | None = _TO, fmt: str = _FORMAT, columns: str | None = _COLUMNS,
) -> None:
    """Clients ranked by the sum of METRIC over the window, with their names, sums and ratios."""
    from ..reports import top

    _report(ctx, fmt, columns, lambda conn, window: top(conn, window, by, limit), days, from_, to)


@query_app.command("client", epilog=examples(
    "delivery-sync query client 42 --days 90",
    "delivery-sync query client 42 --daily --days 7 --columns stat_date,total_sales,total_orders",
))
def query_client(
    ctx: typer.Context,
    client_id: int = argument(..., metavar="ID", help="Client id."),
    daily: bool = option(False, "--daily", help="One row per day instead of the window's totals."),
    days: int | None = _DAYS, from_: str | None = _FROM, to: str | None = _TO, fmt: str = _FORMAT, columns: str | None = _COLUMNS,
) -> None:
    """One client's totals and ratios over the window, or its daily rows."""
    from ..reports import client

    _report(ctx, fmt, columns, lambda conn, window: client(conn, window, client_id, daily), days, from_, to)


@query_app.command("totals", epilog=examples(
    "delivery-sync query totals --days 30",
    "delivery-sync query totals --by month --from 2026-01-01 --format json",
))
def query_totals(
    ctx: typer.Context,
    by: str | None = option(None, "--by", metavar="day|week|month",
        help="One row per day, week (from Monday) or month (default: one row for the window)."),
    days: int | None = _DAYS, from_: str | None = _FROM, to: str | None = _TO, fmt: str = _FORMAT, columns: str | None = _COLUMNS,
) -> None:
    """All clients together, per platform: one row, or one per day, week or month."""
    from ..reports import totals

    _report(ctx, fmt, columns, lambda conn, window: totals(conn, window, by), days, from_, to)


@query_app.command("changes", epilog=examples(
    "delivery-sync query changes --client 42 --days 7",
))
def query_changes(
    ctx: typer.Context,
    client_id: int | None = option(None, "--client", metavar="ID", help="Only this client (default: every client)."),
    days: int | None = _DAYS, from_: str | None = _FROM, to: str | None = _TO, fmt: str = _FORMAT, columns: str | None = _COLUMNS,
) -> None:
    """Values the remote restated (old and new, per column) for days in the window, newest run first."""
    from ..reports import changes

    _report(ctx, fmt, columns, lambda conn, window: changes(conn, window, client_id), days, from_, to)


@query_app.command("sql", epilog=examples(
    'delivery-sync query sql "SELECT stat_date, total_sales FROM client_stats_named WHERE name LIKE \'Kopi%\' LIMIT 5"',
))
def query_sql(
    ctx: typer.Context,
    statement: str = argument(..., metavar="STATEMENT", help="One SELECT, WITH, EXPLAIN or read-only PRAGMA."),
    max_seconds: float = option(10, "--max-seconds", metavar="S", help="Interrupt the query after S seconds, exit 1 (default: 10)."),
    fmt: str = _FORMAT, columns: str | None = _COLUMNS,
) -> None:
    """Run one read-only SQL statement against the replica (writes are refused, exit 2)."""
    from ..reports import check_statement, sql

    if max_seconds <= 0:
        raise UsageError(f"--max-seconds must be more than 0 (got {max_seconds:g})")
    check_statement(statement)  # before the replica is opened: a refused statement touches no file
    _report(ctx, fmt, columns, lambda conn, _: sql(conn, statement, max_seconds), windowed=False)
