"""Scale: N clients x D days from the demo source at 0 ms, as cron runs it, each step its own process.

Steps, into one new replica:
1. the first `sync --no-aggregate` (wall, peak RSS, WAL peak, requests);
2. `aggregate`, the full rebuild of the rollups (wall, peak RSS);
3. a daily `sync --incremental` (the last `sync.lookback_days` days, its aggregate included), the
   demo source restating about a fifth of the last 3 days as late refunds do (`--restate`);
4. every report of benchmarks/bench_query.py on that replica, in-process (median ms).

Right after the first sync, the fetch-only floor of benchmarks/bench_sync.py runs in its own process
against the same remote: the same requests as the sync (the batch tiles when `--batch auto`), at
the same concurrency, `json.loads` of each answer, nothing stored. The first sync is printed
against it (target <= 1.3x), with the sync's CPU per stored row (target <= 20 us).

Peak RSS is the process's VmHWM read from /proc/<pid>/status while it runs (cross-checked with
the kernel's ru_maxrss at exit); the WAL peak is the largest size of `<replica>-wal` seen. The
demo source runs in its own process, so its CPU (building rows) is not counted as ours, but on
a 2-core machine it competes with the sync for the CPU.

Targets: peak RSS <= 250 MB and independent of N; aggregate <= 10 s at 10,000 x 365;
incremental <= 10 s at 10,000 with the batch endpoint; reports at 10,000: stored periods <= 10 ms
(<= 20 ms for the comparisons, rankings, movers, charts and splits), any window <= 200 ms.
`--clients 10000` runs in under 20 minutes.

`--keep FOLDER` leaves the replica and its config there; `--retime FOLDER` then times every report
again on that replica (step 4 alone, no sync), e.g. before and after a change to a report, its
windows ending on the day its rollups were built to.

With --postgres URL (a server whose role may create databases) the replica is a new database
there instead of a SQLite file; the same steps and reports are timed (no WAL to watch).

Run: python benchmarks/bench_scale.py [--clients 1000] [--days 365] [--concurrency 8] [--batch auto] [--runs 5] [--postgres URL]
     python benchmarks/bench_scale.py --retime FOLDER [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _installed import compile_package  # noqa: E402  (sibling scripts, not a package)
from _postgres import new_database  # noqa: E402
from bench_query import in_process  # noqa: E402

from delivery_sync import readonly  # noqa: E402
from delivery_sync.aggregate.current import rollups_as_of  # noqa: E402
from delivery_sync.config import PostgresURL, SourceSettings, load_settings  # noqa: E402

BENCH_SYNC = str(Path(__file__).parent / "bench_sync.py")  # its floor, run as a process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def watched(args: list[str], wal: Path) -> dict:
    """Run one process to its end, polling its peak RSS and the WAL's size; exits on failure."""
    began = time.perf_counter()
    log, out = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # not pipes: a verbose run must not block on a full one
    process = subprocess.Popen(args, stdout=out, stderr=log)
    hwm = wal_peak = 0
    while True:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
            hwm = max(hwm, next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")))
        except (OSError, StopIteration):
            pass  # it is exiting (a zombie has no memory figures)
        try:
            wal_peak = max(wal_peak, wal.stat().st_size)
        except OSError:
            pass
        try:
            pid, code, usage = os.wait4(process.pid, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            break
        time.sleep(0.05)
    wall = time.perf_counter() - began
    log.seek(0)
    stderr = log.read().decode()
    log.close()
    out.seek(0)
    stdout = out.read().decode()
    out.close()
    if os.waitstatus_to_exitcode(code) != 0:
        sys.exit(f"{' '.join(args)} failed: {stderr.strip()}")
    # The summary lines: `sync ok: ...`, and under -v the aggregate's (after a log time stamp).
    lines = [line.split("Z ", 1)[1] if line[:4].isdigit() else line for line in stderr.splitlines()]
    summary = [line for line in lines if line.startswith(("sync ", "aggregate "))]
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": max(hwm, usage.ru_maxrss) / 1024,
            "wal": wal_peak / 2**20, "summary": summary, "stdout": stdout}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", choices=("auto", "never"), default="auto")
    parser.add_argument("--runs", type=int, default=5, help="runs of each report timing")
    parser.add_argument("--keep", type=Path, metavar="FOLDER", help="leave the replica and its config in this (new) folder, to profile")
    parser.add_argument("--postgres", metavar="URL", help="the replica in a new database on this PostgreSQL server")
    parser.add_argument("--retime", type=Path, metavar="FOLDER", help="only time the reports again on a replica left by --keep")
    args = parser.parse_args()
    print(compile_package(), flush=True)
    if args.retime:
        replica = load_settings(args.retime / "config.toml").database
        conn = readonly.open_reader(replica)
        rows, clients = conn.execute("SELECT COUNT(*), COUNT(DISTINCT client_id) FROM client_stats").fetchone()
        # "Today" is the day the rollups were built to: a replica kept past midnight in Bali
        # would otherwise time its stored periods as any other window.
        as_of = rollups_as_of(conn)
        conn.close()
        print(f"{replica}: {rows} rows of {clients} clients, windows ending {as_of or 'today'}; load average {os.getloadavg()[0]:.2f}")
        print_reports(in_process(replica, args.runs, as_of), args.runs)
        return

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "delivery_sync", "demo-source", "--port", str(port),
                               "--clients", str(args.clients), "--restate"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    began = time.monotonic()
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{url}/api/v1/clients", timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        with tempfile.TemporaryDirectory() as tmp:
            if args.keep:
                args.keep.mkdir(parents=True)
                tmp = args.keep
            database = Path(tmp) / "replica.db"
            if args.postgres:
                database = new_database(args.postgres, f"bench_scale_{os.getpid()}")
            config = Path(tmp) / "config.toml"
            config.write_text(f'database = "{database}"\n[source]\nurl = "{url}"\nbatch = "{args.batch}"\n'
                              f"concurrency = {args.concurrency}\nmin_interval = 0\n")
            cli = [sys.executable, "-m", "delivery_sync", "-q", "--config", str(config)]
            wal = Path(tmp) / "replica.db-wal"
            floor = [sys.executable, BENCH_SYNC, "--floor", url, "--days", str(args.days), "--concurrency", str(args.concurrency)]
            if args.batch == "auto":  # the demo source has the batch endpoint: auto uses it throughout
                floor += ["--batch-days", str(SourceSettings.model_fields["batch_days"].default)]
            steps = {
                "first sync": watched([*cli, "sync", "--days-back", str(args.days), "--no-aggregate"], wal),
                "fetch-only floor": watched(floor, wal),
                "aggregate": watched([*cli, "aggregate"], wal),
                # -v: its aggregate's own line tells how long refreshing the rollups took.
                "incremental sync": watched([*cli[:3], "-v", *cli[4:], "sync", "--days-back", str(args.days), "--incremental"], wal),
            }
            replica = PostgresURL(database) if args.postgres else database
            conn = readonly.open_reader(replica)
            rows = conn.execute("SELECT COUNT(*) FROM client_stats").fetchone()[0]
            conn.close()
            reports = in_process(replica, args.runs)
    finally:
        server.terminate()
        server.wait(10)
    engine = "PostgreSQL" if args.postgres else "SQLite"
    print(f"{args.clients} clients x {args.days} days ({rows} rows) into {engine}, demo source at 0 ms in its own process, "
          f"concurrency {args.concurrency}, batch = {args.batch}; load average {os.getloadavg()[0]:.2f}; "
          f"{time.monotonic() - began:.0f} s in all")
    floor_rows = int(steps["fetch-only floor"]["stdout"].split()[0])
    first, floor = steps["first sync"], steps["fetch-only floor"]
    for name, f in steps.items():
        print(f"  {name:17} wall {f['wall']:7.1f} s  cpu {f['cpu']:7.1f} s  peak RSS {f['rss']:6.1f} MB  WAL peak {f['wal']:6.1f} MB")
        for line in f["summary"]:
            print(f"  {'':17} {line}")
    print(f"  first sync / fetch-only floor: {first['wall'] / floor['wall']:.2f}x wall (target <= 1.3x); "
          f"the floor received {floor_rows} rows")
    print(f"  first sync CPU per stored row: {first['cpu'] / rows * 1e6:.1f} us (target <= 20 us; "
          f"the floor's: {floor['cpu'] / floor_rows * 1e6:.1f} us)")
    worst = max(f["rss"] for name, f in steps.items() if name != "fetch-only floor")
    print(f"  peak RSS of any step: {worst:.1f} MB (target <= 250 MB, independent of the client count)")
    print(f"  full aggregate: {steps['aggregate']['wall']:.1f} s (target <= 10 s at 10,000 x 365)")
    refresh = next((line for line in steps["incremental sync"]["summary"] if line.startswith("aggregate ")), "none")
    print(f"  aggregate after the incremental sync: {refresh.rsplit(', ', 1)[-1]} (target <= 2 s at 10,000)")
    print(f"  incremental sync in all: {steps['incremental sync']['wall']:.1f} s (target <= 10 s at 10,000, about 20 requests)")
    print_reports(reports, args.runs)


def print_reports(reports: list[tuple[str, float, float, bool]], runs: int) -> None:
    """Each report's median against its target at 10,000 clients; the count over target."""
    print(f"\nreports, in-process, median of {runs} (targets at 10,000 clients: stored periods <= 10 ms, "
          f"<= 20 ms for the comparisons, rankings, movers, charts and splits; any window <= 200 ms)")
    slow = 0
    for label, ms, target, analyst in reports:
        limit = (20 if analyst else 10) if target == 10 else 200
        slow += ms > limit
        print(f"  {'ok  ' if ms <= limit else 'SLOW'} {ms:9.2f} ms  (<= {limit} ms)  {label}")
    print(f"  {slow} of {len(reports)} over target")


if __name__ == "__main__":
    main()
