"""A large full rebuild sums a share of the clients in a helper process (aggregate/helper.py,
build.py's `_parts_in_two`): its partial sums and rollups equal the writer's alone bit for bit, and any
failure of the helper costs time, not the run. Small shares and a zero threshold bring the helper
in on a small replica."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
from datetime import date, timedelta
from pathlib import Path

import pytest
import test_aggregate_incremental as incremental
from conftest import connected, replica_copy
from test_aggregate_exact import exact, raw_path, stored

from delivery_sync.aggregate import build, helper, parts
from delivery_sync.aggregate.pieces import calendar
from delivery_sync.aggregate.run import aggregate_locked
from delivery_sync.config import Settings
from delivery_sync.days import Window
from delivery_sync.demo_source import DemoSource
from delivery_sync.replica import open_store
from delivery_sync.sync import SyncOptions, run_sync

CLIENTS = 40
DAYS = 120
PARTS = ("agg_client_pieces", "agg_client_months", "agg_days")


@pytest.fixture(scope="module")
def synced(tmp_path_factory) -> tuple[Path, date]:
    """A replica of CLIENTS demo clients over DAYS days, not yet aggregated."""
    path = tmp_path_factory.mktemp("helper") / "replica.db"
    with DemoSource(clients=CLIENTS) as demo:
        today = demo.today()
        settings = Settings(database=path, source={"url": demo.url, "min_interval": 0})
        result = run_sync(settings, SyncOptions(Window(today - timedelta(days=DAYS - 1), today), aggregate=False))
    assert result.status == "ok"
    return path, today


def rebuilt(path: Path, as_of: date) -> dict[str, set[tuple]]:
    """A full rebuild of `path` as of `as_of`: its rollups and its partial sums, every value typed."""
    result = aggregate_locked(open_store(path), as_of)
    assert result.status == "ok" and not result.refreshed, result.run["error"]
    with connected(path) as conn:
        got = stored(conn)
        for table in PARTS:
            got[table] = {tuple(exact(v) for v in row) for row in conn.execute(f"SELECT * FROM {table}")}
    return got


@pytest.fixture(scope="module")
def alone(synced, tmp_path_factory) -> dict[str, set[tuple]]:
    """The rebuild of the writer alone (the replica is far below HELPER_MIN_ROWS), checked against the raw rows."""
    path, today = synced
    assert CLIENTS * DAYS < helper.HELPER_MIN_ROWS
    with replica_copy(path, tmp_path_factory.mktemp("alone")) as copy:
        got = rebuilt(copy, today)
        with connected(copy) as conn:
            expected = raw_path(conn, today)
    for table, rows in expected.items():
        assert got[table] == rows, table
    assert len(got["agg_days"]) == DAYS and len({row[0] for row in got["agg_client_months"]}) == CLIENTS
    return got


class Shares:
    """Who took which share: the writer waits before each of its shares until the helper has taken
    one, or `kill_at` (so both sum some, however fast this machine starts a process); `kill_at`
    kills the helper process as it takes that many shares. `summed`: how many times the writer
    summed partial sums of a set of clients (one share, or every client again when the rows did
    not add up). `processes`: every helper process started."""

    def __init__(self, monkeypatch, wait: bool = True, kill_at: int | None = None):
        self.taken: dict[bool, list[tuple[int, int]]] = {False: [], True: []}
        self.helper_took = threading.Event()
        self.summed = 0
        self.processes: list = []
        take, fill, fill_parts, start = helper.Shares.take, build.fill_share, parts.fill_parts, helper.HelperRun.start

        def recorded(shares, helper: bool):
            share = take(shares, helper)
            if share is not None:
                self.taken[helper].append(share)
                if helper and len(self.taken[True]) == kill_at:
                    self.processes[-1].kill()
                if helper and len(self.taken[True]) >= (kill_at or 1):
                    self.helper_took.set()
            return share

        def started(run, task):
            self.processes.append(start(run, task))
            return self.processes[-1]

        def writer_fill(db, share):
            if wait:
                assert self.helper_took.wait(30), "the helper process took no share"
            fill(db, share)

        def counted(db, *args, **kwargs):
            if not isinstance(db, list):  # not parts.layout()'s dry run, which only lists the SQL
                self.summed += 1
            fill_parts(db, *args, **kwargs)

        for module in (build, parts):  # a share (parts.fill_share), or every client again (the rebuild)
            monkeypatch.setattr(module, "fill_parts", counted)
        monkeypatch.setattr(helper.Shares, "take", recorded)
        monkeypatch.setattr(helper.HelperRun, "start", started)
        monkeypatch.setattr(build, "fill_share", writer_fill)
        monkeypatch.setattr(helper, "HELPER_MIN_ROWS", 0)
        monkeypatch.setattr(helper, "CLIENTS_A_SHARE", 4)


@pytest.fixture
def temp_folder(tmp_path, monkeypatch) -> Path:
    """The temporary folder the rebuild makes its helper's folder in, empty."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(folder))
    return folder


