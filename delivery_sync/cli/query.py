"""The `query` reports: read-only, in one snapshot of the replica."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import typer

from ..aggregate.sql import RATIOS
from ..errors import EXIT_FAILED, UsageError
from ..metrics import METRICS
from .app import app, argument, examples, option, parse_date, with_global_options

log = logging.getLogger("delivery_sync")
query_app = typer.Typer(
    help="Read-only reports from the replica (never asks the remote, works while it is down).",
    no_args_is_help=True,
    epilog=examples("delivery-sync query top --limit 5", "delivery-sync query totals --by week --days 28 --format csv"),
)
app.add_typer(query_app, name="query")

# SQLite's INTEGER: a larger id or limit could never match a row, and SQLite refuses to bind it.
SQLITE_MIN, SQLITE_MAX = -(2**63), 2**63 - 1
_DAYS = option(None, "--days", metavar="N", help="The N calendar days ending today (default: 30).")
_FROM = option(None, "--from", metavar="DATE", help="First day, YYYY-MM-DD (instead of --days).")
_TO = option(None, "--to", metavar="DATE", help="Last day, YYYY-MM-DD, 'today' or 'yesterday', not after today (default: today in "
             "source.timezone); without --from, the --days N (default 30) days ending there.")
_FORMAT = option("table", "--format", metavar="table|csv|json", help="table for people, csv or json (exact numbers) for scripts (default: table).")
_COLUMNS = option(None, "--columns", metavar="A,B,C", help="Only these columns, in this order, in every format (default: the report's own).")
_COMPARE = option(None, "--compare", metavar="previous|year",
                  help="Beside each figure, the same-length window just before (previous) or a year earlier (year), "
                       "with the change and the change in percent.")
_ACTIVE_ONLY = option(False, "--active-only", help="Only clients the remote lists as active.")
_SHOW_ACTIVE = option(False, "--show-active", help="Add an `active` column (1/0) after the name.")
_RANKED = f"{', '.join(METRICS)}, or a ratio: {', '.join(RATIOS)}"
_CHART = option(False, "--chart", help="Draw bars of --chart-by instead of the table (a terminal table only).")
# No default here (None): `--chart-by total_sales` without --chart is refused like any other value.
_CHART_BY = option(None, "--chart-by", metavar="METRIC", help="What --chart draws: a metric or a ratio (default: total_sales).")


def _drawn(flag: str, given: bool, fmt: str, columns: str | None, chart_by: str | None = None) -> str | None:
    """Charts are drawn on a terminal table only: csv and json carry the numbers. Returns what
    --chart draws (`chart_by`, by default total_sales), None without it."""
    if chart_by is not None and not given:
        raise UsageError("--chart-by says what --chart draws: add --chart")
    if given and fmt != "table":
        raise UsageError(f"{flag} draws on the terminal, not in csv or json, which carry the numbers (drop {flag} or --format)")
    if given and columns is not None:
        raise UsageError(f"{flag} does not combine with --columns")
    return (chart_by or "total_sales") if given else None


def _report(ctx: typer.Context, fmt: str, columns: str | None, build, days=None, from_=None, to=None, windowed: bool = True):
    """Open the replica read-only, run `build(conn, window)` in one snapshot, render it; returns the report."""
    from .. import readonly, render
    from ..days import resolve_window
    from ..status import read_freshness

    if fmt not in ("table", "csv", "json"):
        raise UsageError(f"--format: {fmt!r} is not one of table, csv, json")
    wanted = [c.strip() for c in columns.split(",") if c.strip()] if columns is not None else None
    if wanted == []:
        raise UsageError("--columns: no column given")
    settings = ctx.obj.settings()
    window = None
    if windowed:
        today = settings.source.today()
        named = {"today": today, "yesterday": today - timedelta(days=1)}  # in source.timezone
        start, end = parse_date(from_, "--from"), named[to] if to in named else parse_date(to, "--to")
        if start is None and end is not None:  # `--to DATE [--days N]`: the N days ending there
            if end > today:
                raise UsageError(f"--to {end} is after today ({today} in source.timezone)")
            window = resolve_window(end, days, flag="--days", default=30)
        else:
            window = resolve_window(today, days, start, end, flag="--days", default=30)
    conn = readonly.open_reader(settings.database)
    try:
        with readonly.snapshot(conn):
            result = build(conn, window)
            fresh = read_freshness(conn, datetime.now(UTC), settings.status.stale_after_hours)
    except Exception as exc:
        if readonly.is_damage(exc):  # a damaged page the report read: one line, as a writing run says it
            raise readonly.damaged(settings.database, exc) from None
        raise
    finally:
        conn.close()
    _warn_unless_fresh(fresh, settings.status.stale_after_hours)
    if fmt != "table":  # a table shows them under its title; csv and json carry only the rows
        for note in result.notes:
            log.warning("%s", note)
    render.report(result.select(wanted) if wanted else result, fmt)
    return result


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
    by: str = option("total_sales", "--by", metavar="METRIC", help=f"What to rank by, one of: {_RANKED} (default: total_sales)."),
    limit: int = option(10, "--limit", metavar="N", help="How many clients (default: 10)."),
    asc: bool = option(False, "--asc", help="The bottom: smallest first (clients with no value stay last)."),
    min_orders: int | None = option(None, "--min-orders", metavar="N", help="Only clients with at least N orders in the window."),
    active_only: bool = _ACTIVE_ONLY, show_active: bool = _SHOW_ACTIVE, compare: str | None = _COMPARE,
    spark: bool = option(False, "--spark", help="Add a `trend` column: METRIC over the window's days, as a sparkline (a terminal table only)."),
    days: int | None = _DAYS, from_: str | None = _FROM, to: str | None = _TO, fmt: str = _FORMAT, columns: str | None = _COLUMNS,
) -> None:
    """Clients ranked by the sum of METRIC (or a ratio of sums) over the window, with their names, sums and ratios."""
    from ..reports import top

    _drawn("--spark", spark, fmt, columns)
    _report(ctx, fmt, columns, lambda conn, window: top(
        conn, window, by, limit, ascending=asc, min_orders=min_orders, active_only=active_only, show_active=show_active,
        compare=compare, spark=spark), days, from_, to)


@query_app.command("client", epilog=examples(
    "delivery-sync query client 42 --days 90",
    "delivery-sync query client 42 --daily --days 7 --columns stat_date,total_sales,total_orders",
))
def query_client(
    ctx: typer.Context,
    client_id: int = argument(..., metavar="ID", min=SQLITE_MIN, max=SQLITE_MAX, help="Client id."),
    daily: bool = option(False, "--daily", help="One row per day instead of the window's totals."),
    show_active: bool = _SHOW_ACTIVE, compare: str | None = _COMPARE, chart: bool = _CHART, chart_by: str | None = _CHART_BY,
    days: int | None = _DAYS, from_: str | None = _FROM, to: str | None = _TO, fmt: str = _FORMAT, columns: str | None = _COLUMNS,
) -> None:
    """One client's totals and ratios over the window, or its daily rows."""
    from ..reports import client

    drawn = _drawn("--chart", chart, fmt, columns, chart_by)
    _report(ctx, fmt, columns, lambda conn, window: client(
        conn, window, client_id, daily, compare=compare, show_active=show_active, chart=drawn), days, from_, to)


