"""The batch endpoint (`POST /api/v1/getBatchStats`, docs/remote-api.md), against a demo source that answers it as
the real Express + mysql2 remote does: days keyed by the UTC date (one day early for Bali), rows
carrying their own timestamp `stat_date`, `id` and `client_id`, and Express's HTML 404 without it."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from conftest import DEMO_CLIENTS, SCRIPT, clean_env, kill_when, query_db, unstamped, write_config
from freezegun import freeze_time

from delivery_sync.demo_source import DemoSource

NOW = "2026-11-23T10:00:00Z"  # Bali 18:00 on 2026-11-23
TODAY = date(2026, 11, 23)
# Every stored column but the times a sync writes.
STORED = "client_id, stat_date, grab_sales, grab_orders, grab_ads_spend, grab_ads_sales, grab_new_customers, " \
    "grab_repeated_customers, grab_fake_orders, gojek_sales, gojek_orders, gojek_ads_spend, gojek_ads_sales, " \
    "gojek_new_customers, gojek_returned_customers, gojek_fake_orders, total_sales, total_orders, extra"


def stored(db_path: Path) -> list[tuple]:
    return query_db(db_path, f"SELECT {STORED} FROM client_stats ORDER BY client_id, stat_date")


def sync(cli, tmp_path, demo, db_path, *args, **source):
    write_config(tmp_path / "config.toml", demo.url, db_path, source=source)
    with freeze_time(NOW, tick=True):
        return cli("sync", *args)


def per_client_reference(tmp_path, days: int = 5) -> list[tuple]:
    """What a `batch = "never"` sync of the same remote stores."""
    from delivery_sync.cli import main

    reference = tmp_path / "reference.db"
    with DemoSource(clients=DEMO_CLIENTS) as other:
        config = write_config(tmp_path / "reference.toml", other.url, reference, source={"batch": "never"})
        with freeze_time(NOW, tick=True), pytest.raises(SystemExit) as exit_:
            main(["--config", str(config), "sync", "--days-back", str(days)])
        assert exit_.value.code == 0
        assert len(other.stats_requests()) == DEMO_CLIENTS
    return stored(reference)


def test_auto_uses_batch_and_stores_exactly_what_per_client_stores(cli, tmp_path, demo, db_path):
    result = sync(cli, tmp_path, demo, db_path, "--days-back", "5")
    assert result.code == 0, result.stderr
    assert demo.stats_requests() == [] and len(demo.batch_requests()) == 1
    body = demo.batch_requests()[0].body
    assert body == {"start_date": "2026-11-19", "end_date": "2026-11-23", "client_ids": list(range(1, DEMO_CLIENTS + 1))}
    rows = stored(db_path)
    assert len(rows) == DEMO_CLIENTS * 5
    assert rows == per_client_reference(tmp_path)
    # The remote's own id/client_id/created_at are kept in extra; the day key never is.
    extra = json.loads(rows[0][-1])
    assert set(extra) == {"id", "client_id", "created_at"} and extra["client_id"] == 1
    run = query_db(db_path, "SELECT requests, rows_fetched, status FROM sync_runs WHERE command = 'sync'")
    assert run == [(2, DEMO_CLIENTS * 5, "ok")]  # the client list and one batch
    assert "2 requests" in result.stderr


def test_keys_one_day_early_land_on_the_bali_date_of_the_inner_timestamp(cli, tmp_path, demo, db_path):
    assert sync(cli, tmp_path, demo, db_path, "--days-back", "3").code == 0
    # The demo keys 2026-11-23 (Bali) as "2026-11-22", as the real remote does ...
    raw = httpx.post(f"{demo.url}/api/v1/getBatchStats", json={"start_date": "2026-11-23", "end_date": "2026-11-23", "client_ids": [1]}).json()
    assert list(raw["1"]) == ["2026-11-22"] and raw["1"]["2026-11-22"]["stat_date"] == "2026-11-22T16:00:00.000Z"
    # ... and the replica stores the right days.
    days = [d for (d,) in query_db(db_path, "SELECT DISTINCT stat_date FROM client_stats ORDER BY 1")]
    assert days == ["2026-11-21", "2026-11-22", "2026-11-23"]


def test_rows_without_their_own_date_land_on_the_key_date(cli, tmp_path, demo, db_path):
    demo.faults.batch_keys_only = True
    assert sync(cli, tmp_path, demo, db_path, "--days-back", "5").code == 0
    assert demo.stats_requests() == []
    rows = stored(db_path)
    assert [r[:2] for r in rows] == [r[:2] for r in per_client_reference(tmp_path)]
    assert all("stat_date" not in json.loads(r[-1]) for r in rows)


@pytest.mark.parametrize("missing", ["404", "405"])
def test_a_remote_without_the_endpoint_falls_back_once_with_identical_rows(cli, tmp_path, db_path, missing):
    with DemoSource(clients=DEMO_CLIENTS, batch=missing != "404") as demo:
        if missing == "405":
            demo.faults.batch_status = 405
        result = sync(cli, tmp_path, demo, db_path, "--days-back", "5", batch_days=2)
        assert result.code == 0, result.stderr
        assert len(demo.batch_requests()) == 1  # remembered for the run: not asked again per window
        assert len(demo.stats_requests()) == DEMO_CLIENTS
    assert stored(db_path) == per_client_reference(tmp_path)


def test_always_without_the_endpoint_fails_the_run_without_per_client_requests(cli, tmp_path, db_path):
    with DemoSource(clients=DEMO_CLIENTS, batch=False) as demo:
        result = sync(cli, tmp_path, demo, db_path, "--days-back", "5", batch="always")
        assert demo.stats_requests() == []
    assert result.code == 1
    line = unstamped(result.stderr).strip().splitlines()[-1]
    assert line.startswith("sync failed: 0/12 clients") and "POST /api/v1/getBatchStats answered HTTP 404" in line
    assert 'source.batch = "always"' in line and "<pre>" not in line
    assert not db_path.exists()  # nothing stored: a first sync leaves no empty replica


def test_never_does_not_ask_the_batch_endpoint(cli, tmp_path, demo, db_path):
    assert sync(cli, tmp_path, demo, db_path, "--days-back", "2", batch="never").code == 0
    assert demo.batch_requests() == [] and len(demo.stats_requests()) == DEMO_CLIENTS


def test_batch_days_tile_the_window_with_every_client_in_each(cli, tmp_path, demo, db_path):
    assert sync(cli, tmp_path, demo, db_path, "--days-back", "30", batch_days=10).code == 0
    windows = [(r.body["start_date"], r.body["end_date"]) for r in demo.batch_requests()]
    tiles = [("2026-10-25", "2026-11-03"), ("2026-11-04", "2026-11-13"), ("2026-11-14", "2026-11-23")]
    # The first tile is asked alone (it probes the endpoint); the others run concurrently, in any order.
    assert windows[0] == tiles[0] and sorted(windows) == tiles
    assert all(r.body["client_ids"] == list(range(1, DEMO_CLIENTS + 1)) for r in demo.batch_requests())
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats") == [(DEMO_CLIENTS * 30,)]


def test_each_list_of_clients_is_asked_whole_before_the_next(cli, tmp_path, demo, db_path, monkeypatch):
    from delivery_sync import fetch

    monkeypatch.setattr(fetch, "BATCH_MAX_IDS", 5)  # 12 clients: lists 1-5, 6-10, 11-12
    demo.faults.overrides = {(7, "2026-11-20"): {"grab_sales": "oops"}}  # a reject in its second tile
    result = sync(cli, tmp_path, demo, db_path, "--days-back", "20", batch_days=10, concurrency=1)
    assert result.code == 1, result.stderr  # the rejected row
    asked = [(r.body["client_ids"][0], r.body["start_date"]) for r in demo.batch_requests()]
    assert asked == [(1, "2026-11-04"), (1, "2026-11-14"), (6, "2026-11-04"), (6, "2026-11-14"), (11, "2026-11-04"), (11, "2026-11-14")]
    # Each client's window is whole: its rows from both tiles, and the reject of the later one.
    assert query_db(db_path, "SELECT client_id, COUNT(*), MIN(stat_date), MAX(stat_date) FROM client_stats GROUP BY client_id") == [
        (cid, 19 if cid == 7 else 20, "2026-11-04", "2026-11-23") for cid in range(1, DEMO_CLIENTS + 1)
    ]
    assert query_db(db_path, "SELECT client_id, stat_date, reason FROM sync_rejects") == [
        (7, "2026-11-19T16:00:00.000Z", "grab_sales: not a number ('oops')")
    ]
    assert query_db(db_path, "SELECT rows_fetched, rows_inserted, rows_rejected FROM sync_runs WHERE command = 'sync'") == [
        (DEMO_CLIENTS * 20, DEMO_CLIENTS * 20 - 1, 1)
    ]


def test_a_batch_that_keeps_failing_is_fetched_client_by_client(cli, tmp_path, demo, db_path):
    demo.faults.batch_status = 500
    result = sync(cli, tmp_path, demo, db_path, "--days-back", "5", max_retries=1)
    assert result.code == 0, result.stderr
    assert len(demo.batch_requests()) == 2  # the first attempt and one retry
    assert len(demo.stats_requests()) == DEMO_CLIENTS
    assert "fetching its 12 clients one at a time" in result.stderr
    assert stored(db_path) == per_client_reference(tmp_path)


def test_a_token_refused_at_the_batch_request_is_the_run_s_failure_not_a_client_s(cli, tmp_path, demo, db_path):
    """The batch request refused: no client was fetched or failed on its own, so the summary line
    counts none failed (it said "0/12 clients, ... 1 failed", a failure matching no client)."""
    assert sync(cli, tmp_path, demo, db_path, "--days-back", "1", batch="always").code == 0
    demo.faults.batch_status = 401
    result = sync(cli, tmp_path, demo, db_path, "--days-back", "2", batch="always")
    summary = unstamped(result.stderr).strip().splitlines()[-1]
    assert result.code == 1 and summary.startswith(f"sync failed: 0/{DEMO_CLIENTS} clients, 0 rows"), summary
    assert " failed, window" not in summary and "authentication failed" in summary
    assert query_db(db_path, "SELECT status, clients_failed FROM sync_runs WHERE command = 'sync' ORDER BY id") == [("ok", 0), ("failed", 0)]


def test_batch_requests_that_cannot_reach_the_remote_stop_the_run_without_asking_each_client(cli, tmp_path, demo, db_path):
    """A remote that hangs: every batch request times out. After max_consecutive_failures of them
    in a row the run stops, its clients left for --retry-failed, instead of then asking each
    client alone (as many more timeouts, minutes each at the defaults). A batch endpoint that
    answers an error is not counted: its clients are fetched one at a time (the test above)."""
    assert sync(cli, tmp_path, demo, db_path, "--days-back", "1").code == 0
    demo.faults.batch_delay = 1.0
    began = time.monotonic()
    result = sync(cli, tmp_path, demo, db_path, "--days-back", "8", batch_days=1, timeout=0.2, max_retries=0, concurrency=2,
                  max_consecutive_failures=3)
    took = time.monotonic() - began
    summary = unstamped(result.stderr).strip().splitlines()[-1]
    assert result.code == 1 and demo.stats_requests() == [], result.stderr
    assert "stopped after 3 consecutive batch requests that could not reach the remote (it looks down)" in summary, summary
    assert f"; {DEMO_CLIENTS} clients not fetched" in summary and took < 4, took
    unfetched = query_db(db_path, "SELECT COUNT(*) FROM sync_unfetched WHERE run_id = (SELECT MAX(id) FROM sync_runs)")
    assert unfetched == [(DEMO_CLIENTS,)]  # all of them, for --retry-failed


def test_wrapped_answers_and_clients_not_asked_for(cli, tmp_path, demo, db_path):
    demo.faults.wrap_lists = True
    demo.faults.batch_extra = {"999": {"2026-11-22": {"stat_date": "2026-11-23", "grab_sales": "1.00"}}}
    result = sync(cli, tmp_path, demo, db_path, "--days-back", "5", "--clients", "1,2")
    assert result.code == 0, result.stderr
    assert demo.batch_requests()[0].body["client_ids"] == [1, 2]
    assert "ignored 1 client not asked for (999)" in result.stderr
    assert query_db(db_path, "SELECT DISTINCT client_id FROM client_stats ORDER BY 1") == [(1,), (2,)]


def test_rows_outside_the_requested_window_are_rejected(cli, tmp_path, demo, db_path):
    far = {"stat_date": "9999-12-31", "grab_sales": "1.00"}
    demo.faults.batch_extra = {"3": {"9999-12-30": far, "2026-11-22": {"stat_date": "2026-11-23", "grab_sales": "2.00"}}}
    result = sync(cli, tmp_path, demo, db_path, "--days-back", "5", "--clients", "3")
    assert result.code == 1 and "sync partial" in result.stderr
    rejects = query_db(db_path, "SELECT client_id, stat_date, reason FROM sync_rejects")
    assert rejects == [(3, "9999-12-31", "stat_date 9999-12-31 is outside the requested window 2026-11-19..2026-11-23")]
    assert query_db(db_path, "SELECT MAX(stat_date), COUNT(*) FROM client_stats") == [("2026-11-23", 1)]
    # The per-client endpoint is held to the same rule.
    demo.faults.extra_rows = {4: [{"stat_date": "0001-01-01", "grab_sales": "1.00"}]}
    result = sync(cli, tmp_path, demo, db_path, "--days-back", "5", "--clients", "4", batch="never")
    assert result.code == 1
    assert query_db(db_path, "SELECT reason FROM sync_rejects WHERE client_id = 4") == [
        ("stat_date 0001-01-01 is outside the requested window 2026-11-19..2026-11-23",)
    ]


def test_prune_and_incremental_with_batch(cli, tmp_path, demo, db_path):
    assert sync(cli, tmp_path, demo, db_path, "--days-back", "10", batch_days=4).code == 0
    demo.faults.deleted_rows = {(2, "2026-11-15"), (2, "2026-11-21")}  # in different batch windows
    result = sync(cli, tmp_path, demo, db_path, "--days-back", "10", "--prune", batch_days=4)
    assert result.code == 0, result.stderr
    assert query_db(db_path, "SELECT stat_date FROM client_stats WHERE client_id = 2 AND stat_date IN ('2026-11-15', '2026-11-21')") == []
    assert query_db(db_path, "SELECT rows_deleted FROM sync_runs ORDER BY id DESC LIMIT 1 OFFSET 1") == [(2,)]
    before = len(demo.batch_requests())
    assert sync(cli, tmp_path, demo, db_path, "--incremental", "--days-back", "10", batch_days=4).code == 0
    (incremental,) = demo.batch_requests()[before:]
    assert (incremental.body["start_date"], incremental.body["end_date"]) == ("2026-11-20", "2026-11-23")


def test_a_killed_batch_sync_leaves_every_client_old_or_new(tmp_path, db_path):
    clients, days = 40, 20
    with DemoSource(clients=clients, latency_ms=20) as demo:
        config = write_config(tmp_path / "config.toml", demo.url, db_path, source={"batch_days": 2, "concurrency": 2})
        command = [SCRIPT, "--config", str(config), "sync", "--days-back", str(days), "--no-aggregate"]
        env = clean_env()
        assert subprocess.run(command, env=env, capture_output=True, timeout=60).returncode == 0
        today = demo.today()
        demo.faults.overrides = {
            (cid, (today - timedelta(days=d)).isoformat()): {"grab_orders": 7777} for cid in range(1, clients + 1) for d in range(days)
        }
        kill_when(command, env, lambda: query_db(db_path, "SELECT 1 FROM client_stats WHERE grab_orders = 7777 LIMIT 1"))
    per_client = query_db(db_path, "SELECT client_id, SUM(COALESCE(grab_orders = 7777, 0)), COUNT(*) FROM client_stats GROUP BY client_id")
    assert len(per_client) == clients
    assert all(new in (0, count) and count == days for _, new, count in per_client), per_client
    assert query_db(db_path, "PRAGMA integrity_check") == [("ok",)]