def test_the_helper_sums_a_share_of_the_clients_and_the_rebuild_is_the_writers_alone_bit_for_bit(synced, alone, tmp_path, temp_folder,
                                                                                                   monkeypatch, caplog):
    path, today = synced
    shares = Shares(monkeypatch)
    with replica_copy(path, tmp_path) as copy, caplog.at_level(logging.WARNING):
        assert rebuilt(copy, today) == alone
    writer, helped = shares.taken[False], shares.taken[True]
    assert writer and helped  # both summed
    assert sorted(writer + helped) == [(first, first + 3) for first in range(1, CLIENTS + 1, 4)]
    assert max(writer) < min(helped)  # the writer from the low ids, the helper from the high
    assert shares.summed == len(writer)  # the helper's rows used as they came: nothing summed again
    assert not caplog.records
    assert list(temp_folder.iterdir()) == []  # its file and folder removed


@pytest.mark.parametrize("failure", ["ends at once", "cannot import", "killed after a share", "answers an HTML page", "answers an error",
                                     "another version", "its file gone", "no temporary folder"])
def test_a_failed_helper_costs_time_not_the_run(synced, alone, tmp_path, temp_folder, monkeypatch, caplog, failure):
    path, today = synced
    helps = failure in ("killed after a share", "its file gone")
    shares = Shares(monkeypatch, wait=helps, kill_at=2 if failure == "killed after a share" else None)
    if failure == "ends at once":
        monkeypatch.setattr(helper, "HELPER_CODE", "import sys; sys.exit(3)")
    elif failure == "cannot import":
        monkeypatch.setattr(helper, "HELPER_CODE", "import delivery_sync_of_no_such_name")
    elif failure == "answers an HTML page":
        monkeypatch.setattr(helper, "HELPER_CODE", "print('<html><body>Error</body></html>')")
    elif failure == "answers an error":  # as it would on a full disk
        monkeypatch.setattr(helper, "HELPER_CODE", "print('{\"error\": \"database or disk is full\"}')")
    elif failure == "another version":  # delivery-sync upgraded in place while the writer ran
        monkeypatch.setattr(helper, "layout", lambda: "the partial sums of an older version")
    elif failure == "its file gone":
        copy_from_helper = helper.copy_from_helper

        def removed_first(db, path, copies):
            path.unlink()
            return copy_from_helper(db, path, copies)

        monkeypatch.setattr(build, "copy_from_helper", removed_first)
    elif failure == "no temporary folder":
        (tmp_path / "not-a-folder").write_text("")
        monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "not-a-folder"))
    with replica_copy(path, tmp_path) as copy, caplog.at_level(logging.WARNING):
        assert rebuilt(copy, today) == alone
    [warning] = [r.getMessage() for r in caplog.records]
    if failure == "no temporary folder":
        assert warning.startswith("aggregate: no temporary folder for its helper (") and warning.endswith("); summing on one core")
        assert shares.taken[True] == []
    elif failure == "its file gone":
        assert warning == "aggregate: its helper's file could not be read (no such table: agg_helper.agg_client_pieces); the writer summed it itself"
        assert shares.taken[True]
        assert list(temp_folder.iterdir()) == []
    else:
        assert warning.startswith("aggregate: its helper process failed (")
        assert warning.endswith("); the writer summed its share itself")
        assert len(shares.taken[True]) == (2 if failure == "killed after a share" else 0)
        assert ("database or disk is full" in warning) == (failure == "answers an error")
        assert ("(it ended with status 3)" in warning) == (failure == "ends at once")
        assert ("(it ended with status 1: ModuleNotFoundError: No module named 'delivery_sync_of_no_such_name')" in warning) == (
            failure == "cannot import")
        assert ("another delivery-sync version" in warning) == (failure == "another version")
        assert list(temp_folder.iterdir()) == []
    assert shares.summed == CLIENTS // 4  # every share once, by the writer: none twice, no second pass
    assert all(process._process.poll() is not None for process in shares.processes)  # none left running


def helper_process(task: dict) -> subprocess.Popen:
    """The helper process as a rebuild starts it, given its task, its stderr in its folder."""
    package_root = str(Path(helper.__file__).resolve().parents[2])
    with open(Path(task["scratch"]).parent / "helper-0.err", "w") as stderr:
        process = subprocess.Popen([sys.executable, "-I", "-c", helper.HELPER_CODE, package_root],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True)
    process.stdin.write(json.dumps(task) + "\n")
    process.stdin.flush()
    return process


