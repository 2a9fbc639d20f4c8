"""PostgreSQL as the replica, against a real server (see `pg_url` in conftest.py): the same
commands give the same values as SQLite, with the same guarantees (whole clients, unchanged rows
not rewritten, one writer, readers never blocked, query sql read-only, no password printed)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import DEMO_CLIENTS, SCRIPT, clean_env, client_by_client_sync, kill_when, query_db, rows_of, unstamped, write_config
from freezegun import freeze_time

from delivery_sync.demo_source import DemoSource

NOW = "2026-11-23T10:00:00Z"  # Bali 18:00 on 2026-11-23


def configure(tmp_path: Path, demo, database: str, name: str, **sections) -> Path:
    return write_config(tmp_path / f"{name}.toml", demo.url, database, **sections)


def run(cli, config: Path, *args: str):
    with freeze_time(NOW, tick=True):
        return cli("--config", str(config), *args)


REPORTS = [
    ("query", "top", "--format", "json"),
    ("query", "top", "--days", "7", "--by", "gojek_orders", "--limit", "50", "--format", "json"),
    ("query", "top", "--from", "2026-08-13", "--to", "2026-11-20", "--format", "json"),
    ("query", "client", "5", "--format", "json"),
    ("query", "client", "5", "--daily", "--days", "10", "--format", "json"),
    ("query", "client", "7", "--from", "2026-09-03", "--to", "2026-10-18", "--format", "json"),
    ("query", "totals", "--format", "json"),
    ("query", "totals", "--days", "90", "--format", "json"),
    ("query", "totals", "--by", "day", "--days", "12", "--format", "json"),
    ("query", "totals", "--by", "week", "--from", "2026-09-10", "--to", "2026-11-19", "--format", "json"),
    ("query", "totals", "--by", "month", "--days", "120", "--format", "json"),
    ("query", "top", "--by", "ads_roas", "--asc", "--min-orders", "100", "--format", "json"),
    ("query", "top", "--compare", "previous", "--format", "json"),
    ("query", "client", "5", "--compare", "year", "--format", "json"),
    ("query", "totals", "--compare", "previous", "--days", "14", "--format", "json"),
    ("query", "totals", "--by", "platform", "--format", "json"),
    ("query", "totals", "--by", "week", "--mark-partial", "--days", "40", "--format", "json"),
    ("query", "movers", "--format", "json"),
    ("query", "movers", "--by", "avg_order_value", "--compare", "previous", "--days", "7", "--rank", "change", "--format", "json"),
    # Stored periods, their clients chosen in SQL from agg_window_pairs: by a count, a ratio, a floor, few kept.
    ("query", "movers", "--by", "total_orders", "--days", "90", "--limit", "3", "--min-base", "300", "--format", "json"),
    ("query", "movers", "--by", "ads_roas", "--days", "7", "--limit", "2", "--active-only", "--format", "json"),
    ("query", "movers", "--by", "gojek_sales", "--days", "30", "--limit", "4", "--rank", "change", "--format", "json"),
    ("query", "sql", "SELECT * FROM agg_window_pairs ORDER BY period_start, period_end, base_start, base_end, client_id", "--format", "json"),
    ("query", "sql", "SELECT client_id, stat_date, grab_sales, total_orders, extra FROM client_stats ORDER BY client_id, stat_date",
     "--format", "json"),
    ("query", "sql", "SELECT * FROM client_aggregates ORDER BY client_id, period", "--format", "json"),
    ("query", "sql", "SELECT * FROM overall_aggregates ORDER BY period", "--format", "json"),
    ("query", "sql", "SELECT * FROM overall_weekly ORDER BY period", "--format", "json"),
    ("query", "sql", "SELECT * FROM overall_daily ORDER BY period", "--format", "json"),
    # The partial sums the reports read any window from, and the windows that read them.
    ("query", "sql", "SELECT * FROM agg_client_pieces ORDER BY client_id, piece", "--format", "json"),
    ("query", "sql", "SELECT * FROM agg_client_months ORDER BY client_id, month", "--format", "json"),
    ("query", "sql", "SELECT * FROM agg_days ORDER BY day", "--format", "json"),
    ("query", "sql", "SELECT * FROM agg_edge_clients ORDER BY period_start, period_end", "--format", "json"),
    ("query", "totals", "--by", "month", "--from", "2026-08-13", "--to", "2026-11-20", "--format", "json"),
    ("query", "totals", "--by", "week", "--days", "30", "--format", "json"),
    ("query", "totals", "--from", "2026-08-20", "--to", "2026-10-09", "--format", "json"),
    ("query", "top", "--by", "ads_roas", "--from", "2026-08-20", "--to", "2026-10-09", "--limit", "20", "--format", "json"),
    ("query", "movers", "--by", "gojek_sales", "--from", "2026-10-01", "--to", "2026-11-12", "--format", "json"),
    # Both windows summed in one statement, the raw days around a cut inside a week read once.
    ("query", "movers", "--by", "avg_order_value", "--from", "2026-10-08", "--to", "2026-11-12", "--limit", "20", "--format", "json"),
]


def without_times(rows: list[dict]) -> list[dict]:
    """Rows without the columns that hold when they were written."""
    return [{k: v for k, v in row.items() if k not in ("computed_at", "changed_at")} for row in rows]


def test_every_report_gives_the_same_values_on_both_engines(cli, demo, tmp_path, pg_url):
    sqlite_config = configure(tmp_path, demo, str(tmp_path / "replica.db"), "sqlite")
    pg_config = configure(tmp_path, demo, pg_url, "pg")
    for config in (sqlite_config, pg_config):
        result = run(cli, config, "sync", "--days-back", "120")
        assert result.code == 0, result.stderr
    # Restated history and a pruned day, written the same way on both.
    demo.faults.overrides[(5, "2026-11-20")] = {"grab_sales": "123456.78", "gojek_orders": 3, "grab_ads_spend": None}
    demo.faults.deleted_rows = {(7, "2026-11-18")}
    for config in (sqlite_config, pg_config):
        result = run(cli, config, "sync", "--days-back", "10", "--prune")
        assert result.code == 0, result.stderr
        assert "1 updated" in result.stderr
    compared = 0
    for args in [*REPORTS, ("query", "changes", "--format", "json")]:
        sqlite_out, pg_out = run(cli, sqlite_config, *args), run(cli, pg_config, *args)
        assert sqlite_out.code == pg_out.code == 0, (args, sqlite_out.stderr, pg_out.stderr)
        expected = without_times(json.loads(sqlite_out.stdout))
        assert expected, args
        assert without_times(json.loads(pg_out.stdout)) == expected, args
        compared += len(expected)
    assert compared > 1000
    for config in (sqlite_config, pg_config):  # a filter that leaves no one is named: the window holds rows
        empty = run(cli, config, "query", "top", "--days", "7", "--min-orders", "100000000", "--format", "csv")
        assert empty.code == 0 and empty.stdout.splitlines()[0].startswith("client_id,name,") and len(empty.stdout.splitlines()) == 1
        table = run(cli, config, "query", "top", "--days", "7", "--min-orders", "100000000")
        assert "no client with at least 100,000,000 orders in this window" in " ".join(table.stdout.split())
    # PostgreSQL read those windows from its partial sums, as SQLite does, not from raw rows.
    for config in (sqlite_config, pg_config):
        logged = run(cli, config, "-v", "query", "top", "--from", "2026-08-13", "--to", "2026-11-20").stderr
        assert "reading partial sums for 2026-08-13..2026-11-20" in logged
        logged = run(cli, config, "-v", "query", "movers", "--days", "7").stderr
        assert "ranking movers of 2026-11-" in logged and "from their stored sums" in logged
    changes = json.loads(run(cli, pg_config, "query", "changes", "--format", "json").stdout)
    restated = {(c["client_id"], c["stat_date"], c["column"], c["new_value"]) for c in changes if c["column"] != "*"}
    assert (5, "2026-11-20", "grab_sales", 123456.78) in restated
    assert restated <= {(5, "2026-11-20", "grab_sales", 123456.78), (5, "2026-11-20", "gojek_orders", 3),
                        (5, "2026-11-20", "grab_ads_spend", None)}
    assert [(c["client_id"], c["stat_date"], c["new_value"]) for c in changes if c["column"] == "*"] == [(7, "2026-11-18", None)]


def test_status_gives_the_same_facts_on_both_engines(cli, demo, tmp_path, pg_url):
    demo.faults.fail_clients[3] = 500
    facts = []
    for name, database in (("sqlite", str(tmp_path / "replica.db")), ("pg", pg_url)):
        config = configure(tmp_path, demo, database, name, source={"batch": "never", "max_retries": 0})  # fail at once
        assert run(cli, config, "sync", "--days-back", "20").code == 1  # client 3 failed
        result = run(cli, config, "status", "--json", "--history", "3")
        assert result.code == 0, result.stderr
        status = json.loads(result.stdout)
        keep = ("clients", "active_clients", "rows", "date_min", "date_max", "freshness", "failed_clients", "lagging_clients",
                "missing_days", "stale_clients", "failures")
        facts.append({**{k: status[k] for k in keep}, "history": [(r["command"], r["status"], r["rows_inserted"]) for r in status["history"]]})
    assert facts[0] == facts[1]
    assert facts[1]["failed_clients"] == [3] and facts[1]["rows"] == 11 * 20
    assert facts[1]["history"] == [("aggregate", "ok", facts[1]["history"][0][2]), ("sync", "partial", 220)]


def test_an_unchanged_resync_rewrites_nothing(cli, demo, tmp_path, engine):
    config = configure(tmp_path, demo, engine, "replica")
    assert run(cli, config, "sync", "--days-back", "15").code == 0
    before = rows_of(engine, "SELECT client_id, stat_date, updated_at, synced_at FROM client_stats ORDER BY client_id, stat_date")
    result = run(cli, config, "sync", "--days-back", "15")
    assert result.code == 0
    assert "0 inserted, 0 updated, 180 unchanged" in result.stderr
    assert rows_of(engine, "SELECT client_id, stat_date, updated_at, synced_at FROM client_stats ORDER BY client_id, stat_date") == before
    assert rows_of(engine, "SELECT COUNT(*) FROM stat_changes") == [(0,)]


def test_a_change_and_its_log_commit_together(cli, demo, tmp_path, engine):
    config = configure(tmp_path, demo, engine, "replica")
    assert run(cli, config, "sync", "--days-back", "5").code == 0
    demo.faults.overrides[(2, "2026-11-22")] = {"grab_orders": 4242}
    assert run(cli, config, "sync", "--days-back", "5").code == 0
    (run_id,) = rows_of(engine, "SELECT MAX(id) FROM sync_runs WHERE command = 'sync'")[0]
    logged = rows_of(engine, 'SELECT run_id, client_id, stat_date, "column", new_value FROM stat_changes')
    assert logged == [(run_id, 2, "2026-11-22", "grab_orders", 4242)]
    (updated_at,) = rows_of(engine, "SELECT updated_at FROM client_stats WHERE client_id = 2 AND stat_date = '2026-11-22'")[0]
    assert rows_of(engine, "SELECT changed_at FROM stat_changes") == [(updated_at,)]


def test_a_second_writer_exits_75_naming_the_holder_and_readers_go_on(cli, demo, tmp_path, pg_url):
    from delivery_sync import postgres
    from delivery_sync.config import PostgresURL

    config = configure(tmp_path, demo, pg_url, "pg")
    assert run(cli, config, "sync", "--days-back", "3").code == 0
    with freeze_time(NOW), postgres.advisory_lock(PostgresURL(pg_url), "sync"):
        second = run(cli, config, "sync", "--days-back", "3")
        assert second.code == 75
        assert f"another run holds the lock on {pg_url}: pid {os.getpid()} running 'sync' since 2026-11-23T10:00" in second.stderr
        assert run(cli, config, "aggregate").code == 75
        status = run(cli, config, "status", "--json")
        assert status.code == 0 and json.loads(status.stdout)["running"][0]["pid"] == os.getpid()
        assert run(cli, config, "query", "top", "--format", "json").code == 0
    assert run(cli, config, "sync", "--days-back", "3").code == 0  # released with its connection


def test_a_cursor_without_row_factory_gives_plain_tuples_as_sqlite_does(cli, demo, tmp_path, pg_url):
    from delivery_sync.config import PostgresURL
    from delivery_sync.readonly import open_reader

    assert run(cli, configure(tmp_path, demo, pg_url, "pg"), "sync", "--days-back", "2").code == 0
    conn = open_reader(PostgresURL(pg_url))
    try:
        statement = ("SELECT s.client_id, s.stat_date, SUM(s.total_orders) AS orders, SUM(s.grab_sales) / 3 AS third, "
                     "CAST(NULL AS BIGINT) AS nothing, MAX(c.name) AS name FROM client_stats s JOIN clients c ON c.id = s.client_id "
                     "WHERE s.client_id = 3 GROUP BY 1, 2 ORDER BY 2")
        cursor = conn.cursor()
        cursor.row_factory = None
        plain = cursor.execute(statement).fetchall()
        named = conn.execute(statement).fetchall()
    finally:
        conn.close()
    # Plain tuples are read in binary (see Cursor.execute), rows by name as text: the same values,
    # floats to the last bit. Dates as text and exact sums as int, as SQLite gives them; by position
    # only, as sqlite3 without a row factory.
    assert [type(row) for row in plain] == [tuple, tuple] and plain == [tuple(row) for row in named]
    assert [row[3].hex() for row in plain] == [row["third"].hex() for row in named]
    assert [row[1] for row in plain] == [row["stat_date"] for row in named] and all(isinstance(row[1], str) for row in plain)
    assert all(type(row[2]) is int and row[4] is None and isinstance(row[5], str) for row in plain)


def test_sums_of_counts_over_any_window_come_back_as_integers_not_numeric(cli, demo, tmp_path, pg_url):
    """PostgreSQL sums BIGINTs as NUMERIC, which psycopg reads as Decimal, made int value by value
    (twice the time of the read at 10,000 rows): a window's per-client counts are cast back."""
    from datetime import date

    from delivery_sync.aggregate.windows import window_values
    from delivery_sync.config import PostgresURL
    from delivery_sync.dialect import POSTGRES
    from delivery_sync.postgres import translate
    from delivery_sync.readonly import open_reader

    assert run(cli, configure(tmp_path, demo, pg_url, "pg"), "sync", "--days-back", "20").code == 0
    end = date.fromisoformat(rows_of(pg_url, "SELECT MAX(stat_date) FROM client_stats")[0][0])
    sql, params = window_values(end - timedelta(days=12), end - timedelta(days=2), "avg_order_value", ("days_with_data",), POSTGRES)
    in_cents, cents_params = window_values(end - timedelta(days=12), end - timedelta(days=2), "total_sales", (), POSTGRES, in_cents=True)
    conn = open_reader(PostgresURL(pg_url))
    try:
        cursor = conn.conn.execute(translate(sql), params)
        types = {c.name: c.type_code for c in cursor.description}
        rows = cursor.fetchall()
        # An amount left in whole cents (movers ranks them so) is a sum of integers too.
        cents_types = {c.name: c.type_code for c in conn.conn.execute(translate(in_cents), cents_params).description}
    finally:
        conn.close()
    int8, float8 = 20, 701
    assert types == {"client_id": int8, "avg_order_value": float8, "days_with_data": int8, "total_sales": float8, "total_orders": int8}
    assert cents_types == {"client_id": int8, "total_sales": int8}
    orders = dict(rows_of(pg_url, "SELECT client_id, SUM(total_orders) FROM client_stats WHERE stat_date BETWEEN ? AND ? GROUP BY 1",
                          [(end - timedelta(days=12)).isoformat(), (end - timedelta(days=2)).isoformat()]))
    assert {row[0]: row[4] for row in rows} == orders and len(orders) == DEMO_CLIENTS


