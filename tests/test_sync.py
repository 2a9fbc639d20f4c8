"""The sync run end to end (docs/reference.md, docs/remote-api.md): real demo over loopback, into a
real SQLite file and a real PostgreSQL database (`both_engines`, tests/conftest.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from conftest import DEMO_CLIENTS, SCRIPT, clean_env, dialect, dict_rows, execute_db, is_postgres, query_db, write_config
from freezegun import freeze_time

from delivery_sync.days import Window, resolve_window
from delivery_sync.demo_source import DemoSource, demo_row
from delivery_sync.errors import UsageError
from delivery_sync.readonly import UNRECORDED_END

pytestmark = pytest.mark.both_engines


@pytest.fixture(autouse=True)
def _per_client_endpoint(monkeypatch):
    """These tests are about one request per client (docs/remote-api.md); tests/test_batch.py covers the batch endpoint."""
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__BATCH", "never")


NOW = "2026-11-23T10:00:00Z"  # Bali 18:00 on 2026-11-23
TODAY = date(2026, 11, 23)
STAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00$"


def stats(db_path: Path | str, client_id: int | None = None) -> dict:
    """(client_id, stat_date) -> row dict."""
    rows = dict_rows(db_path, "SELECT * FROM client_stats" + (" WHERE client_id = ?" if client_id else ""), (client_id,) if client_id else ())
    return {(row["client_id"], row["stat_date"]): row for row in rows}


def last_run(db_path: Path | str) -> dict:
    return dict_rows(db_path, "SELECT * FROM sync_runs WHERE command = 'sync' ORDER BY id DESC LIMIT 1")[0]


# --- inserts, values, and the upsert cases ---------------------------------------------------------


def test_first_sync_stores_the_remote_rows_as_documented(cli, config, db_path, demo):
    with freeze_time(NOW, tick=True):
        result = cli("sync", "--days-back", "3")
    assert result.code == 0, result.stderr
    assert "upgrading" not in result.stderr  # a new replica is created at the latest schema, not upgraded
    rows = stats(db_path)
    assert len(rows) == DEMO_CLIENTS * 3
    assert {d for _, d in rows} == {"2026-11-21", "2026-11-22", "2026-11-23"}
    # Client 7: totals sent as NULL are computed; every metric equals the remote's.
    for cid in (1, 7):
        raw = demo_row(cid, date(2026, 11, 22), demo.seed)
        row = rows[(cid, "2026-11-22")]
        grab, gojek = float(raw["grab_sales"] or 0), float(raw["gojek_sales"] or 0)
        assert row["total_sales"] == pytest.approx(grab + gojek)
        assert row["total_orders"] == (raw["grab_orders"] or 0) + (raw["gojek_orders"] or 0)
        assert row["grab_sales"] == (None if raw["grab_sales"] is None else float(raw["grab_sales"]))
        assert row["gojek_orders"] == raw["gojek_orders"]
        # The remote's id, client_id and created_at are kept in extra, never in our columns.
        assert json.loads(row["extra"]) == {"id": raw["id"], "client_id": cid, "created_at": raw["created_at"]}
        assert row["client_id"] == cid and row["created_at"] == "2026-11-23T10:00:00+00:00"
        assert row["synced_at"] == row["updated_at"] == row["created_at"]
    # One-platform clients keep NULLs for the other platform.
    one_platform = [r for r in rows.values() if r["grab_sales"] is None or r["gojek_sales"] is None]
    assert one_platform and all(r["grab_orders"] is None or r["gojek_orders"] is None for r in one_platform)
    run = last_run(db_path)
    assert (run["status"], run["window_start"], run["window_end"]) == ("ok", "2026-11-21", "2026-11-23")
    assert (run["clients_total"], run["clients_ok"], run["clients_failed"]) == (DEMO_CLIENTS, DEMO_CLIENTS, 0)
    assert (run["rows_fetched"], run["rows_inserted"], run["rows_updated"], run["rows_unchanged"]) == (36, 36, 0, 0)
    assert run["requests"] == DEMO_CLIENTS + 1
    assert "2026-11-23T10:00:0" in run["started_at"] and run["finished_at"] >= run["started_at"]
    clients = query_db(db_path, "SELECT id, name, active, first_seen_at, last_seen_at, last_synced_at FROM clients ORDER BY id")
    assert len(clients) == DEMO_CLIENTS and all(c[2] == 1 and c[1] and c[5] for c in clients)
    assert query_db(db_path, "SELECT value FROM meta WHERE key = 'schema_version'")[0][0].isdigit()
    if not is_postgres(db_path):  # a property of the SQLite file: readers never wait for the writer
        assert query_db(db_path, "PRAGMA journal_mode") == [("wal",)]


def test_resync_is_all_unchanged_and_writes_nothing(cli, config, db_path):
    with freeze_time(NOW, tick=True):
        assert cli("sync", "--days-back", "5").code == 0
    before = stats(db_path)
    # Any write to client_stats from now on leaves a trace.
    execute_db(db_path, "CREATE TABLE writes(n INTEGER)")
    if is_postgres(db_path):
        execute_db(db_path, "CREATE FUNCTION note_write() RETURNS trigger LANGUAGE plpgsql AS "
                            "$$ BEGIN INSERT INTO writes VALUES (1); RETURN NULL; END $$")
        execute_db(db_path, "CREATE TRIGGER w AFTER INSERT OR UPDATE ON client_stats FOR EACH ROW EXECUTE FUNCTION note_write()")
    else:
        execute_db(db_path, "CREATE TRIGGER w_upd AFTER UPDATE ON client_stats BEGIN INSERT INTO writes VALUES (1); END")
        execute_db(db_path, "CREATE TRIGGER w_ins AFTER INSERT ON client_stats BEGIN INSERT INTO writes VALUES (1); END")
    with freeze_time("2026-11-23T11:30:00Z", tick=True):
        result = cli("sync", "--days-back", "5")
    assert result.code == 0, result.stderr
    n = DEMO_CLIENTS * 5
    assert f"sync ok: 12/12 clients, {n} rows (0 inserted, 0 updated, {n} unchanged), 0 rejected, window 2026-11-19..2026-11-23" in result.stderr
    assert stats(db_path) == before  # no updated_at or synced_at moved
    assert query_db(db_path, "SELECT COUNT(*) FROM writes") == [(0,)]
    run = last_run(db_path)
    assert (run["rows_inserted"], run["rows_updated"], run["rows_unchanged"]) == (0, 0, n)
    # ... but the clients were confirmed.
    assert query_db(db_path, "SELECT DISTINCT last_synced_at FROM clients") == [("2026-11-23T11:30:00+00:00",)]


def test_changed_rows_are_updated_and_new_rows_inserted(cli, config, db_path, demo):
    with freeze_time(NOW, tick=True):
        assert cli("sync", "--days-back", "3").code == 0
    before = stats(db_path)
    demo.faults.overrides[(2, "2026-11-22")] = {"grab_orders": 999}  # a metric changes
    demo.faults.overrides[(3, "2026-11-21")] = {"promo": "11.11"}  # only extra changes
    with freeze_time("2026-11-24T01:00:00Z", tick=True):  # Bali 09:00 on the 24th: one new day
        result = cli("sync", "--days-back", "4")
    assert result.code == 0, result.stderr
    run = last_run(db_path)
    assert (run["rows_inserted"], run["rows_updated"], run["rows_unchanged"]) == (DEMO_CLIENTS, 2, DEMO_CLIENTS * 3 - 2)
    after = stats(db_path)
    later = "2026-11-24T01:00:0"
    changed = after[(2, "2026-11-22")]
    assert changed["grab_orders"] == 999
    assert changed["updated_at"].startswith(later) and changed["synced_at"].startswith(later)
    assert changed["created_at"] == before[(2, "2026-11-22")]["created_at"] == "2026-11-23T10:00:00+00:00"
    extra_changed = after[(3, "2026-11-21")]
    assert json.loads(extra_changed["extra"])["promo"] == "11.11" and extra_changed["updated_at"].startswith(later)
    untouched = after[(4, "2026-11-22")]
    assert untouched == before[(4, "2026-11-22")]
    new = after[(5, "2026-11-24")]
    assert new["created_at"].startswith(later)


# --- failures ---------------------------------------------------------------------------------------


def test_a_client_that_always_fails_leaves_the_run_partial_and_its_rows_untouched(cli, config, db_path, demo):
    with freeze_time(NOW, tick=True):
        assert cli("sync", "--days-back", "2").code == 0
    before = stats(db_path)
    synced_before = query_db(db_path, "SELECT last_synced_at FROM clients WHERE id = 3")
    for cid in range(1, DEMO_CLIENTS + 1):
        demo.faults.overrides[(cid, "2026-11-23")] = {"gojek_fake_orders": 77}
    demo.faults.fail_clients = {3: 500}
    with freeze_time("2026-11-23T12:00:00Z", tick=True):
        result = cli("sync", "--days-back", "2")
    assert result.code == 1
    assert "sync partial: 11/12 clients" in result.stderr and "1 failed (3)" in result.stderr
    assert "client 3: HTTP 500 after 3 attempts" in result.stderr
    run = last_run(db_path)
    assert (run["status"], run["clients_ok"], run["clients_failed"]) == ("partial", 11, 1)
    assert run["requests"] == 1 + 11 + 3  # the list, 11 clients, client 3 tried 3 times
    assert query_db(db_path, "SELECT client_id, error FROM sync_failures WHERE run_id = ?", (run["id"],)) == [
        (3, "client 3: HTTP 500 after 3 attempts")
    ]
    after = stats(db_path)
    for cid in range(1, DEMO_CLIENTS + 1):
        if cid == 3:
            assert stats(db_path, 3) == {k: v for k, v in before.items() if k[0] == 3}
        else:
            assert after[(cid, "2026-11-23")]["gojek_fake_orders"] == 77
    assert query_db(db_path, "SELECT last_synced_at FROM clients WHERE id = 3") == synced_before


def test_max_consecutive_failures_stops_the_run_early(cli, tmp_path, db_path, demo):
    write_config(tmp_path / "config.toml", demo.url, db_path, source={"concurrency": 1, "max_consecutive_failures": 3})
    # A replica exists already: a first sync that stores nothing leaves none (tests/test_files.py).
    assert cli("sync", "--days-back", "1", "--clients", str(DEMO_CLIENTS)).code == 0
    demo.requests.clear()
    demo.faults.fail_clients = {cid: 404 for cid in range(1, DEMO_CLIENTS + 1)}
    result = cli("sync", "--days-back", "1")
    assert result.code == 1
    assert "stopped after 3 consecutive client failures" in result.stderr
    assert 3 <= len(demo.stats_requests()) <= 4  # at most the one already started
    run = last_run(db_path)
    assert run["status"] == "failed" and run["clients_failed"] == 3 and "consecutive" in run["error"]
    assert query_db(db_path, "SELECT COUNT(*) FROM sync_failures") == [(3,)]


def test_a_success_resets_the_consecutive_failure_count(cli, tmp_path, db_path, demo):
    write_config(tmp_path / "config.toml", demo.url, db_path, source={"concurrency": 1, "max_consecutive_failures": 2})
    demo.faults.fail_clients = {1: 404, 3: 404, 5: 404}  # never two in a row
    result = cli("sync", "--days-back", "1")
    assert result.code == 1 and "sync partial: 9/12 clients" in result.stderr
    assert len(demo.stats_requests()) == DEMO_CLIENTS


def test_rejects_are_recorded_and_the_run_is_partial(cli, config, db_path, demo):
    bad = [{"stat_date": "0000-00-00", "grab_sales": "1.00"}, {"stat_date": "2026-11-20", "grab_orders": "N/A"}]
    demo.faults.extra_rows = {4: bad}
    demo.faults.overrides[(4, "2026-11-22")] = {"gojek_orders": 2.5}
    demo.faults.overrides[(5, "2026-11-22")] = {"grab_sales": "-15000.00"}  # a refund is kept
    with freeze_time(NOW, tick=True):
        result = cli("sync", "--days-back", "3")
    assert result.code == 1
    assert "sync partial: 12/12 clients" in result.stderr and "3 rejected" in result.stderr
    run = last_run(db_path)
    assert (run["status"], run["rows_rejected"], run["rows_fetched"]) == ("partial", 3, DEMO_CLIENTS * 3 + 2)
    order = dialect(db_path).row_order
    rejects = query_db(db_path, f"SELECT client_id, stat_date, reason, payload FROM sync_rejects WHERE run_id = ? ORDER BY {order}", (run["id"],))
    assert [r[:2] for r in rejects] == [(4, "2026-11-21T16:00:00.000Z"), (4, "0000-00-00"), (4, "2026-11-20")]
    assert "gojek_orders" in rejects[0][2] and "fractional" in rejects[0][2]
    assert "stat_date" in rejects[1][2] and "grab_orders" in rejects[2][2]
    assert json.loads(rejects[1][3]) == bad[0] and json.loads(rejects[2][3]) == bad[1]
    assert json.loads(rejects[0][3])["gojek_orders"] == 2.5
    # The client's other rows are written; the refund is stored negative.
    assert sorted(d for (_, d) in stats(db_path, 4)) == ["2026-11-21", "2026-11-23"]
    assert stats(db_path, 5)[(5, "2026-11-22")]["grab_sales"] == -15000.0


def test_replica_named_remote_fields_never_overwrite_replica_columns(cli, config, db_path, demo):
    demo.faults.overrides[(2, "2026-11-23")] = {
        "client_id": 77,
        "created_at": "1999-01-01",
        "updated_at": "1999-01-02",
        "synced_at": "1999-01-03",
        "extra": "sneaky",
    }
    with freeze_time(NOW, tick=True):
        assert cli("sync", "--days-back", "1", "--clients", "2").code == 0
    row = stats(db_path)[(2, "2026-11-23")]
    assert (row["client_id"], row["created_at"], row["updated_at"], row["synced_at"]) == (2, *["2026-11-23T10:00:00+00:00"] * 3)
    extra = json.loads(row["extra"])
    assert (extra["client_id"], extra["created_at"], extra["updated_at"], extra["synced_at"], extra["extra"]) == (
        77, "1999-01-01", "1999-01-02", "1999-01-03", "sneaky"
    )


def test_duplicate_rows_in_one_answer_last_wins(cli, config, db_path, demo):
    demo.faults.extra_rows = {6: [{"stat_date": "2026-11-23", "grab_orders": 5, "gojek_orders": 1}]}
    with freeze_time(NOW, tick=True):
        assert cli("sync", "--days-back", "1", "--clients", "6").code == 0
    row = stats(db_path)[(6, "2026-11-23")]
    assert (row["grab_orders"], row["gojek_orders"], row["total_orders"], row["extra"]) == (5, 1, 6, None)
    assert last_run(db_path)["rows_fetched"] == 2


def test_clients_no_longer_listed_become_inactive_and_keep_rows(cli, config, db_path, demo):
    with freeze_time(NOW, tick=True):
        assert cli("sync", "--days-back", "2").code == 0
        demo.faults.hidden_clients = {11, 12}
        result = cli("sync", "--days-back", "2")
    assert result.code == 0 and "10/10 clients" in result.stderr
    assert query_db(db_path, "SELECT id, active FROM clients WHERE id >= 10 ORDER BY id") == [(10, 1), (11, 0), (12, 0)]
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats WHERE client_id IN (11, 12)") == [(4,)]
    demo.faults.hidden_clients = set()
    with freeze_time(NOW, tick=True):
        assert cli("sync", "--days-back", "2").code == 0
    assert query_db(db_path, "SELECT COUNT(*) FROM clients WHERE active = 1") == [(DEMO_CLIENTS,)]


# --- choosing clients and windows -------------------------------------------------------------------


def test_clients_subset_fetches_only_those(cli, config, db_path, demo):
    with freeze_time(NOW, tick=True):
        result = cli("sync", "--days-back", "2", "--clients", "5,2,5")
    assert result.code == 0, result.stderr
    assert sorted(r.path for r in demo.stats_requests()) == ["/api/v1/clients/2/stats", "/api/v1/clients/5/stats"]
    assert query_db(db_path, "SELECT DISTINCT client_id FROM client_stats ORDER BY 1") == [(2,), (5,)]
    assert last_run(db_path)["clients_total"] == 2


@pytest.mark.sqlite_only("about the replica file not being created")
def test_unknown_client_id_exits_2_before_any_stats_request_and_creates_nothing(cli, config, db_path, demo, tmp_path):
    result = cli("sync", "--days-back", "2", "--clients", "2,99,123")
    assert result.code == 2
    assert result.stderr.strip() == "error: unknown client ids 99, 123: the remote does not list them"
    one = cli("sync", "--days-back", "2", "--clients", "2,99")
    assert (one.code, one.stderr.strip()) == (2, "error: unknown client id 99: the remote does not list it")
    assert demo.stats_requests() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


@pytest.mark.sqlite_only("the window is resolved before the replica is opened: one engine covers it")
@pytest.mark.parametrize(
    "now, window",
    [
        ("2026-11-23T15:59:59Z", ("2026-11-21", "2026-11-23")),  # Bali 23:59:59 on the 23rd
        ("2026-11-23T16:00:00Z", ("2026-11-22", "2026-11-24")),  # Bali midnight: already the 24th
        ("2026-12-31T16:00:00Z", ("2026-12-30", "2027-01-01")),  # new year in Bali, not yet in UTC
        ("2028-02-29T03:00:00Z", ("2028-02-27", "2028-02-29")),
    ],
)
def test_days_back_window_follows_the_bali_calendar(cli, config, db_path, demo, now, window):
    with freeze_time(now, tick=True):
        result = cli("sync", "--days-back", "3", "--clients", "1")
    assert result.code == 0, result.stderr
    (request,) = demo.stats_requests()
    assert (request.query["start_date"], request.query["end_date"]) == window
    run = last_run(db_path)
    assert (run["window_start"], run["window_end"]) == window
    assert f"window {window[0]}..{window[1]}" in result.stderr
    assert sorted(d for (_, d) in stats(db_path)) == [
        (date.fromisoformat(window[0]) + timedelta(days=i)).isoformat() for i in range(3)
    ]


def test_days_back_default_comes_from_config(cli, tmp_path, db_path, demo):
    write_config(tmp_path / "config.toml", demo.url, db_path, sync={"days_back": 4})
    with freeze_time(NOW, tick=True):
        assert cli("sync", "--clients", "1").code == 0
    assert demo.stats_requests()[0].query == {"start_date": "2026-11-20", "end_date": "2026-11-23"}


def test_from_to_window(cli, config, db_path, demo):
    with freeze_time(NOW, tick=True):
        result = cli("sync", "--from", "2026-02-27", "--to", "2026-03-02", "--clients", "1,2")
        assert result.code == 0, result.stderr
        assert {(r.query["start_date"], r.query["end_date"]) for r in demo.stats_requests()} == {("2026-02-27", "2026-03-02")}
        assert query_db(db_path, "SELECT COUNT(*) FROM client_stats") == [(8,)]
        result = cli("sync", "--from", "2026-11-22", "--clients", "1")  # --to defaults to today in Bali
    assert result.code == 0 and "window 2026-11-22..2026-11-23" in result.stderr


def test_resolve_window_arithmetic():
    def days_back(today, days, start=None, end=None):
        return resolve_window(today, days, start, end, flag="--days-back", default=365)

    assert days_back(TODAY, 1) == Window(TODAY, TODAY)
    assert days_back(date(2026, 3, 1), 2) == Window(date(2026, 2, 28), date(2026, 3, 1))
    assert days_back(date(2026, 1, 1), 365) == Window(date(2025, 1, 2), date(2026, 1, 1))
    assert days_back(TODAY, None).days == 365  # sync.days_back when --days-back is not given
    assert days_back(TODAY, None, date(2026, 1, 1)) == Window(date(2026, 1, 1), TODAY)
    assert days_back(TODAY, None, TODAY, TODAY).days == 1
    for bad in (0, -1):
        with pytest.raises(UsageError, match="--days-back must be at least 1"):
            days_back(TODAY, bad)
    with pytest.raises(UsageError, match="after"):
        days_back(TODAY, None, date(2026, 5, 2), date(2026, 5, 1))
    with pytest.raises(UsageError, match="--to needs --from"):
        days_back(TODAY, None, None, date(2026, 5, 1))
    with pytest.raises(UsageError, match="either --days-back or --from/--to"):
        days_back(TODAY, 30, date(2026, 1, 1))


# --- runs killed mid-way -----------------------------------------------------------------------------


def test_a_run_left_running_is_marked_interrupted_by_the_next_run(cli, config, db_path):
    assert cli("sync", "--days-back", "1", "--clients", "1").code == 0
    execute_db(db_path, "INSERT INTO sync_runs(command, status, started_at) VALUES ('sync', 'running', '2026-01-01T00:00:00+00:00')")
    dead = query_db(db_path, "SELECT MAX(id) FROM sync_runs")[0][0]
    assert cli("sync", "--days-back", "1", "--clients", "1").code == 0
    status, error, finished = query_db(db_path, "SELECT status, error, finished_at FROM sync_runs WHERE id = ?", (dead,))[0]
    assert (status, error) == ("failed", UNRECORDED_END) and finished
    assert query_db(db_path, "SELECT COUNT(*) FROM sync_runs WHERE status = 'running'") == [(0,)]


@pytest.mark.sqlite_only("tests/test_postgres.py kills a sync into PostgreSQL mid-way the same way")
def test_sigkill_mid_run_leaves_each_client_as_before_or_fully_updated(tmp_path, db_path, cli):
    days = 20
    with DemoSource(clients=DEMO_CLIENTS, latency_ms=120) as demo:
        config = write_config(tmp_path / "config.toml", demo.url, db_path, source={"concurrency": 2, "batch": "never"})
        assert cli("sync", "--days-back", str(days)).code == 0
        today = demo.today()
        for cid in range(1, DEMO_CLIENTS + 1):
            for i in range(days):
                demo.faults.overrides[(cid, (today - timedelta(days=i)).isoformat())] = {"grab_fake_orders": 4242}
        env = clean_env()
        proc = subprocess.Popen(
            [SCRIPT, "--config", str(config), "sync", "--days-back", str(days)],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                done = query_db(db_path, "SELECT COUNT(DISTINCT client_id) FROM client_stats WHERE grab_fake_orders = 4242")[0][0]
                if done >= 2:
                    break
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    per_client = dict(
        query_db(db_path, "SELECT client_id, SUM(COALESCE(grab_fake_orders, -1) = 4242) FROM client_stats GROUP BY client_id")
    )
    assert set(per_client.values()) <= {0, days}, per_client  # all or nothing per client
    updated = sum(1 for n in per_client.values() if n == days)
    assert 2 <= updated < DEMO_CLIENTS  # really killed mid-way
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats") == [(DEMO_CLIENTS * days,)]
    assert query_db(db_path, "SELECT status FROM sync_runs WHERE command = 'sync' ORDER BY id DESC LIMIT 1") == [("running",)]
    # The next run takes the (released) lock, marks the dead run, and repairs the rest.
    with DemoSource(clients=DEMO_CLIENTS) as demo2:
        demo2.faults.overrides = demo.faults.overrides
        write_config(tmp_path / "config.toml", demo2.url, db_path)
        result = cli("sync", "--days-back", str(days))
    assert result.code == 0, result.stderr
    assert f"({DEMO_CLIENTS * days - updated * days} updated" in result.stderr.replace("0 inserted, ", "")
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats WHERE grab_fake_orders = 4242") == [(DEMO_CLIENTS * days,)]
    assert query_db(db_path, "SELECT status, error FROM sync_runs WHERE command = 'sync' ORDER BY id")[-2] == ("failed", UNRECORDED_END)
