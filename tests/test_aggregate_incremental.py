"""The aggregate that ends a sync recomputes only what the sync wrote (the partial sums and rollup
rows of the pieces, months, weeks and days its rows fall in, and the rolling periods): after any
sequence of syncs that insert, restate and prune rows, over any windows and client subsets and
with any as-of date, the rollups equal a full rebuild's bit for bit, and the raw-row path's.

On both engines: PostgreSQL refreshes with the same steps and SQL in its own words
(delivery_sync/aggregate/postgres.py); tests/test_postgres.py compares its rollups to SQLite's."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import pytest
from conftest import connected, dialect, execute_db, new_pg_database, query_db, replica_copy, setting
from freezegun import freeze_time
from hypothesis import given, settings
from hypothesis import strategies as st
from test_aggregate_exact import raw_path, stored

from delivery_sync.aggregate.current import LAYOUT_KEY, layout_stamp, rollups_as_of
from delivery_sync.aggregate.run import aggregate_locked
from delivery_sync.config import Settings
from delivery_sync.days import Window
from delivery_sync.demo_source import DemoSource
from delivery_sync.metrics import METRICS
from delivery_sync.replica import open_store
from delivery_sync.sync import SyncOptions, run_sync

pytestmark = pytest.mark.both_engines

CLIENTS = 6
DAYS = 120
# Examples of the property test per engine: a PostgreSQL example makes a database for each
# replica and each rebuilt copy, about 3 times a SQLite one's time; fewer keep the suite quick.
EXAMPLES = {"sqlite": 12, "postgresql": 5}


@pytest.fixture(scope="module")
def demo():
    with DemoSource(clients=CLIENTS) as server:
        yield server


@pytest.fixture
def engine_name(request) -> str:
    """The replica engine of the property test, which makes a new replica for every example."""
    return request.param


@contextmanager
def new_replica(engine: str, folder: Path):
    """The `database` of a new, empty replica of `engine` (a PostgreSQL one dropped after)."""
    if engine == "postgresql":
        with new_pg_database() as url:
            yield url
    else:
        yield folder / "replica.db"


def snapshot(database: Path | str) -> dict[str, set[tuple]]:
    with connected(database) as conn:
        return stored(conn)


def full_rebuild(database: Path | str, as_of: date, folder: Path) -> dict[str, set[tuple]]:
    """The rollups a full rebuild of a copy of `database` gives as of `as_of`."""
    with replica_copy(database, folder) as copy:
        result = aggregate_locked(open_store(setting(copy)), as_of)
        assert result.status == "ok" and not result.refreshed
        return snapshot(copy)


edit = st.tuples(
    st.integers(1, CLIENTS),
    st.integers(0, DAYS + 5),  # days back from today; past DAYS: before anything was stored
    st.sampled_from(["restate", "delete", "restore"]),
    st.sampled_from(["grab_sales", "gojek_ads_spend", "total_orders", "grab_new_customers"]),
    st.one_of(st.none(), st.integers(0, 10**6), st.decimals(0, 10**7, places=2).map(str)),
)
step = st.fixed_dictionaries({
    "days_back": st.integers(1, DAYS + 10),
    "incremental": st.booleans(),
    "prune": st.booleans(),
    "clients": st.one_of(st.none(), st.lists(st.integers(1, CLIENTS), min_size=1, max_size=3, unique=True)),
    "edits": st.lists(edit, max_size=8),
    "as_of": st.one_of(st.none(), st.integers(-DAYS - 40, 40)),  # None: the sync's own (today)
    "aggregate": st.sampled_from(["after", "after", "after", "never"]),
})


@pytest.mark.both_engines("engine_name")
def test_incremental_rollups_equal_a_full_rebuild_bit_for_bit(demo, engine_name):
    # The examples run inside the test, so that each engine has its own count of them.
    @settings(max_examples=EXAMPLES[engine_name], deadline=None)
    @given(st.lists(step, min_size=1, max_size=4))
    def syncs_then_aggregates(steps):
        incremental_rollups_equal_a_full_rebuild(demo, engine_name, steps)

    syncs_then_aggregates()


def incremental_rollups_equal_a_full_rebuild(demo, engine: str, steps: list[dict]) -> None:
    demo.faults.overrides.clear()
    demo.faults.deleted_rows.clear()
    today = demo.today()
    with tempfile.TemporaryDirectory() as tmp, new_replica(engine, Path(tmp)) as path:
        folder = Path(tmp)
        config = Settings(database=setting(path), source={"url": demo.url, "min_interval": 0, "batch": "never"})
        first = run_sync(config, SyncOptions(Window(today - timedelta(days=DAYS - 1), today)))
        assert first.status == "ok" and not first.aggregate.refreshed
        current = True  # the rollups match client_stats
        for s in steps:
            for cid, back, kind, column, value in s["edits"]:
                key = (cid, (today - timedelta(days=back)).isoformat())
                if kind == "restate":
                    demo.faults.overrides[key] = {column: value}
                elif kind == "delete":
                    demo.faults.deleted_rows.add(key)
                else:
                    demo.faults.overrides.pop(key, None)
                    demo.faults.deleted_rows.discard(key)
            window = Window(today - timedelta(days=s["days_back"] - 1), today)
            options = SyncOptions(window, client_ids=s["clients"], incremental=s["incremental"], prune=s["prune"],
                                  aggregate=s["as_of"] is None and s["aggregate"] == "after")
            result = run_sync(config, options)
            assert result.status in ("ok", "partial"), result.run
            wrote = (result.run["rows_inserted"] or 0) + (result.run["rows_updated"] or 0) + (result.run["rows_deleted"] or 0)
            if s["aggregate"] == "never":
                current = current and not wrote
                continue
            as_of = today if s["as_of"] is None else today + timedelta(days=s["as_of"])
            if s["as_of"] is not None:  # as run_sync does, with another as-of date
                result.aggregate = aggregate_locked(open_store(setting(path)), as_of, result.changed)
            assert result.aggregate.status == "ok"
            # Refreshed exactly when the rollups were current before the sync.
            assert result.aggregate.refreshed == current
            current = True
            assert snapshot(path) == full_rebuild(path, as_of, folder)
        with connected(path) as conn:
            if current:
                as_of = date.fromisoformat(conn.execute(
                    "SELECT window_end FROM sync_runs WHERE command = 'aggregate' ORDER BY id DESC LIMIT 1").fetchone()[0])
                assert stored(conn) == raw_path(conn, as_of, dialect(path))
                assert_edges_counted(conn)


def assert_edges_counted(conn) -> None:
    """agg_edge_clients holds, for each of its spans, the number of clients with a row in it."""
    edges = conn.execute("SELECT period_start, period_end, clients_with_data FROM agg_edge_clients").fetchall()
    assert edges
    for start, end, count in edges:
        sql = "SELECT COUNT(DISTINCT client_id) FROM client_stats WHERE stat_date BETWEEN ? AND ?"
        assert conn.execute(sql, [start, end]).fetchone()[0] == count, (start, end)


def test_a_sync_that_wrote_too_many_rows_rebuilds_everything(demo, tmp_path, monkeypatch, db_path):
    from delivery_sync.replica import writer

    demo.faults.overrides.clear()
    demo.faults.deleted_rows.clear()
    today = demo.today()
    config = Settings(database=setting(db_path), source={"url": demo.url, "min_interval": 0, "batch": "never"})
    assert run_sync(config, SyncOptions(Window(today - timedelta(days=9), today))).status == "ok"
    monkeypatch.setattr(writer, "MAX_CHANGED_ROWS", 5)
    result = run_sync(config, SyncOptions(Window(today - timedelta(days=29), today)))
    assert result.changed.keys is None and not result.aggregate.refreshed
    monkeypatch.undo()
    demo.faults.overrides[(2, today.isoformat())] = {"grab_orders": 7}
    result = run_sync(config, SyncOptions(Window(today - timedelta(days=2), today)))
    assert result.changed.keys == {(2, today.isoformat())} and result.aggregate.refreshed
    assert not result.changed.deleted  # nothing pruned: the refresh skips looking for emptied sums
    assert snapshot(db_path) == full_rebuild(db_path, today, tmp_path)


@pytest.mark.sqlite_only("the SQLite partial sums' key indexes; PostgreSQL's are made with their tables")
def test_a_refresh_makes_again_the_key_indexes_an_earlier_version_made_without_every_sum(demo, tmp_path, db_path):
    demo.faults.overrides.clear()
    demo.faults.deleted_rows.clear()
    today = demo.today()
    config = Settings(database=setting(db_path), source={"url": demo.url, "min_interval": 0, "batch": "never"})
    assert run_sync(config, SyncOptions(Window(today - timedelta(days=59), today))).status == "ok"
    # As the code before schema version 5 made the pieces' index (the key alone), and as the code
    # before version 7 made the months' (two metrics after the key).
    for name, table, columns in (("agg_client_pieces_piece", "agg_client_pieces", "piece"),
                                 ("agg_client_months_month", "agg_client_months", "month, client_id, days_with_data, total_sales, total_orders")):
        execute_db(db_path, f"DROP INDEX {name}")
        execute_db(db_path, f"CREATE INDEX {name} ON {table}({columns})")
    demo.faults.overrides[(2, today.isoformat())] = {"grab_orders": 7}
    result = run_sync(config, SyncOptions(Window(today - timedelta(days=2), today)))
    assert result.aggregate.refreshed
    assert [r[0] for r in query_db(db_path, "SELECT name FROM pragma_index_info('agg_client_pieces_piece')")] == [
        "piece", "client_id", "days_with_data", *METRICS]
    assert [r[0] for r in query_db(db_path, "SELECT name FROM pragma_index_info('agg_client_months_month')")] == [
        "month", "client_id", "days_with_data", *METRICS]
    assert snapshot(db_path) == full_rebuild(db_path, today, tmp_path)


def test_a_prune_that_empties_a_whole_piece_and_month_of_a_client_removes_their_partial_sums(demo, tmp_path, db_path):
    """The refresh replaces partial sums in place; a (client, piece) or (client, month) left with
    no row at all must lose its old partial sums and its month rollup, not keep them."""
    demo.faults.overrides.clear()
    demo.faults.deleted_rows.clear()
    today = demo.today()
    config = Settings(database=setting(db_path), source={"url": demo.url, "min_interval": 0, "batch": "never"})
    assert run_sync(config, SyncOptions(Window(today - timedelta(days=DAYS - 1), today))).status == "ok"
    # Client 3 loses the whole month before last (every piece of it) and client 4 the whole week before last.
    month = (today.replace(day=1) - timedelta(days=1)).replace(day=1) - timedelta(days=1)
    first = month.replace(day=1)
    gone = {(3, (first + timedelta(days=i)).isoformat()) for i in range((month - first).days + 1)}
    monday = today - timedelta(days=today.weekday() + 14)
    gone |= {(4, (monday + timedelta(days=i)).isoformat()) for i in range(7)}
    demo.faults.deleted_rows.update(gone)
    try:
        result = run_sync(config, SyncOptions(Window(today - timedelta(days=DAYS - 1), today), prune=True))
    finally:
        demo.faults.deleted_rows.clear()
    assert result.status == "ok" and result.run["rows_deleted"] == len(gone)
    assert result.aggregate.refreshed and result.changed.deleted
    assert snapshot(db_path) == full_rebuild(db_path, today, tmp_path)
    assert query_db(db_path, "SELECT COUNT(*) FROM agg_client_months WHERE client_id = 3 AND month = ?", [first.isoformat()[:7]]) == [(0,)]
    assert query_db(db_path, "SELECT COUNT(*) FROM client_aggregates WHERE client_id = 3 AND period = ?", [first.isoformat()[:7]]) == [(0,)]
    with connected(db_path) as conn:
        assert_edges_counted(conn)


def test_a_refresh_sums_again_the_base_windows_holding_a_changed_day(demo, tmp_path, db_path):
    """A refresh a day after the last aggregate takes the base windows of the rolling periods
    (agg_window_pairs) that hold no changed day from the partial sums committed before it (on
    SQLite, read while it refreshes the rest): a day restated inside one must be summed again
    with the refreshed partial sums, and the others must be what a rebuild gives."""
    demo.faults.overrides.clear()
    demo.faults.deleted_rows.clear()
    today = demo.today()
    config = Settings(database=setting(db_path), source={"url": demo.url, "min_interval": 0, "batch": "never"})
    assert run_sync(config, SyncOptions(Window(today - timedelta(days=DAYS - 1), today), aggregate=False)).status == "ok"
    assert aggregate_locked(open_store(setting(db_path)), today - timedelta(days=1)).status == "ok"
    # In the base window of the last 7 days (today-13 .. today-7) and of the last 30 (today-59 .. today-30),
    # as of today and as of the day before, when they were stored.
    restated = [(2, (today - timedelta(days=10)).isoformat()), (5, (today - timedelta(days=40)).isoformat())]
    demo.faults.overrides.update({key: {"grab_sales": "123456.78", "gojek_orders": 9} for key in restated})
    try:
        result = run_sync(config, SyncOptions(Window(today - timedelta(days=59), today), aggregate=False))
    finally:
        demo.faults.overrides.clear()
    assert result.changed.keys == set(restated)
    assert aggregate_locked(open_store(setting(db_path)), today, result.changed).refreshed
    assert snapshot(db_path) == full_rebuild(db_path, today, tmp_path)
    with connected(db_path) as conn:
        assert stored(conn) == raw_path(conn, today, dialect(db_path))


def test_a_refresh_a_day_later_keeps_a_sum_of_nulls_null_in_a_base_window(demo, tmp_path, db_path):
    """A refresh one day after the last aggregate, whose base windows were stored a day earlier:
    one client's GoJek sales are NULL on every day of the last 7 days' base window but the day
    before it, which held a value a day ago. Their sum must be NULL, not 0, and every other sum
    what a rebuild gives."""
    demo.faults.overrides.clear()
    demo.faults.deleted_rows.clear()
    today = demo.today()
    config = Settings(database=setting(db_path), source={"url": demo.url, "min_interval": 0, "batch": "never"})
    base = Window(today - timedelta(days=13), today - timedelta(days=7))  # last_7d's previous window as of today
    left = (base.start - timedelta(days=1)).isoformat()  # the day leaving it
    assert run_sync(config, SyncOptions(Window(today - timedelta(days=DAYS - 1), today), aggregate=False)).status == "ok"
    client = query_db(db_path, "SELECT MIN(client_id) FROM client_stats WHERE stat_date = ? AND gojek_sales IS NOT NULL", [left])[0][0]
    demo.faults.overrides.update({(client, (base.start + timedelta(days=i)).isoformat()): {"gojek_sales": None} for i in range(base.days)})
    try:
        assert run_sync(config, SyncOptions(base, aggregate=False)).run["rows_updated"] == base.days
        assert aggregate_locked(open_store(setting(db_path)), today - timedelta(days=1)).status == "ok"
        demo.faults.overrides[(2, today.isoformat())] = {"grab_orders": 7}
        result = run_sync(config, SyncOptions(Window(today - timedelta(days=2), today), aggregate=False))
        assert result.changed.keys == {(2, today.isoformat())}
        refreshed = aggregate_locked(open_store(setting(db_path)), today, result.changed)
    finally:
        demo.faults.overrides.clear()
    assert refreshed.status == "ok" and refreshed.refreshed
    sums = query_db(db_path, "SELECT base_gojek_sales FROM agg_window_pairs WHERE client_id = ? AND period_start = ? "
                    "AND period_end = ? AND base_start = ?", [client, (today - timedelta(days=6)).isoformat(), today.isoformat(),
                                                            base.start.isoformat()])
    assert sums == [(None,)]
    assert snapshot(db_path) == full_rebuild(db_path, today, tmp_path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread has a priority of its own on Linux only")
def test_a_refresh_whose_reader_cannot_connect_sums_its_windows_itself(demo, tmp_path, db_path, monkeypatch, caplog):
    """The refresh hands the base windows to a reader on a connection of its own; a reader that
    cannot have one (a server out of connections, a pg_hba rule) costs time, not the run."""
    from delivery_sync.errors import DeliverySyncError
    from delivery_sync.replica.store import SqliteStore

    demo.faults.overrides.clear()
    demo.faults.deleted_rows.clear()
    today = demo.today()
    config = Settings(database=setting(db_path), source={"url": demo.url, "min_interval": 0, "batch": "never"})
    assert run_sync(config, SyncOptions(Window(today - timedelta(days=DAYS - 1), today))).status == "ok"

    def refused(self):
        raise DeliverySyncError("too many connections for role \"reader\"")

    store = type(open_store(setting(db_path)))
    assert store is SqliteStore or store.__name__ == "PostgresStore"
    monkeypatch.setattr(store, "open_reader", refused)
    demo.faults.overrides[(4, today.isoformat())] = {"grab_sales": "98765.43"}
    try:
        result = run_sync(config, SyncOptions(Window(today - timedelta(days=2), today)))
    finally:
        demo.faults.overrides.clear()
    assert result.status == "ok" and result.aggregate.refreshed
    warned = [r.getMessage() for r in caplog.records if "its reader failed" in r.getMessage()]
    assert len(warned) == 1 and "too many connections" in warned[0] and "the writer summed" in warned[0]
    monkeypatch.undo()
    assert snapshot(db_path) == full_rebuild(db_path, today, tmp_path)


def test_the_refresh_readers_run_below_the_writer_s_priority(tmp_path):
    import sqlite3

    from delivery_sync import readonly
    from delivery_sync.aggregate.build import READER_NICENESS, sums_meanwhile

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    database = tmp_path / "replica.db"
    with sqlite3.connect(database) as conn:  # the reader opens only what looks like a replica
        conn.execute("CREATE TABLE sync_runs(id INTEGER PRIMARY KEY)")
    conn.close()
    seen = []

    def open_and_note():  # the reader thread opens its connection: note its priority then
        seen.append(niceness())
        return readonly.open_readonly(database)

    before = niceness()
    sums = sums_meanwhile(open_and_note, {Window(date(2026, 1, 1), date(2026, 1, 7)): ("SELECT 1", {}),
                                          Window(date(2026, 1, 8), date(2026, 1, 14)): ("SELECT 2", {})})
    assert [future.result() for future in sums.values()] == [[(1,)], [(2,)]]
    assert seen == [min(before + READER_NICENESS, 19)] * 2
    assert niceness() == before  # the writer's own thread is left as it was


def test_the_rollups_are_current_until_a_sync_may_have_changed_the_rows_they_sum(demo, db_path):
    """`rollups_as_of`, which the reports and the refresh ask: every way the rollups stop being
    current, each on its own, and the runs before a given run when it is asked about them."""
    demo.faults.overrides.clear()
    demo.faults.deleted_rows.clear()
    today = demo.today()
    config = Settings(database=setting(db_path), source={"url": demo.url, "min_interval": 0, "batch": "never"})
    assert run_sync(config, SyncOptions(Window(today - timedelta(days=9), today), aggregate=False)).status == "ok"
    assert rollups_as_of_db(db_path) is None  # never aggregated
    aggregated = aggregate_locked(open_store(setting(db_path)), today - timedelta(days=1))
    assert rollups_as_of_db(db_path) == today - timedelta(days=1)
    # A sync that wrote nothing leaves them current; one that wrote a row does not, except for what came before it.
    assert run_sync(config, SyncOptions(Window(today - timedelta(days=2), today), aggregate=False)).run["rows_inserted"] == 0
    assert rollups_as_of_db(db_path) == today - timedelta(days=1)
    demo.faults.overrides[(2, today.isoformat())] = {"grab_orders": 7}
    try:
        wrote = run_sync(config, SyncOptions(Window(today - timedelta(days=2), today), aggregate=False))
    finally:
        demo.faults.overrides.clear()
    assert wrote.run["rows_updated"] == 1 and rollups_as_of_db(db_path) is None
    with connected(db_path) as conn:
        assert rollups_as_of(conn, wrote.changed.run_id) == today - timedelta(days=1)
    latest = aggregate_locked(open_store(setting(db_path)), today).run["id"]
    assert rollups_as_of_db(db_path) == today
    execute_db(db_path, "UPDATE sync_runs SET status = 'running' WHERE id = ?", [latest])
    assert rollups_as_of_db(db_path) is None  # the latest aggregate has not ended well
    execute_db(db_path, "UPDATE sync_runs SET status = 'ok' WHERE id = ?", [latest])
    execute_db(db_path, "UPDATE agg_parts_run SET run_id = ?", [aggregated.run["id"]])
    assert rollups_as_of_db(db_path) is None  # partial sums another aggregate left
    execute_db(db_path, "UPDATE agg_parts_run SET run_id = ?", [latest])
    assert rollups_as_of_db(db_path) == today
    execute_db(db_path, "INSERT INTO sync_runs(started_at, command, status, error) VALUES ('2026-01-01T00:00:00Z', 'sync', 'failed', 'interrupted')")
    assert rollups_as_of_db(db_path) is None  # an interrupted sync may have written anything
    assert aggregate_locked(open_store(setting(db_path)), today).status == "ok" and rollups_as_of_db(db_path) == today
    # An aggregate of an older delivery-sync after a downgrade: its own ok run and partial sums, but
    # no layout stamp, and the tables it does not know (agg_window_pairs) left as they were.
    execute_db(db_path, "INSERT INTO sync_runs(started_at, command, status, window_end) VALUES ('2026-01-02T00:00:00Z', "
                        "'aggregate', 'ok', ?)", [today.isoformat()])
    older = query_db(db_path, "SELECT MAX(id) FROM sync_runs")[0][0]
    execute_db(db_path, "UPDATE agg_parts_run SET run_id = ?", [older])
    assert rollups_as_of_db(db_path) is None  # not current until this version aggregates again
    execute_db(db_path, "UPDATE meta SET value = ? WHERE key = ?", [layout_stamp(older), LAYOUT_KEY])
    assert rollups_as_of_db(db_path) == today  # (what this version's aggregate would have stamped)
    execute_db(db_path, "DROP TABLE agg_window_pairs")
    assert rollups_as_of_db(db_path) is None  # rollups of a version without every table


def rollups_as_of_db(db_path) -> date | None:
    with connected(db_path) as conn:
        return rollups_as_of(conn)


def test_across_29_february_both_base_windows_of_a_year_are_stored_apart(db_path):
    """As of 2028-06-01 the last 365 days (2027-06-03..2028-06-01) hold 29 February: their previous
    window (365 days before) and their year-earlier one (the same dates a year back) both start on
    2026-06-03 but end on 2027-06-02 and 2027-06-01. Both are stored, the aggregate ends ok (a key
    without the base's end refused the second), and every rollup is the raw rows' bit for bit."""
    as_of = date(2028, 6, 1)
    with freeze_time("2028-06-01 04:00:00", tick=True), DemoSource(clients=3) as demo:
        config = Settings(database=setting(db_path), source={"url": demo.url, "min_interval": 0, "batch": "never"})
        assert run_sync(config, SyncOptions(Window(date(2026, 5, 1), as_of), aggregate=False)).status == "ok"
        assert aggregate_locked(open_store(setting(db_path)), as_of).status == "ok"
    bases = query_db(db_path, "SELECT DISTINCT base_start, base_end FROM agg_window_pairs WHERE period_start = ?", ["2027-06-03"])
    assert sorted(tuple(map(str, row)) for row in bases) == [("2026-06-03", "2027-06-01"), ("2026-06-03", "2027-06-02")]
    with connected(db_path) as conn:
        assert stored(conn) == raw_path(conn, as_of, dialect(db_path))
