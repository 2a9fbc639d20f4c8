"""A sync stopped by a signal, and how long runs took (issue 18, item 15): after Ctrl-C or SIGTERM,
`sync --retry-failed` fetches only the clients not yet written; the duration in `sync_runs`, in `status`
and in the summary line is the same one. On both engines (`both_engines`, tests/conftest.py)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from conftest import DEMO_CLIENTS, SCRIPT, clean_env, execute_db, query_db, stop_when, store_of, write_config

from delivery_sync.demo_source import DemoSource
from delivery_sync.readonly import UNRECORDED_END
from delivery_sync.render.status_view import _took

pytestmark = pytest.mark.both_engines


def _start_sync(config: Path, cwd: Path, *args: str) -> subprocess.Popen:
    env = clean_env()
    return subprocess.Popen(
        [SCRIPT, "--config", str(config), "sync", *args],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _clients_stored(db_path: Path | str) -> set[int]:
    try:
        return {cid for (cid,) in query_db(db_path, "SELECT DISTINCT client_id FROM client_stats")}
    except Exception:  # the file or table does not exist yet
        return set()


# Both signals on SQLite; on PostgreSQL one is enough (the signal is handled before the replica).
@pytest.mark.parametrize("db_path, signum, code", [
    ("sqlite", signal.SIGINT, 130), ("sqlite", signal.SIGTERM, 143), ("postgresql", signal.SIGTERM, 143),
], indirect=["db_path"])
def test_retry_failed_after_a_stop_signal_fetches_only_the_clients_not_written(cli, tmp_path, db_path, signum, code):
    with DemoSource(clients=DEMO_CLIENTS, latency_ms=150) as demo:
        config = write_config(tmp_path / "config.toml", demo.url, db_path, source={"concurrency": 1, "batch": "never"})
        returned, stderr = stop_when(_start_sync(config, tmp_path, "--days-back", "3"), lambda: len(_clients_stored(db_path)) >= 3, signum)
        assert returned == code, stderr
        written = _clients_stored(db_path)
        assert 3 <= len(written) < DEMO_CLIENTS
        (run_id, status, error), = query_db(db_path, "SELECT id, status, error FROM sync_runs WHERE command = 'sync'")
        assert (status, error) == ("failed", "interrupted")
        unfetched = {cid for (cid,) in query_db(db_path, "SELECT client_id FROM sync_unfetched WHERE run_id = ?", (run_id,))}
        assert unfetched == set(range(1, DEMO_CLIENTS + 1)) - written
        # status names them and the command that fetches just them, not a whole new sync.
        view, data = cli("status"), json.loads(cli("status", "--json").stdout)
        assert data["unfetched_clients"] == sorted(unfetched)
        assert f"{len(unfetched)} clients not fetched ({', '.join(map(str, sorted(unfetched)))})" in view.stdout
        assert "Run: delivery-sync sync --retry-failed" in view.stdout
        assert f"Not fetched      {', '.join(map(str, sorted(unfetched)))} (the last sync stopped first" in view.stdout

        before = len(demo.stats_requests())
        retry = cli("sync", "--retry-failed")
        assert retry.code == 0, retry.stderr
        retried = sorted(int(r.path.split("/")[4]) for r in demo.stats_requests()[before:])
    assert retried == sorted(unfetched)  # none of the clients already written is fetched again
    assert f"sync ok: {len(unfetched)}/{len(unfetched)} clients" in retry.stderr
    assert query_db(db_path, "SELECT COUNT(*), COUNT(DISTINCT client_id) FROM client_stats") == [(DEMO_CLIENTS * 3, DEMO_CLIENTS)]


@pytest.mark.sqlite_only("it patches the SQLite rebuild to send the signal; the summary line is the same on either engine")
def test_a_signal_during_the_closing_aggregate_still_prints_the_sync_line(cli, config, db_path, monkeypatch):
    # A real SIGTERM (cron's `timeout`), sent while the rollups are being rebuilt: the sync before
    # them ended ok and is recorded, so cron.log must say so, with the aggregate's stop after it.
    import os

    from delivery_sync.aggregate import build

    rebuild = build._rebuild

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return rebuild(*args, **kwargs)

    monkeypatch.setattr(build, "_rebuild", signalled)
    result = cli("sync", "--days-back", "3")
    assert result.code == 143, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"sync ok: {DEMO_CLIENTS}/{DEMO_CLIENTS} clients, {DEMO_CLIENTS * 3} rows \({DEMO_CLIENTS * 3} inserted, "
                        r"0 updated, 0 unchanged\), 0 rejected, window \S+, \d+ requests?, [\d.]+ s; aggregate failed: interrupted",
                        line), result.stderr
    assert query_db(db_path, "SELECT command, status, error FROM sync_runs ORDER BY id") == [
        ("sync", "ok", None), ("aggregate", "failed", "interrupted")]
    assert "Traceback" not in result.stderr


def test_retry_failed_after_a_killed_sync_retries_that_sync(cli, config, db_path, demo):
    # SIGKILL leaves the run `running` with the failures it had recorded; status shows it failed and
    # advises --retry-failed, which must retry that sync, not answer "nothing to retry" from the one
    # before it (and so loop with status).
    from datetime import timedelta

    assert cli("sync", "--days-back", "3").code == 0
    today = demo.today()
    db = store_of(db_path).open()
    killed = db.start_run("sync", (today - timedelta(days=4), today), DEMO_CLIENTS)  # no lock held: its process is gone
    db.record_failure(killed, 5, "HTTP 500 after 3 attempts")
    db.close()
    # It wrote every other client before the kill (a write after its start; the rows were there already).
    execute_db(db_path, "UPDATE clients SET last_synced_at = '2999-01-01T00:00:00+00:00' WHERE id != 5")
    assert json.loads(cli("status", "--json").stdout)["verdict"]["advice"] == "delivery-sync sync --retry-failed"
    retry = cli("sync", "--retry-failed")
    assert retry.code == 0, retry.stderr
    window = f"{(today - timedelta(days=4)).isoformat()}..{today.isoformat()}"
    assert "sync ok: 1/1 clients, 5 rows (2 inserted, 0 updated, 3 unchanged)" in retry.stderr and f"window {window}" in retry.stderr
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats WHERE client_id = 5") == [(5,)]  # client 5, over the killed sync's window
    assert query_db(db_path, "SELECT status, error FROM sync_runs WHERE id = ?", [killed]) == [("failed", UNRECORDED_END)]

def test_retry_failed_after_a_killed_sync_fetches_only_the_clients_it_did_not_write(cli, config, db_path, demo):
    """A SIGKILLed sync records neither failures nor the clients it never reached: --retry-failed
    fetched every client again over its window. Now only those no run has written since it began."""
    from datetime import timedelta

    assert cli("sync", "--days-back", "3").code == 0
    execute_db(db_path, "UPDATE clients SET last_synced_at = '2000-01-01T00:00:00+00:00'")  # before the killed run, whatever the clock
    today = demo.today()
    db = store_of(db_path).open()
    killed = db.start_run("sync", (today - timedelta(days=4), today), DEMO_CLIENTS)  # no lock held: its process is gone
    db.close()
    written = [1, 2, 3]  # what it wrote before the kill (their rows were already there: the demo's data do not change)
    execute_db(db_path, "UPDATE clients SET last_synced_at = '2999-01-01T00:00:00+00:00' WHERE id IN (1, 2, 3)")
    # status names the same clients, and the same repair: it showed "0/N clients" and "Failed clients none".
    shown = json.loads(cli("status", "--json").stdout)
    assert shown["unfetched_clients"] == list(range(4, DEMO_CLIENTS + 1)) and shown["failed_clients"] == []
    assert shown["verdict"]["advice"] == "delivery-sync sync --retry-failed"
    assert f"{DEMO_CLIENTS - 3} clients not fetched (4, 5, 6" in shown["verdict"]["reason"]
    retry = cli("sync", "--retry-failed")
    assert retry.code == 0, retry.stderr
    left = DEMO_CLIENTS - len(written)
    assert f"sync ok: {left}/{left} clients, {left * 5} rows ({left * 2} inserted, 0 updated, {left * 3} unchanged)" in retry.stderr
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats WHERE client_id IN (1, 2, 3)") == [(9,)]  # not fetched again
    assert query_db(db_path, "SELECT status, error FROM sync_runs WHERE id = ?", [killed]) == [("failed", UNRECORDED_END)]


def _killed_sync(db_path, demo, written: list[int], selected: list[int] | None = None) -> tuple[int, str]:
    """A sync killed an hour ago (its row left `running`) after writing the clients `written`; of
    `selected` only, as `--clients` or `--retry-failed` record them. Its id and window."""
    from datetime import UTC, timedelta

    began = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    execute_db(db_path, "UPDATE clients SET last_synced_at = '2000-01-01T00:00:00+00:00'")  # synced long before it
    today = demo.today()
    db = store_of(db_path).open()
    killed = db.start_run("sync", (today - timedelta(days=4), today), len(selected or range(DEMO_CLIENTS)), began.isoformat())
    if selected is not None:
        db.record_selected(killed, selected)
    db.close()
    if written:
        wrote = (began + timedelta(minutes=10)).isoformat()
        execute_db(db_path, f"UPDATE clients SET last_synced_at = '{wrote}' WHERE id IN ({', '.join(map(str, written))})")
    return killed, f"{(today - timedelta(days=4)).isoformat()}..{today.isoformat()}"


def test_a_killed_sync_of_some_clients_owes_only_those_it_selected(cli, config, db_path, demo):
    """A review: a killed `sync --clients 1,2,3` that wrote client 1 made status list 11 clients
    not fetched, and --retry-failed fetched them all."""
    assert cli("sync", "--days-back", "3").code == 0
    _, window = _killed_sync(db_path, demo, written=[1], selected=[1, 2, 3])
    assert json.loads(cli("status", "--json").stdout)["unfetched_clients"] == [2, 3]
    retry = cli("sync", "--retry-failed")
    assert retry.code == 0 and "sync ok: 2/2 clients" in retry.stderr and f"window {window}" in retry.stderr, retry.stderr


def test_a_recorded_failure_of_a_killed_sync_does_not_hide_the_clients_it_never_reached(cli, config, db_path, demo):
    """A review: a killed sync that had recorded client 5's failure was retried for client 5 alone."""
    assert cli("sync", "--days-back", "3").code == 0
    killed, _ = _killed_sync(db_path, demo, written=[1, 2, 3, 4, 6])
    db = store_of(db_path).open()
    db.record_failure(killed, 5, "HTTP 500 after 3 attempts")
    db.close()
    shown = json.loads(cli("status", "--json").stdout)
    assert shown["failed_clients"] == [5] and shown["unfetched_clients"] == list(range(7, DEMO_CLIENTS + 1))
    retry = cli("sync", "--retry-failed")
    assert retry.code == 0 and f"sync ok: {DEMO_CLIENTS - 5}/{DEMO_CLIENTS - 5} clients" in retry.stderr, retry.stderr


