"""`status --format prometheus`: the status facts in the Prometheus text exposition format.

Meant for node_exporter's textfile collector (cron writes the file atomically,
see crontab.example), so an alert can fire on `delivery_sync_fresh == 0` or on
the age of `delivery_sync_last_ok_sync_timestamp_seconds`. Times that never
happened are 0: their age is then huge, and an age alert fires as it should.
"""

from __future__ import annotations

from datetime import datetime

RUN_STATUSES = ("ok", "partial", "failed")  # of a finished run
COMMANDS = ("collect", "sync", "aggregate")


def _seconds(stamp: str | None) -> float:
    return datetime.fromisoformat(stamp).timestamp() if stamp else 0.0


def _ended(run: dict) -> str | None:
    """When a finished run ended; for one a dead process left, the last moment the replica knew it
    alive (its last client written, else its start): its row's `finished_at`, once the next
    writing run has closed it, or its start before that."""
    return run["finished_at"] or run["started_at"]


def _escape(value: str) -> str:
    """A label value as the format requires: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def status_prometheus(status) -> str:
    """The exposition text (ends with a newline), one gauge family per fact."""
    from ..status import end_recorded

    families: list[tuple[str, str, list[tuple[str, float]]]] = []

    def gauge(name: str, help_text: str, *samples: tuple[str, float]) -> None:
        families.append((f"delivery_sync_{name}", help_text, list(samples)))

    last_sync = status.last_sync or {}
    gauge("info", "The replica this describes (always 1).", (_labels(database=status.database), 1))
    gauge("up", "1 when status could read the replica (or there is none yet); 0 when it is damaged or cannot be "
          "opened or read, and every figure read from it is then 0.", ("", int(status.unreadable is None)))
    gauge("exists", "1 when the replica exists; 0 also when status could not find out (up is then 0).",
          ("", int(status.exists)))
    gauge("ok", "1 when status --check passes: fresh, and the last sync ok.", ("", int(bool(status.verdict and status.verdict.ok))))
    gauge("fresh", "1 when the replica is fresh (last ok sync and every active client within stale_after_hours).",
          ("", int(status.freshness == "fresh")))
    gauge("last_sync_timestamp_seconds", "When the latest finished sync ended (Unix time; 0: never).",
          ("", _seconds(_ended(last_sync) if last_sync else None)))
    gauge("last_ok_sync_timestamp_seconds", "When the latest ok sync ended (Unix time; 0: never).",
          ("", _seconds(status.last_ok_sync_at)))
    gauge("rows", "Rows in client_stats.", ("", status.rows))
    gauge("replica_bytes", "Size of the replica: the SQLite file with its WAL, or its tables and indexes on the PostgreSQL server.",
          ("", status.database_bytes or 0))
    failed = len(status.failed_clients) + len(status.earlier_failed_clients)
    gauge("clients", "Clients by state: all, active, failed (in the last sync, or failed or not fetched by an earlier one and "
          "not synced since), not_fetched (by the last sync: stopped by its deadline, a signal or a kill), lagging, stale. "
          "failed + not_fetched is what sync --retry-failed fetches.",
          (_labels(state="all"), status.clients), (_labels(state="active"), status.active_clients),
          (_labels(state="failed"), failed), (_labels(state="not_fetched"), len(status.unfetched_clients)),
          (_labels(state="lagging"), len(status.lagging_clients)), (_labels(state="stale"), len(status.stale_clients)))
    gauge("missing_days", "Active (client, day) pairs in the last sync's window with no row.", ("", status.missing_days))
    runs = {command: getattr(status, f"last_{command}") for command in COMMANDS}
    gauge("last_run_status", "1 for the status of each command's latest finished run, 0 for the others.",
          *((_labels(command=c, status=s), int(run["status"] == s)) for c, run in runs.items() if run for s in RUN_STATUSES))
    gauge("last_run_timestamp_seconds", "When each command's latest finished run ended (Unix time).",
          *((_labels(command=c), _seconds(_ended(run))) for c, run in runs.items() if run))
    gauge("last_run_duration_seconds", "How long each command's latest finished run took (none for a run that never recorded its end).",
          *((_labels(command=c), _seconds(run["finished_at"]) - _seconds(run["started_at"])) for c, run in runs.items()
            if run and end_recorded(run)))
    gauge("running", "Writing runs in progress, per command.",
          *((_labels(command=c), sum(r["command"] == c for r in status.running)) for c in COMMANDS))
    lines = []
    for name, help_text, samples in families:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines += [f"{name}{labels} {value}" if isinstance(value, int) else f"{name}{labels} {value:.3f}" for labels, value in samples]
    return "\n".join(lines) + "\n"