def test_grouped_totals_edges_sum_counts_as_integers_so_their_union_stays_bigint(cli, demo, tmp_path, pg_url):
    """`totals --by day|week|month` reads whole periods from stored BIGINT rows and the cut ones
    from the daily totals' sums, in one UNION ALL: a NUMERIC sum there made every row's counts
    NUMERIC (a year of days, 3,300 Decimals made int one by one)."""
    from delivery_sync.aggregate.sql import metric_sums
    from delivery_sync.config import PostgresURL
    from delivery_sync.dialect import POSTGRES
    from delivery_sync.metrics import AMOUNT_METRICS, METRICS
    from delivery_sync.readonly import open_reader

    assert run(cli, configure(tmp_path, demo, pg_url, "pg"), "sync", "--days-back", "20").code == 0
    conn = open_reader(PostgresURL(pg_url))
    try:
        cursor = conn.conn.execute(f"SELECT 'stored' AS source, {', '.join(METRICS)} FROM overall_weekly "
                                   f"UNION ALL SELECT 'summed', {metric_sums(POSTGRES)} FROM overall_daily")
        types = {c.name: c.type_code for c in cursor.description}
        rows = cursor.fetchall()
    finally:
        conn.close()
    int8, float8, text = 20, 701, 25
    assert types == {"source": text, **{m: float8 if m in AMOUNT_METRICS else int8 for m in METRICS}}
    orders = METRICS.index("total_orders") + 1
    (summed,) = [row for row in rows if row[0] == "summed"]
    assert type(summed[orders]) is int and summed[orders] == rows_of(pg_url, "SELECT SUM(total_orders) FROM client_stats")[0][0]
    assert len(rows) > 1 and all(type(row[orders]) is int for row in rows)


