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
    rows = run["rows_inserted"] + run["rows_updated"] + run["rows_unchanged"]
    parts = [
        f"{run['clients_ok']}/{run['clients_total']} clients",
        f"{rows} rows ({run['rows_inserted']} inserted, {run['rows_updated']} updated, {run['rows_unchanged']} unchanged)",
        f"{run['rows_rejected']} rejected",
    ]
    if run["rows_deleted"]:
        parts.append(f"{run['rows_deleted']} deleted")
    if run["clients_failed"]:
        failed = [str(cid) for cid, _ in result.failures if cid is not None]
        shown = ", ".join(failed[:10]) + (", ..." if len(failed) > 10 else "")
        parts.append(f"{run['clients_failed']} failed ({shown})")
    parts.append(f"window {run['window_start']}..{run['window_end']}")
    parts.append(f"{result.seconds:.1f} s")
    line = f"sync {run['status']}: " + ", ".join(parts)
    if run["status"] == "failed" and run["error"]:
        line += f" - {run['error']}"
    return line


@contextmanager
def progress_bar(unit: str, quiet: bool = False) -> Iterator[Optional[Callable[[int, int], None]]]:
    """A "45/127 clients" bar on stderr, only when stderr is a terminal; yields its update callback or None."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("sync", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
