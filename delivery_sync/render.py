"""Everything the user sees: summary lines, progress, tables, CSV and JSON.

rich is imported only where a terminal table or progress bar is drawn, so
scripts asking for CSV/JSON do not pay for it.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Optional


def summary(line: str) -> None:
    """The one line every writing run ends with, on stderr (kept even with -q)."""
    print(line, file=sys.stderr, flush=True)


def sync_summary(result) -> str:
    """`sync ok: 127/127 clients, 46355 rows (...), 0 rejected, window A..B, 12.3 s`."""
    run = result.run
    parts = [_sync_counts(run)]
    if run["rows_deleted"]:
        parts.append(f"{run['rows_deleted']} deleted")
    if run["clients_failed"]:
        failed = [str(cid) for cid, _ in result.failures if cid is not None]
        shown = ", ".join(failed[:10]) + (", ..." if len(failed) > 10 else "")
        parts.append(f"{run['clients_failed']} failed ({shown})")
    if result.warnings:  # -q hides the warning lines: the summary still says there were some
        parts.append(_plural(len(result.warnings), "warning"))
    parts.append(f"window {run['window_start']}..{run['window_end']}")
    parts.append(_plural(run["requests"], "request"))
    parts.append(f"{result.seconds:.1f} s")
    line = f"sync {run['status']}: " + ", ".join(parts)
    if run["status"] == "failed" and run["error"]:
        line += f" - {run['error']}"
    rollup = result.aggregate
    if rollup is not None and rollup.status != "ok":
        line += f"; aggregate failed: {rollup.run['error']}"
    return line


def _sync_counts(run: dict) -> str:
    """`127/127 clients, 46355 rows (120 inserted, 30 updated, 46205 unchanged), 0 rejected` of a sync run."""
    rows = run["rows_inserted"] + run["rows_updated"] + run["rows_unchanged"]
    return (
        f"{run['clients_ok']}/{run['clients_total']} clients, {rows} rows ({run['rows_inserted']} inserted, "
        f"{run['rows_updated']} updated, {run['rows_unchanged']} unchanged), {run['rows_rejected']} rejected"
    )


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


@contextmanager
def progress_bar(quiet: bool = False) -> Iterator[Optional[Callable[[int, int, str], None]]]:
    """A "45/127 clients" bar on stderr, only when stderr is a terminal; yields its update callback
    (done, total, unit) or None."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("sync", total=None, unit="")

        def update(done: int, total: int, unit: str) -> None:
            bar.update(task, completed=done, total=total, unit=unit)

        yield update


# --- collect and status -------------------------------------------------------------

_STATUS_STYLE = {"ok": "green", "fresh": "green", "partial": "yellow", "stale": "red", "failed": "red", "never": "yellow", "running": "cyan"}


def collect_summary(result) -> str:
    """`collect ok: Collection finished for 127 clients, 1 request, 2.1 s` or `collect failed: <why>, ...`."""
    run = result.run
    what = run["error"] if run["status"] == "failed" else (result.message or "collection finished")
    return f"collect {run['status']}: {what}, {_plural(run['requests'], 'request')}, {result.seconds:.1f} s"


def status_check_line(status) -> str:
    """The one line of `status --check`: `status ok: fresh, ...` or `status not ok: <why>; run: <command>`."""
    verdict = status.verdict
    if verdict.ok:
        return f"status ok: {verdict.reason}"
    return f"status not ok: {verdict.reason}" + (f"; run: {verdict.advice}" if verdict.advice else "")


def status_json(status) -> None:
    """The `status --json` object on stdout."""
    import json

    print(json.dumps(status.as_json(), indent=2))