def test_a_stop_signal_mid_statement_cancels_it_in_the_server_and_keeps_its_exit(pg_url):
    """psycopg cancels a running statement for KeyboardInterrupt only: a stop signal (SIGTERM from
    cron's timeout or systemd) mid-statement surfaced as 'another command is already in
    progress' from the rollback, losing the exit 128 + N, and the statement ran on."""
    import signal

    import psycopg

    from delivery_sync import postgres
    from delivery_sync.config import PostgresURL
    from delivery_sync.errors import Interrupted

    def stop(signum, frame):  # as the CLI's handler does
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGALRM, stop)
    conn = postgres.connect(PostgresURL(pg_url))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        began = time.monotonic()
        with pytest.raises(Interrupted), conn.atomic():
            conn.execute("SELECT pg_sleep(5)")
        assert time.monotonic() - began < 3
        with psycopg.connect(pg_url, autocommit=True) as watcher:
            running = watcher.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT pg_sleep%%'")
            assert running.fetchone()[0] == 0
        assert conn.execute("SELECT 1").fetchone()[0] == 1 and not conn.in_transaction  # rolled back, ready
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        conn.close()


def test_the_lock_is_free_the_moment_a_run_ends(pg_url):
    """Closing the lock's connection releases it only once the server has ended that backend: a
    run started right after another (cron's collect, then sync) found it held 1 time in 10."""
    import psycopg

    from delivery_sync import postgres
    from delivery_sync.config import PostgresURL

    held = ("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) AND ((classid::bigint << 32) | objid::bigint) = %s")
    with psycopg.connect(pg_url, autocommit=True) as watcher:
        with postgres.advisory_lock(PostgresURL(pg_url), "sync"):
            assert watcher.execute(held, [postgres.LOCK_KEY]).fetchone()[0] == 1  # the watcher sees it held
        for _ in range(100):
            with postgres.advisory_lock(PostgresURL(pg_url), "sync"):
                pass
            assert watcher.execute(held, [postgres.LOCK_KEY]).fetchone()[0] == 0


