"""First-contact mistakes get one line that points the right way."""

from __future__ import annotations

import os
import socket
import ssl
import threading
from pathlib import Path

import pytest
from conftest import write_config

from delivery_sync.demo_source import DemoSource

FIXTURES = Path(__file__).parent / "fixtures"


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_a_query_usage_error_names_the_subcommand_help(cli):
    result = cli("query", "top", "--limt", "3")
    assert result.code == 2
    assert one_line(result.stderr).endswith("(see 'delivery-sync query top --help')")


@pytest.mark.parametrize("args, fix", [
    (("sync", "--db", "x.db"), "'delivery-sync --db x.db sync ...'"),
    (("status", "-q"), "'delivery-sync -q status ...'"),
    (("query", "top", "--config", "c.toml"), "'delivery-sync --config c.toml query top ...'"),
    (("query", "top", "--config", "my c.toml"), """"delivery-sync --config 'my c.toml' query top ..." """.strip()),
    # A libpq string given after the command: quoted to paste whole, its password never shown.
    (("query", "top", "--db", "host=x password=s3cret"), """"delivery-sync --db 'host=x password=[redacted]' query top ..." """.strip()),
])
def test_a_global_option_after_the_command_says_where_it_goes(cli, args, fix):
    result = cli(*args)
    assert result.code == 2
    assert one_line(result.stderr).endswith(f"(global options go before the command: {fix})")


def test_an_unknown_option_of_a_command_still_points_to_its_help(cli):
    assert one_line(cli("sync", "--bogus").stderr).endswith("(see 'delivery-sync sync --help')")


def test_verbose_and_quiet_together_is_one_line(cli):
    result = cli("-v", "-q", "status")
    assert (result.code, one_line(result.stderr)) == (2, "error: -v and -q cannot be used together")


def test_demo_source_port_out_of_range_is_a_usage_error(cli):
    result = cli("demo-source", "--port", "99999")
    assert result.code == 2 and "'--port'" in one_line(result.stderr)


def test_to_after_today_is_refused(cli, config, db_path):
    result = cli("sync", "--from", "2026-01-01", "--to", "2999-01-01")
    assert result.code == 2 and "--to 2999-01-01 is after today" in one_line(result.stderr)
    assert not db_path.exists()


@pytest.fixture
def listener_on_the_old_default_url():
    """Something listening on 127.0.0.1:3000, the default source.url of earlier versions: it must get no
    request. None when another program holds the port: the rest of each test still runs."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 3000))
    except OSError:
        sock.close()
        yield None
        return
    sock.listen()
    sock.setblocking(False)
    yield sock
    sock.close()


def _connections(sock: socket.socket | None) -> int:
    """Connections the listener received (0 when there is none)."""
    if sock is None:
        return 0
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


@pytest.mark.parametrize("command", ["sync", "collect"])
def test_no_source_url_anywhere_stops_before_any_request(cli, monkeypatch, listener_on_the_old_default_url, db_path, command):
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__TOKEN", "tok-never-sent")
    monkeypatch.setenv("DELIVERY_SYNC_DATABASE", str(db_path))
    result = cli(command)
    assert result.code == 2
    assert one_line(result.stderr) == (
        "error: no source.url configured (no --config, $DELIVERY_SYNC_CONFIG is not set, no ./config.toml): "
        f"nothing was sent (try 'delivery-sync --db {db_path} {command} --source demo', or copy config.example.toml to config.toml "
        "and set source.url)"
    )
    assert _connections(listener_on_the_old_default_url) == 0
    assert not db_path.exists() and not db_path.with_name("replica.db.lock").exists()


def test_a_config_file_without_source_url_names_it(cli, tmp_path, db_path, listener_on_the_old_default_url):
    (tmp_path / "config.toml").write_text(f'database = "{db_path}"\n[source]\ntoken = "tok-never-sent"\n')
    os.chmod(tmp_path / "config.toml", 0o600)
    result = cli("sync")
    assert result.code == 2
    assert one_line(result.stderr).startswith(
        f"error: no source.url configured (not in {tmp_path / 'config.toml'} nor $DELIVERY_SYNC_SOURCE__URL): nothing was sent"
    )
    assert _connections(listener_on_the_old_default_url) == 0


def test_a_configured_remote_that_is_down_is_retried_as_configured(cli, tmp_path, db_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: every connection is refused at once
    try:
        write_config(tmp_path / "config.toml", f"http://127.0.0.1:{sock.getsockname()[1]}", db_path, source={"max_retries": 1})
        result = cli("sync")
    finally:
        sock.close()
    assert result.code == 1 and "no source.url" not in result.stderr and "2 attempts" in result.stderr


def test_https_url_on_a_plain_http_remote_says_so_without_retrying(cli, tmp_path, db_path):
    with DemoSource(clients=2) as demo:
        write_config(tmp_path / "config.toml", demo.url.replace("http://", "https://"), db_path, source={"max_retries": 3})
        result = cli("sync")
    assert result.code == 1
    assert "the server speaks plain HTTP, not TLS (use an http:// URL in source.url)" in result.stderr
    assert "1 request" in result.stderr.splitlines()[-1]


@pytest.fixture
def tls_server():
    """A TLS server on loopback that never answers plain HTTP."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(FIXTURES / "tls-cert.pem", FIXTURES / "tls-key.pem")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)  # a TLS client (our probe) completes the handshake and leaves
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_http_url_on_a_tls_remote_says_so_without_retrying(cli, tmp_path, db_path, tls_server):
    write_config(tmp_path / "config.toml", tls_server, db_path, source={"max_retries": 3})
    result = cli("sync")
    assert result.code == 1
    assert "the server speaks TLS (use an https:// URL in source.url)" in result.stderr
    assert "1 request" in result.stderr.splitlines()[-1]


