"""What each microsecond of a first sync's CPU per stored row buys, stage by stage, in one thread.

The batch answers of N clients x D days (the tiles a sync asks, `fetch.plan_tiles`) are fetched
once from the demo source and kept as bytes; then each stage of the write path runs over all of
them, timed alone, in the order a sync runs them:

- decode: `json.loads` as the source reads an answer, then the check that nothing needs redacting
  or cutting (`SourceClient._decode`); the bare `json.loads` is printed beside it as the floor;
- parse: `records.parse_batch` (each row validated into the replica's tuple);
- staging: every tile but a client's last into the staging, and taken back (`Staging.add`/`take`);
- upsert: each client's whole window into a new replica (`WriteGroup`: INSERT, indexes,
  `last_synced_at`), committed at the group's bounds, with the `ChangedRows` keys;
- the same upsert on the replica it filled (every row compared, none written).

Each stage runs with the garbage collector as the sync runs it. Prints microseconds per row of each
stage and their sum, and the sum against the bare `json.loads` (the fetch-only floor's own CPU).

Run: python benchmarks/bench_rowcost.py [--clients 200] [--days 365] [--runs 3]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _installed import compile_package  # noqa: E402

from delivery_sync import replica  # noqa: E402
from delivery_sync.config import SourceSettings  # noqa: E402
from delivery_sync.days import Window  # noqa: E402
from delivery_sync.demo_source import DemoSource  # noqa: E402
from delivery_sync.fetch import plan_tiles  # noqa: E402
from delivery_sync.records import ClientRows, parse_batch  # noqa: E402
from delivery_sync.replica import ChangedRows, RunCounts, SyncWriter  # noqa: E402
from delivery_sync.source import BATCH_PATH, SourceClient  # noqa: E402


def fetch_answers(url: str, clients: int, days: int, batch_days: int):
    """The raw bytes of every batch answer a first sync of `clients` x `days` asks, with its tile."""
    import httpx

    settings = SourceSettings(url=url, min_interval=0)
    today = settings.today()
    window = Window(today - timedelta(days=days - 1), today)
    tiles = plan_tiles(dict.fromkeys(range(1, clients + 1), window), batch_days)
    with httpx.Client(base_url=url, timeout=300) as http:
        answers = []
        for tile in tiles:
            body = {"start_date": tile.window.start.isoformat(), "end_date": tile.window.end.isoformat(),
                    "client_ids": list(tile.client_ids)}
            answers.append((tile, http.post(BATCH_PATH, json=body).content))
    return settings, window, answers


def one_run(settings: SourceSettings, window: Window, answers, folder: Path) -> dict[str, float]:
    """Seconds of each stage over every answer."""
    import json

    import httpx

    source = SourceClient(settings)
    response = httpx.Response(200)
    seconds: dict[str, float] = {}

    began = time.perf_counter()
    for _, body in answers:
        json.loads(body)
    seconds["json.loads alone (the floor's)"] = time.perf_counter() - began

    began = time.perf_counter()
    decoded = [(tile, source._decode(response, body, "batch", False)) for tile, body in answers]
    seconds["decode + redaction check"] = time.perf_counter() - began

    began = time.perf_counter()
    parsed = [(tile, parse_batch(raw, tile.client_ids, settings.tz, (tile.window.start, tile.window.end)))
              for tile, raw in decoded]
    seconds["parse rows"] = time.perf_counter() - began
    del decoded

    store = replica.open_store(folder / "replica.db")
    db = store.open()
    run_id = db.start_run("sync")
    writer = SyncWriter(db, run_id, RunCounts())
    staging = writer.staging()
    outstanding: dict[int, int] = {}
    for tile, _ in parsed:
        for cid in tile.client_ids:
            outstanding[cid] = outstanding.get(cid, 0) + 1
    complete = []
    began = time.perf_counter()
    for tile, answer in parsed:
        for cid in tile.client_ids:
            rows = answer.clients[cid]
            outstanding[cid] -= 1
            if outstanding[cid]:
                staging.add(cid, rows)
            else:
                complete.append((cid, rows))
    whole = []
    for cid, rows in complete:
        staged = staging.take(cid)
        staged.values.update(rows.rows)
        whole.append((cid, ClientRows(dict(sorted(staged.values.items())), staged.rejects + rows.rejects,
                                      staged.fetched + rows.fetched)))
    seconds["staging (add, take)"] = time.perf_counter() - began
    staging.close()
    del parsed

    for name in ("upsert, new rows", "upsert, unchanged rows"):
        writer.changed = ChangedRows(run_id)
        began = time.perf_counter()
        for cid, rows in whole:
            writer.write(cid, window, rows)
        writer.commit()
        seconds[name] = time.perf_counter() - began
    db.close()
    source.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(compile_package(), flush=True)
    batch_days = SourceSettings.model_fields["batch_days"].default
    with DemoSource(clients=args.clients) as demo:
        settings, window, answers = fetch_answers(demo.url, args.clients, args.days, batch_days)
    rows = args.clients * args.days
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            gc.collect()
            runs.append(one_run(settings, window, answers, Path(tmp)))
    print(f"{args.clients} clients x {args.days} days ({rows} rows, {len(answers)} batch answers), one thread, "
          f"median of {args.runs} runs, microseconds per stored row:")
    med = {name: statistics.median(r[name] for r in runs) * 1e6 / rows for name in runs[0]}
    floor = med.pop("json.loads alone (the floor's)")
    unchanged = med.pop("upsert, unchanged rows")
    for name, us in med.items():
        print(f"  {name:28} {us:6.2f} us")
    total = sum(med.values())
    print(f"  {'first sync, in all':28} {total:6.2f} us  ({total / floor:.1f}x a bare json.loads: {floor:.2f} us)")
    print(f"  {'(re-sync: upsert unchanged)':28} {unchanged:6.2f} us")


if __name__ == "__main__":
    main()