def test_a_lock_holder_that_names_no_run_is_given_a_moment_then_refused(pg_url, monkeypatch):
    import psycopg

    from delivery_sync import postgres
    from delivery_sync.config import PostgresURL
    from delivery_sync.errors import LockHeld

    with psycopg.connect(pg_url, autocommit=True) as other:  # not a delivery-sync writer: no name of ours
        other.execute("SELECT pg_advisory_lock(%s)", [postgres.LOCK_KEY])
        waits = []

        def let_go_while_waiting(seconds: float) -> None:  # the other session ends during the first wait
            waits.append(seconds)
            other.execute("SELECT pg_advisory_unlock(%s)", [postgres.LOCK_KEY])

        with monkeypatch.context() as patched:
            patched.setattr(postgres.time, "sleep", let_go_while_waiting)
            with postgres.advisory_lock(PostgresURL(pg_url), "sync"):  # taken once the other lets go
                pass
        assert waits == [postgres.UNKNOWN_HOLDER_WAITS[0]]
        other.execute("SELECT pg_advisory_lock(%s)", [postgres.LOCK_KEY])
        began = time.monotonic()
        with pytest.raises(LockHeld, match="holder unknown"), postgres.advisory_lock(PostgresURL(pg_url), "sync"):
            pass
        assert time.monotonic() - began >= sum(postgres.UNKNOWN_HOLDER_WAITS)


@pytest.mark.parametrize("kind", ["rebuild", "refresh"])
def test_readers_go_on_while_an_aggregate_rebuilds_or_refreshes_the_rollups(cli, demo, tmp_path, pg_url, kind):
    """The build rewrites rows of the rollup tables inside its transaction (a rebuild empties and
    refills them, the refresh after a sync replaces the rows it touched): a report run meanwhile
    answers at once from the tables as they were (DROP or TRUNCATE would make it wait)."""
    from datetime import date

    from delivery_sync import replica
    from delivery_sync.aggregate.postgres import build
    from delivery_sync.config import PostgresURL

    config = configure(tmp_path, demo, pg_url, "pg")
    assert run(cli, config, "sync", "--days-back", "10").code == 0
    (run_id,) = rows_of(pg_url, "SELECT MAX(id) FROM sync_runs WHERE command = 'aggregate'")[0]
    changed = None
    if kind == "refresh":  # a sync that restated one row, its aggregate still to run
        demo.faults.overrides[(2, "2026-11-22")] = {"grab_orders": 4242}
        assert run(cli, config, "sync", "--days-back", "3", "--no-aggregate").code == 0
        (sync_id,) = rows_of(pg_url, "SELECT MAX(id) FROM sync_runs WHERE command = 'sync'")[0]
        changed = replica.ChangedRows(sync_id)
        changed.add(2, ["2026-11-22"])
    reports = [[SCRIPT, "--config", str(config), "query", *args, "--format", "json"]
               for args in (["totals", "--by", "week", "--from", "2026-11-14", "--to", "2026-11-23"], ["top", "--days", "7"],
                            ["sql", "SELECT period, client_id, total_orders FROM client_aggregates ORDER BY 1, 2"])]
    before = [subprocess.run(r, capture_output=True, text=True, env=clean_env(), timeout=30).stdout for r in reports]
    assert json.loads(before[0])[0]["total_orders"] > 0
    db = replica.open_store(PostgresURL(pg_url)).open()
    try:
        with db.transaction():
            assert build(db, date(2026, 11, 23), run_id, changed)[1] == (kind == "refresh")
            for report, seen in zip(reports, before):
                began = time.monotonic()
                during = subprocess.run(report, capture_output=True, text=True, env=clean_env(), timeout=30)
                assert during.returncode == 0, during.stderr
                assert during.stdout == seen
                assert time.monotonic() - began < 10  # answered, not waiting for the build to commit
    finally:
        db.close()


def test_a_rollup_table_of_another_version_is_made_again(cli, demo, tmp_path, pg_url):
    from delivery_sync import postgres
    from delivery_sync.config import PostgresURL

    config = configure(tmp_path, demo, pg_url, "pg")
    assert run(cli, config, "sync", "--days-back", "3").code == 0
    columns = "SELECT column_name FROM information_schema.columns WHERE table_name = 'client_aggregates' ORDER BY ordinal_position"
    expected = rows_of(pg_url, columns)
    conn = postgres.connect(PostgresURL(pg_url))
    try:  # as an older delivery-sync left it: another column, no definition of ours
        conn.execute("ALTER TABLE client_aggregates ADD COLUMN obsolete BIGINT")
        conn.execute("COMMENT ON TABLE client_aggregates IS NULL")
    finally:
        conn.close()
    assert run(cli, config, "aggregate").code == 0
    assert rows_of(pg_url, columns) == expected
    assert rows_of(pg_url, "SELECT COUNT(*) FROM client_aggregates WHERE period = 'last_7d'") == [(DEMO_CLIENTS,)]
    # The aggregate after a sync, which would refresh the tables as they are, makes them again too.
    conn = postgres.connect(PostgresURL(pg_url))
    try:
        conn.execute("ALTER TABLE client_aggregates ADD COLUMN obsolete BIGINT")
        conn.execute("COMMENT ON TABLE client_aggregates IS NULL")
    finally:
        conn.close()
    demo.faults.overrides[(2, "2026-11-22")] = {"grab_orders": 4242}
    assert run(cli, config, "sync", "--days-back", "3").code == 0
    assert rows_of(pg_url, columns) == expected


def test_a_killed_sync_leaves_every_client_old_or_new(tmp_path, pg_url):
    clients, days = 60, 20
    with DemoSource(clients=clients, latency_ms=30) as demo:
        command, env = client_by_client_sync(tmp_path, demo, pg_url, days)
        first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert first.returncode == 0, first.stderr
        today = demo.today()
        demo.faults.overrides = {
            (cid, (today - timedelta(days=d)).isoformat()): {"grab_orders": 7777} for cid in range(1, clients + 1) for d in range(days)
        }
        kill_when(command, env, lambda: rows_of(pg_url, "SELECT 1 FROM client_stats WHERE grab_orders = 7777 LIMIT 1"))
    per_client = rows_of(
        pg_url, "SELECT client_id, SUM(CASE WHEN grab_orders = 7777 THEN 1 ELSE 0 END), COUNT(*) FROM client_stats GROUP BY client_id"
    )
    assert len(per_client) == clients
    assert all(new in (0, count) and count == days for _, new, count in per_client), per_client
    assert any(new == days for _, new, _ in per_client) and any(new == 0 for _, new, _ in per_client), "killed mid-run"
    # The next writer marks the dead run failed ("interrupted") and finishes the job.
    with DemoSource(clients=clients) as demo:
        config = write_config(tmp_path / "again.toml", demo.url, pg_url)
        again = subprocess.run([SCRIPT, "--config", str(config), "status", "--json"], env=env, capture_output=True, text=True, timeout=60)
        assert json.loads(again.stdout)["last_sync"]["status"] == "failed"