# --- hints repeat the global options that chose the replica (issue 18, item 14) ------------------------------


def test_a_repair_hint_copied_from_status_acts_on_the_same_replica(cli, tmp_path):
    import json
    import shlex

    from conftest import DEMO_CLIENTS, query_db

    elsewhere = tmp_path / "ops dir"
    db = elsewhere / "shop.db"
    with DemoSource(clients=DEMO_CLIENTS) as demo:
        config = write_config(tmp_path / "etc.toml", demo.url, tmp_path / "unused.db",
                              source={"max_retries": 0, "batch": "never"})
        elsewhere.mkdir()
        given = ["--config", str(config), "--db", str(db)]
        demo.faults.fail_clients = {3: 500}
        assert cli(*given, "sync", "--days-back", "2").code == 1
        status = cli(*given, "status")
        run_line = next(line for line in status.stdout.splitlines() if line.startswith("Run:"))
        assert run_line == f'Run: delivery-sync --config {config} --db "{db}" sync --retry-failed'
        check = cli(*given, "status", "--check")
        assert check.stdout.strip().endswith(f'; run: delivery-sync --config {config} --db "{db}" sync --retry-failed')
        advice = json.loads(cli(*given, "status", "--json").stdout)["verdict"]["advice"]
        assert advice == run_line.removeprefix("Run: ")
        demo.faults.fail_clients = {}
        copied = shlex.split(advice)
        assert copied[0] == "delivery-sync"
        assert cli(*copied[1:]).code == 0  # the operator pastes the hint
    assert query_db(db, "SELECT status FROM sync_runs WHERE command = 'sync' ORDER BY id") == [("partial",), ("ok",)]
    assert query_db(db, "SELECT COUNT(DISTINCT client_id) FROM client_stats") == [(DEMO_CLIENTS,)]
    assert not (tmp_path / "unused.db").exists()


def test_an_error_hint_repeats_db_and_a_plain_one_stays_plain(cli, tmp_path):
    missing = tmp_path / "nowhere.db"
    with_db = cli("--db", str(missing), "query", "top")
    assert with_db.code == 2
    assert one_line(with_db.stderr) == f"error: no replica at {missing} (run 'delivery-sync --db {missing} sync' first)"
    status = cli("--db", str(missing), "status").stdout.splitlines()
    assert status[1:] == [f"Run: delivery-sync --db {missing} sync",
                          f"(to try it without a remote: delivery-sync --db {missing} sync --source demo)"]
    plain = cli("query", "top")
    assert one_line(plain.stderr) == f"error: no replica at {Path('delivery_stats.db')} (run 'delivery-sync sync' first)"


def test_the_stale_warning_of_a_query_names_status_with_the_same_db(cli, config, db_path):
    from freezegun import freeze_time

    assert cli("sync", "--days-back", "2").code == 0
    with freeze_time("2099-01-01"):
        result = cli("--db", str(db_path), "query", "totals", "--from", "2026-01-01", "--to", "2026-01-02")
    assert result.code == 0
    assert f"(see 'delivery-sync --db {db_path} status')" in result.stderr


def test_a_hint_names_the_config_and_replica_that_the_environment_chose(cli, tmp_path, monkeypatch):
    # As cron runs it: crontab.example sets DELIVERY_SYNC_CONFIG, which the shell that the mailed
    # hint is pasted into does not have.
    import shlex

    from conftest import DEMO_CLIENTS, query_db

    db = tmp_path / "srv" / "shop.db"
    db.parent.mkdir()
    with DemoSource(clients=DEMO_CLIENTS) as demo:
        config = write_config(tmp_path / "etc.toml", demo.url, db, source={"max_retries": 0, "batch": "never"})
        monkeypatch.setenv("DELIVERY_SYNC_CONFIG", str(config))
        demo.faults.fail_clients = {3: 500}
        assert cli("sync", "--days-back", "2").code == 1
        status = cli("status")
        run_line = next(line for line in status.stdout.splitlines() if line.startswith("Run:"))
        assert run_line == f"Run: delivery-sync --config {config} sync --retry-failed"
        monkeypatch.setenv("DELIVERY_SYNC_DATABASE", "other.db")  # relative: named in full
        assert f"--config {config} --db {tmp_path / 'other.db'} sync" in cli("status").stdout
        monkeypatch.delenv("DELIVERY_SYNC_DATABASE")
        monkeypatch.delenv("DELIVERY_SYNC_CONFIG")  # the operator's shell
        demo.faults.fail_clients = {}
        assert cli(*shlex.split(run_line.removeprefix("Run: "))[1:]).code == 0
    assert query_db(db, "SELECT status FROM sync_runs WHERE command = 'sync' ORDER BY id") == [("partial",), ("ok",)]


def test_a_hint_leaves_out_a_database_url_with_a_password_from_the_environment(cli, monkeypatch):
    # Redacted, it would beat the variable holding the real password in the shell it is pasted into.
    monkeypatch.setenv("DELIVERY_SYNC_DATABASE", "postgresql://alice:s3cret@127.0.0.1:1/nodb")
    hint = cli("sync").stderr
    assert "try 'delivery-sync sync --source demo'" in hint and "s3cret" not in hint and "[redacted]" not in hint
    monkeypatch.setenv("DELIVERY_SYNC_DATABASE", "postgresql://alice@127.0.0.1:1/nodb")  # no password: repeated
    assert "try 'delivery-sync --db postgresql://alice@127.0.0.1:1/nodb sync --source demo'" in cli("sync").stderr