def show_status(status) -> None:
    """The human status view on stdout: the verdict first, then the facts behind it.

    Lines are never wrapped by us (soft wrap), so logs and cron mail get one fact per line.
    """
    from rich.console import Console
    from rich.text import Text

    console = Console()

    def line(label: str, value: "Text | str", indent: int = 17) -> None:
        console.print(Text.assemble((f"{label:<{indent}}", "bold"), value), soft_wrap=True)

    verdict = status.verdict
    head = Text.assemble(
        ("Replica can be trusted: ", "bold"),
        ("yes", "bold green") if verdict.ok else ("NO", "bold red"),
        f" - {verdict.reason}",
    )
    console.print(head, soft_wrap=True)
    if verdict.advice:
        line("Run:", verdict.advice, 5)
    if not status.exists:
        console.print("(to try it without a remote: delivery-sync sync --source demo)", soft_wrap=True)
        return
    console.print()
    line("Replica", f"{status.database} ({_size_text(status.database_bytes)})")
    line("Clients", f"{status.clients} ({status.active_clients} active)")
    span = f", {status.date_min} .. {status.date_max}" if status.rows else ""
    line("Rows", f"{status.rows}{span} (today is {status.today} in {status.timezone})")
    freshness = Text(status.freshness, style=_STATUS_STYLE[status.freshness])
    if status.last_ok_sync_at:
        freshness.append(f" - last ok sync finished {_when(status.last_ok_sync_at, status)}")
    else:
        freshness.append(" - no sync has ended ok yet")
    freshness.append(f"; stale after {status.stale_after_hours:g} h")
    line("Freshness", freshness)
    line("Failed clients", _id_list(status.failed_clients, "none in the last sync" if status.last_sync else "no sync yet"))
    for error in list(status.failures.values())[:5]:
        line("", Text(error, style="red"))
    line("Lagging clients", _id_list(status.lagging_clients, "none", f"(latest day before {_lag_cutoff(status)})"))
    line("Stale clients", _id_list(status.stale_clients, "none", f"(not confirmed by a sync within {status.stale_after_hours:g} h)"))
    missing = Text(str(status.missing_days), style="yellow" if status.missing_days else "green")
    if status.missing_by_client:
        worst = sorted(status.missing_by_client.items(), key=lambda item: (-item[1], item[0]))[:5]
        missing.append(" (" + ", ".join(f"client {cid}: {days}" for cid, days in worst))
        missing.append(", ...)" if len(status.missing_by_client) > 5 else ")")
    if status.last_sync and status.last_sync["window_start"]:
        missing.append(f" in the last sync's window {status.last_sync['window_start']}..{status.last_sync['window_end']}")
    line("Missing days", missing)
    console.print()
    console.print(Text("Last runs", style="bold"))
    for run in status.running:
        line(f"  {run['command']}", Text("running", style="cyan").append(f"  since {_when(run['started_at'], status)}"), 13)
    for command in ("collect", "sync", "aggregate"):
        run = getattr(status, f"last_{command}")
        if run is None:
            line(f"  {command}", Text("never", style="yellow"), 13)
            continue
        text = Text(f"{run['status']:<8}", style=_STATUS_STYLE.get(run["status"], ""))
        text.append(f"{_when(run['started_at'], status)}, took {_took(run)}")
        details = _run_details(run)
        line(f"  {command}", text.append(f": {details}" if details else ""), 13)
        if run["error"]:
            line("", Text(f"error: {run['error']}", style="red"), 21)


def _run_details(run: dict) -> str:
    requests = _plural(run["requests"], "request")
    if run["command"] != "sync":
        return requests if run["command"] == "collect" else ""
    return f"{_sync_counts(run)}, window {run['window_start']}..{run['window_end']}, {requests}"


def _when(stamp: str, status) -> str:
    """`2026-01-25 01:00 UTC (6.0 h ago)`."""
    from datetime import datetime

    from .status import age_text, stamp_text

    hours = (datetime.fromisoformat(status.checked_at) - datetime.fromisoformat(stamp)).total_seconds() / 3600
    return f"{stamp_text(stamp)} ({age_text(max(hours, 0))} ago)"