@query_app.command("totals", epilog=examples(
    "delivery-sync query totals --days 30",
    "delivery-sync query totals --by month --from 2026-01-01 --format json",
))
def query_totals(
    ctx: typer.Context,
    by: str | None = option(None, "--by", metavar="day|week|month|platform",
        help="One row per day, week (from Monday) or month, or per platform with its shares (default: one row for the window)."),
    compare: str | None = _COMPARE,
    mark_partial: bool = option(False, "--mark-partial",
        help="With --by day|week|month: add each period's days in the window (`days`), and mark (`partial`, `*`) "
             "the periods the window cuts or with fewer days of data than days."),
    chart: bool = _CHART, chart_by: str | None = _CHART_BY,
    days: int | None = _DAYS, from_: str | None = _FROM, to: str | None = _TO, fmt: str = _FORMAT, columns: str | None = _COLUMNS,
) -> None:
    """All clients together, per platform: one row, or one per day, week, month or platform."""
    from ..reports import totals

    drawn = _drawn("--chart", chart, fmt, columns, chart_by)
    _report(ctx, fmt, columns, lambda conn, window: totals(
        conn, window, by, compare=compare, mark_partial=mark_partial, chart=drawn), days, from_, to)


@query_app.command("movers", epilog=examples(
    "delivery-sync query movers --days 7 --min-base 5000000",
    "delivery-sync query movers --by ads_roas --compare year --rank change --format csv",
))
def query_movers(
    ctx: typer.Context,
    by: str = option("total_sales", "--by", metavar="METRIC", help=f"What moved, one of: {_RANKED} (default: total_sales)."),
    limit: int = option(10, "--limit", metavar="N", help="How many clients rose, fell and lag, each (default: 10)."),
    compare: str = option("previous", "--compare", metavar="previous|year",
        help="Against the same-length window just before, or the same days a year earlier (default: previous)."),
    min_base: float | None = option(None, "--min-base", metavar="X",
        help="Rank only clients whose METRIC was at least X in the base window (tiny bases make huge percents)."),
    rank: str = option("pct", "--rank", metavar="pct|change", help="Rank by the change in percent or in value (default: pct)."),
    active_only: bool = _ACTIVE_ONLY,
    days: int | None = _DAYS, from_: str | None = _FROM, to: str | None = _TO, fmt: str = _FORMAT, columns: str | None = _COLUMNS,
) -> None:
    """The clients whose METRIC rose and fell most against a base window; those that stopped sending data are listed apart."""
    from ..reports import movers

    _report(ctx, fmt, columns, lambda conn, window: movers(
        conn, window, by, limit, compare, min_base=min_base, rank=rank, active_only=active_only), days, from_, to)


