"""The integrity check before a writing run: the whole file when the last whole check that found
it intact is 12 hours old (or there is none), the small tables and every table's first page
otherwise; a damaged replica is refused with nothing written either way."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from conftest import DEMO_CLIENTS, execute_db, overwrite_page, query_db
from freezegun import freeze_time

KEY = "integrity_checked_at"
DAY = datetime(2026, 3, 10, 1, 0, tzinfo=UTC)


def checked_at(db_path) -> str | None:
    rows = query_db(db_path, "SELECT value FROM meta WHERE key = ?", [KEY])
    return rows[0][0] if rows else None


def damage_a_middle_leaf(path, name: str = "client_stats") -> None:
    """Overwrite a leaf page of client_stats (or of its index `name`) that neither its first row nor
    its last lives on: a run that reads only the first page of each table, or writes only the
    newest days, never meets it."""
    leaves = [n for (n,) in query_db(path, "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY path", (name,))]
    assert len(leaves) >= 5, leaves
    overwrite_page(path, leaves[len(leaves) // 2])


@pytest.fixture
def synced(cli, config, db_path):
    """A replica of 60 days, its whole file checked by that first sync at DAY."""
    with freeze_time(DAY):
        assert cli("sync", "--days-back", "60").code == 0
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats") == [(DEMO_CLIENTS * 60,)]
    return db_path


def test_the_first_run_checks_the_whole_file_and_records_when(synced):
    assert checked_at(synced) == "2026-03-10T01:00:00+00:00"


def test_within_12_hours_the_whole_file_is_not_read_again(cli, synced):
    with freeze_time(DAY + timedelta(hours=11, minutes=59)):
        assert cli("aggregate").code == 0
        assert cli("sync", "--days-back", "2").code == 0
    assert checked_at(synced) == "2026-03-10T01:00:00+00:00"


def test_after_12_hours_the_next_run_checks_the_whole_file_again(cli, synced):
    with freeze_time(DAY + timedelta(hours=12, seconds=1)):
        assert cli("aggregate").code == 0
    assert checked_at(synced) == "2026-03-10T13:00:01+00:00"


@pytest.mark.parametrize("command", [["sync", "--days-back", "2"], ["aggregate"], ["collect"]])
def test_damage_deep_in_client_stats_is_refused_by_the_whole_check(cli, synced, command):
    damage_a_middle_leaf(synced)
    before = hashlib.sha256(synced.read_bytes()).hexdigest()
    with freeze_time(DAY + timedelta(hours=13)):
        result = cli(*command)
    assert result.code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: replica {synced} is corrupt (")
    assert "nothing was written" in lines[0]
    assert hashlib.sha256(synced.read_bytes()).hexdigest() == before
    assert checked_at(synced) == "2026-03-10T01:00:00+00:00"  # a failed check is not recorded as one


@pytest.mark.parametrize("recorded", ["2026-03-11T01:00:00+00:00", "not a time", "2026-03-10T01:00:00"])
def test_a_check_time_in_the_future_or_unreadable_is_not_trusted(cli, synced, recorded):
    # A clock set back (or a hand-edited meta) must not put off the whole check for good.
    conn = sqlite3.connect(synced)
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = ?", [recorded, KEY])
    conn.close()
    damage_a_middle_leaf(synced)
    with freeze_time(DAY + timedelta(hours=1)):
        result = cli("aggregate")
    assert result.code == 2 and "is corrupt" in result.stderr


def test_damage_to_a_small_table_is_refused_between_whole_checks(cli, synced):
    overwrite_page(synced, table="sync_failures")
    before = hashlib.sha256(synced.read_bytes()).hexdigest()
    with freeze_time(DAY + timedelta(hours=1)):
        result = cli("sync", "--days-back", "2")
    assert result.code == 2 and f"error: replica {synced} is corrupt (" in result.stderr
    assert "nothing was written" in result.stderr
    assert hashlib.sha256(synced.read_bytes()).hexdigest() == before


@pytest.mark.parametrize("command, code", [(["aggregate"], 1), (["sync", "--days-back", "60"], 2)])
def test_between_whole_checks_a_run_that_meets_a_damaged_page_fails_on_one_line(cli, synced, command, code):
    # aggregate's full rebuild reads every row of client_stats; the sync compares every stored row of
    # its window before it writes: both meet the page, and the run fails, naming the damaged file.
    damage_a_middle_leaf(synced)
    with freeze_time(DAY + timedelta(hours=1)):
        result = cli(*command)
    assert result.code == code, result.stderr
    assert f"replica {synced} is corrupt (database disk image is malformed)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# `extra` is in no index: the statement reads the table. The report, whose rollups are not current,
# sums every raw row of its window from the stat_date index (which holds every metric), whose
# middle leaf holds days of that window (2026-01-10..2026-03-10 synced).
@pytest.mark.parametrize(("args", "damaged"), [(("query", "sql", "SELECT COUNT(*), SUM(grab_sales), COUNT(extra) FROM client_stats"), "client_stats"),
                                               (("query", "top", "--from", "2026-01-20", "--to", "2026-02-25"), "idx_client_stats_stat_date")])
def test_a_report_that_meets_a_damaged_page_fails_on_one_line(cli, synced, args, damaged):
    # The SQL is fine and the window valid: the file is not. Said as a writing run says it, exit 2.
    execute_db(synced, "INSERT INTO sync_runs(command, status, started_at) VALUES ('sync', 'running', '2026-03-10T00:00:00+00:00')")
    damage_a_middle_leaf(synced, damaged)
    result = cli(*args)
    assert result.code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: replica {synced} is corrupt or unreadable (database disk image is malformed) "
        "(restore it from a backup, or move it away and run a full sync)"]


def test_a_file_that_is_no_database_is_a_damaged_replica_to_status_and_reports(cli, tmp_path):
    path = tmp_path / "replica.db"
    path.write_text("id,total_sales\n1,100\n" * 500)  # e.g. a CSV export saved over it
    said = f"replica {path} is corrupt or unreadable (file is not a database)"
    view = cli("--db", str(path), "status")
    assert view.code == 0 and view.stdout.splitlines()[0] == f"Replica can be trusted: NO - {said}"
    check = cli("--db", str(path), "status", "--check")
    assert check.code == 1 and check.stdout.startswith(f"status not ok: {said}")
    assert json.loads(cli("--db", str(path), "status", "--json").stdout)["unreadable"] == said
    report = cli("--db", str(path), "query", "top")
    assert report.code == 2 and report.stderr.startswith(f"error: {said}")


def test_a_table_an_analyst_added_with_a_quote_in_its_name_is_checked_like_any_other(cli, synced):
    conn = sqlite3.connect(synced)
    with conn:
        conn.execute('CREATE TABLE "my""notes" (note TEXT)')
        conn.execute('INSERT INTO "my""notes" VALUES (\'top 10 for the board\')')
    conn.close()
    with freeze_time(DAY + timedelta(hours=1)):  # between whole checks: the light check reads its first page
        assert cli("aggregate").code == 0
        assert cli("status", "--check").code == 0
