"""The `collect` run: ask the remote to collect fresh data from Grab/GoJek (docs/remote-api.md, triggerCollection).

`POST /api/v1/triggerCollection` may take 15 minutes. We wait `collect.timeout`
for the answer and never send it twice: once the request is out the remote may
be collecting, and a second trigger would start a second collection. The source
client therefore retries only failures to connect.

Success is HTTP 2xx with `success` not false; anything else (5xx,
`{"success": false, "error": ...}`, no answer in time, unreachable) is a
`failed` run with the reason in `sync_runs.error`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from . import replica
from .config import Settings
from .errors import SourceError
from .replica import RunCounts
from .source import SourceClient


@dataclass
class CollectResult:
    """The outcome of a collect: its `sync_runs` row and the remote's own message."""

    run: dict
    message: str | None
    seconds: float

    @property
    def status(self) -> str:
        return self.run["status"]


def run_collect(settings: Settings) -> CollectResult:
    """Trigger one collection on the remote and record it as a `collect` run, holding the writer lock."""
    store = replica.open_store(settings.database)
    with store.writer_lock("collect"):
        clock = replica.RunClock()  # the summary's seconds are the run row's duration
        db = store.open()
        try:
            # The row is `running` while we wait, so `status` shows a collection in progress.
            run_id = db.start_run("collect", started_at=clock.started_at)
            counts = RunCounts()  # kept up to date, so a run stopped mid-wait records its request
            with db.closed_on_error(run_id, counts):
                message, error = _trigger(settings, counts)
            seconds, finished_at = clock.stop()
            run = db.finish_run(run_id, "failed" if error else "ok", counts, error, finished_at)
        finally:
            db.close()
    # No separate error log: the summary line carries the reason (one line for cron mail).
    return CollectResult(run, message, seconds)


def _trigger(settings: Settings, counts: RunCounts) -> tuple[str | None, str | None]:
    """Send the trigger once, counting it in `counts`; returns (remote message, error or None)."""
    wait = settings.collect.timeout
    began = time.monotonic()
    with SourceClient(settings.source) as source:
        try:
            answer = source.trigger_collection(wait)
        except SourceError as exc:
            if time.monotonic() - began >= wait:
                # A read timeout: the request was sent, so the remote may still be collecting.
                return None, f"no answer within {wait:g} s (the remote may still be collecting; not re-triggered)"
            return None, str(exc)
        except BaseException:  # stopped (Ctrl-C, SIGTERM) while waiting: say that a collection may be under way
            if source.delivered:  # not when every attempt found the remote refusing connections
                counts.warnings.append("the trigger was sent: the remote may still be collecting; do not trigger it again yet")
            raise
        finally:
            counts.requests = source.requests
    message = answer.get("message")
    if answer.get("success") is False:
        reason = answer.get("error") or message or "the remote reported a failure"
        status = answer.get("http_status")
        return message, f"HTTP {status}: {reason}" if status else str(reason)
    return message, None
