"""The aggregate that ends a daily sync: a refresh of what the sync wrote against a full rebuild, in one run.

Loads one new replica (a database on the PostgreSQL server --postgres names, else a SQLite file)
with N clients x D days from the demo source (in-process, at 0 ms, batch endpoint) and aggregates
it, then runs --rounds rounds of a daily sync, each:

1. a sync of the last 3 days, its aggregate held back: the next day's row of every client, and a
   fifth of the clients' two days before restated (late refunds), about 1.4 x N rows written;
2. the aggregate that ends such a sync, timed: a refresh of what it wrote (checked: `refreshed`);
3. a full rebuild as of the same day, timed (checked: not a refresh), whose rollups must equal
   the refresh's, value for value (every rollup table, `computed_at` aside);
4. with --baseline DIR, the full rebuild of another checkout of delivery_sync (e.g. the code before
   the refresh), in a process of its own on the same replica: what that sync's aggregate cost there;
5. with --refresh-baseline DIR, before step 2, the refresh of the same keys on the same replica by
   another checkout and by this one, in turn, each in a process of its own, timed around its build
   and rolled back (so neither pays the commit, which the times of step 2 include), to print the
   one against the other.

Times are each aggregate run's own duration (its `sync_runs` row), medians over the rounds.

Run: python benchmarks/bench_refresh.py [--clients 2000] [--days 365] [--rounds 5] [--postgres URL] [--baseline DIR]
                                        [--refresh-baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _installed import compile_package  # noqa: E402  (sibling scripts, not a package)
from _postgres import new_database  # noqa: E402

from delivery_sync.aggregate.run import aggregate_locked  # noqa: E402
from delivery_sync.aggregate.sql import FINE_TABLES  # noqa: E402
from delivery_sync.config import PostgresURL, Settings  # noqa: E402
from delivery_sync.days import Window  # noqa: E402
from delivery_sync.demo_source import DemoSource  # noqa: E402
from delivery_sync.readonly import open_reader  # noqa: E402
from delivery_sync.replica import open_store  # noqa: E402
from delivery_sync.sync import SyncOptions, run_sync  # noqa: E402

ROLLUPS = {"client_aggregates": "client_id, period", "overall_aggregates": "period", **{t: "period" for t in FINE_TABLES.values()},
           "agg_client_pieces": "client_id, piece", "agg_client_months": "client_id, month", "agg_days": "day",
           "agg_edge_clients": "period_start, period_end", "agg_window_pairs": "period_start, period_end, base_start, base_end, client_id",
           "agg_client_last_days": "client_id"}

OURS = Path(__file__).resolve().parent.parent  # this checkout, holding its delivery_sync

# The full rebuild of the checkout on PYTHONPATH, as of argv[2]: prints the run's status, whether
# it refreshed, and its seconds.
BASELINE = """
import sys
from datetime import date
try:  # this checkout's layout, or one from before aggregate/run.py
    from delivery_sync.aggregate.run import aggregate_locked
except ImportError:
    from delivery_sync.aggregate.build import aggregate_locked
from delivery_sync.config import PostgresURL
from pathlib import Path
from delivery_sync.replica import open_store
database = sys.argv[1]
result = aggregate_locked(open_store(PostgresURL(database) if database.startswith("postgresql://") else Path(database)),
                          date.fromisoformat(sys.argv[2]))
print(result.status, result.refreshed, result.seconds)
"""


# Both snippets run in a folder of their own: `python -c` puts its working directory first on
# sys.path, so run from a checkout they would import that checkout, whatever PYTHONPATH says.

# The refresh of the checkout on PYTHONPATH of the keys in the JSON file argv[3] (written by sync run
# argv[4]) as of argv[2], rolled back: prints whether it refreshed and its seconds.
REFRESH_BASELINE = """
import json, sys, time
from datetime import date
from pathlib import Path
from delivery_sync.aggregate.run import _builder
from delivery_sync.config import PostgresURL
from delivery_sync.replica import ChangedRows, open_store
database = sys.argv[1]
changed = ChangedRows(int(sys.argv[4]))
changed.keys = {tuple(key) for key in json.loads(Path(sys.argv[3]).read_text())}
db = open_store(PostgresURL(database) if database.startswith("postgresql://") else Path(database)).open()
class Undone(Exception):
    pass
try:
    with db.transaction():
        began = time.perf_counter()
        built, refreshed, _ = _builder(db.engine)(db, date.fromisoformat(sys.argv[2]), 0, changed)
        seconds = time.perf_counter() - began
        raise Undone
except Undone:
    print(refreshed, seconds)
finally:
    db.close()