@query_app.command("changes", epilog=examples(
    "delivery-sync query changes --client 42 --days 7",
))
def query_changes(
    ctx: typer.Context,
    client_id: int | None = option(None, "--client", metavar="ID", min=SQLITE_MIN, max=SQLITE_MAX,
                                   help="Only this client (default: every client)."),
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
    max_seconds: float = option(10, "--max-seconds", metavar="S",
        help="Interrupt the query, rows printed included, after S seconds, exit 1 (default: 10)."),
    max_rows: int = option(10_000, "--max-rows", metavar="N", min=1, max=SQLITE_MAX,
        help="Print at most N rows; if the statement returns more, say so and exit 1 (default: 10000)."),
    fmt: str = _FORMAT, columns: str | None = _COLUMNS,
) -> None:
    """Run one read-only SQL statement against the replica (writes are refused, exit 2)."""
    import math

    from ..reports import check_statement, sql

    if not (math.isfinite(max_seconds) and max_seconds > 0):  # NaN or infinity would never interrupt it
        raise UsageError(f"--max-seconds must be more than 0 and finite (got {max_seconds:g})")
    check_statement(statement)  # before the replica is opened: a refused statement touches no file
    result = _report(ctx, fmt, columns, lambda conn, _: sql(conn, statement, max_seconds, max_rows), windowed=False)
    if result.more:  # a script must not take the first N rows for all of them
        log.warning("only the first %d rows were printed: the statement returns more (raise --max-rows, or add "
                    "LIMIT/OFFSET)", max_rows)
        raise typer.Exit(EXIT_FAILED)
