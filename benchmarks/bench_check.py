"""The integrity check a writing run makes before it writes: the whole file against the light check.

On a copy of a SQLite replica (e.g. one left by `bench_scale.py --keep FOLDER`), times opening it
as a writer does, in turn:

1. with the whole check due (the last one recorded 13 hours ago): `PRAGMA quick_check` reads every page;
2. with it recorded a minute ago: the small tables and the first page of every other table.

Both open the replica exactly as `sync`, `collect` and `aggregate` do (`open_replica`: the check,
WAL, migrations, meta). The copy is read once before the first round, so both read it from the
page cache: from disk the whole check costs more. Prints medians over --rounds and their ratio.

Run: python benchmarks/bench_check.py --replica FOLDER/replica.db [--rounds 5]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from delivery_sync.replica import open_replica, schema


def opened(path: Path, checked_ago: timedelta) -> float:
    """Seconds to open `path` as a writer, the last whole check recorded `checked_ago`."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                     [schema.WHOLE_CHECK_KEY, (datetime.now(UTC) - checked_ago).replace(microsecond=0).isoformat()])
    conn.close()
    schema.verified.clear()  # a new run: as `writer_lock` does when one starts
    started = time.perf_counter()
    open_replica(path).close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replica", type=Path, required=True, help="a SQLite replica; timed on a copy, never changed")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-check-") as folder:
        copy = Path(folder) / "replica.db"
        conn = sqlite3.connect(f"file:{args.replica}?mode=ro", uri=True)
        target = sqlite3.connect(copy)
        conn.backup(target)  # the -wal's pages included; also reads the whole file into the page cache
        target.close()
        conn.close()
        size = copy.stat().st_size
        whole, light = [], []
        for _ in range(args.rounds):
            whole.append(opened(copy, timedelta(hours=13)))
            light.append(opened(copy, timedelta(minutes=1)))
        w, li = statistics.median(whole), statistics.median(light)
        print(f"replica {args.replica}: {size / 1e9:.2f} GB, medians of {args.rounds} rounds, file in the page cache")
        print(f"  whole-file check due     {w * 1000:10.1f} ms")
        print(f"  light check              {li * 1000:10.1f} ms")
        print(f"  light / whole            {li / w:10.4f}x")
    sys.exit(0)


if __name__ == "__main__":
    main()