def test_a_repair_after_a_killed_sync_does_not_hide_the_clients_it_never_reached(cli, config, db_path, demo):
    """A review: a killed sync, then `sync --clients 9`: status said "yes - fresh" and --retry-failed
    "nothing to retry", with every client the killed sync never reached still owed."""
    assert cli("sync", "--days-back", "3").code == 0
    _, window = _killed_sync(db_path, demo, written=[1, 2, 3])
    assert cli("sync", "--clients", "9", "--days-back", "3").code == 0
    owed = [c for c in range(4, DEMO_CLIENTS + 1) if c != 9]
    shown = json.loads(cli("status", "--json").stdout)
    assert shown["earlier_failed_clients"] == owed and not shown["verdict"]["ok"]
    assert shown["verdict"]["advice"] == "delivery-sync sync --retry-failed"
    retry = cli("sync", "--retry-failed")
    assert retry.code == 0 and f"sync ok: {len(owed)}/{len(owed)} clients" in retry.stderr and f"window {window}" in retry.stderr
    assert json.loads(cli("status", "--json").stdout)["earlier_failed_clients"] == []


def _seconds(run: dict) -> float:
    return (datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"])).total_seconds()


@pytest.mark.sqlite_only("its 3 s are the remote's Retry-After; status reads PostgreSQL runs in tests/test_status.py, for suite time")
def test_a_run_s_duration_is_the_same_in_the_summary_the_replica_and_status(cli, tmp_path, db_path):
    with DemoSource(clients=DEMO_CLIENTS) as demo:
        write_config(tmp_path / "config.toml", demo.url, db_path, source={"max_retries": 3})
        demo.faults.throttle_next, demo.faults.retry_after = 1, "3"  # the client list waits 3 s, once
        result = cli("sync", "--days-back", "2", "--no-aggregate")
    assert result.code == 0, result.stderr
    summary_seconds = float(re.search(r", ([\d.]+) s$", result.stderr.strip().splitlines()[-1]).group(1))
    assert summary_seconds >= 3
    status = json.loads(cli("status", "--json").stdout)
    recorded = _seconds(status["last_sync"])
    assert abs(recorded - summary_seconds) <= 0.55  # the stored times have whole seconds: the summary's, rounded
    text = cli("status").stdout
    assert re.search(rf"sync +ok .*, took {recorded:.0f} s:", text), text
    prometheus = cli("status", "--format", "prometheus").stdout
    assert f'delivery_sync_last_run_duration_seconds{{command="sync"}} {recorded:g}' in prometheus.replace(".000", "")


@pytest.mark.parametrize("finished, said", [("01:00:00", "<1 s"), ("01:00:01", "1 s"), ("01:01:59", "119 s"), ("01:02:00", "2.0 min")])
def test_a_run_within_one_second_took_less_than_a_second_not_zero(finished, said):
    run = {"started_at": "2026-03-10T01:00:00+00:00", "finished_at": f"2026-03-10T{finished}+00:00"}
    assert _took(run) == said
