"""`delivery-sync sync` as an operator meets it: errors, exit codes, the lock, the token, output (docs/reference.md)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEMO_CLIENTS, SCRIPT, clean_env, query_db, run_on_terminal, unstamped, write_config

from delivery_sync import replica
from delivery_sync.demo_source import DemoSource


@pytest.fixture(autouse=True)
def _per_client_endpoint(monkeypatch):
    """These tests are about one request per client (docs/remote-api.md); tests/test_batch.py covers the batch endpoint."""
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__BATCH", "never")


TOKEN = "tok-3f9a-very-secret-77"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data(db_path: Path) -> list:
    return query_db(db_path, "SELECT * FROM client_stats ORDER BY client_id, stat_date") + query_db(
        db_path, "SELECT id, name, active, first_seen_at, last_seen_at, last_synced_at FROM clients ORDER BY id"
    )


@pytest.fixture
def synced(cli, config, db_path):
    """A replica holding 2 days of every client."""
    result = cli("sync", "--days-back", "2")
    assert result.code == 0, result.stderr
    return db_path


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


# --- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        (["sync", "--bogus"], "--bogus"),
        (["sync", "--from", "2026-13-01"], "--from: '2026-13-01' is not a date"),
        (["sync", "--from", "yesterday"], "--from: 'yesterday' is not a date"),
        (["sync", "--from", "2026-01-01", "--to", "01/02/2026"], "--to: '01/02/2026' is not a date"),
        (["sync", "--from", "20260301"], "--from: '20260301' is not a date (expected YYYY-MM-DD)"),  # ISO, but not the documented form
        (["sync", "--from", "2026-W09-1"], "--from: '2026-W09-1' is not a date (expected YYYY-MM-DD)"),
        (["sync", "--from", "2026-03-02", "--to", "2026-03-01"], "--from 2026-03-02 is after --to 2026-03-01"),
        (["sync", "--days-back", "0"], "--days-back must be at least 1"),
        (["sync", "--days-back", "-5"], "--days-back must be at least 1"),
        (["sync", "--days-back", "many"], "--days-back"),
        (["sync", "--days-back", "3", "--from", "2026-01-01"], "either --days-back or --from/--to"),
        (["sync", "--clients", "1,x"], "--clients"),
        (["-q", "--clients", "sync"], "--clients"),  # a sync option before the command
        (["nosuchcommand"], "nosuchcommand"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_change(cli, synced, demo, args, expected):
    before = digest(synced)
    requests = len(demo.requests)
    result = cli(*args)
    assert result.code == 2
    assert expected in one_error_line(result.stderr)
    assert result.stdout == ""
    assert digest(synced) == before
    assert len(demo.requests) == requests  # the remote was not asked anything


def test_bad_input_with_no_replica_creates_nothing(cli, config, tmp_path):
    assert cli("sync", "--from", "2026-02-30").code == 2
    assert cli("sync", "--days-back", "0").code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_invalid_config_exits_2_and_changes_nothing(cli, synced, tmp_path, demo):
    before = digest(synced)
    config = tmp_path / "config.toml"
    config.write_text(config.read_text() + "max_retries_typo = 3\n")
    result = cli("sync", "--days-back", "2")
    assert result.code == 2 and "max_retries_typo: unknown key" in one_error_line(result.stderr)
    write_config(config, demo.url, synced, source={"concurrency": "lots"})
    result = cli("sync", "--days-back", "2")
    assert result.code == 2 and "source.concurrency" in one_error_line(result.stderr)
    assert digest(synced) == before


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_remote_exits_1_saying_cannot_reach(cli, synced, tmp_path):
    before = data(synced)
    url = f"http://127.0.0.1:{free_port()}"
    write_config(tmp_path / "config.toml", url, synced, source={"max_retries": 1})
    result = cli("sync", "--days-back", "2")
    assert result.code == 1
    assert f"cannot reach {url}" in result.stderr and "Traceback" not in result.stderr
    assert unstamped(result.stderr).strip().splitlines()[-1].startswith("sync failed: 0/0 clients")
    assert data(synced) == before  # no row, no client touched
    status, error = query_db(synced, "SELECT status, error FROM sync_runs WHERE command = 'sync' ORDER BY id DESC LIMIT 1")[0]
    assert status == "failed" and error.startswith(f"cannot reach {url}")


# --- the lock ----------------------------------------------------------------------------------------------


def test_a_second_writer_exits_75_naming_the_holder(cli, synced, demo):
    before = digest(synced)
    requests = len(demo.requests)
    with replica.writer_lock(synced, "sync"):
        result = cli("sync", "--days-back", "2")
    assert result.code == 75
    line = one_error_line(result.stderr)
    assert f"pid {os.getpid()} running 'sync' since 20" in line and str(synced) in line
    assert len(demo.requests) == requests and digest(synced) == before
    # Released: the next run goes through.
    assert cli("sync", "--days-back", "2").code == 0


def test_lock_held_by_another_process(cli, synced, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from delivery_sync import replica\n"
         f"with replica.writer_lock(Path({str(synced)!r}), 'collect'):\n    print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        result = cli("sync", "--days-back", "1")
    finally:
        holder.kill()
        holder.wait()
    assert result.code == 75
    assert f"pid {holder.pid} running 'collect'" in one_error_line(result.stderr)


# --- the token ---------------------------------------------------------------------------------------------


def test_token_is_sent_but_never_printed_even_with_verbose(cli, tmp_path, db_path, monkeypatch):
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__TOKEN", TOKEN)
    with DemoSource(clients=3, token=TOKEN) as demo:
        write_config(tmp_path / "config.toml", demo.url, db_path)
        demo.faults.flaky_clients = {2: 1}  # a retry is logged with -v
        demo.faults.extra_rows = {3: [{"stat_date": "N/A"}]}  # and a warning
        result = cli("-v", "sync", "--days-back", "2")
    assert result.code == 1, result.stderr  # partial: the reject
    assert "sync partial: 3/3 clients" in result.stderr
    assert {r.authorization for r in demo.requests} == {f"Bearer {TOKEN}"}
    assert TOKEN not in result.stdout + result.stderr
    assert TOKEN[:8] not in result.stderr


def test_wrong_token_fails_at_once_with_authentication_failed(cli, tmp_path, db_path, monkeypatch):
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__TOKEN", "wrong-" + TOKEN)
    with DemoSource(clients=DEMO_CLIENTS, token=TOKEN) as demo:
        write_config(tmp_path / "config.toml", demo.url, db_path)
        result = cli("-v", "sync", "--days-back", "2")
    assert result.code == 1
    assert "authentication failed" in result.stderr and "(check source.token)" in result.stderr
    assert len(demo.requests) == 1  # no retry, no stats request
    assert TOKEN not in result.stdout + result.stderr
    assert not db_path.exists()  # a first run that fetched nothing leaves no empty replica


def test_a_refusal_without_a_token_says_none_was_sent(cli, tmp_path, db_path):
    """Cron's environment without DELIVERY_SYNC_SOURCE__TOKEN: the refusal says no token was sent,
    not only 'check source.token', which reads as a wrong one."""
    with DemoSource(clients=DEMO_CLIENTS, token=TOKEN) as demo:
        write_config(tmp_path / "config.toml", demo.url, db_path)
        result = cli("sync", "--days-back", "2")
    assert result.code == 1
    assert "answered HTTP 401 (no token was sent: source.token is empty; set it, or DELIVERY_SYNC_SOURCE__TOKEN" in result.stderr


def test_token_refused_mid_run_stops_at_once(cli, config, db_path, demo):
    assert cli("sync", "--days-back", "1").code == 0
    demo.faults.fail_clients = {1: 401}
    write_config(config, demo.url, db_path, source={"concurrency": 1})
    demo.requests.clear()
    result = cli("sync", "--days-back", "2")
    assert result.code == 1
    assert "authentication failed" in result.stderr
    assert len(demo.stats_requests()) <= 2  # client 1, and at most one already started
    assert query_db(db_path, "SELECT status FROM sync_runs WHERE command = 'sync'") == [("ok",), ("failed",)]
    failures = query_db(db_path, "SELECT client_id, error FROM sync_failures")
    assert [cid for cid, _ in failures] == [1] and "authentication failed" in failures[0][1]


# --- output ---------------------------------------------------------------------------------------------------


def test_quiet_prints_only_the_summary(cli, config, demo):
    demo.faults.extra_rows = {2: [{"stat_date": "0000-00-00"}]}
    loud = cli("sync", "--days-back", "1")
    assert "warning: client 2: rejected row 0000-00-00" in loud.stderr
    quiet = cli("-q", "sync", "--days-back", "1")
    assert quiet.code == 1 and quiet.stdout == ""
    lines = unstamped(quiet.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sync partial: 12/12 clients, 12 rows (0 inserted, 0 updated, 12 unchanged), 1 rejected")


def test_verbose_and_quiet_together_is_a_usage_error(cli, config, tmp_path):
    result = cli("-v", "-q", "sync", "--days-back", "1")
    assert result.code == 2 and "error: -v and -q cannot be used together" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_verbose_shows_a_traceback_on_error(cli, config):
    result = cli("-v", "sync", "--days-back", "1", "--clients", "99")
    assert result.code == 2
    assert "Traceback" in result.stderr and "error: unknown client id 99" in result.stderr


def test_console_script_in_a_subprocess_without_a_terminal(tmp_path, demo, db_path):
    write_config(tmp_path / "config.toml", demo.url, db_path)
    env = clean_env()
    bad = subprocess.run([SCRIPT, "sync", "--from", "2026-02-30"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stdout == ""
    # Off a terminal the line starts with its UTC time, as every log line does.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ error: --from: '2026-02-30' is not a date \(expected YYYY-MM-DD\)\n", bad.stderr)
    unknown = subprocess.run([SCRIPT, "sync", "--clients", "500"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr and len(unknown.stderr.splitlines()) == 1
    ok = subprocess.run([SCRIPT, "sync", "--days-back", "2"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout == ""
    # stderr is a pipe: no progress bar, exactly one summary line for cron mail.
    lines = unstamped(ok.stderr).splitlines()
    assert len(lines) == 1 and lines[0].startswith("sync ok: 12/12 clients, 24 rows (24 inserted")
    assert "\x1b" not in ok.stderr and "\r" not in ok.stderr


def test_the_console_script_ends_without_teardown_but_with_all_its_output(tmp_path, demo, db_path):
    """The real process skips the interpreter's teardown (os._exit): its writer connection is
    closed first (SQLite removes the -wal), stdout reaches a pipe whole, and a stdout that cannot
    take the last flush is still a failure."""
    write_config(tmp_path / "config.toml", demo.url, db_path)
    env = clean_env()
    ok = subprocess.run([SCRIPT, "sync", "--days-back", "30"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert ok.returncode == 0
    assert not Path(f"{db_path}-wal").exists() and not Path(f"{db_path}-shm").exists()
    report = subprocess.run([SCRIPT, "query", "top", "--limit", "100", "--format", "json"],
                            cwd=tmp_path, env=env, capture_output=True, text=True)
    assert report.returncode == 0
    rows = json.loads(report.stdout)
    assert len(rows) == DEMO_CLIENTS and all(row["days_with_data"] == 30 for row in rows)
    with open("/dev/full", "w") as full:
        version = subprocess.run([SCRIPT, "--version"], cwd=tmp_path, env=env, stdout=full, stderr=subprocess.PIPE, text=True)
    assert version.returncode == 1
    assert unstamped(version.stderr).startswith("error: ") and "No space left on device" in version.stderr
    assert len(version.stderr.splitlines()) == 1


def test_progress_bar_is_shown_on_a_terminal(tmp_path, demo, db_path):
    write_config(tmp_path / "config.toml", demo.url, db_path)
    env = clean_env()
    env.update(TERM="xterm", COLUMNS="100")
    code, shown = run_on_terminal([SCRIPT, "sync", "--days-back", "1"], tmp_path, env)
    assert code == 0
    assert "/12" in shown and "clients" in shown and "sync ok: 12/12 clients" in shown


# --- review findings: URLs, passwords, home folders, absurd windows ---------------------------------------


@pytest.mark.parametrize("url", ["127.0.0.1:3000", "localhost", "ftp://example.org"])
def test_a_bad_url_is_blamed_on_where_it_came_from(cli, config, db_path, monkeypatch, url):
    result = cli("sync", "--source", url)
    assert (result.code, result.stderr) == (2, f"error: --source: must be an http:// or https:// URL, or 'demo' (got {url!r})\n")
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__URL", url)
    result = cli("sync")
    assert result.code == 2 and result.stderr.startswith("error: invalid config: source.url: must be an http")
    assert result.stderr.rstrip().endswith("[config.toml or DELIVERY_SYNC_SOURCE__URL]") or "DELIVERY_SYNC_SOURCE__URL]" in result.stderr
    assert not db_path.exists()


def test_a_password_in_the_url_never_reaches_the_output_even_with_v(cli, config, demo):
    url = demo.url.replace("http://", "http://ops:hunter2@")
    result = cli("-v", "sync", "--days-back", "1", "--clients", "1", "--source", url)
    assert result.code == 0, result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert f"GET {demo.url}/api/v1/clients -> HTTP 200" in result.stderr  # the request log, redacted


def test_a_home_relative_database_is_expanded(cli, tmp_path, demo, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "etc").mkdir()
    write_config(tmp_path / "etc" / "config.toml", demo.url, "~/replica.db")
    assert cli("--config", str(tmp_path / "etc" / "config.toml"), "sync", "--days-back", "1").code == 0
    assert (tmp_path / "home" / "replica.db").is_file()


@pytest.mark.parametrize("args, message", [
    (("sync", "--days-back", "99999999"), "--days-back 99999999 reaches before 1900-01-01"),
    (("sync", "--from", "0001-01-01"), "--from 0001-01-01 is outside 1900-01-01..2999-12-31"),
    (("query", "top", "--from", "2026-01-01", "--to", "9999-12-31"), "--to 9999-12-31 is after today"),
    (("sync", "--from", "2026-01-01", "--to", "2999-01-01"), "--to 2999-01-01 is after today"),
    (("query", "top", "--from", "2999-01-01"), "--from 2999-01-01 is after today ("),  # no --to given to name
])
def test_absurd_windows_are_usage_errors(cli, config, args, message):
    result = cli(*args)
    assert result.code == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1


def test_no_command_prints_the_help_without_an_error_prefix(cli):
    result = cli("query")
    assert result.code == 2 and result.stderr.startswith("Usage: delivery-sync query")
    assert "top" in result.stderr and "error:" not in result.stderr


def test_a_quiet_sync_loads_no_terminal_rendering_nor_the_simulator(tmp_path, demo):
    """The cron job (-q, stderr not a terminal, a real remote) never needs rich (which httpx's own
    command-line tool would bring), the demo server or the status views: each costs every run's start."""
    config = write_config(tmp_path / "config.toml", demo.url, tmp_path / "replica.db")
    probe = (
        "import sys\n"
        "from delivery_sync.cli import main\n"
        "try:\n"
        f"    main(['-q', '--config', {str(config)!r}, 'sync', '--days-back', '3'])\n"
        "except SystemExit as stop:\n"
        "    print('exit', stop.code, file=sys.stderr)\n"
        "unwanted = ('rich', 'pygments', 'http.server', 'httpx._main', 'delivery_sync.demo_source', 'delivery_sync.status',\n"
        "            'psycopg')\n"
        "print('httpx' in sys.modules, sorted(m for m in unwanted if m in sys.modules), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=clean_env())
    assert result.stderr.strip().splitlines()[-2:] == ["exit 0", "True []"], result.stderr


def test_httpx_command_line_tool_stays_importable_by_name():
    """Only httpx's own import of its tool is skipped: asked for by name afterwards, it loads."""
    probe = "import delivery_sync.source, httpx._main; print(callable(httpx._main.main))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "True", result.stderr


def test_a_sync_holds_its_result_until_the_next_command_line(cli, config, db_path):
    # Freed by the process's exit, not key by key as the command returns; in one process (as
    # here) the next command line lets go of it, so in-process runs do not pile results up.
    app = sys.modules["delivery_sync.cli.app"]  # the package exports the Typer app under that name

    assert cli("sync", "--days-back", "3").code == 0
    held = [value for value in app._held if hasattr(value, "changed")]
    assert len(held) == 1 and len(held[0].changed.keys) == DEMO_CLIENTS * 3
    assert cli("status").code == 0
    assert app._held == []
