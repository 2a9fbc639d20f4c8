"""Chaos: random SIGKILLs of real processes across a first sync, a full re-sync
and aggregate. After each: `PRAGMA integrity_check`, every client either as it was or fully updated,
`status` shows no live run; at the end one sync makes the replica equal to the remote.

The seed is printed (run with `-s` to see it, or read it in the failure); set CHAOS_SEED to replay.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from datetime import timedelta
from zoneinfo import ZoneInfo

from conftest import SCRIPT, clean_env, query_db, write_config
from hardening import integrity

from delivery_sync.demo_source import DemoSource
from delivery_sync.status import read_status

CLIENTS, DAYS = 16, 20
KILLS = 24
DATA = ("SELECT client_id, stat_date, grab_sales, grab_orders, gojek_sales, total_sales, total_orders, extra "
        "FROM client_stats ORDER BY client_id, stat_date")


def _generations(db_path) -> dict[int, set]:
    """Per client: the remote generations its stored rows come from, and how many rows it has
    ({} while a first sync killed early left a file without its tables: the next run completes it)."""
    if not query_db(db_path, "SELECT 1 FROM sqlite_master WHERE name = 'client_stats'"):
        return {}
    rows = query_db(db_path, "SELECT client_id, COALESCE(json_extract(extra, '$.chaos_gen'), 0), COUNT(*) "
                             "FROM client_stats GROUP BY client_id, 2")
    found: dict[int, set] = {}
    for cid, gen, count in rows:
        assert count == DAYS, (cid, gen, count)  # a client's window is never half written
        found.setdefault(cid, set()).add(gen)
    return found


def test_random_sigkills_lose_nothing_and_leave_every_client_old_or_new(tmp_path):
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(10**6))
    print(f"chaos seed {seed}")
    rng = random.Random(seed)
    db_path = tmp_path / "replica.db"
    env = clean_env()
    with DemoSource(clients=CLIENTS, latency_ms=15) as demo:
        config = write_config(tmp_path / "config.toml", demo.url, db_path, source={"batch": "never", "concurrency": 2})
        end = demo.today() - timedelta(days=30)
        start = end - timedelta(days=DAYS - 1)
        sync = [SCRIPT, "--config", str(config), "sync", "--from", start.isoformat(), "--to", end.isoformat()]
        commands = {"first sync": sync, "re-sync": sync, "aggregate": [SCRIPT, "--config", str(config), "aggregate"]}

        def bump_remote(gen: int) -> None:
            demo.faults.overrides = {
                (cid, (start + timedelta(days=d)).isoformat()): {"chaos_gen": gen}
                for cid in range(1, CLIENTS + 1) for d in range(DAYS)
            }

        # How long each command runs uninterrupted: the kills land anywhere inside that.
        durations = {}
        for phase in ("first sync", "aggregate"):
            began = time.monotonic()
            assert subprocess.run(commands[phase], env=env, capture_output=True, timeout=60).returncode == 0
            durations[phase] = time.monotonic() - began
        durations["re-sync"] = durations["first sync"]

        gen, kills, finished, before = 0, {phase: 0 for phase in commands}, 0, _generations(db_path)
        while sum(kills.values()) < KILLS:
            assert sum(kills.values()) + finished < 3 * KILLS, f"seed {seed}: the kills keep missing"
            phase = rng.choice(list(commands))
            if phase == "first sync":
                for suffix in ("", "-wal", "-shm"):
                    db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
                before = {}
            elif phase == "re-sync":
                gen += 1
                bump_remote(gen)
            delay = rng.uniform(0.05, durations[phase])
            proc = subprocess.Popen(commands[phase], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills[phase] += 1
            else:
                finished += 1
            proc.wait(timeout=30)
            where = f"seed {seed}, {phase} killed after {delay:.2f} s"
            if not db_path.exists():  # a first sync killed before it made the file (and what ran since)
                assert before == {}, where
                continue
            assert integrity(db_path) == "ok", where
            after = _generations(db_path)
            for cid, gens in after.items():
                # One generation per client: either what it held before this run or the remote's now.
                assert len(gens) == 1 and gens <= before.get(cid, set()) | {gen}, (where, cid, gens)
            assert set(before) <= set(after), where  # no client lost its rows
            before = after
            if query_db(db_path, "SELECT 1 FROM sqlite_master WHERE name = 'sync_runs'"):
                status = read_status(db_path, ZoneInfo("Asia/Makassar"), 26)
                assert status.running == [], where  # a killed run is not shown as running

        print(f"chaos seed {seed}: kills {kills}, {finished} runs finished before their kill")
        assert all(kills.values()), (seed, kills)
        final = subprocess.run(sync, env=env, capture_output=True, text=True, timeout=60)
        assert final.returncode == 0, (seed, final.stderr)
        assert integrity(db_path) == "ok"
        # Equal to the remote: the same rows as a fresh replica synced from it now.
        fresh = tmp_path / "fresh.db"
        fresh_config = write_config(tmp_path / "fresh.toml", demo.url, fresh, source={"batch": "never"})
        fresh_sync = [SCRIPT, "--config", str(fresh_config), "sync", "--from", start.isoformat(), "--to", end.isoformat()]
        assert subprocess.run(fresh_sync, env=env, capture_output=True, timeout=60).returncode == 0
        assert query_db(db_path, DATA) == query_db(fresh, DATA)
        assert len(query_db(db_path, DATA)) == CLIENTS * DAYS
        assert query_db(db_path, "SELECT COUNT(*) FROM sync_runs WHERE status = 'running'") == [(0,)]
        aggregate = subprocess.run(commands["aggregate"], env=env, capture_output=True, timeout=60)
        assert aggregate.returncode == 0
        assert query_db(db_path, "SELECT SUM(days_with_data) FROM client_aggregates WHERE period LIKE '____-__'") == [(CLIENTS * DAYS,)]
