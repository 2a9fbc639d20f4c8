"""`collect` end to end: the real demo remote over loopback, a real replica on both engines
(`both_engines`, tests/conftest.py)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time

import pytest
from conftest import DEMO_CLIENTS, SCRIPT, clean_env, query_db, stop_when, store_of, unstamped, write_config

from delivery_sync.readonly import UNRECORDED_END

pytestmark = pytest.mark.both_engines

RUN_COLUMNS = "command, status, requests, error, finished_at IS NOT NULL"


def collect_posts(demo) -> int:
    return sum(1 for r in demo.requests if r.method == "POST" and r.path == "/api/v1/triggerCollection")


def test_collect_ok_records_run_and_prints_one_summary(cli, config, db_path, demo):
    result = cli("collect")
    assert result.code == 0, result.stderr
    assert unstamped(result.stderr).startswith(f"collect ok: Collection finished for {DEMO_CLIENTS} clients, 1 request, ")
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""
    assert query_db(db_path, f"SELECT {RUN_COLUMNS} FROM sync_runs") == [("collect", "ok", 1, None, 1)]
    assert collect_posts(demo) == 1


def test_collect_failure_500_is_recorded_and_never_resent(cli, config, db_path, demo):
    demo.faults.collect_fails = True  # HTTP 500 with {"success": false, "error": ...}
    result = cli("-q", "collect")
    assert result.code == 1
    assert unstamped(result.stderr).splitlines()[-1].startswith("collect failed: HTTP 500: Grab login failed for 3 clients, 1 request, ")
    rows = query_db(db_path, f"SELECT {RUN_COLUMNS} FROM sync_runs")
    assert rows == [("collect", "failed", 1, "HTTP 500: Grab login failed for 3 clients", 1)]
    # 500 is retried for stats, but a collection may be running remotely: one POST only.
    assert collect_posts(demo) == 1


def test_collect_timeout_fails_without_retrigger(cli, config, db_path, demo):
    demo.faults.collect_seconds = 3
    began = time.monotonic()
    result = cli("collect", "--timeout", "0.5")
    assert time.monotonic() - began < 2.5
    assert result.code == 1
    assert "collect failed: no answer within 0.5 s (the remote may still be collecting; not re-triggered)" in result.stderr
    (row,) = query_db(db_path, "SELECT status, requests, error FROM sync_runs WHERE command = 'collect'")
    assert row[:2] == ("failed", 1) and "no answer within 0.5 s" in row[2]
    assert collect_posts(demo) == 1


def test_collect_timeout_comes_from_config(cli, tmp_path, demo, db_path):
    write_config(tmp_path / "config.toml", demo.url, db_path, collect={"timeout": 0.5})
    demo.faults.collect_seconds = 3
    assert cli("collect").code == 1
    assert "no answer within 0.5 s" in query_db(db_path, "SELECT error FROM sync_runs")[0][0]


def test_collect_retries_only_connection_failures(cli, tmp_path, db_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    write_config(tmp_path / "config.toml", f"http://127.0.0.1:{port}", db_path, source={"max_retries": 1})
    result = cli("collect")
    assert result.code == 1
    assert "collect failed: cannot reach" in result.stderr
    assert "2 attempts" in result.stderr
    assert query_db(db_path, "SELECT status, requests FROM sync_runs") == [("failed", 2)]


def test_collect_exits_75_when_another_run_holds_the_lock(cli, config, db_path, demo):
    with store_of(db_path).writer_lock("sync"):
        result = cli("collect")
    assert result.code == 75
    assert "another run holds the lock" in result.stderr and "running 'sync'" in result.stderr
    assert collect_posts(demo) == 0


def test_collect_marks_interrupted_runs(cli, config, db_path):
    db = store_of(db_path).open()
    db.start_run("sync")  # left `running` by a process that died
    db.close()
    assert cli("collect").code == 0
    assert query_db(db_path, "SELECT command, status, error FROM sync_runs ORDER BY id") == [
        ("sync", "failed", UNRECORDED_END),
        ("collect", "ok", None),
    ]


def test_a_collect_stopped_while_the_remote_collects_records_its_request(config, db_path, demo, tmp_path):
    """Ctrl-C after the trigger went out: the run says 1 request and that the remote may still be
    collecting, so nobody triggers a second collection believing none was asked for."""
    demo.faults.collect_seconds = 10
    proc = subprocess.Popen([SCRIPT, "--config", str(config), "collect"], cwd=tmp_path, env=clean_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    code, stderr = stop_when(proc, lambda: collect_posts(demo) > 0, signal.SIGINT, settle=0.2)
    assert code == 130 and collect_posts(demo) == 1
    said = "the trigger was sent: the remote may still be collecting; do not trigger it again yet; interrupted"
    assert unstamped(stderr).startswith(f"collect failed: {said}, 1 request, "), stderr
    assert query_db(db_path, "SELECT command, status, requests, error FROM sync_runs") == [("collect", "failed", 1, said)]


def test_a_collect_stopped_while_the_remote_refuses_connections_sent_no_trigger(db_path, tmp_path):
    """Ctrl-C between retries of a refused connection: nothing reached the remote, so nothing is
    said to be collecting."""
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = write_config(tmp_path / "config.toml", f"http://127.0.0.1:{port}", db_path, source={"max_retries": 5})
    proc = subprocess.Popen([SCRIPT, "--config", str(config), "collect"], cwd=tmp_path, env=clean_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    began = time.monotonic()
    code, stderr = stop_when(proc, lambda: time.monotonic() - began > 2.5, signal.SIGINT)
    assert code == 130, stderr
    [(status, requests, error)] = query_db(db_path, "SELECT status, requests, error FROM sync_runs")
    assert (status, error) == ("failed", "interrupted") and requests >= 2  # attempts, none delivered


@pytest.mark.sqlite_only("about the replica file not being created")
def test_collect_rejects_a_non_positive_timeout(cli, config, db_path, demo):
    result = cli("collect", "--timeout", "0")
    assert result.code == 2
    assert "--timeout" in result.stderr
    assert collect_posts(demo) == 0 and not db_path.exists()


def test_collect_never_prints_the_token(cli, tmp_path, db_path, demo):
    demo.token = "s3cret-token"
    write_config(tmp_path / "config.toml", demo.url, db_path, source={"token": "wrong-token"})
    result = cli("-v", "collect")
    assert result.code == 1
    assert "authentication failed" in result.stderr
    assert "wrong-token" not in result.stderr + result.stdout
    assert "wrong-token" not in str(query_db(db_path, "SELECT * FROM sync_runs"))


def test_collect_answered_200_with_success_false_fails(cli, tmp_path, db_path):
    """Some Express handlers report failure in the body only: HTTP 200 + {"success": false}."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    posts = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            posts.append(self.path)
            body = json.dumps({"success": False, "error": "collector busy"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        write_config(tmp_path / "config.toml", f"http://127.0.0.1:{server.server_address[1]}", db_path)
        result = cli("collect")
        server.shutdown()
    assert result.code == 1
    assert unstamped(result.stderr).startswith("collect failed: collector busy, 1 request, ")
    assert query_db(db_path, "SELECT status, error FROM sync_runs") == [("failed", "collector busy")]
    assert posts == ["/api/v1/triggerCollection"]