@pytest.mark.parametrize("handed", [True, False])
def test_the_helper_leaves_its_file_to_the_writer_and_removes_it_when_the_writer_is_gone(synced, alone, tmp_path, handed):
    path, today = synced
    folder = tmp_path / "helper"
    folder.mkdir()
    pieces = calendar(today - timedelta(days=DAYS - 1), today)
    months = [[month] for month in dict.fromkeys(row[3] for row in pieces)]
    process = helper_process({"database": str(path), "scratch": str(folder / "parts.db"), "layout": parts.layout(),
                              "calendar": pieces, "months": months})
    days = {tuple(row) for row in json.loads(process.stdout.readline())["days"]}
    assert len(days) == DAYS and {tuple(v for _, v in row) for row in alone["agg_days"]} == days
    process.stdin.write("3 6\n")
    process.stdin.flush()
    assert json.loads(process.stdout.readline()) == {"ok": True}
    if handed:
        process.stdin.write("end\n")
    process.stdin.close()
    assert process.wait(30) == 0
    if handed:
        conn = sqlite3.connect(folder / "parts.db")
        for table in ("agg_client_pieces", "agg_client_months"):
            got = {tuple(exact(v) for v in row) for row in conn.execute(f"SELECT * FROM {table}")}
            assert got == {row for row in alone[table] if 3 <= row[0][1] <= 6}, table
            assert {row[0][1] for row in got} == {3, 4, 5, 6}
        conn.close()
    else:  # a writer killed before it read the file: nothing is left behind
        assert not folder.exists()


@pytest.fixture(scope="module")
def demo():
    with DemoSource(clients=incremental.CLIENTS) as server:
        yield server


STEPS = [
    {"days_back": 10, "incremental": False, "prune": True, "clients": None, "as_of": None, "aggregate": "after",
     "edits": [(2, 1, "restate", "grab_sales", "1234.56"), (3, 4, "delete", "total_orders", None), (5, 0, "restate", "gojek_ads_spend", 77)]},
    {"days_back": 3, "incremental": True, "prune": False, "clients": [1, 4], "as_of": None, "aggregate": "after",
     "edits": [(4, 2, "restate", "grab_new_customers", 9), (1, 0, "restate", "total_orders", None)]},
    {"days_back": 40, "incremental": False, "prune": True, "clients": None, "as_of": -20, "aggregate": "after",
     "edits": [(3, 4, "restore", "total_orders", None), (6, 30, "delete", "grab_sales", None)]},
]


@pytest.mark.parametrize("outcome", ["sums", "fails"])
def test_a_refresh_whose_helper_sums_the_base_windows_equals_a_full_rebuild_bit_for_bit(demo, monkeypatch, caplog, outcome):
    """Every refresh of these syncs hands its base windows to a helper process (the threshold at
    0): the rollups equal a full rebuild's, and the raw rows' (incremental_rollups_equal_a_full_rebuild)."""
    attached, sums_in_helper = [], build.sums_in_helper

    def counted(run, database, sums):
        futures = sums_in_helper(run, database, sums)
        attached.append(len(sums))
        return futures

    monkeypatch.setattr(helper, "HELPER_MIN_ROWS", 0)
    monkeypatch.setattr(build, "sums_in_helper", counted)
    if outcome == "fails":
        monkeypatch.setattr(helper, "HELPER_CODE", "import sys; sys.exit(3)")
    with caplog.at_level(logging.WARNING):
        incremental.incremental_rollups_equal_a_full_rebuild(demo, "sqlite", STEPS)
    assert len(attached) == len(STEPS) and all(attached)  # each sync's refresh handed the helper its base windows
    warned = [r.getMessage() for r in caplog.records if "its reader failed" in r.getMessage()]
    if outcome == "sums":
        assert warned == []
    else:
        assert len(warned) == len(STEPS) and all("the writer summed" in w for w in warned)


def test_a_writer_that_fails_ends_its_helper_and_removes_its_folder(synced, tmp_path, temp_folder, monkeypatch, caplog):
    path, today = synced
    shares = Shares(monkeypatch)
    fill = build.fill_share  # Shares' own: it waits until the helper took a share

    def full(db, share):
        fill(db, share)
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(build, "fill_share", full)
    with replica_copy(path, tmp_path) as copy, caplog.at_level(logging.WARNING):
        result = aggregate_locked(open_store(copy), today)
    assert result.status == "failed" and "disk is full" in result.run["error"]
    assert shares.taken[True] and shares.processes
    assert all(process._process.poll() is not None for process in shares.processes)  # ended with the writer
    assert not [r for r in caplog.records if "helper" in r.getMessage()]  # its end is no helper failure
    assert list(temp_folder.iterdir()) == []


def test_the_next_rebuild_removes_the_folder_a_killed_writer_left_and_nothing_else(synced, alone, tmp_path, temp_folder, monkeypatch):
    path, today = synced
    ended = subprocess.Popen(["true"])
    ended.wait()
    stale = temp_folder / f"delivery-sync-aggregate-{ended.pid}-k1ll3d"
    stale.mkdir()
    (stale / "parts.db").write_bytes(b"rows of a killed run")
    running = temp_folder / f"delivery-sync-aggregate-{os.getpid()}-running"
    running.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("not the tool's")
    link = temp_folder / f"delivery-sync-aggregate-{ended.pid}-link"
    link.symlink_to(elsewhere)
    Shares(monkeypatch)
    with replica_copy(path, tmp_path) as copy:
        assert rebuilt(copy, today) == alone
    assert not stale.exists()
    assert running.is_dir()  # its writer runs
    assert link.is_symlink() and (elsewhere / "keep").read_text() == "not the tool's"  # never followed
    assert sorted(p.name for p in temp_folder.iterdir()) == sorted([running.name, link.name])
