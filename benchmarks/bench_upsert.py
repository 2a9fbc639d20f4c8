"""The upsert stage alone against its floor: 127 clients x 365 days of parsed rows into the replica.

- product: replica.WriteGroup, as `sync` writes (several whole clients per transaction, change
  detection, the change log, `last_synced_at`);
- floor: one transaction of `executemany INSERT ... ON CONFLICT DO UPDATE ... WHERE changed`
  over every row, nothing else.

Both run on an empty replica (every row inserted) and on a full one (every row unchanged), in
turn, each on its own copy of the same file; prints medians and the ratios (target <= 1.5x).

Run: python benchmarks/bench_upsert.py [--runs 5]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from delivery_sync import replica
from delivery_sync.config import Settings
from delivery_sync.days import Window, utc_now
from delivery_sync.demo_source import DEMO_TZ, DemoSource
from delivery_sync.metrics import METRICS
from delivery_sync.records import parse_rows
from delivery_sync.sync import SyncOptions, run_sync

COLUMNS = (*METRICS, "extra")
FLOOR = (
    f"INSERT INTO client_stats(client_id, stat_date, {', '.join(COLUMNS)}, synced_at, created_at, updated_at) "
    f"VALUES (?, ?, {', '.join('?' * len(COLUMNS))}, ?, ?, ?) "
    f"ON CONFLICT(client_id, stat_date) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in COLUMNS)}, "
    "synced_at = excluded.synced_at, updated_at = excluded.updated_at "
    f"WHERE {' OR '.join(f'{c} IS NOT excluded.{c}' for c in COLUMNS)}"
)


def product(path: Path, answers: dict, bounds) -> float:
    db = replica.open_replica(path)
    run_id = replica.start_run(db, "sync")
    group = replica.WriteGroup(db)
    began = time.perf_counter()
    for cid, rows in answers.items():
        group.write(run_id, cid, bounds, rows)
        if group.due:
            group.commit()
    group.commit()
    seconds = time.perf_counter() - began
    db.close()
    return seconds


def floor(path: Path, answers: dict, bounds) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    now = utc_now()
    began = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany(FLOOR, [(cid, day.isoformat(), *values, now, now, now)
                             for cid, rows in answers.items() for day, values in rows.values.items()])
    conn.execute("COMMIT")
    seconds = time.perf_counter() - began
    conn.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, DemoSource(clients=127) as demo:
        today = demo.today()
        window = Window(today - timedelta(days=364), today)
        bounds = (window.start, window.end)
        full, empty = Path(tmp) / "full.db", Path(tmp) / "empty.db"
        settings = Settings(database=full, source={"url": demo.url, "min_interval": 0, "concurrency": 4})
        assert run_sync(settings, SyncOptions(window, aggregate=False)).status == "ok"
        # An empty replica that knows the clients (as the first sync's client list leaves it).
        shutil.copy(full, empty)
        conn = sqlite3.connect(empty)
        conn.execute("DELETE FROM client_stats")
        conn.commit()
        conn.execute("VACUUM")
        conn.close()
        answers = {cid: parse_rows(demo.rows(cid, *bounds), DEMO_TZ, bounds).stored() for cid in range(1, 128)}
        times: dict[tuple[str, str], list[float]] = {}
        for run in range(args.runs):
            for state, source in (("empty", empty), ("full", full)):
                for name, write in (("product", product), ("floor", floor)):
                    copy = Path(tmp) / f"{state}-{name}-{run}.db"
                    shutil.copy(source, copy)
                    times.setdefault((state, name), []).append(write(copy, answers, bounds))
                    copy.unlink()
    rows = sum(len(a.values) for a in answers.values())
    print(f"upsert of 127 clients x 365 days ({rows} rows), {args.runs} runs each (medians)")
    for state in ("empty", "full"):
        p, f = (statistics.median(times[(state, n)]) for n in ("product", "floor"))
        print(f"  {state} replica: product {p * 1000:7.1f} ms  floor {f * 1000:7.1f} ms  ratio {p / f:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
