"""Reports of this checkout against another version's, timed in turn on one replica.

On a shared machine the load changes from one minute to the next, so two `bench_scale.py
--retime` runs taken minutes apart do not compare. This imports the other version's package
(`--baseline`, the folder holding its `delivery_sync`, e.g. from `git archive main | tar -x`)
under another name, and times each report and window of `bench_query.py` with both versions
in turn, run after run, each on a connection its own package opened (so a change to how rows
are read from the server, e.g. in delivery_sync/postgres.py, is timed too); it prints each median
and the ratio now / baseline, and checks both versions return the same rows.

When the two versions' rollup tables differ, `--baseline-replica` names a copy of the replica
aggregated by the baseline (the same rows, its rollups), which the baseline's reports then read.

Run: python benchmarks/bench_versus.py --baseline FOLDER --replica FOLDER_OF_BENCH_SCALE_KEEP [--runs 7] [--only movers]
                                       [--baseline-replica FOLDER]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _installed import compile_package  # noqa: E402  (sibling scripts, not a package)

from delivery_sync import readonly, reports  # noqa: E402
from delivery_sync.aggregate.current import rollups_as_of  # noqa: E402
from delivery_sync.config import load_settings  # noqa: E402


def baseline_package(folder: Path):
    """The package `folder/delivery_sync`, imported as `baseline_delivery_sync`, with its `reports`,
    `readonly` and `config` modules loaded."""
    spec = importlib.util.spec_from_file_location("baseline_delivery_sync", folder / "delivery_sync" / "__init__.py",
                                                  submodule_search_locations=[str(folder / "delivery_sync")])
    package = importlib.util.module_from_spec(spec)
    sys.modules["baseline_delivery_sync"] = package
    spec.loader.exec_module(package)
    for module in ("reports", "readonly", "config"):
        importlib.import_module(f"baseline_delivery_sync.{module}")
    return package


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="folder holding the other version's delivery_sync")
    parser.add_argument("--replica", type=Path, required=True, help="a folder `bench_scale.py --keep` left")
    parser.add_argument("--baseline-replica", type=Path, help="the baseline reads this copy, aggregated by it (default: --replica)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--only", action="append", default=[], help="reports whose name starts with this (repeatable)")
    args = parser.parse_args()
    print(compile_package())
    base = baseline_package(args.baseline)
    database = load_settings(args.replica / "config.toml").database
    conn = readonly.open_reader(database)
    base_replica = args.baseline_replica or args.replica
    base_conn = base.readonly.open_reader(base.config.load_settings(base_replica / "config.toml").database)
    as_of = rollups_as_of(conn)
    print(f"{database}, windows ending {as_of}; baseline {args.baseline} on {base_replica}; median of {args.runs}, "
          "both versions in turn")
    # The same report list as bench_query, once per module.
    from bench_query import in_process_builds

    now_builds, base_builds = in_process_builds(conn, reports, as_of), in_process_builds(base_conn, base.reports, as_of)
    print(f"{'baseline':>10} {'now':>9} {'now/base':>8}  report")
    for (name, window, _, now_fn), (*_, base_fn) in zip(now_builds, base_builds):
        label = f"{name} {window}"
        if args.only and not label.startswith(tuple(args.only)):
            continue
        times: dict[str, list[float]] = {"now": [], "base": []}
        results = {}
        for run in range(args.runs + 1):  # the first run of each warms the page cache, untimed
            for name, fn, module, connection in (("base", base_fn, base.readonly, base_conn), ("now", now_fn, readonly, conn)):
                began = time.perf_counter()
                with module.snapshot(connection):
                    results[name] = fn().rows
                if run:
                    times[name].append((time.perf_counter() - began) * 1000)
        same = "" if results["now"] == results["base"] else "  DIFFERENT ROWS"
        b, n = statistics.median(times["base"]), statistics.median(times["now"])
        print(f"{b:10.2f} {n:9.2f} {n / b:8.2f}  {label}{same}", flush=True)
    conn.close()
    base_conn.close()


if __name__ == "__main__":
    main()
