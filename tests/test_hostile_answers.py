"""Hostile answers (issue 18, items 7 and 8): deep nesting fails only its client or tile, remote text
is cut at 4 KiB with a marker, NaN/Infinity never make `extra` invalid JSON, lists in status and
summary lines are capped, and the answers read at once hold a bounded amount of memory."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from conftest import DEMO_CLIENTS, SCRIPT, clean_env, query_db, unstamped, write_config
from freezegun import freeze_time

import delivery_sync.sync  # noqa: F401  the models are built now: pydantic cannot build them of freezegun's dates
from delivery_sync.demo_source import DemoSource
from delivery_sync.source import MAX_TEXT, REDACTED

TOO_DEEP = "the answer is not JSON this tool reads (nested deeper than 64 levels)"


def failures(db_path) -> dict:
    return dict(query_db(db_path, "SELECT client_id, error FROM sync_failures"))


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [100, 5000])
def test_deep_nesting_fails_only_that_client(cli, config, demo, db_path, monkeypatch, depth):
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__BATCH", "never")
    today = demo.today().isoformat()
    demo.faults.raw_paths["/api/v1/clients/3/stats"] = (200, f'[{{"stat_date": "{today}", "x": {nested(depth)}}}]', {})
    result = cli("sync", "--days-back", "2")
    assert result.code == 1, result.stderr
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr
    assert failures(db_path) == {3: f"client 3: {TOO_DEEP}"}
    assert query_db(db_path, "SELECT COUNT(DISTINCT client_id), COUNT(*) FROM client_stats") == [(DEMO_CLIENTS - 1, (DEMO_CLIENTS - 1) * 2)]
    assert unstamped(result.stderr).rstrip().splitlines()[-1].startswith("sync partial: 11/12 clients")


@pytest.mark.parametrize("depth, kept", [(62, True), (63, False)])
def test_the_depth_limit_is_the_same_for_a_plain_answer_and_one_with_text_to_cut(cli, config, demo, db_path, monkeypatch, depth, kept):
    # The row is at depth 1 and its "x" at depth 2: 62 arrays reach depth 63, 63 arrays depth 64 (too deep).
    # Client 3's answer is plain ASCII; client 4's has a string to cut, so it is cleaned value by value.
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__BATCH", "never")
    today = demo.today().isoformat()
    for cid, note in ((3, "short"), (4, "A" * (MAX_TEXT + 1))):
        demo.faults.raw_paths[f"/api/v1/clients/{cid}/stats"] = (200, f'[{{"stat_date": "{today}", "note": "{note}", "x": {nested(depth)}}}]', {})
    result = cli("sync", "--days-back", "2")
    assert "Traceback" not in result.stderr
    if kept:
        assert result.code == 0, result.stderr
        extras = [json.loads(e) for (e,) in query_db(db_path, "SELECT extra FROM client_stats WHERE client_id IN (3, 4) ORDER BY client_id")]
        assert [e["x"] == json.loads(nested(depth)) for e in extras] == [True, True]
    else:
        assert failures(db_path) == {3: f"client 3: {TOO_DEEP}", 4: f"client 4: {TOO_DEEP}"}


def test_a_number_too_large_for_a_float_is_kept_as_its_text_cut(cli, config, demo, db_path, monkeypatch):
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__BATCH", "never")
    today = demo.today().isoformat()
    digits = "9" * (MAX_TEXT + 10)
    demo.faults.raw_paths["/api/v1/clients/3/stats"] = (200, f'[{{"stat_date": "{today}", "big": {digits}.5}}]', {})
    assert cli("sync", "--days-back", "1").code == 0
    (extra,) = query_db(db_path, "SELECT extra FROM client_stats WHERE client_id = 3")[0]
    assert json.loads(extra) == {"big": digits[:MAX_TEXT] + "...[12 more characters cut]"}


def test_a_deeply_nested_batch_tile_is_fetched_client_by_client(cli, config, demo, db_path):
    demo.faults.raw_paths["/api/v1/getBatchStats"] = (200, nested(5000), {})
    result = cli("sync", "--days-back", "2")
    assert result.code == 0, result.stderr
    assert "not JSON" in result.stderr  # the tile's failure is logged, then each client fetched alone
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats") == [(DEMO_CLIENTS * 2,)]


def test_a_deeply_nested_client_list_fails_the_run_with_one_line(cli, config, demo, db_path):
    demo.faults.raw_paths["/api/v1/clients"] = (200, nested(5000), {})
    result = cli("sync", "--days-back", "2")
    assert result.code == 1
    assert "Traceback" not in result.stderr
    last = unstamped(result.stderr).strip().splitlines()[-1]
    assert last.startswith("sync failed: 0/0 clients") and last.endswith(f" - client list: {TOO_DEEP}")


def test_long_remote_text_is_cut_with_a_marker(cli, config, demo, db_path, monkeypatch):
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__BATCH", "never")
    long = "A" * 100_000
    marker = f"...[{100_000 - MAX_TEXT} more characters cut]"
    demo.faults.names = {2: long}
    demo.faults.fail_clients = {3: 422}
    demo.faults.error_text = long
    demo.faults.extra_rows = {4: [{"stat_date": demo.today().isoformat(), "grab_sales": 1, "note": long, long: 1}]}
    result = cli("sync", "--days-back", "1")
    status = cli("status")
    assert result.code == 1
    assert query_db(db_path, "SELECT name FROM clients WHERE id = 2") == [("A" * MAX_TEXT + marker,)]
    assert failures(db_path)[3] == "client 3: HTTP 422: " + "A" * MAX_TEXT + marker
    (extra,) = query_db(db_path, "SELECT extra FROM client_stats WHERE client_id = 4 AND extra IS NOT NULL")[0]
    assert json.loads(extra) == {"note": "A" * MAX_TEXT + marker, "A" * MAX_TEXT + marker: 1}
    assert "A" * (MAX_TEXT + 1) not in result.stderr + status.stdout
    assert marker in result.stderr and marker in status.stdout


def _strict(text: str):
    """json.loads that refuses NaN and Infinity, as every other JSON reader does."""
    def refuse(constant):
        raise ValueError(constant)
    return json.loads(text, parse_constant=refuse)


def test_nan_and_infinity_never_land_in_extra(cli, config, demo, db_path, monkeypatch):
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__BATCH", "never")
    today, yesterday = demo.today().isoformat(), (demo.today() - timedelta(days=1)).isoformat()
    demo.faults.raw_paths["/api/v1/clients/5/stats"] = (
        200, f'[{{"stat_date": "{today}", "grab_sales": NaN}}, '
             f'{{"stat_date": "{yesterday}", "grab_sales": 5, "ratio": Infinity, "low": -Infinity, "odd": [NaN], '
             '"huge": -1e400, "fine": 2.5}]', {})
    result = cli("sync", "--days-back", "2")
    assert result.code == 1, result.stderr
    assert "client 5: rejected row " + today + ": grab_sales: not a number ('NaN')" in result.stderr
    (extra,) = query_db(db_path, "SELECT extra FROM client_stats WHERE client_id = 5")[0]
    assert _strict(extra) == {"ratio": "Infinity", "low": "-Infinity", "odd": ["NaN"], "huge": "-1e400", "fine": 2.5}
    for (stored,) in query_db(db_path, "SELECT extra FROM client_stats WHERE extra IS NOT NULL"):
        _strict(stored)
    out = cli("query", "sql", "SELECT extra FROM client_stats WHERE client_id = 5", "--format", "json")
    assert _strict(out.stdout)[0]["extra"] == extra


def test_lists_of_many_clients_are_capped_in_status_and_the_summary(cli, tmp_path, db_path, monkeypatch):
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__BATCH", "never")
    with DemoSource(clients=60) as demo:
        write_config(tmp_path / "config.toml", demo.url, db_path, source={"max_consecutive_failures": 100})
        demo.faults.fail_clients = {cid: 422 for cid in range(1, 41)}
        result = cli("sync", "--days-back", "1")
        status, check = cli("status"), cli("status", "--check")
    assert result.code == 1
    summary = result.stderr.strip().splitlines()[-1]
    # Sorted, as status lists them: not in the order the fetch threads happened to fail them.
    assert ", 40 failed (1, 2, 3, 4, 5, 6, 7, 8, 9, 10 ... and 30 more), window " in summary, summary
    assert "40 clients failed (1, 2, 3, 4, 5, 6, 7, 8, 9, 10 ... and 30 more)" in check.stdout
    assert "... and 35 more (delivery-sync status --json lists them all)" in status.stdout
    assert "11, 12, 13" not in check.stdout
    assert len(json.loads(cli("status", "--json").stdout)["failed_clients"]) == 40  # scripts still get every id


# Runs a command as its only child and prints its exit code and peak resident memory (KiB).
_PEAK = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
         "stderr=subprocess.DEVNULL).returncode; print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def _sync_peak_mib(config) -> float:
    import subprocess
    import sys

    env = clean_env()
    # A fixed threshold: glibc's adaptive one keeps freed large buffers in the heap, which peak RSS
    # would count as if they were still held.
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    out = subprocess.run([sys.executable, "-c", _PEAK, SCRIPT, "--config", str(config), "sync", "--days-back", "2",
                          "--no-aggregate"], capture_output=True, text=True, env=env, timeout=120).stdout.split()
    assert out[0] == "0", out
    return int(out[1]) / 1024


def test_answers_read_at_once_hold_a_bounded_amount_of_memory(tmp_path, demo, db_path):
    """Six 6 MB answers trickling in at once on six threads: without a shared bound they would hold
    36 MB at once (peak RSS +42 MiB measured); with it (+20 MiB), each waits at its share of max_answer_mb while one large answer is read."""
    config = write_config(tmp_path / "config.toml", demo.url, db_path,
                          source={"max_answer_mb": 8, "concurrency": 6, "timeout": 30, "batch": "never"})
    plain = _sync_peak_mib(config)
    for cid in range(1, 7):
        demo.faults.padded_clients[cid] = 6
        demo.faults.trickle_clients[cid] = 1.0
    padded = _sync_peak_mib(config)
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats") == [(DEMO_CLIENTS * 2,)]
    assert padded - plain < 30, (plain, padded)


def test_a_repair_line_for_many_stale_clients_stays_short_and_runnable(cli, tmp_path, db_path):
    with DemoSource(clients=60) as demo:
        write_config(tmp_path / "config.toml", demo.url, db_path)
        with freeze_time("2026-11-20T01:00:00Z", tick=True):
            assert cli("sync", "--days-back", "2", "--no-aggregate").code == 0
        with freeze_time("2026-11-21T00:00:00Z", tick=True):
            assert cli("sync", "--days-back", "2", "--clients", "3", "--no-aggregate").code == 0
        with freeze_time("2026-11-21T04:00:00Z"):
            check = cli("status", "--check")
    assert check.code == 1
    assert check.stdout == ("status not ok: stale, 59 active clients not confirmed within 26 h "
                            "(1, 2, 4, 5, 6, 7, 8, 9, 10, 11 ... and 49 more); run: delivery-sync sync\n")


def test_the_clients_a_deadline_left_are_listed_as_every_other_list_is_cut(cli, tmp_path, db_path):
    """A deadline's "N clients not fetched (...)" names 10 ids and how many more, like the failed
    clients' list: in the summary line, the verdict and `status --check` alike."""
    with DemoSource(clients=60, latency_ms=150) as demo:  # one at a time: 9 s in all
        write_config(tmp_path / "config.toml", demo.url, db_path, source={"batch": "never", "concurrency": 1})
        result = cli("sync", "--days-back", "1", "--deadline", "0.02", "--no-aggregate")
        check = cli("status", "--check")
        prometheus = cli("status", "--format", "prometheus").stdout
    left = re.search(r"(\d+) clients not fetched \(((?:\d+, ){9}\d+) \.\.\. and (\d+) more\)", result.stderr)
    assert result.code == 1 and left, result.stderr
    assert int(left.group(3)) == int(left.group(1)) - 10 and int(left.group(1)) > 30
    assert f"{left.group(1)} clients not fetched ({left.group(2)} ... and {left.group(3)} more)" in check.stdout, check.stdout
    # A dashboard sees them too: not as failed, which none did.
    assert f'delivery_sync_clients{{state="not_fetched"}} {left.group(1)}' in prometheus
    assert 'delivery_sync_clients{state="failed"} 0' in prometheus


