"""The `status` command: read-only, never waits for the writer lock."""

from __future__ import annotations

import typer

from ..errors import EXIT_FAILED, UsageError
from .app import app, examples, option, with_global_options

FORMATS = ("text", "json", "prometheus")


@app.command(epilog=examples(
    "delivery-sync status --history 5",
    "delivery-sync status --check || delivery-sync status     # cron: mail only when not ok",
    "delivery-sync status --format prometheus > f.tmp && mv f.tmp delivery_sync.prom",
))
def status(
    ctx: typer.Context,
    fmt: str | None = option(None, "--format", metavar="text|json|prometheus",
        help="text (the view), json (one object) or prometheus (metrics for node_exporter's textfile collector) (default: text)."),
    as_json: bool = option(False, "--json", help="Short for --format json."),
    # At most SQLite's largest integer: a larger N cannot be bound, and would crash rather than be refused.
    history: int = option(0, "--history", metavar="N", min=0, max=2**63 - 1,
                          help="Also list the last N runs of any command, newest first (default: 0, none)."),
    check: bool = option(False, "--check", help="Exit 1 unless the replica is fresh and the last sync ok (for monitors and cron)."),
) -> None:
    """What is in the replica, how fresh it is, and how the last runs went (read-only, never waits)."""
    from .. import render
    from ..config import ENV_PREFIX, Settings
    from ..readonly import reader_for
    from ..status import read_status

    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if as_json and fmt not in (None, "json"):
        raise UsageError(f"--json is --format json: it cannot be combined with --format {fmt}")
    fmt = "json" if as_json else fmt or "text"
    settings = ctx.obj.settings()
    reader = reader_for(settings.database)
    reader.check_path()
    # Metrics are written for a monitor: a replica that cannot be opened is a value to report (up 0), not an error.
    report = read_status(settings.database, settings.source.tz, settings.status.stale_after_hours, history,
                         tolerate_unopenable=fmt == "prometheus")
    _warn_if_lock_refused(reader)
    if not report.exists and settings.config_file is None and settings.database == Settings.model_fields["database"].default:
        # Someone in the wrong folder, or a cron line without DELIVERY_SYNC_CONFIG: say why this path.
        report.verdict.reason += f" (no config file was read: no --config, ${ENV_PREFIX}CONFIG or ./config.toml)"
    if report.verdict.advice:  # the repair command, for the replica this command line chose
        report.verdict.advice = with_global_options(report.verdict.advice)
    if fmt == "json":
        render.status_json(report)
    elif fmt == "prometheus":
        print(render.status_prometheus(report), end="")
    elif check:
        print(render.status_check_line(report))
    else:
        render.show_status(report, with_global_options)
    raise typer.Exit(EXIT_FAILED if check and not report.verdict.ok else 0)


def _warn_if_lock_refused(reader) -> None:
    """A lock file every writing run refuses (a planted symlink, a FIFO): said on stderr, so the
    operator learns it before the next sync fails on it; stdout stays the report."""
    import logging

    problem = reader.lock_problem()
    if problem:
        logging.getLogger("delivery_sync").warning("%s; every sync, collect and aggregate exits 2 until it is removed", problem)
