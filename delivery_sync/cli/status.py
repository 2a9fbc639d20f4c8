"""The `status` command: read-only, never waits for the writer lock."""

from __future__ import annotations

import typer

from ..errors import EXIT_FAILED
from .app import app


@app.command()
def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (for scripts) instead of the view."),
    check: bool = typer.Option(False, "--check", help="Exit 1 unless the replica is fresh and the last sync ok (for monitors and cron)."),
) -> None:
    """What is in the replica, how fresh it is, and how the last runs went (read-only, never waits)."""
    from .. import render
    from ..status import read_status

    settings = ctx.obj.settings()
    report = read_status(settings.database, settings.source.tz, settings.status.stale_after_hours)
    if as_json:
        render.status_json(report)
    elif check:
        print(render.status_check_line(report))
    else:
        render.show_status(report)
    raise typer.Exit(EXIT_FAILED if check and not report.verdict.ok else 0)