def test_a_sync_whose_server_connection_ends_mid_run_says_what_it_wrote(tmp_path, pg_url):
    """A PostgreSQL server stopped or restarted under a sync (here: its writer's backend ended by
    an administrator) ended the run with only 'cannot connect to database ... is the server
    running?', which it had been, and no summary line for cron mail. Now the run's line says
    what it wrote before, and that the connection was lost."""
    import psycopg

    clients, days = 60, 20
    with DemoSource(clients=clients, latency_ms=30) as demo:
        command, env = client_by_client_sync(tmp_path, demo, pg_url.replace("postgresql://postgres@", "postgresql://postgres:s3cret@"), days)
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            def began_writing() -> bool:
                with contextlib.suppress(psycopg.errors.UndefinedTable):  # before the run made its tables
                    return bool(rows_of(pg_url, "SELECT 1 FROM clients WHERE last_synced_at IS NOT NULL LIMIT 1"))
                return False

            limit = time.monotonic() + 30
            while time.monotonic() < limit and not began_writing():
                time.sleep(0.01)
            with psycopg.connect(pg_url, autocommit=True) as admin:
                ended = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                      "WHERE application_name = 'delivery-sync writer'").fetchall()
            stderr = proc.communicate(timeout=30)[1]
        finally:
            proc.kill()
    assert ended == [(True,)] and proc.returncode == 1, stderr
    lines = unstamped(stderr).strip().splitlines()
    written = rows_of(pg_url, "SELECT COUNT(DISTINCT client_id), COUNT(*) FROM client_stats")[0]
    assert 0 < written[0] < clients and written[1] == written[0] * days  # whole clients only
    assert lines[-1].startswith(f"sync failed: {written[0]}/{clients} clients, {written[1]} rows ({written[1]} inserted, ")
    assert " - lost the connection to database postgresql://postgres:[redacted]@" in lines[-1]
    assert lines[-1].endswith("(every stored client is as it was or fully updated; run again once the server is back)")
    assert not any(line.startswith("error: ") for line in lines) and "s3cret" not in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("statement, refused", [
    ("INSERT INTO clients(id, name) VALUES (999, 'x')", "refused: INSERT"),
    ("WITH gone AS (DELETE FROM client_stats RETURNING *) SELECT COUNT(*) FROM gone", "read-only"),
    ("SELECT nextval('sync_runs_id_seq')", "read-only"),
    ("SELECT pg_read_file('/etc/passwd')", "refused: pg_read_file()"),
    ("SELECT lo_import('/etc/passwd')", "refused: lo_import()"),
    ('SELECT "pg_read_file"(\'/etc/hostname\')', "refused: pg_read_file()"),  # quoted, the same function
    ("SELECT pg_catalog.\"pg_ls_dir\"('.')", "refused: pg_ls_dir()"),
    ("SELECT pg_switch_wal()", "refused: pg_switch_wal()"),
    ("SELECT pg_read_file/**/('/etc/hostname')", "refused: pg_read_file()"),  # a comment between name and call
    ("SELECT * FROM pg_ls_dir -- x\n ('.')", "refused: pg_ls_dir()"),
    ("SELECT pg_stat_reset()", "refused: pg_stat_reset()"),
    ("SELECT pg_sleep(30)", "refused: pg_sleep() - query sql runs no function that reaches past the replica's rows"),
    ("SELECT set_config('default_transaction_read_only', 'off', false)", "refused: set_config()"),
    ("COPY clients TO STDOUT", "refused: COPY"),
    ("SET default_transaction_read_only = off", "refused: SET"),
    ("SELECT 1; DELETE FROM clients", "exactly one statement"),
])
def test_query_sql_stays_read_only(cli, demo, tmp_path, pg_url, statement, refused):
    config = configure(tmp_path, demo, pg_url, "pg")
    assert run(cli, config, "sync", "--days-back", "2").code == 0
    result = run(cli, config, "query", "sql", statement)
    assert result.code == 2 and refused in result.stderr, result.stderr
    assert rows_of(pg_url, "SELECT COUNT(*) FROM client_stats") == [(24,)]
    assert rows_of(pg_url, "SELECT COUNT(*) FROM clients") == [(12,)]


def test_sslmode_require_against_a_server_without_ssl_is_the_url_to_fix(cli, pg_url):
    """A team review: it said 'is the PostgreSQL server running and reachable?' (exit 1) of a server
    that was running and refused only the URL's sslmode."""
    result = cli("--db", f"{pg_url}?sslmode=require", "status")
    assert result.code == 2 and "does not support SSL" in result.stderr, result.stderr
    assert "check the options after '?'" in result.stderr and "is the PostgreSQL server running" not in result.stderr


def test_query_sql_is_cancelled_by_the_server_after_max_seconds(cli, demo, tmp_path, pg_url):
    config = configure(tmp_path, demo, pg_url, "pg")
    assert run(cli, config, "sync", "--days-back", "2").code == 0
    endless = "SELECT COUNT(*) FROM generate_series(1, 10000000000)"
    began = time.monotonic()
    result = cli("--config", str(config), "query", "sql", endless, "--max-seconds", "0.5")
    assert result.code == 1 and "query interrupted after 0.5 s" in result.stderr
    assert time.monotonic() - began < 10


def test_query_sql_shows_every_postgresql_type_in_every_format(cli, demo, tmp_path, pg_url, monkeypatch):
    """Arrays, JSON, intervals, UUIDs, addresses, times, NaN: text or a number in each format,
    valid JSON, never a traceback, never an array drawn as a sparkline."""
    config = configure(tmp_path, demo, pg_url, "pg")
    assert run(cli, config, "sync", "--days-back", "1").code == 0
    statement = ("SELECT ARRAY[1, 2] AS a, ARRAY['x', 'y'] AS s, '{\"k\": 1}'::jsonb AS j, interval '1 day' AS i, "
                 "'6f1c2b7e-2c5e-4c1a-9a7e-0b7f1f2f3a4b'::uuid AS u, '10.0.0.1'::inet AS ip, '12:30'::time AS t, "
                 "'2026-01-01 10:00+00'::timestamptz AS ts, 'NaN'::float8 AS nan, '-Infinity'::float8 AS inf, true AS b, 2.5 AS n, "
                 "'Infinity'::numeric AS ninf")
    as_json = run(cli, config, "query", "sql", statement, "--format", "json")
    assert as_json.code == 0, as_json.stderr
    assert json.loads(as_json.stdout) == [{
        "a": "[1, 2]", "s": '["x", "y"]', "j": '{"k": 1}', "i": "1 day, 0:00:00", "u": "6f1c2b7e-2c5e-4c1a-9a7e-0b7f1f2f3a4b",
        "ip": "10.0.0.1", "t": "12:30:00", "ts": "2026-01-01T10:00:00+00:00", "nan": None, "inf": None, "b": True, "n": 2.5,
        "ninf": None}]
    assert "NaN" not in as_json.stdout and "Infinity" not in as_json.stdout  # JSON has neither
    as_csv = run(cli, config, "query", "sql", statement, "--format", "csv")
    assert as_csv.code == 0 and as_csv.stdout.splitlines()[1] == (
        '"[1, 2]","[""x"", ""y""]","{""k"": 1}","1 day, 0:00:00",6f1c2b7e-2c5e-4c1a-9a7e-0b7f1f2f3a4b,10.0.0.1,12:30:00,'
        "2026-01-01T10:00:00+00:00,nan,-inf,true,2.5,inf")
    monkeypatch.setenv("COLUMNS", "250")
    table = run(cli, config, "query", "sql", statement)
    assert table.code == 0 and "│ [1, 2] │" in table.stdout and "│ true │" in table.stdout and "▁" not in table.stdout


