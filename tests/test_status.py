"""`status`: read-only facts, freshness, --check exit codes, against real replicas filled by real syncs,
on both engines (`both_engines`, tests/conftest.py)."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import date, datetime, timedelta

import pytest
from conftest import DEMO_CLIENTS, SCRIPT, clean_env, execute_db, query_db, run_on_terminal, store_of, write_config
from freezegun import freeze_time

from delivery_sync import replica
from delivery_sync.errors import NoReplica
from delivery_sync.readonly import open_readonly

pytestmark = pytest.mark.both_engines


@pytest.fixture(autouse=True)
def _per_client_endpoint(monkeypatch):
    """These tests are about one request per client (docs/remote-api.md); tests/test_batch.py covers the batch endpoint."""
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__BATCH", "never")


DAYS = 10
DOCUMENTED_KEYS = {
    "database", "clients", "active_clients", "rows", "date_min", "date_max", "freshness",
    "last_sync", "last_collect", "last_aggregate", "failed_clients", "lagging_clients", "missing_days",
    "stale_clients", "rollups_as_of",
}


@pytest.fixture
def quick_config(tmp_path, demo, db_path):
    """No retries: a failing client fails at once, keeping partial-sync tests fast."""
    return write_config(tmp_path / "config.toml", demo.url, db_path, source={"max_retries": 0})


def status_json(cli) -> dict:
    result = cli("status", "--json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def synced(cli, *args: str) -> None:
    result = cli("sync", "--days-back", str(DAYS), "--no-aggregate", *args)
    assert result.code == 0, result.stderr


# --- no replica -----------------------------------------------------------------------------


def test_no_replica_reports_never_and_creates_nothing(cli, config, db_path, tmp_path):
    data = status_json(cli)
    assert DOCUMENTED_KEYS <= data.keys()
    assert data["database"] == str(db_path)
    assert data["freshness"] == "never"
    assert (data["clients"], data["active_clients"], data["rows"], data["missing_days"]) == (0, 0, 0, 0)
    assert data["last_sync"] is data["last_collect"] is data["last_aggregate"] is None
    assert data["failed_clients"] == data["lagging_clients"] == []

    view = cli("status")
    assert view.code == 0
    assert "Replica can be trusted: NO" in view.stdout and "Run: delivery-sync sync" in view.stdout

    check = cli("status", "--check")
    assert check.code == 1
    assert check.stdout == f"status not ok: no replica at {db_path} yet; run: delivery-sync sync\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


@pytest.mark.sqlite_only("about the default SQLite path a status without a config reads")
def test_status_without_a_config_says_no_config_was_read(cli, tmp_path, monkeypatch):
    """In the wrong folder (or cron without DELIVERY_SYNC_CONFIG) the default path is not there:
    status says no config was read, so the operator looks for the config, not for a lost replica.
    A replica named on the command line, or by a config, is not second-guessed."""
    check = cli("status", "--check")
    assert check.code == 1 and check.stdout == (
        f"status not ok: no replica at {tmp_path / 'delivery_stats.db'} yet (no config file was read: no --config, "
        "$DELIVERY_SYNC_CONFIG or ./config.toml); run: delivery-sync sync\n")
    named = cli("--db", str(tmp_path / "other.db"), "status", "--check")
    assert named.code == 1 and "no config file" not in named.stdout


@pytest.mark.sqlite_only("about the replica file not being created")
def test_status_and_query_never_create_the_database(cli, config, db_path, tmp_path):
    for args in (("status",), ("status", "--json"), ("status", "--check"), ("query", "top"), ("query", "sql", "SELECT 1")):
        result = cli(*args)
        assert result.code in (0, 1, 2), result
        assert not db_path.exists(), args
    with pytest.raises(NoReplica):
        open_readonly(db_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


# --- after syncs ------------------------------------------------------------------------------


def test_after_a_full_sync(cli, config, db_path, demo):
    synced(cli)
    data = status_json(cli)
    today = demo.today()
    assert (data["clients"], data["active_clients"], data["rows"]) == (DEMO_CLIENTS, DEMO_CLIENTS, DEMO_CLIENTS * DAYS)
    assert data["date_min"] == (today - timedelta(days=DAYS - 1)).isoformat()
    assert data["date_max"] == data["today"] == today.isoformat()
    assert data["freshness"] == "fresh"
    sync = data["last_sync"]
    assert (sync["command"], sync["status"], sync["clients_ok"], sync["rows_inserted"]) == ("sync", "ok", DEMO_CLIENTS, DEMO_CLIENTS * DAYS)
    assert sync["window_end"] == today.isoformat()
    assert data["last_collect"] is None
    assert (data["failed_clients"], data["lagging_clients"], data["missing_days"]) == ([], [], 0)
    assert data["verdict"]["ok"] is True

    check = cli("status", "--check")
    assert check.code == 0
    assert check.stdout.startswith("status ok: fresh, last sync ok ")

    view = cli("status")
    assert view.code == 0
    assert view.stdout.startswith("Replica can be trusted: yes - fresh")
    assert "\x1b[" not in view.stdout  # not a terminal: no colour codes
    assert f"{DEMO_CLIENTS} ({DEMO_CLIENTS} active)" in view.stdout


def test_after_a_partial_sync(cli, quick_config, db_path, demo):
    demo.faults.fail_clients = {3: 500}
    assert cli("sync", "--days-back", str(DAYS), "--no-aggregate").code == 1
    data = status_json(cli)
    assert data["last_sync"]["status"] == "partial"
    assert data["freshness"] == "never"  # no sync has ever been ok
    assert data["failed_clients"] == [3]
    assert data["failures"] == {"3": "client 3: HTTP 500 after 1 attempt"}
    assert "client 3: HTTP 500 after 1 attempt" in cli("status").stdout
    assert data["lagging_clients"] == data["lagging_without_rows"] == [3]  # active, and no row at all
    assert re.search(r"^Lagging clients +3 \(no day stored yet\)$", cli("status").stdout, re.M)
    assert data["missing_days"] == DAYS
    assert data["rows"] == (DEMO_CLIENTS - 1) * DAYS

    check = cli("status", "--check")
    assert check.code == 1
    assert "last sync partial" in check.stdout and "1 client failed (3)" in check.stdout
    assert check.stdout.rstrip().endswith("run: delivery-sync sync --retry-failed")

    # The advice works: re-syncing the failed client over that window repairs the replica.
    demo.faults.fail_clients = {}
    before = len(demo.stats_requests())
    assert cli("sync", "--retry-failed", "--no-aggregate").code == 0
    retried = demo.stats_requests()[before:]
    assert [(r.path, r.query["start_date"], r.query["end_date"]) for r in retried] == [
        ("/api/v1/clients/3/stats", data["last_sync"]["window_start"], data["last_sync"]["window_end"])
    ]
    data = status_json(cli)
    assert (data["freshness"], data["failed_clients"], data["lagging_clients"], data["missing_days"]) == ("fresh", [], [], 0)
    assert cli("status", "--check").code == 0


def test_partial_sync_after_an_ok_one_is_fresh_but_fails_the_check(cli, quick_config, db_path, demo):
    synced(cli)
    demo.faults.fail_clients = {5: 404}
    assert cli("sync", "--days-back", str(DAYS), "--no-aggregate").code == 1
    data = status_json(cli)
    assert (data["freshness"], data["last_sync"]["status"], data["failed_clients"]) == ("fresh", "partial", [5])
    assert data["lagging_clients"] == [] and data["missing_days"] == 0  # client 5's rows are still there
    assert cli("status", "--check").code == 1


def test_lagging_clients_and_missing_days(cli, config, db_path, demo):
    synced(cli)
    demo.faults.hidden_clients = {8}  # no longer listed: inactive, ignored below
    synced(cli)
    today = demo.today()

    def drop(client_id: int, *days_ago: int) -> None:
        for n in days_ago:
            day = (today - timedelta(days=n)).isoformat()
            execute_db(db_path, "DELETE FROM client_stats WHERE client_id = ? AND stat_date = ?", (client_id, day))

    drop(5, 0, 1, 2)  # latest day is 3 days before today: lagging
    drop(6, 0, 1)  # latest day is exactly 2 days before today: not lagging
    drop(7, 4)  # a hole in the middle: missing, not lagging
    drop(8, *range(DAYS))  # inactive: neither
    data = status_json(cli)
    assert data["active_clients"] == DEMO_CLIENTS - 1
    assert data["lagging_clients"] == [5] and data["lagging_without_rows"] == []
    cutoff = (today - timedelta(days=2)).isoformat()
    assert re.search(rf"^Lagging clients +5 \(latest day before {cutoff}\)$", cli("status").stdout, re.M)
    drop(9, *range(DAYS))  # active, with no row left: lagging, and said so
    assert status_json(cli)["lagging_without_rows"] == [9]
    assert re.search(rf"^Lagging clients +5, 9 \(latest day before {cutoff}; 1 of them with no day stored yet\)$",
                     cli("status").stdout, re.M)
    data = status_json(cli)
    assert data["missing_days"] == 3 + 2 + 1 + DAYS
    assert data["missing_by_client"] == {"5": 3, "6": 2, "7": 1, "9": DAYS}
    assert data["date_max"] == today.isoformat()
    # Lagging clients are shown, but the check wants only fresh and last sync ok.
    check = cli("status", "--check")
    assert check.code == 0 and "but 2 active clients lag (see lagging clients)" in check.stdout


def test_the_headline_and_the_freshness_line_give_the_same_age(cli, config, db_path):
    synced(cli)
    (finished,) = query_db(db_path, "SELECT finished_at FROM sync_runs WHERE command = 'sync'")[0]
    # 2.6 minutes: 0.0433 h, which JSON rounds to 0.04 h (2.4 min); both lines must say 3 min.
    with freeze_time(datetime.fromisoformat(finished) + timedelta(minutes=2, seconds=36)):
        view = cli("status")
    assert view.code == 0
    assert view.stdout.startswith("Replica can be trusted: yes - fresh, last sync ok 3 min ago, data through "), view.stdout
    assert re.search(r"Freshness +fresh - last ok sync finished \S+ \S+ UTC \(3 min ago\)", view.stdout), view.stdout


def test_freshness_boundary_is_exactly_stale_after_hours(cli, tmp_path, demo, db_path):
    write_config(tmp_path / "config.toml", demo.url, db_path, status={"stale_after_hours": 26})
    synced(cli)
    (finished,) = query_db(db_path, "SELECT finished_at FROM sync_runs WHERE command = 'sync'")[0]
    finished_at = datetime.fromisoformat(finished)
    # Each client's confirmation counts too (stale_clients): the oldest of them and the run's end is
    # the boundary (whole seconds: the run's end may read a second before its last client's).
    ((oldest,),) = query_db(db_path, "SELECT MIN(last_synced_at) FROM clients")
    boundary = min(datetime.fromisoformat(oldest), finished_at)

    with freeze_time(boundary + timedelta(hours=26)):
        at_limit = cli("status", "--check")
        assert status_json(cli)["freshness"] == "fresh"
    with freeze_time(finished_at + timedelta(hours=26, seconds=1)):
        past_limit = cli("status", "--check")
        data = status_json(cli)
    assert at_limit.code == 0, at_limit.stdout
    assert past_limit.code == 1
    assert past_limit.stdout.startswith("status not ok: stale, last ok sync finished 26.0 h ago (limit 26 h)")
    assert data["freshness"] == "stale"


@pytest.mark.sqlite_only("SQLite's write lock on the file; tests/test_postgres.py reads a PostgreSQL replica while a sync writes")
def test_status_works_while_a_sync_holds_the_lock_and_writes(cli, config, db_path):
    synced(cli)
    with replica.writer_lock(db_path, "sync"):
        writer = sqlite3.connect(db_path, isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO sync_runs(command, status, started_at) VALUES ('sync', 'running', '2026-01-01T00:00:00+00:00')")
        try:
            data = status_json(cli)
            check = cli("status", "--check")
        finally:
            writer.execute("ROLLBACK")
            writer.close()
    assert data["freshness"] == "fresh" and data["rows"] == DEMO_CLIENTS * DAYS
    assert check.code == 0


def test_a_running_sync_is_listed_but_last_sync_is_the_last_finished(cli, config, db_path):
    synced(cli)
    # Live: its writer holds the lock (a `running` row without one is a dead run, shown failed).
    with store_of(db_path).writer_lock("sync"):
        db = store_of(db_path).open()
        db.start_run("sync")
        db.close()
        data = status_json(cli)
        view = cli("status").stdout
    assert data["last_sync"]["status"] == "ok"
    assert [r["status"] for r in data["running"]] == ["running"]
    assert "sync       running  since" in view


def test_while_a_sync_runs_status_says_to_wait_before_its_fix(cli, tmp_path, demo, db_path):
    # The fix would be refused (exit 75) while the running sync holds the lock.
    write_config(tmp_path / "config.toml", demo.url, db_path, source={"max_retries": 0, "batch": "never"})
    demo.faults.fail_clients = {3: 500}
    assert cli("sync", "--days-back", str(DAYS), "--no-aggregate").code == 1
    assert cli("status").stdout.splitlines()[1] == "Run: delivery-sync sync --retry-failed"
    with store_of(db_path).writer_lock("sync"):
        db = store_of(db_path).open()
        db.start_run("sync")
        db.close()
        view, check, data = cli("status").stdout.splitlines(), cli("status", "--check"), status_json(cli)
    assert view[0].startswith("Replica can be trusted: NO - last sync ") and "(a sync is running since " in view[0]
    assert view[1] == "Run: once the running sync has ended, delivery-sync sync --retry-failed"
    assert check.code == 1 and check.stdout.rstrip().endswith("; run: once the running sync has ended, delivery-sync sync --retry-failed")
    assert data["verdict"]["advice"] == "once the running sync has ended, delivery-sync sync --retry-failed"


def test_a_first_sync_still_running_is_not_also_shown_as_never(cli, config, db_path):
    store_of(db_path).open().close()
    with store_of(db_path).writer_lock("sync"):
        db = store_of(db_path).open()
        db.start_run("sync")
        db.close()
        view = cli("status").stdout
    lines = [line.split() for line in view.splitlines() if line.strip().startswith(("sync", "collect"))]
    assert ["sync", "running", "since"] == lines[0][:3]
    assert ["collect", "never"] in lines and ["sync", "none", "finished", "yet"] in lines


def test_last_collect_and_failed_runs_in_the_view(cli, config, db_path, demo):
    synced(cli)
    demo.faults.collect_fails = True
    assert cli("collect").code == 1
    data = status_json(cli)
    assert (data["last_collect"]["status"], data["last_collect"]["error"]) == ("failed", "HTTP 500: Grab login failed for 3 clients")
    view = cli("status").stdout
    assert "  collect    failed" in view and "error: HTTP 500: Grab login failed for 3 clients" in view


# A PostgreSQL database holding other tables is somewhere a sync may create the replica (beside
# them): status says "no replica yet" there, and the sync it advises works.
@pytest.mark.sqlite_only("a SQLite file of other tables is refused by every command, sync included")
def test_a_file_that_is_not_a_replica_is_an_error(cli, config, db_path):
    execute_db(db_path, "CREATE TABLE something(x INTEGER)")
    result = cli("status")
    assert result.code == 2
    assert "not a delivery-sync replica" in result.stderr


def test_status_module_imports_only_the_standard_library():
    import subprocess
    import sys

    code = (
        "import sys, delivery_sync.status; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'httpx', 'tenacity', 'sqlite_utils', 'rich', 'pydantic'}))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_a_repair_of_some_failed_clients_does_not_hide_the_others(cli, quick_config, db_path, demo):
    # After a partial sync, an ok `sync --clients` of one of its failed clients becomes the last
    # sync: the other failed client must still be named, checked and retried.
    with freeze_time("2026-11-20T01:00:00Z", tick=True):
        synced(cli)
    demo.faults.fail_clients = {3: 500, 5: 500}
    with freeze_time("2026-11-21T01:00:00Z", tick=True):
        assert cli("sync", "--days-back", str(DAYS), "--no-aggregate").code == 1  # partial: 3 and 5
    demo.faults.fail_clients = {}
    with freeze_time("2026-11-21T01:10:00Z", tick=True):
        assert cli("sync", "--days-back", str(DAYS), "--clients", "3", "--no-aggregate").code == 0
    with freeze_time("2026-11-21T01:20:00Z"):
        data, check, view = status_json(cli), cli("status", "--check"), cli("status")
        prom = cli("status", "--format", "prometheus").stdout
    said = "1 client an earlier sync did not bring in, not synced since (5)"
    assert (data["last_sync"]["status"], data["failed_clients"], data["earlier_failed_clients"]) == ("ok", [], [5])
    assert data["verdict"] == {"ok": False, "reason": said, "advice": "delivery-sync sync --retry-failed"}
    assert check.code == 1 and check.stdout.startswith(f"status not ok: {said}; run: delivery-sync sync --retry-failed")
    assert view.stdout.startswith(f"Replica can be trusted: NO - {said}\nRun: delivery-sync sync --retry-failed")
    assert "Earlier failed   5 (not synced since an earlier sync failed them; sync --retry-failed)" in view.stdout
    assert 'delivery_sync_clients{state="failed"} 1' in prom
    # Past stale_after_hours (26 h) the partial sync is the stale check's: client 5 is stale, and
    # its repair is the current window (`--clients`), not the old sync's window by --retry-failed.
    with freeze_time("2026-11-22T04:00:00Z"):
        later = status_json(cli)
        old = cli("sync", "--retry-failed")
    assert later["earlier_failed_clients"] == [] and 5 in later["stale_clients"]
    assert old.code == 0 and "nothing to retry" in old.stderr
    before = len(demo.stats_requests())
    with freeze_time("2026-11-21T01:30:00Z", tick=True):
        retry = cli("sync", "--retry-failed")
    assert retry.code == 0, retry.stderr
    assert sorted({int(r.path.split("/")[4]) for r in demo.stats_requests()[before:]}) == [5]
    with freeze_time("2026-11-21T01:40:00Z"):
        after = status_json(cli)
        nothing = cli("sync", "--retry-failed")
    assert (after["earlier_failed_clients"], after["verdict"]["ok"]) == ([], True)
    assert nothing.code == 0 and "nothing to retry" in nothing.stderr


def test_a_one_client_repair_sync_does_not_make_old_clients_look_fresh(cli, quick_config, db_path):
    with freeze_time("2026-11-20T01:00:00Z", tick=True):
        synced(cli)
    with freeze_time("2026-11-21T00:00:00Z", tick=True):
        assert cli("sync", "--days-back", str(DAYS), "--clients", "3", "--no-aggregate").code == 0
    with freeze_time("2026-11-21T04:00:00Z"):
        data = status_json(cli)
        check = cli("status", "--check")
        view = cli("status")
    others = [cid for cid in range(1, DEMO_CLIENTS + 1) if cid != 3]
    # The last ok sync is 4 h old, but every client except 3 was last confirmed 27 h ago.
    assert data["last_sync"]["status"] == "ok" and data["age_hours"] < 5
    assert (data["freshness"], data["stale_clients"]) == ("stale", others)
    assert check.code == 1
    assert check.stdout.startswith(f"status not ok: stale, {len(others)} active clients not confirmed within 26 h (1, 2, 4,")
    assert check.stdout.rstrip().endswith("run: delivery-sync sync --clients " + ",".join(map(str, others)))
    assert "Stale clients    1, 2, 4," in view.stdout
    # The advice works.
    with freeze_time("2026-11-21T04:10:00Z", tick=True):
        assert cli("sync", "--days-back", str(DAYS), "--clients", ",".join(map(str, others)), "--no-aggregate").code == 0
        assert cli("status", "--check").code == 0


def test_on_an_80_column_terminal_long_facts_wrap_under_their_value_column(cli, config, db_path, tmp_path):
    """A person's terminal: a long value wraps at a word boundary, under its value, never cut in
    a word; piped (logs, cron mail), each fact stays one line."""
    import re

    assert cli("sync", "--days-back", "3").code == 0
    script = SCRIPT
    env = clean_env(TERM="xterm", COLUMNS="80")
    code, shown = run_on_terminal([script, "--db", str(db_path), "status"], tmp_path, env, stream="stdout")
    assert code == 0
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).rstrip() for line in shown.replace("\r", "").splitlines()]
    assert lines and all(len(line) <= 80 for line in lines), lines
    rows = next(i for i, line in enumerate(lines) if line.startswith("Rows "))
    # `Rows  12345, first .. last (today is ... in Asia/Makassar)` is longer than 80: its rest
    # goes on the next line, indented to the value column, the zone name whole.
    assert lines[rows + 1].startswith(" " * 17 + "Asia/Makassar)"), lines[rows:rows + 2]
    # A run's line (`  sync       ok      <when>, took ...: <counts>, window ...`) wraps under its
    # time, where its error line would start, not under its status.
    sync = next(i for i, line in enumerate(lines) if line.startswith("  sync "))
    assert lines[sync][21:].startswith("20") and lines[sync + 1].startswith(" " * 21) and lines[sync + 1][21] != " ", lines[sync:sync + 3]
    piped = cli("status")
    assert any(line.startswith("Rows ") and line.endswith("in Asia/Makassar)") for line in piped.stdout.splitlines())


def test_a_path_with_brackets_is_shown_as_written_never_read_as_markup(cli, tmp_path):
    """`[b]` in a replica's path is text: on a terminal (a grid) and piped, in the verdict, the
    advice and the hint that repeats --db."""
    import re

    path = tmp_path / "[b]x" / "r[red].db"
    path.parent.mkdir()
    piped = cli("--db", str(path), "status")
    code, shown = run_on_terminal([SCRIPT, "--db", str(path), "status"], tmp_path, clean_env(TERM="xterm", COLUMNS="200"),
                                  stream="stdout")
    assert piped.code == code == 0
    for text in (piped.stdout, re.sub(r"\x1b\[[0-9;]*m", "", shown.replace("\r", ""))):
        assert text.count(str(path)) == 3, text  # no replica at PATH; Run: ... --db PATH sync; the demo hint


@pytest.mark.parametrize("size, said", [(512, "512 bytes"), (5_763_072, "5.5 MiB"), (3 * 2**30, "3.0 GiB")])
def test_the_replica_size_is_in_binary_units_named_as_such(size, said):
    from delivery_sync.render.status_view import _size_text

    assert _size_text(size) == said


def test_a_stale_verdict_naming_no_stale_client_advises_the_whole_sync_not_an_empty_list():
    """Found by a review's test with status.stale_after_hours of a second: the replica read stale
    while no client was older than the cutoff (times of whole seconds), and the repair line was
    `sync --clients ` with no id, which exits 2, under "stale, 0 active clients not confirmed ... ()"."""
    from delivery_sync.status import Status, judge

    now = "2026-03-10T10:00:00+00:00"
    status = Status(database="r.db", exists=True, checked_at=now, timezone="Asia/Makassar", today="2026-03-10",
                    stale_after_hours=26, clients=5, active_clients=5, rows=50, freshness="stale", last_ok_sync_at=now,
                    last_sync={"status": "ok", "finished_at": now, "started_at": now, "error": None, "rows_rejected": 0},
                    stale_clients=[])
    verdict = judge(status)
    assert verdict.advice == "delivery-sync sync (and check that cron runs it)"
    assert verdict.reason.startswith("stale, last ok sync finished ") and "0 active clients" not in verdict.reason and "()" not in verdict.reason


def test_rollups_left_out_of_date_by_no_aggregate_are_said_so(cli, config, db_path):
    """Analysts read the rollup tables directly: after `sync --no-aggregate` wrote rows they are
    out of date (reports read the raw rows meanwhile), and status says so and what to run."""
    today = date.fromisoformat(status_json(cli)["today"])
    assert cli("sync", "--days-back", "3").code == 0
    assert status_json(cli)["rollups_as_of"] == today.isoformat()
    assert cli("sync", "--days-back", "5", "--no-aggregate").code == 0  # two more days of rows
    assert status_json(cli)["rollups_as_of"] is None
    view = " ".join(cli("status").stdout.split())
    assert ("Rollups out of date: rows changed after the last aggregate (reports read the raw rows meanwhile); "
            "run delivery-sync aggregate before reading them directly") in view
    assert cli("aggregate").code == 0
    assert status_json(cli)["rollups_as_of"] == today.isoformat()
    assert f"Rollups current, as of {today}" in " ".join(cli("status").stdout.split())
