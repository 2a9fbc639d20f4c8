"""What the change log (stat_changes) costs the upsert on a daily full-year re-sync.

Builds 127 clients x 365 days from the demo source, then times the upsert stage
alone (replica.write_client_window for every client, one transaction each) on a
re-sync where a few rows changed (--changed, default 30), against a baseline in
the same run: the same upsert without change logging, kept here only as the
yardstick (it is the upsert as it was before stat_changes). Runs alternate, the
changed rows are restored between runs, and medians are printed with the ratio
(target <= 1.2x).

Run: python benchmarks/bench_changes.py [--runs 7] [--changed 30]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from delivery_sync import replica
from delivery_sync.config import Settings
from delivery_sync.days import Window, utc_now
from delivery_sync.demo_source import DEMO_TZ, DemoSource
from delivery_sync.records import ClientRows, parse_rows
from delivery_sync.replica import upsert
from delivery_sync.sync import SyncOptions, run_sync


def baseline_write(db, run_id: int, client_id: int, window: tuple[date, date], parsed: ClientRows, prune: bool = False) -> None:
    """The upsert without change logging: compare, insert new keys, update changed rows."""
    now = utc_now()
    start, end = window[0].isoformat(), window[1].isoformat()
    with db.atomic():
        stored = {row[0]: tuple(row[1:]) for row in db.execute(upsert._SELECT_WINDOW, [client_id, start, end])}
        inserts, updates = [], []
        for day, values in parsed.values.items():
            key = day.isoformat()
            previous = stored.get(key)
            if previous is None:
                inserts.append((client_id, key, *values, now, now, now))
            elif previous != values:
                updates.append((*values, now, now, client_id, key))
        db.insert_rows("client_stats", upsert._INSERT_COLUMNS, inserts)  # as the product inserts
        if updates:
            db.conn.executemany(upsert._UPDATE, updates)
        db.execute("UPDATE clients SET last_synced_at = ? WHERE id = ?", [now, client_id])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--changed", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, DemoSource(clients=127) as demo:
        path = Path(tmp) / "bench.db"
        today = demo.today()
        window = Window(today - timedelta(days=364), today)
        settings = Settings(database=path, source={"url": demo.url, "min_interval": 0, "concurrency": 8})
        assert run_sync(settings, SyncOptions(window, aggregate=False)).status == "ok"
        tz = DEMO_TZ
        answers = {cid: parse_rows(demo.rows(cid, window.start, window.end), tz, (window.start, window.end)).stored() for cid in range(1, 128)}
        rng = random.Random(7)
        picks = [(rng.randint(1, 127), window.start + timedelta(days=rng.randrange(365))) for _ in range(args.changed)]
        changed = {cid: ClientRows(dict(rows.values), rows.rejects, rows.fetched) for cid, rows in answers.items()}
        for cid, day in picks:  # a restated grab_orders: one changed value per row
            values = list(changed[cid].values[day])
            values[1] = (values[1] or 0) + 1
            changed[cid].values[day] = tuple(values)
        db = replica.open_replica(path)
        run_id = replica.start_run(db, "sync")
        bounds = (window.start, window.end)
        times: dict[str, list[float]] = {"logged": [], "baseline": []}
        for _ in range(args.runs):
            for name, write in (("logged", replica.write_client_window), ("baseline", baseline_write)):
                began = time.perf_counter()
                for cid in range(1, 128):
                    write(db, run_id, cid, bounds, changed[cid])
                times[name].append(time.perf_counter() - began)
                for cid in {cid for cid, _ in picks}:  # back to the stored state for the next run
                    baseline_write(db, run_id, cid, bounds, answers[cid])
        logged = db.execute("SELECT COUNT(*) FROM stat_changes").fetchone()[0]
        db.close()
    a, b = statistics.median(times["logged"]), statistics.median(times["baseline"])
    print(f"upsert of 127 clients x 365 days, {args.changed} rows changed, {args.runs} runs each (medians)")
    print(f"  with stat_changes logging: {a * 1000:7.1f} ms")
    print(f"  without (baseline):        {b * 1000:7.1f} ms")
    print(f"  ratio: {a / b:.2f}x (target <= 1.2x); {logged} change rows logged in all")


if __name__ == "__main__":
    main()
