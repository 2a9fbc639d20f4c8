"""The one-line summaries every run ends with, and the progress bar of `sync`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import capped


def utc_stamp(seconds: float | None = None) -> str:
    """`2026-12-02T01:00:03Z`: the UTC time (now, or of `seconds` since the epoch) that starts a line in a log file."""
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def summary(line: str) -> None:
    """The one line every writing run ends with, on stderr (kept even with -q); remote text in it escaped.
    Off a terminal (cron.log, a log file) it starts with its UTC time, like every log line."""
    from .text import safe

    text = safe(line) if sys.stderr.isatty() else f"{utc_stamp()} {safe(line)}"
    try:
        print(text, file=sys.stderr, flush=True)
    except BrokenPipeError:  # nobody reads stderr any more: the run's own outcome still decides the exit code
        pass


def sync_summary(result) -> str:
    """`sync ok: 127/127 clients, 46355 rows (...), 0 rejected, window A..B, 12.3 s`."""
    run = result.run
    parts = [sync_counts(run)]
    if run["rows_deleted"]:
        parts.append(f"{run['rows_deleted']} deleted")
    if run["clients_failed"]:
        failed = sorted(cid for cid, _ in result.failures if cid is not None)  # as status lists them, not as they failed
        shown = capped(failed, 10)
        parts.append(f"{run['clients_failed']} failed" + (f" ({shown})" if shown else ""))
    if result.warnings:  # -q hides the warning lines: the summary still says there were some
        parts.append(plural(len(result.warnings), "warning"))
    parts.append(f"window {run['window_start']}..{run['window_end']}")
    parts.append(plural(run["requests"], "request"))
    parts.append(f"{result.seconds:.1f} s")
    line = f"sync {run['status']}: " + ", ".join(parts)
    if run["status"] == "failed" and run["error"]:
        line += f" - {run['error']}"
    elif result.stopped:  # partial: what it fetched is kept, the rest is for --retry-failed
        line += f" - {result.stopped}"
    rollup = result.aggregate
    if rollup is not None and rollup.status != "ok":
        line += f"; aggregate failed: {rollup.run['error']}"
    return line


def sync_counts(run: dict) -> str:
    """`127/127 clients, 46355 rows (120 inserted, 30 updated, 46205 unchanged), 0 rejected` of a sync run."""
    rows = run["rows_inserted"] + run["rows_updated"] + run["rows_unchanged"]
    return (
        f"{run['clients_ok']}/{run['clients_total']} clients, {plural(rows, 'row')} ({run['rows_inserted']} inserted, "
        f"{run['rows_updated']} updated, {run['rows_unchanged']} unchanged), {run['rows_rejected']} rejected"
    )


def plural(count: int, word: str) -> str:
    """`1 request`, `2 requests`."""
    return f"{count} {word}{'' if count == 1 else 's'}"


@contextmanager
def progress_bar(quiet: bool = False) -> Iterator[Callable[[int, int, str], None] | None]:
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


def collect_summary(result) -> str:
    """`collect ok: Collection finished for 127 clients, 1 request, 2.1 s` or `collect failed: <why>, ...`."""
    run = result.run
    what = run["error"] if run["status"] == "failed" else (result.message or "collection finished")
    return f"collect {run['status']}: {what}, {plural(run['requests'], 'request')}, {result.seconds:.1f} s"


def aggregate_summary(result) -> str:
    """`aggregate ok: 127 clients, 46355 rows -> 2594 rollup rows (4 rolling periods, 13 months, daily and weekly totals),
    rebuilt, as of D, 0.6 s`; `refreshed` instead of `rebuilt` when only what a sync wrote was recomputed."""
    run = result.run
    line = f"aggregate {run['status']}: "
    if run["status"] == "ok":
        line += (
            f"{plural(run['clients_ok'], 'client')}, {plural(run['rows_fetched'], 'row')} -> {plural(run['rows_inserted'], 'rollup row')} "
            f"({plural(result.periods, 'rolling period')}, {plural(result.months, 'month')}, daily and weekly totals), "
            f"{'refreshed' if result.refreshed else 'rebuilt'}, "
        )
    line += f"as of {result.as_of}, {result.seconds:.1f} s"
    if run["error"]:
        line += f" - {run['error']}"
    return line


def status_check_line(status) -> str:
    """The one line of `status --check`: `status ok: fresh, ...` or `status not ok: <why>; run: <command>`."""
    from .text import safe

    verdict = status.verdict
    if verdict.ok:
        return safe(f"status ok: {verdict.reason}")
    return safe(f"status not ok: {verdict.reason}" + (f"; run: {verdict.advice}" if verdict.advice else ""))


def interrupted_summary(run: dict) -> str:
    """The summary line of a run a signal stopped, from its closed `sync_runs` row."""
    from datetime import datetime
    from types import SimpleNamespace

    seconds = (datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"])).total_seconds()
    if run["command"] == "sync":
        return sync_summary(SimpleNamespace(run=run, failures=[], warnings=[], seconds=seconds, aggregate=None, stopped=None))
    if run["command"] == "collect":
        return collect_summary(SimpleNamespace(run=run, message=None, seconds=seconds))
    return f"{run['command']} failed: {seconds:.1f} s - {run['error']}"


STILL_WAITING_EVERY = 180.0  # seconds between "still waiting" lines off a terminal


@contextmanager
def waiting(what: str, quiet: bool = False) -> Iterator[None]:
    """While a long request runs: an elapsed-time spinner on a terminal, else a
    `collect: still waiting (N min)` log line every few minutes, so cron logs show it is alive."""
    if quiet:
        yield
        return
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn(what), TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
            bar.add_task(what, total=None)
            yield
        return
    import logging
    import threading
    import time

    done = threading.Event()
    began = time.monotonic()

    def tell() -> None:
        while not done.wait(STILL_WAITING_EVERY):
            minutes = (time.monotonic() - began) / 60
            shown = f"{minutes:.0f}" if minutes >= 1 else f"{minutes:.1f}"
            logging.getLogger("delivery_sync").info("%s: still waiting (%s min)", what.split(":")[0], shown)

    thread = threading.Thread(target=tell, name="still-waiting", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