def test_a_read_the_server_cancels_is_said_so_and_the_url_options_are_kept(cli, demo, tmp_path, pg_url):
    """A lock or statement timeout while reading is not "is the server running?": one line, exit 1.
    The timeouts come from the URL's own ?options=, which the connection keeps beside its own."""
    import psycopg

    config = configure(tmp_path, demo, pg_url, "pg")
    assert run(cli, config, "sync", "--days-back", "1").code == 0
    holder = psycopg.connect(pg_url)
    try:
        # A reader that ignored the URL's timeouts would wait for the lock, here at most 5 s.
        holder.execute("SET idle_in_transaction_session_timeout = '5s'")
        holder.execute("LOCK TABLE clients IN ACCESS EXCLUSIVE MODE")  # held until the transaction ends
        locked = cli("--db", f"{pg_url}?options=-c%20lock_timeout%3D300", "query", "top")
        timed = cli("--db", f"{pg_url}?options=-c%20statement_timeout%3D300", "status", "--check")
    finally:
        with contextlib.suppress(psycopg.Error):
            holder.close()
    assert locked.code == 1 and locked.stderr.startswith("error: cannot read replica ") and "lock timeout" in locked.stderr
    assert timed.code == 1 and timed.stderr.startswith("error: the server cancelled a read of replica ")
    assert "statement timeout" in timed.stderr and "statement_timeout set for this role" in timed.stderr
    for result in (locked, timed):
        assert "is the PostgreSQL server running" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_statement_the_server_cancels_in_a_writing_run_is_said_so_not_a_lost_connection(cli, demo, tmp_path, pg_url):
    """A statement_timeout shorter than a writing run's statement (an index build, the aggregate)
    ends the run with one line that names it, not "lost the connection" (SQLSTATE 57014 is no
    connection failure), and keeps the replica as it was."""
    config = configure(tmp_path, demo, pg_url, "pg")
    assert run(cli, config, "sync", "--days-back", "30").code == 0
    before = query_db(pg_url, "SELECT COUNT(*), SUM(total_orders) FROM client_stats")
    for args in (("aggregate",), ("sync", "--days-back", "30")):
        result = cli("--config", str(config), "--db", f"{pg_url}?options=-c%20statement_timeout%3D1", *args)
        assert result.code == 1, result.stderr
        [line] = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert "the server cancelled a statement of the run on database postgresql://" in line
        assert "canceling statement due to statement timeout" in line and "statement_timeout set for this role" in line
        assert "lost the connection" not in line
    assert query_db(pg_url, "SELECT COUNT(*), SUM(total_orders) FROM client_stats") == before


def test_the_password_in_the_url_is_never_printed(cli, demo, tmp_path, pg_url):
    # The test server trusts local connections, so any password is accepted and none is checked.
    with_password = pg_url.replace("postgresql://postgres@", "postgresql://postgres:s3cr3t-pw@")
    config = configure(tmp_path, demo, with_password, "pg")
    # Before the first sync: every hint that repeats --db (`Run: delivery-sync --db ... sync`).
    empty = [cli("--db", with_password, *args) for args in (("status",), ("status", "--check"), ("status", "--json"),
                                                             ("query", "totals"), ("aggregate",))]
    assert [r.code for r in empty] == [0, 1, 0, 2, 2]
    assert '--db "postgresql://postgres:[redacted]@' in empty[0].stdout and "sync" in empty[0].stdout
    assert empty[1].stdout.startswith("status not ok") and '--db "postgresql://postgres:[redacted]@' in empty[1].stdout
    assert """'delivery-sync --db "postgresql://postgres:[redacted]@""" in empty[3].stderr
    outputs = [*empty, run(cli, config, "sync", "--days-back", "2")]
    outputs += [run(cli, config, "status", *args) for args in ((), ("--json",), ("--format", "prometheus"))]
    outputs.append(cli("--db", with_password.rsplit("/", 1)[0] + "/no_such_db", "status"))
    outputs.append(cli("--db", with_password.replace(":5", ":x5") if ":5" in with_password else with_password + "?port=x", "status"))
    assert outputs[len(empty)].code == 0 and outputs[-2].code == 2 and "does not exist" in outputs[-2].stderr
    # The password as a parameter, beside an option libpq does not know, and one it refuses.
    as_parameter = f"{pg_url}?password=s3cr3t-pw"
    for url in (as_parameter, f"{as_parameter}&foo=bar", f"{as_parameter}&sslmode=bogus"):
        outputs.append(cli("--db", url, "status", "--check"))
    assert "?password=[redacted]" in outputs[-3].stdout
    for result, said in zip(outputs[-2:], ('invalid URI query parameter: "foo"', 'invalid sslmode value: "bogus"')):
        assert result.code == 2 and said in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    # An '@' left in the password: libpq would take what follows it for the host, and print it.
    at_sign = pg_url.replace("postgresql://postgres@", "postgresql://postgres:s3cr3t@pw-tail@")
    outputs.append(cli("--db", at_sign, "status"))
    assert outputs[-1].code == 2 and "holds an '@': write it as %40" in outputs[-1].stderr
    for result in outputs:
        assert "s3cr3t" not in result.stdout + result.stderr and "pw-tail" not in result.stdout + result.stderr
    assert "postgres:[redacted]@" in outputs[len(empty) + 1].stdout


