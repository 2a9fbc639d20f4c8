"""The whole `sync` against the network floor: 127 clients x 365 days, 50 ms remote, concurrency 4,
one request per client (source.batch = never), no request spacing (min_interval = 0).

The remote is the demo source in its own process (so its CPU is not ours). Each measurement is a
whole process, run in turn in one loop so drift of the machine hits all alike:
- floor: a bare fetch-only client (4 threads, keep-alive httpx, json.loads of each answer, nothing else);
- compare floor: the same, plus reading each client's stored window from the replica (what an
  unchanged re-sync must at least do);
- full: `delivery-sync sync` into a new replica (the aggregate included, as cron runs it);
- unchanged: `delivery-sync sync` again on that replica (the remote answers the same rows).

Prints medians of wall, CPU and peak RSS, the ratios against the targets (full <= 1.25x the floor,
unchanged <= 1.2x the compare floor, peak RSS <= 120 MB), and the tail: how long the sync ran
after the remote sent its last answer (target < 0.2 s; it includes process exit).

With --postgres URL (a server whose role may create databases, e.g. from `.ci/postgres start`),
each round also syncs into a new PostgreSQL database and again unchanged, and prints those
against the SQLite runs of the same round (target: full <= 1.3x SQLite's full).

Run: python benchmarks/bench_sync.py [--runs 5] [--latency-ms 50] [--clients 127] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from pathlib import Path

from _installed import compile_package
from _postgres import new_database

CONCURRENCY = 4


def serve(port: int, clients: int, latency_ms: float, last_answer, ready) -> None:
    """The demo source on `port`, noting in `last_answer` when it finished sending a stats answer.

    Each answer's bytes are built once and then replayed: building 365 synthetic rows costs the
    demo more CPU than the latency it simulates, and a real remote's CPU is not on our machine.
    """
    from delivery_sync.demo_source import DemoSource

    demo = DemoSource(port=port, clients=clients, latency_ms=latency_ms)
    handler = demo._server.RequestHandlerClass
    answers: dict[tuple, bytes] = {}

    class Timed(handler):
        def _stats(self, raw_id, query):
            self._key = (raw_id, query.get("start_date"), query.get("end_date"))
            if self._key in answers:
                self._send_raw(200, answers[self._key], "application/json; charset=utf-8")
            else:
                super()._stats(raw_id, query)
            last_answer.value = time.time()

        def _send_raw(self, status, data, content_type, headers=None):
            if status == 200 and getattr(self, "_key", None):
                answers[self._key] = data
            super()._send_raw(status, data, content_type, headers)

    demo._server.RequestHandlerClass = Timed
    ready.set()
    demo.serve_forever()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def floor(url: str, database: str | None, days: int = 365, concurrency: int = CONCURRENCY, batch_days: int | None = None) -> None:
    """The fetch-only client (run as its own process): `days` days ending today for every listed
    client, one request per client or, with `batch_days`, the batch requests a sync sends (the same
    tiles, `delivery_sync.fetch.plan_tiles`); `json.loads` of each answer, nothing stored. With
    `database` (per client only), it also reads each stored window. Prints the rows received and read."""
    import httpx

    from delivery_sync.demo_source import DEMO_TZ

    today = datetime.now(DEMO_TZ).date()
    params = {"start_date": (today - timedelta(days=days - 1)).isoformat(), "end_date": today.isoformat()}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=url, limits=limits, timeout=300) as http:
        ids = [c["id"] for c in json.loads(http.get("/api/v1/clients").content)]

        def one(cid: int) -> tuple[int, int]:
            rows = json.loads(http.get(f"/api/v1/clients/{cid}/stats", params=params).content)
            if not database:
                return len(rows), 0
            conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
            stored = conn.execute(
                "SELECT * FROM client_stats WHERE client_id = ? AND stat_date BETWEEN ? AND ?",
                [cid, params["start_date"], params["end_date"]],
            ).fetchall()
            conn.close()
            return len(rows), len(stored)

        def tile(tile) -> tuple[int, int]:
            from delivery_sync.source import BATCH_PATH

            body = {"start_date": tile.window.start.isoformat(), "end_date": tile.window.end.isoformat(), "client_ids": list(tile.client_ids)}
            answer = json.loads(http.post(BATCH_PATH, json=body).content)
            return sum(len(rows) for rows in answer.values()), 0

        with ThreadPoolExecutor(concurrency) as pool:
            if batch_days:  # imported only here: the per-client floor stays a bare client
                from delivery_sync.days import Window
                from delivery_sync.fetch import plan_tiles

                window = Window(date.fromisoformat(params["start_date"]), today)
                counts = list(pool.map(tile, plan_tiles(dict.fromkeys(ids, window), batch_days)))
            else:
                counts = list(pool.map(one, ids))
    print(sum(r for r, _ in counts), sum(s for _, s in counts))


def timed(args: list[str]) -> dict:
    """Wall, CPU and peak RSS of one process, and when it ended."""
    began = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    ended = time.time()
    wall = time.perf_counter() - began
    stderr = process.stderr.read().decode()
    process.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{' '.join(args)} exited {code}: {stderr.strip()}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss / 1024, "ended": ended}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--clients", type=int, default=127)
    parser.add_argument("--postgres", metavar="URL", help="also sync into new databases on this PostgreSQL server")
    parser.add_argument("--floor", metavar="URL", help=argparse.SUPPRESS)  # the floor's own process
    parser.add_argument("--compare", metavar="DB", help=argparse.SUPPRESS)
    parser.add_argument("--days", type=int, default=365, help=argparse.SUPPRESS)  # the floor's, for bench_scale.py
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help=argparse.SUPPRESS)
    parser.add_argument("--batch-days", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        return floor(args.floor, args.compare, args.days, args.concurrency, args.batch_days)
    print(compile_package(), flush=True)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    last_answer, ready = multiprocessing.Value("d", 0.0), multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(port, args.clients, args.latency_ms, last_answer, ready), daemon=True)
    server.start()
    ready.wait(30)
    figures: dict[str, list[dict]] = {"floor": [], "compare floor": [], "full": [], "unchanged": []}
    if args.postgres:
        figures.update({"pg full": [], "pg unchanged": []})
    tails: dict[str, list[float]] = {"full": [], "unchanged": []}
    me = [sys.executable, os.path.abspath(__file__)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for run in range(args.runs + 1):  # the first round warms caches and is not counted
                database = Path(tmp) / f"replica-{run}.db"
                config = Path(tmp) / f"config-{run}.toml"
                config.write_text(
                    f'database = "{database}"\n[source]\nurl = "{url}"\nbatch = "never"\n'
                    f"concurrency = {CONCURRENCY}\nmin_interval = 0\n"
                )
                sync = [sys.executable, "-m", "delivery_sync", "-q", "--config", str(config), "sync"]
                round_ = {"floor": timed([*me, "--floor", url]), "full": timed(sync)}
                full_tail = round_["full"]["ended"] - last_answer.value
                round_["compare floor"] = timed([*me, "--floor", url, "--compare", str(database)])
                round_["unchanged"] = timed(sync)
                unchanged_tail = round_["unchanged"]["ended"] - last_answer.value
                if args.postgres:
                    pg_sync = [*sync[:4], "--db", new_database(args.postgres, f"bench_sync_{os.getpid()}_{run}"), "--config", str(config), "sync"]
                    round_["pg full"], round_["pg unchanged"] = timed(pg_sync), timed(pg_sync)
                if run:
                    for name, figure in round_.items():
                        figures[name].append(figure)
                    tails["full"].append(full_tail)
                    tails["unchanged"].append(unchanged_tail)
    finally:
        server.terminate()
        if args.postgres:
            drop_databases(args.postgres)
    med = {name: {k: statistics.median(f[k] for f in runs) for k in ("wall", "cpu", "rss")} for name, runs in figures.items()}
    print(f"{args.clients} clients x 365 days, {args.latency_ms:g} ms per answer, concurrency {CONCURRENCY}, "
          f"per client, {args.runs} runs each (medians); load average {os.getloadavg()[0]:.2f}")
    for name, m in med.items():
        print(f"  {name:14} wall {m['wall']:6.2f} s   cpu {m['cpu']:6.2f} s   peak RSS {m['rss']:6.1f} MB")
    full = statistics.median(f["wall"] / b["wall"] for f, b in zip(figures["full"], figures["floor"]))
    unchanged = statistics.median(f["wall"] / b["wall"] for f, b in zip(figures["unchanged"], figures["compare floor"]))
    unchanged_floor = statistics.median(f["wall"] / b["wall"] for f, b in zip(figures["unchanged"], figures["floor"]))
    print(f"  full / floor:               {full:5.2f}x (target <= 1.25x)")
    print(f"  unchanged / compare floor:  {unchanged:5.2f}x (target <= 1.2x; {unchanged_floor:.2f}x the fetch-only floor)")
    print(f"  peak RSS of the full sync:  {med['full']['rss']:5.1f} MB (target <= 120 MB)")
    for name, values in tails.items():
        print(f"  after the last answer ({name}): {statistics.median(values):5.2f} s (target < 0.2 s; includes process exit)")
    if args.postgres:
        for kind in ("full", "unchanged"):
            ratio = statistics.median(p["wall"] / s["wall"] for p, s in zip(figures[f"pg {kind}"], figures[kind]))
            target = " (target <= 1.3x)" if kind == "full" else ""
            print(f"  PostgreSQL / SQLite, {kind + ':':10} {ratio:5.2f}x{target}; peak RSS {med[f'pg {kind}']['rss']:5.1f} MB")


def drop_databases(server: str) -> None:
    """Drop the databases `new_database` made."""
    import psycopg

    with psycopg.connect(server, autocommit=True) as admin:
        names = [r[0] for r in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [f"bench_sync_{os.getpid()}_%"])]
        for name in names:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
