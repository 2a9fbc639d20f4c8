"""How fast `query` answers on a realistic replica (127 clients x 365 days).

Builds the replica from the in-process demo source, then prints:
- each report's in-process query time (median) against its target: < 10 ms for
  the stored periods (--days 7/30/90/365), < 50 ms for any other window; the
  comparisons, rankings by ratio, movers and the platform split included (a
  comparison reads its base window too, which is never a stored period);
- the whole-process time of `delivery-sync query top --format json` as a ratio
  to a minimal Typer hello-world measured in the same run (target <= 1.2x), and the same
  hello-world that also imports pydantic-settings, which our config needs: the floor of the stack;
- which heavy modules the json report path imports (should be none).

Run: python benchmarks/bench_query.py [--runs 15] [--keep PATH]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

from _installed import compile_package

from delivery_sync import readonly, reports
from delivery_sync.config import Settings
from delivery_sync.days import Window
from delivery_sync.demo_source import DEMO_TZ, DemoSource
from delivery_sync.sync import SyncOptions, run_sync

HELLO = '''
import typer

app = typer.Typer()


@app.command()
def hello(name: str = "world") -> None:
    print(f"hello {name}")


app()
'''
# The config is a pydantic-settings model: its import alone is a cost hello-world does not pay.
HELLO_SETTINGS = "import pydantic_settings\n" + HELLO
HEAVY = ("httpx", "tenacity", "sqlite_utils", "rich", "delivery_sync.sync", "delivery_sync.source")


def build(path: Path) -> float:
    """Sync 127 clients x 365 days from an in-process demo source (no request spacing); seconds taken."""
    began = time.monotonic()
    today = datetime.now(DEMO_TZ).date()
    with DemoSource(clients=127) as demo:
        settings = Settings(database=path, source={"url": demo.url, "min_interval": 0, "concurrency": 8})
        result = run_sync(settings, SyncOptions(Window(today - timedelta(days=364), today)))
    if result.status != "ok":
        sys.exit(f"sync {result.status}: {result.run['error']}")
    return time.monotonic() - began


def median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def in_process_builds(conn, module, today: date) -> list[tuple[str, str, bool, object]]:
    """(report, window, is the window a stored period, report of `module` over the window) for each
    report and window of `in_process`, the windows ending `today`; `module` is our `reports` (or
    another version's, see bench_versus.py)."""
    # The module's own Window: another version's reports test `window in` a set of its own
    # Windows, which a Window of this version never equals (its stored sums would go unread).
    Window = module.Window  # noqa: N806
    windows = [(f"--days {n}", Window(today - timedelta(days=n - 1), today)) for n in (7, 30, 90, 365)]
    first_of_month = today.replace(day=1)
    windows += [
        ("--days 45", Window(today - timedelta(days=44), today)),
        ("--days 200", Window(today - timedelta(days=199), today)),
        ("--days 365 --to yesterday", Window(today - timedelta(days=365), today - timedelta(days=1))),
        ("last whole month", Window((first_of_month - timedelta(days=1)).replace(day=1), first_of_month - timedelta(days=1))),
    ]
    return [(name, label, at < 4, lambda report=report, window=window: report(conn, module, window))
            for name, report in REPORTS.items() for at, (label, window) in enumerate(windows)]


REPORTS = {
    "top": lambda conn, m, w: m.top(conn, w),
    "top --by gojek_orders --limit 50": lambda conn, m, w: m.top(conn, w, "gojek_orders", 50),
    "client 42": lambda conn, m, w: m.client(conn, w, 42),
    "client 42 --daily": lambda conn, m, w: m.client(conn, w, 42, daily=True),
    "totals": lambda conn, m, w: m.totals(conn, w),
    "totals --by month": lambda conn, m, w: m.totals(conn, w, "month"),
    "totals --by week": lambda conn, m, w: m.totals(conn, w, "week"),
    "totals --by day": lambda conn, m, w: m.totals(conn, w, "day"),
}
# The comparisons, rankings, movers, charts and splits, whose stored-period target at scale is 20 ms.
ANALYST = {
    "totals --by platform": lambda conn, m, w: m.totals(conn, w, "platform"),
    "top --compare previous": lambda conn, m, w: m.top(conn, w, compare="previous"),
    "top --spark": lambda conn, m, w: m.top(conn, w, spark=True),
    "top --by ads_roas --asc --min-orders 100": lambda conn, m, w: m.top(conn, w, "ads_roas", ascending=True, min_orders=100),
    "client 42 --compare year": lambda conn, m, w: m.client(conn, w, 42, compare="year"),
    "totals --compare previous": lambda conn, m, w: m.totals(conn, w, compare="previous"),
    "movers": lambda conn, m, w: m.movers(conn, w),
    "movers --by avg_order_value --compare year": lambda conn, m, w: m.movers(conn, w, "avg_order_value", compare="year"),
    "top --compare year": lambda conn, m, w: m.top(conn, w, compare="year"),
    "top --active-only --show-active": lambda conn, m, w: m.top(conn, w, active_only=True, show_active=True),
    "client 42 --compare previous": lambda conn, m, w: m.client(conn, w, 42, compare="previous"),
    "client 42 --daily --chart": lambda conn, m, w: m.client(conn, w, 42, daily=True, chart="total_sales"),
    "totals --compare year": lambda conn, m, w: m.totals(conn, w, compare="year"),
    "totals --by week --mark-partial": lambda conn, m, w: m.totals(conn, w, "week", mark_partial=True),
    "totals --by month --chart": lambda conn, m, w: m.totals(conn, w, "month", chart="total_sales"),
    "totals --by day --chart --chart-by ads_roas": lambda conn, m, w: m.totals(conn, w, "day", chart="ads_roas"),
    "movers --min-base 5000000 --rank change --active-only": lambda conn, m, w: m.movers(
        conn, w, min_base=5_000_000, rank="change", active_only=True),
    # A ratio against the previous window, which a replica of one year holds (its year-earlier one not).
    "movers --by ads_roas --limit 20": lambda conn, m, w: m.movers(conn, w, "ads_roas", 20),
}
REPORTS.update(ANALYST)


def in_process(path, runs: int, today: date | None = None) -> list[tuple[str, float, float, bool]]:
    """(label, median ms, target ms, analyst) for each report and window, the windows ending
    `today` (default: today in Bali); `analyst` marks the comparisons, rankings, movers, charts
    and splits, whose stored-period target at scale is 20 ms."""
    today = today or datetime.now(DEMO_TZ).date()
    conn = readonly.open_reader(path)
    results = []
    for name, label, stored, report in in_process_builds(conn, reports, today):
        def once(report=report):
            with readonly.snapshot(conn):
                report()
        once()  # warm the page cache
        results.append((f"{name} {label}", median_ms(once, runs), 10 if stored else 50, name in ANALYST))
    conn.close()
    return results


def process_times(path: Path, runs: int) -> tuple[float, float, float]:
    """Median wall times (ms) of the json report process, a Typer hello-world and the hello-world
    importing pydantic-settings, run in turn so drift of the machine hits all alike."""
    script = Path(sys.executable).with_name("delivery-sync")
    commands = [[str(script), "--db", str(path), "query", "top", "--format", "json"]]
    scripts = []
    for text in (HELLO, HELLO_SETTINGS):
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as hello:
            hello.write(text)
        scripts.append(Path(hello.name))
        commands.append([sys.executable, hello.name])
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(runs):
        for cmd, taken in zip(commands, times):
            began = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            taken.append((time.perf_counter() - began) * 1000)
    for script_path in scripts:
        script_path.unlink()
    return tuple(statistics.median(taken) for taken in times)


def heavy_imports(path: Path) -> list[str]:
    probe = (
        "import sys\nfrom delivery_sync.cli import main\n"
        f"try:\n    main(['--db', {str(path)!r}, 'query', 'top', '--format', 'json'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return eval(done.stderr.strip().splitlines()[-1])  # our own probe's repr of a list of names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the replica here instead of a temporary folder")
    args = parser.parse_args()
    print(compile_package())
    folder = tempfile.TemporaryDirectory()
    path = args.keep or Path(folder.name) / "bench.db"
    if not path.exists():
        print(f"building 127 clients x 365 days into {path} ...", flush=True)
        print(f"  synced and aggregated in {build(path):.1f} s", flush=True)
    print(f"\nin-process query time, median of {args.runs} (date {date.today()} here, {datetime.now(DEMO_TZ).date()} in Bali)")
    failures = 0
    for label, ms, target, _ in in_process(path, args.runs):
        ok = ms < target
        failures += not ok
        print(f"  {'ok  ' if ok else 'SLOW'} {ms:8.2f} ms  (< {target} ms)  {label}")
    report_ms, hello_ms, settings_ms = process_times(path, args.runs)
    ratio = report_ms / hello_ms
    print(f"\nwhole process, median of {args.runs}:")
    print(f"  delivery-sync query top --format json       {report_ms:7.1f} ms")
    print(f"  typer hello-world                           {hello_ms:7.1f} ms")
    print(f"  typer hello-world + import pydantic_settings {settings_ms:6.1f} ms  ({settings_ms / hello_ms:.2f}x: the stack's floor)")
    print(f"  ratio {ratio:.2f}x (target <= 1.2x) {'ok' if ratio <= 1.2 else 'SLOW'}; {report_ms / settings_ms:.2f}x the stack's floor")
    heavy = heavy_imports(path)
    print(f"\nheavy modules imported by the json report path: {', '.join(heavy) or 'none'}")
    print(f"\n{failures} report timings over target")
    folder.cleanup()


if __name__ == "__main__":
    main()
