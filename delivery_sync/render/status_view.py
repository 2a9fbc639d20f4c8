"""The `status` view and its JSON object."""

from __future__ import annotations

from ..errors import capped
from .lines import plural, sync_counts
from .text import safe

_STATUS_STYLE = {"ok": "green", "fresh": "green", "partial": "yellow", "stale": "red", "failed": "red", "never": "yellow", "running": "cyan"}


def status_json(status) -> None:
    """The `status --json` object on stdout."""
    import json

    print(json.dumps(status.as_json(), indent=2))


def show_status(status, commands=lambda text: text) -> None:
    """The human status view on stdout: the verdict first, then the facts behind it. `commands`
    adds the global options the user gave to the commands it suggests.

    On a terminal a long value wraps at word boundaries under its own column; elsewhere lines
    are never wrapped (soft wrap), so logs and cron mail get one fact per line.
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    soft_wrap = not console.is_terminal

    def line(label: Text | str, value: Text | str, indent: int = 17) -> None:
        value = Text(safe(value)) if isinstance(value, str) else value  # a path or a URL is text, never markup
        label = Text(f"{label:<{indent}}", style="bold") if isinstance(label, str) else label
        if soft_wrap:
            console.print(Text.assemble(label, value), soft_wrap=True)
            return
        grid = Table.grid()
        grid.add_column(width=indent, no_wrap=True)  # the label carries its own style
        grid.add_column(overflow="fold")  # a path longer than the terminal folds, never an ellipsis
        grid.add_row(label, value)
        console.print(grid)

    verdict = status.verdict
    head = Text.assemble(
        ("Replica can be trusted: ", "bold"),
        ("yes", "bold green") if verdict.ok else ("NO", "bold red"),
        f" - {safe(verdict.reason)}",
    )
    console.print(head, soft_wrap=soft_wrap)
    if verdict.advice:
        line("Run:", verdict.advice, 5)
    if status.unreadable:  # nothing else in it can be vouched for
        return
    if not status.exists:
        console.print(Text(commands("(to try it without a remote: delivery-sync sync --source demo)")), soft_wrap=True)
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
    errors = list(status.failures.values())
    for error in errors[:5]:
        line("", Text(safe(error), style="red"))
    if len(errors) > 5:
        line("", f"... and {len(errors) - 5} more (delivery-sync status --json lists them all)")
    if status.earlier_failed_clients:
        line("Earlier failed", _id_list(status.earlier_failed_clients, "", "(not synced since an earlier sync failed them; sync --retry-failed)"))
    if status.unfetched_clients:  # the last sync stopped early (a deadline, a signal): --retry-failed fetches them
        line("Not fetched", _id_list(status.unfetched_clients, "", "(the last sync stopped first; sync --retry-failed)"))
    line("Lagging clients", _id_list(status.lagging_clients, "none", _lag_note(status)))
    line("Stale clients", _id_list(status.stale_clients, "none", f"(not confirmed by a sync within {status.stale_after_hours:g} h)"))
    missing = Text(str(status.missing_days), style="yellow" if status.missing_days else "green")
    if status.missing_by_client:
        worst = sorted(status.missing_by_client.items(), key=lambda item: (-item[1], item[0]))[:5]
        missing.append(" (" + ", ".join(f"client {cid}: {days}" for cid, days in worst))
        more = len(status.missing_by_client) - len(worst)
        missing.append(f" ... and {more} more)" if more else ")")
    if status.last_sync and status.last_sync["window_start"]:
        missing.append(f" in the last sync's window {status.last_sync['window_start']}..{status.last_sync['window_end']}")
    line("Missing days", missing)
    line("Rollups", _rollups(status))
    console.print()
    console.print(Text("Last runs", style="bold"))
    for run in status.running:
        line(f"  {run['command']}", Text("running", style="cyan").append(f"  since {_when(run['started_at'], status)}"), 13)
    for command in ("collect", "sync", "aggregate"):
        run = getattr(status, f"last_{command}")
        if run is None:  # beside a running one of that command, "never" would read as a contradiction
            running = any(r["command"] == command for r in status.running)
            line(f"  {command}", Text("none finished yet" if running else "never", style="yellow"), 13)
            continue
        _run_lines(line, f"  {command}", run, status)
    if status.history is not None:
        console.print()
        console.print(Text(f"History (last {plural(len(status.history), 'run')}, newest first)", style="bold"))
        for run in status.history:
            _run_lines(line, f"  #{run['id']} {run['command']}", run, status, 21)
        if not status.history:
            console.print("  no runs yet", soft_wrap=True)


def _run_lines(line, label: str, run: dict, status, indent: int = 13) -> None:
    """`sync     ok      2026-01-25 01:00 UTC (6.0 h ago), took 12 s: 127/127 clients, ...` and its error."""
    from rich.text import Text

    from ..status import end_recorded

    # The status sits beside the label, so that a long line wraps under its start, as its error does.
    heading = Text(f"{label:<{indent}}", style="bold").append(f"{run['status']:<8}", style=_STATUS_STYLE.get(run["status"], ""))
    took = f", took {_took(run)}" if end_recorded(run) else ", end not recorded" if run["status"] != "running" else ""
    text = Text(f"{_when(run['started_at'], status)}{took}")
    details = _run_details(run)
    line(heading, text.append(f": {details}" if details else ""), indent + 8)
    if run["error"]:
        line("", Text(f"error: {safe(run['error'])}", style="red"), indent + 8)


def _rollups(status):
    """Whether the rollup tables (what an analyst opens the file for) hold every row's figures."""
    from rich.text import Text

    if status.rollups_as_of:
        return Text(f"current, as of {status.rollups_as_of}", style="green")
    if status.last_aggregate is None:
        return Text("none yet (reports read the raw rows)", style="yellow")
    if any(run["command"] == "sync" for run in status.running):
        return Text("out of date while a sync runs: it brings them up to date at its end", style="yellow")
    return Text("out of date: rows changed after the last aggregate (reports read the raw rows meanwhile); "
                "run delivery-sync aggregate before reading them directly", style="yellow")