"""


def rollups(database) -> dict[str, list[tuple]]:
    """Every row of every rollup and partial-sum table, without `computed_at`, in key order."""
    conn = open_reader(database)
    try:
        tables = {}
        for table, key in ROLLUPS.items():
            cursor = conn.execute(f"SELECT * FROM {table} ORDER BY {key}")
            names = [c[0] for c in cursor.description]
            tables[table] = [tuple(v for n, v in zip(names, row) if n != "computed_at") for row in cursor.fetchall()]
        return tables
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", metavar="URL", help="the replica in a new database on this PostgreSQL server")
    parser.add_argument("--baseline", type=Path, metavar="DIR", help="also time the full rebuild of the delivery_sync in DIR")
    parser.add_argument("--refresh-baseline", type=Path, metavar="DIR",
                        help="also time the refresh of the delivery_sync in DIR against this one's, both rolled back")
    args = parser.parse_args()
    print(compile_package(), flush=True)
    with tempfile.TemporaryDirectory() as tmp, DemoSource(clients=args.clients) as demo:
        database = new_database(args.postgres, f"bench_refresh_{os.getpid()}") if args.postgres else str(Path(tmp) / "replica.db")
        setting = PostgresURL(database) if args.postgres else Path(database)
        config = Settings(database=setting, source={"url": demo.url, "min_interval": 0, "concurrency": 8})
        last = demo.today() - timedelta(days=args.rounds)  # the last day loaded; each round adds one
        began = time.perf_counter()
        loaded = run_sync(config, SyncOptions(Window(last - timedelta(days=args.days - 1), last), aggregate=False))
        assert loaded.status == "ok", loaded.run
        load = time.perf_counter() - began
        first = aggregate_locked(open_store(setting), last)
        assert first.status == "ok"
        engine = "PostgreSQL" if args.postgres else "SQLite"
        print(f"{args.clients} clients x {args.days} days ({loaded.run['rows_inserted']} rows) into {engine}: loaded in {load:.0f} s, "
              f"aggregated in {first.seconds:.1f} s; load average {os.getloadavg()[0]:.2f}", flush=True)
        times: dict[str, list[float]] = {"refresh": [], "rebuild": [], "baseline": [], "refresh_baseline": [], "refresh_ours": []}
        for k in range(1, args.rounds + 1):
            day = last + timedelta(days=k)
            demo.faults.overrides = {(cid, (day - timedelta(days=back)).isoformat()): {"grab_sales": f"{1000 * k + cid}.25"}
                                     for cid in range(1, args.clients + 1, 5) for back in (1, 2)}
            synced = run_sync(config, SyncOptions(Window(day - timedelta(days=2), day), aggregate=False))
            written = synced.run["rows_inserted"] + synced.run["rows_updated"]
            if args.refresh_baseline:
                keys = Path(tmp) / "keys.json"
                keys.write_text(json.dumps(sorted(synced.changed.keys)))
                for name, checkout in (("refresh_baseline", args.refresh_baseline), ("refresh_ours", OURS)):
                    env = {**os.environ, "PYTHONPATH": str(checkout)}
                    out = subprocess.run([sys.executable, "-c", REFRESH_BASELINE, database, day.isoformat(), str(keys),
                                          str(synced.changed.run_id)], env=env, cwd=tmp, check=True, capture_output=True, text=True).stdout.split()
                    assert out[0] == "True", out
                    times[name].append(float(out[1]))
            refreshed = aggregate_locked(open_store(setting), day, synced.changed)
            assert refreshed.status == "ok" and refreshed.refreshed, refreshed.run
            after_refresh = rollups(setting)
            rebuilt = aggregate_locked(open_store(setting), day)
            assert rebuilt.status == "ok" and not rebuilt.refreshed, rebuilt.run
            assert rollups(setting) == after_refresh, "the refresh's rollups differ from the full rebuild's"
            times["refresh"].append(refreshed.seconds)
            times["rebuild"].append(rebuilt.seconds)
            line = f"  round {k}: sync wrote {written} rows; refresh {refreshed.seconds:.2f} s, full rebuild {rebuilt.seconds:.2f} s"
            if args.refresh_baseline:
                line += f", rolled back: baseline's refresh {times['refresh_baseline'][-1]:.2f} s, ours {times['refresh_ours'][-1]:.2f} s"
            if args.baseline:
                env = {**os.environ, "PYTHONPATH": str(args.baseline)}
                out = subprocess.run([sys.executable, "-c", BASELINE, database, day.isoformat()], env=env, cwd=tmp, check=True,
                                     capture_output=True, text=True).stdout.split()
                assert out[:2] == ["ok", "False"], out
                times["baseline"].append(float(out[2]))
                line += f", baseline's full rebuild {float(out[2]):.2f} s"
            print(line + " (rollups equal)", flush=True)
    refresh, rebuild = statistics.median(times["refresh"]), statistics.median(times["rebuild"])
    print(f"medians of {args.rounds}: refresh {refresh:.2f} s, full rebuild {rebuild:.2f} s: the refresh takes {refresh / rebuild:.2f}x "
          f"the rebuild's time ({rebuild / refresh:.1f}x faster)")
    if times["refresh_baseline"]:
        baseline, ours = statistics.median(times["refresh_baseline"]), statistics.median(times["refresh_ours"])
        print(f"  rolled back, uncommitted: baseline ({args.refresh_baseline}) refresh {baseline:.2f} s, ours {ours:.2f} s: "
              f"ours takes {ours / baseline:.2f}x its time")
    if times["baseline"]:
        baseline = statistics.median(times["baseline"])
        print(f"  baseline ({args.baseline}) full rebuild {baseline:.2f} s: the refresh is {baseline / refresh:.1f}x faster")
    print(f"load average {os.getloadavg()[0]:.2f}")
    if args.postgres:
        import psycopg

        with psycopg.connect(args.postgres, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database.rsplit('/', 1)[1]} WITH (FORCE)")


if __name__ == "__main__":
    main()