def test_a_role_without_rights_to_read_gets_one_line_not_a_damaged_replica(cli, demo, tmp_path, pg_url):
    import uuid

    import psycopg

    config = configure(tmp_path, demo, pg_url, "pg")
    assert run(cli, config, "sync", "--days-back", "2").code == 0
    role = f"ds_no_rights_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT USAGE ON SCHEMA public TO {role}")  # a reused test database's schema grants none to PUBLIC
    try:
        as_role = pg_url.replace("postgresql://postgres@", f"postgresql://{role}@")
        view, check, prom, top = (cli("--db", as_role, *args) for args in (
            ("status",), ("status", "--check"), ("status", "--format", "prometheus"), ("query", "top")))
        for result in (view, check, top):
            assert result.code == 2 and result.stdout == "", result.stdout
            [line] = result.stderr.strip().splitlines()
            assert line.startswith(f"error: cannot read replica postgresql://{role}@") and "permission denied for table" in line, line
            assert "grant it SELECT on the replica's tables" in line and "corrupt" not in line
        assert prom.code == 0 and "delivery_sync_up 0" in prom.stdout and "delivery_sync_ok 0" in prom.stdout
        sql = cli("--db", as_role, "query", "sql", "SELECT * FROM clients")
        assert sql.code == 2 and "permission denied for table clients" in sql.stderr and "grant it SELECT" in sql.stderr
        # Without USAGE on the schema the role sees no table at all: told so, not "no replica yet, run a sync".
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f"REVOKE USAGE ON SCHEMA public FROM PUBLIC, {role}")
        for args in (("status",), ("query", "top")):
            result = cli("--db", as_role, *args)
            assert result.code == 2 and "the role may use no schema of its search_path" in result.stderr, result.stdout + result.stderr
            assert "grant it USAGE on the replica's schema" in result.stderr
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f"REVOKE ALL ON SCHEMA public FROM {role}")
            admin.execute(f"DROP ROLE {role}")


def test_a_read_only_role_is_told_the_repair_is_for_a_role_that_may_write(cli, demo, tmp_path, pg_url):
    """A team review: the README's analyst role was told 'Run: delivery-sync --db ... sync', which
    it cannot run (exit 2)."""
    import uuid

    import psycopg

    config = configure(tmp_path, demo, pg_url, "pg")
    assert run(cli, config, "sync", "--days-back", "2").code == 0
    role = f"ds_analyst_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    try:
        as_role = pg_url.replace("postgresql://postgres@", f"postgresql://{role}@")
        with freeze_time("2026-11-26T10:00:00Z", tick=True):  # three days on: stale, a repair line
            analyst = json.loads(cli("--db", as_role, "status", "--json").stdout)["verdict"]
            writer = json.loads(cli("--db", pg_url, "status", "--json").stdout)["verdict"]
        assert not analyst["ok"] and analyst["reason"] == writer["reason"]
        assert writer["advice"] == f"delivery-sync --db {pg_url} sync (and check that cron runs it)" and "may only read" not in writer["advice"]
        assert analyst["advice"].startswith(f"delivery-sync --db {as_role} sync (and check that cron runs it; ")
        assert analyst["advice"].endswith("by a user or role that may write the replica: this one may not)")
        # INSERT on client_stats alone is no writer's role either (a sync writes every table).
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f"GRANT INSERT, UPDATE, DELETE ON client_stats TO {role}")
        with freeze_time("2026-11-26T10:00:00Z", tick=True):
            assert json.loads(cli("--db", as_role, "status", "--json").stdout)["verdict"]["advice"].endswith("this one may not)")
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
            admin.execute(f"REVOKE ALL ON SCHEMA public FROM {role}")
            admin.execute(f"DROP ROLE {role}")


def test_an_older_postgres_replica_is_upgraded_in_place(cli, demo, tmp_path, pg_url):
    from delivery_sync import postgres
    from delivery_sync.config import PostgresURL
    from delivery_sync.metrics import METRICS

    config = configure(tmp_path, demo, pg_url, "pg")
    assert run(cli, config, "sync", "--days-back", "4").code == 0
    conn = postgres.connect(PostgresURL(pg_url))  # as a replica of schema version 2 was
    for statement in ("DROP VIEW client_stats_named", "DROP TABLE sync_unfetched", "DROP TABLE sync_selected",
                      "DROP INDEX idx_client_stats_stat_date", "CREATE INDEX idx_client_stats_stat_date ON client_stats (stat_date)",
                      "DELETE FROM delivery_sync_migrations WHERE name IN ('0003_sync_unfetched', '0004_client_stats_named', "
                      "'0005_stat_date_index_sums', '0006_sync_selected', '0007_stat_date_index_all_metrics')",
                      "UPDATE meta SET value = '2' WHERE key = 'schema_version'"):
        conn.execute(statement)
    conn.close()
    upgraded = run(cli, config, "sync", "--days-back", "4")
    assert upgraded.code == 0
    assert ("upgrading its schema to version 7 (0003_sync_unfetched, 0004_client_stats_named, 0005_stat_date_index_sums, "
            "0006_sync_selected, 0007_stat_date_index_all_metrics), once") in upgraded.stderr
    assert rows_of(pg_url, "SELECT value FROM meta WHERE key = 'schema_version'") == [("7",)]
    assert rows_of(pg_url, "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_client_stats_stat_date'") == [
        ("CREATE INDEX idx_client_stats_stat_date ON public.client_stats USING btree (stat_date, client_id) "
         f"INCLUDE ({', '.join(METRICS)})",)]
    assert rows_of(pg_url, "SELECT COUNT(*), COUNT(DISTINCT name) FROM client_stats_named") == [(48, 12)]
    assert rows_of(pg_url, "SELECT COUNT(*) FROM sync_runs WHERE command = 'sync'") == [(2,)]
    assert "upgrading" not in run(cli, config, "sync", "--days-back", "1").stderr  # once


def test_both_engines_follow_one_list_of_migrations_and_columns(cli, demo, tmp_path, pg_url):
    from delivery_sync.replica.postgres import MIGRATIONS, migration_names

    assert list(MIGRATIONS) == migration_names()
    sqlite_db = str(tmp_path / "replica.db")
    for name, database in (("sqlite", sqlite_db), ("pg", pg_url)):
        assert run(cli, configure(tmp_path, demo, database, name), "sync", "--days-back", "2").code == 0
    tables = ["clients", "client_stats", "client_stats_named", "sync_runs", "sync_failures", "sync_rejects", "stat_changes",
              "sync_unfetched", "meta", "client_aggregates", "overall_aggregates", "overall_daily", "overall_weekly"]
    for table in tables:
        sqlite_columns = [row[1] for row in rows_of(sqlite_db, f"PRAGMA table_xinfo({table})")]
        pg_columns = [row[0] for row in rows_of(
            pg_url, "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position", [table])]
        assert pg_columns == sqlite_columns, table