def _run_details(run: dict) -> str:
    requests = plural(run["requests"], "request")
    if run["command"] != "sync":
        return requests if run["command"] == "collect" else ""
    return f"{sync_counts(run)}, window {run['window_start']}..{run['window_end']}, {requests}"


def _when(stamp: str, status) -> str:
    """`2026-01-25 01:00 UTC (6.0 h ago)`."""
    from ..status import age_text, hours_since, stamp_text

    return f"{stamp_text(stamp)} ({age_text(hours_since(stamp, status))} ago)"


def _took(run: dict) -> str:
    from datetime import datetime

    seconds = (datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"])).total_seconds()
    if seconds < 1:  # the stamps have whole seconds: both in the same one
        return "<1 s"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _lag_note(status) -> str:
    """Why the lagging clients lag: their latest day is before the cutoff, or they have no day at
    all (during a first sync, the clients it has not reached yet)."""
    from datetime import date, timedelta

    from ..status import LAG_DAYS

    cutoff = (date.fromisoformat(status.today) - timedelta(days=LAG_DAYS)).isoformat()
    without = len(status.lagging_without_rows)
    if without == len(status.lagging_clients):
        return "(no day stored yet)"
    if without:
        return f"(latest day before {cutoff}; {without} of them with no day stored yet)"
    return f"(latest day before {cutoff})"


def _id_list(ids: list[int], empty: str, note: str = ""):
    from rich.text import Text

    if not ids:
        return Text(empty, style="green")
    shown = capped(ids, 20)
    return Text(f"{shown} {note}".rstrip(), style="yellow")


def _size_text(size: int | None) -> str:
    units = ("bytes", "KiB", "MiB", "GiB")  # powers of 1024, named as such (ls -lh and du -h count the same way)
    value, unit = float(size or 0), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{value:.0f} bytes" if unit == 0 else f"{value:.1f} {units[unit]}"