def _took(run: dict) -> str:
    from datetime import datetime

    if not run["finished_at"]:
        return ""
    seconds = (datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"])).total_seconds()
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _lag_cutoff(status) -> str:
    from datetime import date, timedelta

    from .status import LAG_DAYS

    return (date.fromisoformat(status.today) - timedelta(days=LAG_DAYS)).isoformat()


def _id_list(ids: list[int], empty: str, note: str = ""):
    from rich.text import Text

    if not ids:
        return Text(empty, style="green")
    shown = ", ".join(map(str, ids[:20])) + (f", ... ({len(ids)} in all)" if len(ids) > 20 else "")
    return Text(f"{shown} {note}".rstrip(), style="yellow")


def _size_text(size: int | None) -> str:
    units = ("bytes", "KB", "MB", "GB")
    value, unit = float(size or 0), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{value:.0f} bytes" if unit == 0 else f"{value:.1f} {units[unit]}"


# --- aggregate and query --------------------------------------------------------------


def aggregate_summary(result) -> str:
    """`aggregate ok: 127 clients, 46355 rows -> 2594 rollup rows (4 rolling periods, 13 months, daily and weekly totals), as of D, 0.6 s`."""
    run = result.run
    line = f"aggregate {run['status']}: "
    if run["status"] == "ok":
        line += (
            f"{run['clients_ok']} clients, {run['rows_fetched']} rows -> {run['rows_inserted']} rollup rows "
            f"({result.periods} rolling periods, {result.months} months, daily and weekly totals), "
        )
    line += f"as of {result.as_of}, {result.seconds:.1f} s"
    if run["error"]:
        line += f" - {run['error']}"
    return line


def report(rep, fmt: str) -> None:
    """Print a `reports.Report` on stdout as a rich table, CSV or a JSON array (csv/json never import rich)."""
    if fmt == "json":
        import json

        print(json.dumps(rep.rows, indent=2, ensure_ascii=False, default=_json_value))
    elif fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(rep.columns)
        writer.writerows(["" if row[c] is None else _csv_value(row[c]) for c in rep.columns] for row in rep.rows)
    else:
        _report_table(rep)


def _json_value(value):
    if isinstance(value, bytes):  # a BLOB from `query sql`
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _csv_value(value):
    return value.hex() if isinstance(value, bytes) else value


def _report_table(rep) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output is not wrapped at 80 columns: an operator pastes or greps it.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 240)
    columns = rep.table_columns or rep.columns
    rows = rep.rows if rep.table_rows is None else rep.table_rows
    if rep.title:  # its own line: a table-wide title would wrap over a narrow table
        console.print(rep.title, style="bold", soft_wrap=True)
    if rep.single and rep.rows:
        table = Table(show_header=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        for column in columns:
            table.add_row(_label(column), _cell(column, rep.rows[0][column]))
    else:
        table = Table()
        text = {c for c in columns if any(isinstance(row[c], (str, bytes)) for row in rows)}
        for column in columns:
            table.add_column(_label(column), justify="left" if column in text else "right", no_wrap=column != "name")
        for row in rows:
            table.add_row(*(_cell(column, row[column]) for column in columns))
        if not rows:
            table.caption = "no data in this window"
    console.print(table)


def _label(column: str) -> str:
    return column.replace("_", " ")


def _cell(column: str, value) -> str:
    """Rupiah for amounts, thousands separators for counts, 2 decimals for ROAS, percentages for shares."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or column in ("client_id", "id", "run_id"):
        return value.hex() if isinstance(value, bytes) else str(value)
    if column.endswith(("_sales", "_spend")) or column == "avg_order_value":
        return f"Rp {value:,.0f}"
    if column.endswith("_roas"):
        return f"{value:,.2f}"
    if column.endswith(("_rate", "_share")):
        return f"{value * 100:.2f}%"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"