def test_without_the_driver_a_postgresql_database_is_one_line(tmp_path):
    code = ("import sys; sys.modules['psycopg'] = None\n"
            "from delivery_sync.cli import main\n"
            "main(['--db', 'postgresql://u:pw@127.0.0.1/x', 'status'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert result.returncode == 2
    assert unstamped(result.stderr).strip().splitlines() == [
        "error: a postgresql:// database needs the PostgreSQL driver (from a checkout of delivery-sync: "
        "pip install '.[postgres]'; into an installed one's environment: pip install 'psycopg[binary]>=3.1')"
    ]


def test_collect_and_aggregate_as_of_record_their_runs_on_postgres(cli, demo, tmp_path, pg_url):
    config = configure(tmp_path, demo, pg_url, "pg")
    assert run(cli, config, "collect").code == 0
    assert run(cli, config, "sync", "--days-back", "40", "--no-aggregate").code == 0
    result = run(cli, config, "aggregate", "--as-of", "2026-11-01")
    assert result.code == 0, result.stderr
    assert rows_of(pg_url, "SELECT command, status FROM sync_runs ORDER BY id") == [("collect", "ok"), ("sync", "ok"), ("aggregate", "ok")]
    assert rows_of(pg_url, "SELECT period_start, period_end FROM overall_aggregates WHERE period = 'last_7d'") == [("2026-10-26", "2026-11-01")]


def test_the_refresh_compiles_no_plan_and_the_rebuild_still_may(cli, demo, tmp_path, pg_url, monkeypatch):
    """JIT is off for the refresh (its statements read thousands of rows, and compiling them cost
    more than it saved); a full rebuild, which reads millions, keeps the server's default."""
    from delivery_sync.aggregate import postgres as pg_build

    seen = []

    def noting(name, step):
        def run(db, *args, **kwargs):
            seen.append((name, db.execute("SHOW jit").fetchone()[0]))
            return step(db, *args, **kwargs)
        return run

    monkeypatch.setattr(pg_build, "refresh", noting("refresh", pg_build.refresh))
    monkeypatch.setattr(pg_build, "_build_parts", noting("rebuild", pg_build._build_parts))
    config = configure(tmp_path, demo, pg_url, "pg")
    assert run(cli, config, "sync", "--days-back", "5").code == 0
    demo.faults.overrides[(2, demo.today().isoformat())] = {"grab_orders": 4242}
    try:
        assert run(cli, config, "sync", "--days-back", "2").code == 0
    finally:
        demo.faults.overrides.clear()
    default = rows_of(pg_url, "SHOW jit")[0][0]
    assert seen == [("rebuild", default), ("refresh", "off")] and default == "on"


def test_the_sqlite_path_never_imports_the_postgresql_driver(tmp_path):
    env = clean_env()
    for args in (["sync", "--source", "demo", "--days-back", "3"], ["status"], ["query", "top"], ["query", "sql", "SELECT 1"]):
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "delivery_sync", "--db", str(tmp_path / "r.db"), *args],
                                env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-500:]
        assert "delivery_sync.cli" in result.stderr  # the import log is there to read
        assert "psycopg" not in result.stderr and "delivery_sync.postgres" not in result.stderr, args


def test_rows_come_back_as_sqlite_gives_them(pg_url):
    # Only columns of types psycopg does not already give as SQLite does are converted: each kind checked.
    from delivery_sync import postgres
    from delivery_sync.config import PostgresURL

    conn = postgres.connect(PostgresURL(pg_url), read_only=True)
    row = conn.execute(
        "SELECT CAST('2026-02-28' AS DATE) AS day, CAST('2026-02-28 01:02:03' AS TIMESTAMP) AS at, "
        "SUM(x) AS total, CAST(2.5 AS NUMERIC) AS half, CAST(7 AS NUMERIC(10, 2)) AS whole, "
        "CAST(3 AS BIGINT) AS n, CAST(0.1 AS DOUBLE PRECISION) AS f, 'text' AS t, CAST(NULL AS DATE) AS nothing "
        "FROM (VALUES (CAST(4000000000 AS BIGINT)), (CAST(5000000000 AS BIGINT))) AS v(x)"
    ).fetchone()
    plain = conn.execute("SELECT 1 AS one, CAST('a' AS TEXT) AS a").fetchone()
    conn.close()
    assert tuple(row) == ("2026-02-28", "2026-02-28T01:02:03", 9000000000, 2.5, 7, 3, 0.1, "text", None)
    assert [type(v) for v in row[2:6]] == [int, float, int, int]
    assert dict(row)["total"] == 9000000000 and row["day"] == "2026-02-28"
    assert tuple(plain) == (1, "a") and dict(plain) == {"one": 1, "a": "a"}


def test_readers_go_on_while_an_upgrade_builds_the_stat_date_index(cli, demo, tmp_path, pg_url):
    """Migration 0007 builds the wider index under another name and then puts it in the old one's
    place: while it builds (here held up by a writer's open transaction, as a build of millions of
    rows takes seconds), a report's read of client_stats is not locked out."""
    import threading

    from delivery_sync import postgres
    from delivery_sync.config import PostgresURL
    from delivery_sync.metrics import METRICS
    from delivery_sync.replica import open_store

    config = configure(tmp_path, demo, pg_url, "pg")
    assert run(cli, config, "sync", "--days-back", "2").code == 0
    url = PostgresURL(pg_url)
    conn = postgres.connect(url)  # as a replica of schema version 6 was
    for statement in ("DROP INDEX idx_client_stats_stat_date",
                      "CREATE INDEX idx_client_stats_stat_date ON client_stats (stat_date, client_id) INCLUDE (total_sales, total_orders)",
                      "DELETE FROM delivery_sync_migrations WHERE name = '0007_stat_date_index_all_metrics'",
                      "UPDATE meta SET value = '6' WHERE key = 'schema_version'"):
        conn.execute(statement)
    blocker = postgres.connect(url)
    blocker.execute("BEGIN")
    blocker.execute("UPDATE client_stats SET total_orders = total_orders WHERE client_id = 1")  # a writer's open transaction
    opened: list = []

    def upgrade_it() -> None:
        try:
            opened.append(open_store(url).open())
        except BaseException as exc:  # shown by the assertion below
            opened.append(exc)

    upgrade = threading.Thread(target=upgrade_it)
    upgrade.start()
    waiting = "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'delivery-sync writer' AND wait_event_type = 'Lock' " \
              "AND (query LIKE 'CREATE INDEX%' OR query LIKE 'DROP INDEX%') AND datname = current_database()"
    try:
        for _ in range(1000):  # until the upgrade's index statement waits on the blocker's lock
            if conn.execute(waiting).fetchone()[0]:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the upgrade never reached its index statements")
        reader = postgres.connect(url, read_only=True)
        try:
            reader.execute("SET lock_timeout = '200ms'")
            assert reader.execute("SELECT COUNT(*) FROM client_stats").fetchone()[0] == DEMO_CLIENTS * 2
        finally:
            reader.close()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        upgrade.join(30)
    assert len(opened) == 1 and not isinstance(opened[0], BaseException), opened
    opened[0].close()
    assert rows_of(pg_url, "SELECT indexdef FROM pg_indexes WHERE indexname LIKE 'idx_client_stats_stat_date%'") == [
        ("CREATE INDEX idx_client_stats_stat_date ON public.client_stats USING btree (stat_date, client_id) "
         f"INCLUDE ({', '.join(METRICS)})",)]
    assert rows_of(pg_url, "SELECT value FROM meta WHERE key = 'schema_version'") == [("7",)]
    conn.close()
