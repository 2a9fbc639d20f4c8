"""`sync --retry-failed` (docs/reference.md, sync): only what the last sync did not bring in, over its window."""

from __future__ import annotations

import pytest
from conftest import DEMO_CLIENTS, last_run, query_db, unstamped, write_config
from freezegun import freeze_time

NOW = "2026-11-23T10:00:00Z"


def run(cli, *args):
    with freeze_time(NOW, tick=True):
        return cli(*args)


def last_sync(db_path):
    return last_run(db_path, "id, status, window_start, window_end, clients_total")


def test_after_a_partial_run_only_the_failed_clients_over_its_window(cli, tmp_path, demo, db_path):
    write_config(tmp_path / "config.toml", demo.url, db_path, source={"batch": "never", "max_retries": 0})  # fail at once
    demo.faults.fail_clients = {3: 500, 5: 404}
    assert run(cli, "sync", "--from", "2026-11-10", "--to", "2026-11-14").code == 1
    demo.faults.fail_clients = {}
    before = len(demo.requests)
    result = run(cli, "sync", "--retry-failed")
    assert result.code == 0, result.stderr
    asked = [(r.path, r.query.get("start_date"), r.query.get("end_date")) for r in demo.requests[before:]]
    # The client list comes first; the two clients are fetched concurrently, in either order.
    assert asked[0] == ("/api/v1/clients", None, None)
    assert sorted(asked[1:]) == [
        ("/api/v1/clients/3/stats", "2026-11-10", "2026-11-14"),
        ("/api/v1/clients/5/stats", "2026-11-10", "2026-11-14"),
    ]
    assert last_sync(db_path)[1:] == ("ok", "2026-11-10", "2026-11-14", 2)
    assert unstamped(result.stderr).startswith("sync ok: 2/2 clients, 10 rows (10 inserted")
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats") == [(DEMO_CLIENTS * 5,)]
    # Now nothing is left to retry: one line, exit 0, no request.
    before = len(demo.requests)
    again = run(cli, "sync", "--retry-failed")
    assert (again.code, again.stdout) == (0, "")
    assert unstamped(again.stderr) == f"sync: nothing to retry: the last sync (run {last_sync(db_path)[0]}) ended ok\n"
    assert len(demo.requests) == before


def test_with_the_batch_endpoint_one_request_for_the_failed_clients(cli, tmp_path, demo, db_path):
    write_config(tmp_path / "config.toml", demo.url, db_path, source={"batch": "never", "max_retries": 0})  # fail at once
    demo.faults.fail_clients = {2: 500, 7: 500}
    assert run(cli, "sync", "--days-back", "4").code == 1
    demo.faults.fail_clients = {}
    write_config(tmp_path / "config.toml", demo.url, db_path, source={"batch": "auto"})
    assert run(cli, "sync", "--retry-failed").code == 0
    (batch,) = demo.batch_requests()
    assert batch.body == {"start_date": "2026-11-20", "end_date": "2026-11-23", "client_ids": [2, 7]}


def test_after_a_run_stopped_early_the_failed_and_the_never_fetched(cli, tmp_path, demo, db_path):
    write_config(tmp_path / "config.toml", demo.url, db_path, source={"batch": "never", "concurrency": 1, "max_consecutive_failures": 2,
                                                                 "max_retries": 0})  # fail at once
    # A replica exists already: a first sync that stores nothing leaves none (tests/test_files.py).
    assert run(cli, "sync", "--days-back", "2", "--clients", str(DEMO_CLIENTS)).code == 0
    demo.faults.fail_clients = {1: 500, 2: 500}
    result = run(cli, "sync", "--days-back", "2")
    assert result.code == 1 and "stopped after 2 consecutive client failures" in result.stderr
    stopped = last_sync(db_path)[0]
    fetched = {cid for (cid,) in query_db(db_path, "SELECT DISTINCT client_id FROM client_stats")}
    unfetched = [cid for (cid,) in query_db(db_path, "SELECT client_id FROM sync_unfetched WHERE run_id = ? ORDER BY client_id", (stopped,))]
    assert sorted(fetched | set(unfetched) | {1, 2}) == list(range(1, DEMO_CLIENTS + 1)) and len(unfetched) >= DEMO_CLIENTS - 4
    demo.faults.fail_clients = {}
    before = len(demo.stats_requests())
    assert run(cli, "sync", "--retry-failed").code == 0
    retried = sorted(int(r.path.split("/")[4]) for r in demo.stats_requests()[before:])
    assert retried == sorted({1, 2, *unfetched})
    assert query_db(db_path, "SELECT COUNT(DISTINCT client_id) FROM client_stats") == [(DEMO_CLIENTS,)]


def test_a_partial_run_of_rejected_rows_only_has_nothing_to_retry(cli, config, db_path, demo):
    demo.faults.extra_rows = {4: [{"stat_date": "N/A"}]}
    assert run(cli, "sync", "--days-back", "2").code == 1
    result = run(cli, "sync", "--retry-failed")
    assert result.code == 0 and "was partial only for rejected rows" in result.stderr


def test_nothing_to_retry_without_a_replica(cli, config, db_path, demo):
    result = run(cli, "sync", "--retry-failed")
    assert (result.code, unstamped(result.stderr)) == (0, "sync: nothing to retry: no replica yet, so no sync to retry\n")
    assert demo.requests == [] and not db_path.exists()


@pytest.mark.parametrize("flag", [["--clients", "1"], ["--days-back", "3"], ["--from", "2026-11-01"], ["--incremental"]])
def test_retry_failed_refuses_clients_and_window_flags(cli, config, demo, flag):
    result = run(cli, "sync", "--retry-failed", *flag)
    assert result.code == 2 and f"cannot be combined with {flag[0]}" in result.stderr
    assert demo.requests == []