def test_an_answer_that_is_not_json_is_quoted_briefly_and_a_wrong_path_is_named(cli, tmp_path, db_path):
    """A proxy's or login's HTML page where JSON was expected: the error says what came (status,
    Content-Type, its first characters, the token redacted), not only "not JSON"; a 404 names
    the address that was not found and source.url."""
    token = "s3cret-t0ken-value"
    page = f"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>session {token} expired" + "x" * 5000
    with DemoSource(clients=DEMO_CLIENTS, token=token) as demo:
        write_config(tmp_path / "config.toml", demo.url, db_path, source={"token": token})
        demo.faults.raw_paths["/api/v1/clients"] = (200, page, {"Content-Type": "text/html; charset=utf-8"})
        html = cli("sync", "--days-back", "1")
        demo.faults.raw_paths["/api/v1/clients"] = (200, f"<p>{token}</p>", {"Content-Type": "text/html"})
        early = cli("sync", "--days-back", "1")  # the token within the characters quoted
        demo.faults.raw_paths["/api/v1/clients"] = (404, "<html><body>Cannot GET /api/v1/clients</body></html>", {"Content-Type": "text/html"})
        missing = cli("sync", "--days-back", "1")
    assert token not in early.stderr and f"text/html: '<p>{REDACTED}</p>')" in early.stderr, early.stderr
    last = unstamped(html.stderr).strip().splitlines()[-1]
    assert html.code == 1 and last.endswith(
        " - client list: the answer is not JSON (HTTP 200, text/html; charset=utf-8: "
        "'<!DOCTYPE html> <html><head><title>Sign in</title></head><bo')"), last  # its first 60 characters, one line
    assert token not in html.stderr
    last = unstamped(missing.stderr).strip().splitlines()[-1]
    assert missing.code == 1 and last.endswith(f" - client list: HTTP 404: {demo.url}/api/v1/clients not found (check source.url)"), last
