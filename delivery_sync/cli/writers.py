"""The writing commands: `sync`, `collect`, `aggregate` (each holds the writer lock)."""

from __future__ import annotations

import logging
from contextlib import contextmanager

import typer

from ..days import FIRST_DAY
from ..errors import EXIT_FAILED, UsageError
from .app import Globals, app, examples, hold_until_exit, option, parse_date, parse_ids

log = logging.getLogger("delivery_sync")


@app.command(epilog=examples(
    "delivery-sync sync --source demo           # try it with the built-in simulated remote",
    "delivery-sync -q sync --days-back 365      # the daily cron job",
    "delivery-sync sync --retry-failed          # only what the last sync did not bring in",
))
def sync(
    ctx: typer.Context,
    days_back: int | None = option(None, "--days-back", metavar="N", help="The N calendar days ending today (default: sync.days_back, 365)."),
    from_: str | None = option(None, "--from", metavar="DATE", help="First day, YYYY-MM-DD (instead of --days-back)."),
    to: str | None = option(None, "--to", metavar="DATE", help="Last day, YYYY-MM-DD, not after today (default: today in source.timezone)."),
    clients: str | None = option(None, "--clients", metavar="IDS", help="Only these client ids, e.g. 12,15 (default: every active client)."),
    incremental: bool = option(False, "--incremental", help="Start each client at its latest stored day minus sync.lookback_days."),
    prune: bool = option(False, "--prune", help="Delete local rows in the window that the remote no longer returns."),
    source: str | None = option(None, "--source", metavar="URL",
        help="Remote base URL, or 'demo' for the built-in simulated remote (default: source.url)."),
    no_aggregate: bool = option(False, "--no-aggregate", help="Do not rebuild the rollup tables afterwards."),
    retry_failed: bool = option(False, "--retry-failed",
        help="Only the clients the last sync failed or never fetched, over its window (if none: those an earlier sync left, not synced since)."),
    deadline: float | None = option(None, "--deadline", metavar="MINUTES",
        help="Time budget of the run in minutes, e.g. 0.5 = 30 s (default: sync.deadline_minutes; 0 = none)."),
) -> None:
    """Replicate a window of days from the remote into the replica, then rebuild the rollups."""
    from .. import render
    from ..days import resolve_window
    from ..sync import NothingToRetry, SyncOptions, run_sync

    g: Globals = ctx.obj
    if retry_failed:
        flags = (("--clients", clients), ("--days-back", days_back), ("--from", from_), ("--to", to), ("--incremental", incremental))
        given = [flag for flag, value in flags if value]
        if given:
            raise UsageError(f"--retry-failed takes the last sync's clients and window; it cannot be combined with {', '.join(given)}")
    if deadline is not None and deadline < 0:
        raise UsageError(f"--deadline must be 0 (none) or more minutes (got {deadline:g})")
    start, end, ids = parse_date(from_, "--from"), parse_date(to, "--to"), parse_ids(clients)
    settings = _require_source(g.settings(source={"url": source}, sync={"deadline_minutes": deadline}), "sync")
    window = resolve_window(settings.source.today(), days_back, start, end, flag="--days-back", default=settings.sync.days_back)
    options = SyncOptions(window, ids, incremental, prune, aggregate=not no_aggregate, retry_failed=retry_failed,
                          deadline_minutes=settings.sync.deadline_minutes)
    try:
        with serving_demo(settings) as settings, render.progress_bar(quiet=g.quiet) as progress:
            result = run_sync(settings, options, progress)
    except NothingToRetry as nothing:
        render.summary(f"sync: nothing to retry: {nothing}")
        raise typer.Exit(0) from None
    hold_until_exit(result)
    rollup = result.aggregate
    if rollup:  # cron mail gets one summary line per run, which says when the rollup failed
        log.debug("%s", render.aggregate_summary(rollup))
    render.summary(render.sync_summary(result))
    raise typer.Exit(0 if result.status == "ok" and (rollup is None or rollup.status == "ok") else EXIT_FAILED)


@app.command(epilog=examples(
    "delivery-sync -q collect                   # cron, 30 minutes before the sync",
))
def collect(
    ctx: typer.Context,
    timeout: float | None = option(None, "--timeout", metavar="SECONDS",
        help="How long to wait for the remote's answer (default: collect.timeout, 900)."),
    source: str | None = option(None, "--source", metavar="URL",
        help="Remote base URL, or 'demo' for the built-in simulated remote (default: source.url)."),
) -> None:
    """Ask the remote to collect fresh data from Grab/GoJek, and wait for its answer (never sent twice)."""
    from .. import render
    from ..collect import run_collect

    if timeout is not None and timeout <= 0:
        raise UsageError(f"--timeout must be more than 0 seconds (got {timeout:g})")
    settings = _require_source(ctx.obj.settings(source={"url": source}, collect={"timeout": timeout}), "collect")
    with serving_demo(settings) as settings, render.waiting("collect: waiting for the remote's answer", ctx.obj.quiet):
        result = run_collect(settings)
    render.summary(render.collect_summary(result))
    raise typer.Exit(0 if result.status == "ok" else EXIT_FAILED)


@app.command(epilog=examples(
    "delivery-sync aggregate --as-of 2026-01-31",
))
def aggregate(
    ctx: typer.Context,
    as_of: str | None = option(None, "--as-of", metavar="DATE",
        help="Last day of the rolling periods, YYYY-MM-DD (default: today in source.timezone)."),
) -> None:
    """Rebuild the rollup tables (client_aggregates, overall_aggregates, overall_daily, overall_weekly) from client_stats.

    sync brings them up to date at the end of its run (unless it failed having written nothing),
    refreshing only what it wrote; run this by hand after --no-aggregate, or to rebuild them whole."""
    from .. import render
    from ..aggregate.run import run_aggregate

    settings = ctx.obj.settings()
    today = settings.source.today()
    day = parse_date(as_of, "--as-of") or today
    if not FIRST_DAY <= day <= today:  # refused before the run: a failed aggregate would fail `status --check`
        raise UsageError(f"--as-of {day} is outside {FIRST_DAY}..{today} (today in source.timezone)")
    result = run_aggregate(settings.database, day)
    render.summary(render.aggregate_summary(result))
    raise typer.Exit(0 if result.status == "ok" else EXIT_FAILED)


@contextmanager
def serving_demo(settings):
    """Yield `settings`, or, when `source.url` is "demo", a copy pointing at a simulated remote
    started on a free loopback port for the duration of the block. The simulator (an HTTP
    server) is imported only then: a sync against a real remote never loads it."""
    if settings.source.url != "demo":
        yield settings
        return
    from ..demo_source import DemoSource

    with DemoSource() as demo:
        yield settings.model_copy(update={"source": settings.source.model_copy(update={"url": demo.url})})


def _require_source(settings, command: str):
    """No source.url anywhere (flag, environment, file): stop before any request, so that no token is
    sent to an address nobody chose, and say where the config was looked for and the two ways forward."""
    from ..config import CONFIG_ENV, DEFAULT_CONFIG_FILE, ENV_PREFIX
    from ..errors import ConfigError

    if settings.source.url is not None:
        return settings
    if settings.config_file is not None:
        where = f"not in {settings.config_file} nor ${ENV_PREFIX}SOURCE__URL"
    else:
        where = f"no --config, ${CONFIG_ENV} is not set, no ./{DEFAULT_CONFIG_FILE}"
    raise ConfigError(
        f"no source.url configured ({where}): nothing was sent",
        hint=f"try 'delivery-sync {command} --source demo', or copy config.example.toml to config.toml and set source.url",
    )
