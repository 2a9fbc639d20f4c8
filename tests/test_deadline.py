"""`sync --deadline MINUTES` / `sync.deadline_minutes` (docs/reference.md, sync): the run ends on time, partial, with what it fetched;
on both engines (`both_engines`, tests/conftest.py)."""

from __future__ import annotations

import time

import pytest
from conftest import DEMO_CLIENTS, last_run, query_db, unstamped, write_config

from delivery_sync.demo_source import DemoSource

pytestmark = pytest.mark.both_engines


def last_sync(db_path):
    return last_run(db_path, "id, status, error, clients_ok")


def test_a_3_s_deadline_ends_a_10_s_run_on_time_and_keeps_what_was_fetched(cli, tmp_path, db_path):
    with DemoSource(clients=DEMO_CLIENTS, latency_ms=800) as demo:  # 12 x 0.8 s one at a time: about 10 s
        write_config(tmp_path / "config.toml", demo.url, db_path, source={"batch": "never", "concurrency": 1})
        began = time.monotonic()
        result = cli("sync", "--days-back", "2", "--deadline", "0.05", "--no-aggregate")
        took = time.monotonic() - began
    assert took < 4.5, took
    assert result.code == 1
    run_id, status, error, ok = last_sync(db_path)
    assert status == "partial" and 1 <= ok < DEMO_CLIENTS
    unfetched = [cid for (cid,) in query_db(db_path, "SELECT client_id FROM sync_unfetched WHERE run_id = ? ORDER BY client_id", (run_id,))]
    assert len(unfetched) == DEMO_CLIENTS - ok
    assert error.startswith(f"deadline of 0.05 min reached: {len(unfetched)} clients not fetched ({unfetched[0]}, ")
    summary = unstamped(result.stderr).strip().splitlines()[-1]
    assert summary.startswith(f"sync partial: {ok}/{DEMO_CLIENTS} clients") and summary.endswith(f" s - {error}")  # says why
    assert "retry" not in result.stderr, result.stderr  # the request abandoned at the deadline is not retried, nor said to be
    # Every client written is whole; --retry-failed then fetches exactly the rest.
    per_client = query_db(db_path, "SELECT client_id, COUNT(*) FROM client_stats GROUP BY client_id")
    assert len(per_client) == ok and all(n == 2 for _, n in per_client)


@pytest.mark.sqlite_only("nothing is written (the client list never comes): one engine covers the time limit, for suite time")
def test_retry_after_120_under_a_3_s_deadline_does_not_wait_120_s(cli, tmp_path, demo, db_path):
    write_config(tmp_path / "config.toml", demo.url, db_path, source={"batch": "never"}, sync={"deadline_minutes": 0.05})
    # A replica exists already: a first sync that stores nothing leaves none (tests/test_files.py).
    assert cli("sync", "--days-back", "1", "--clients", "1").code == 0
    demo.faults.throttle_next = 1_000
    demo.faults.retry_after = "120"
    began = time.monotonic()
    result = cli("sync", "--days-back", "2")
    assert time.monotonic() - began < 4.5
    assert result.code == 1
    # The client list itself could not be had before the deadline: a failed run, no data touched;
    # the retry's warning and the reason say what the remote asked, or the deadline hides the 429.
    assert last_sync(db_path)[1] == "failed"
    assert last_sync(db_path)[2].endswith(
        "the run's deadline was reached while the remote asked to wait 120 s (HTTP 429 Retry-After)"), last_sync(db_path)[2]
    assert "(the remote asked to wait 120 s (HTTP 429 Retry-After); the run's deadline)" in result.stderr, result.stderr


@pytest.mark.sqlite_only("the deadline is the fetcher's; what PostgreSQL keeps of a run cut short: the case above, for suite time")
def test_the_deadline_applies_to_batch_requests_too(cli, tmp_path, db_path):
    with DemoSource(clients=DEMO_CLIENTS, latency_ms=700) as demo:
        write_config(tmp_path / "config.toml", demo.url, db_path, source={"batch_days": 1, "concurrency": 1})
        # A replica exists already: a first sync that stores nothing leaves none (tests/test_files.py).
        assert cli("sync", "--days-back", "1", "--clients", "1", "--no-aggregate").code == 0
        began = time.monotonic()
        result = cli("sync", "--days-back", "10", "--deadline", "0.05", "--no-aggregate")
        took = time.monotonic() - began
    assert took < 4.5 and result.code == 1
    _, status, error, ok = last_sync(db_path)
    # Batch windows each hold every client: none is complete before all ten arrived.
    assert (status, ok) == ("partial", 0) and error.startswith(f"deadline of 0.05 min reached: {DEMO_CLIENTS} clients not fetched")
    assert demo.stats_requests() == []


def test_a_negative_deadline_is_a_usage_error(cli, config, demo):
    result = cli("sync", "--deadline", "-1")
    assert result.code == 2 and "--deadline must be 0 (none) or more minutes" in result.stderr
    assert demo.requests == []
