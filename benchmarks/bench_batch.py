"""Batch endpoint against one request per client: a full-year sync of 127 clients x 365 days from the
demo source at 50 ms latency per answer, with source.batch = never and = auto in the same run.

Prints each mode's median wall time over --runs fresh syncs (new replica each time), the requests
each sent, and the ratio never / auto. The demo answers both endpoints from the same data, so the
rows stored are identical (tests/test_batch.py checks that).

Run: python benchmarks/bench_batch.py [--runs 3] [--latency-ms 50] [--clients 127]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from delivery_sync.config import Settings
from delivery_sync.days import Window
from delivery_sync.demo_source import DEMO_TZ, DemoSource
from delivery_sync.sync import SyncOptions, run_sync


def one_sync(folder: Path, url: str, batch: str, run: int) -> tuple[float, int]:
    """Seconds and requests of one first sync into a new replica."""
    today = datetime.now(DEMO_TZ).date()
    settings = Settings(database=folder / f"{batch}-{run}.db", source={"url": url, "batch": batch, "concurrency": 4})
    began = time.monotonic()
    result = run_sync(settings, SyncOptions(Window(today - timedelta(days=364), today), aggregate=False))
    seconds = time.monotonic() - began
    if result.status != "ok":
        sys.exit(f"sync ({batch}) {result.status}: {result.run['error']}")
    return seconds, result.run["requests"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--clients", type=int, default=127)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"never": [], "auto": []}
    requests: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp, DemoSource(clients=args.clients, latency_ms=args.latency_ms) as demo:
        for run in range(args.runs):  # alternate, so drift of the machine hits both alike
            for batch in times:
                seconds, requests[batch] = one_sync(Path(tmp), demo.url, batch, run)
                times[batch].append(seconds)
    never, auto = (statistics.median(times[b]) for b in ("never", "auto"))
    print(f"{args.clients} clients x 365 days, {args.latency_ms:g} ms per answer, concurrency 4, {args.runs} runs each")
    print(f"  batch = never: {never:6.2f} s median ({requests['never']} requests)")
    print(f"  batch = auto:  {auto:6.2f} s median ({requests['auto']} requests)")
    print(f"  never / auto:  {never / auto:6.2f}x")


if __name__ == "__main__":
    main()
