"""Files on a shared machine (issue 18, items 1-3 and 16): a lock or replica path that is a symlink, a FIFO
or another odd file is refused and never followed, truncated or written; `status` never hangs on one; new
replica, lock and side files are private to their owner whatever the umask; a first sync that stored
nothing leaves no empty replica behind."""

from __future__ import annotations

import json
import os
import stat

import pytest
from conftest import DEMO_CLIENTS, query_db, unstamped, write_config
from hardening import one_line, run_cli

SECRET = "the other file's contents\n"


def lock_of(db_path):
    return db_path.with_name(db_path.name + ".lock")


@pytest.fixture
def victim(tmp_path):
    """Another file of the user's, which a planted symlink points at."""
    path = tmp_path / "victim.txt"
    path.write_text(SECRET)
    return path


# --- item 1: the lock --------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["sync", "--days-back", "1"], ["collect"], ["aggregate"]])
def test_a_symlinked_lock_is_refused_and_its_target_left_alone(cli, config, db_path, victim, command):
    if command == ["aggregate"]:
        assert cli("sync", "--days-back", "1").code == 0
        os.unlink(lock_of(db_path))
    existed = db_path.exists()
    lock_of(db_path).symlink_to(victim)
    result = cli(*command)
    assert result.code == 2, result.stderr
    assert one_line(result.stderr) == (
        f"error: lock path {lock_of(db_path)} is a symbolic link, not a plain file: refused, never followed or written "
        "(remove it; a writing run creates its own)"
    )
    assert victim.read_text() == SECRET
    assert lock_of(db_path).is_symlink() and db_path.exists() == existed


def test_a_dangling_lock_symlink_creates_nothing(cli, config, db_path, tmp_path):
    target = tmp_path / "created-elsewhere"
    lock_of(db_path).symlink_to(target)
    result = cli("sync", "--days-back", "1")
    assert result.code == 2 and "is a symbolic link" in one_line(result.stderr)
    assert not target.exists() and not db_path.exists()


def test_a_hard_linked_lock_is_refused(cli, config, db_path, victim):
    os.link(victim, lock_of(db_path))
    result = cli("sync", "--days-back", "1")
    assert result.code == 2 and "is a file with 2 names (hard links)" in one_line(result.stderr)
    assert victim.read_text() == SECRET


def test_a_fifo_lock_is_refused_by_writers_and_does_not_hang_status(tmp_path, demo, db_path):
    config = write_config(tmp_path / "config.toml", demo.url, db_path)
    assert run_cli("--config", str(config), "sync", "--days-back", "1").code == 0
    os.unlink(lock_of(db_path))
    os.mkfifo(lock_of(db_path))
    sync = run_cli("--config", str(config), "sync", "--days-back", "1", timeout=20)
    assert sync.code == 2 and "is a FIFO, not a plain file: refused" in one_line(sync.stderr)
    for args in (["status", "--json"], ["status", "--format", "prometheus"], ["query", "top"]):
        result = run_cli("--config", str(config), *args, timeout=20)  # hung forever before
        assert result.code == 0, (args, result.stderr)
    status = run_cli("--config", str(config), "status", "--json", timeout=20)
    assert json.loads(status.stdout)["rows"] == DEMO_CLIENTS
    # status says why the next sync will fail, on stderr; stdout stays the JSON object.
    assert f"lock path {lock_of(db_path)} is a FIFO" in status.stderr
    assert stat.S_ISFIFO(os.lstat(lock_of(db_path)).st_mode)


# --- item 2: the replica path ------------------------------------------------------------------------------


def test_a_symlinked_replica_is_refused_and_its_target_left_alone(cli, tmp_path, demo, victim):
    db = tmp_path / "replica.db"
    db.symlink_to(victim)
    write_config(tmp_path / "config.toml", demo.url, db)
    for command in (["sync", "--days-back", "1"], ["collect"]):
        result = cli(*command)
        assert result.code == 2
        assert one_line(result.stderr) == (
            f"error: replica path {db} is a symbolic link: refused, never followed or written "
            "(point --db or `database` at the real file)"
        )
    assert victim.read_text() == SECRET
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml", "replica.db", "victim.txt"]  # no lock either
    assert demo.requests == []


def test_a_symlink_to_another_replica_does_not_write_into_it(cli, tmp_path, demo):
    other = tmp_path / "other.db"
    write_config(tmp_path / "config.toml", demo.url, other)
    assert cli("sync", "--days-back", "1").code == 0
    before = query_db(other, "SELECT id, status FROM sync_runs")
    link = tmp_path / "replica.db"
    link.symlink_to(other)
    result = cli("--db", str(link), "sync", "--days-back", "2")
    assert result.code == 2 and "is a symbolic link" in one_line(result.stderr)
    assert query_db(other, "SELECT id, status FROM sync_runs") == before


def test_a_dangling_replica_symlink_creates_nothing(cli, config, db_path, tmp_path):
    target = tmp_path / "planted.db"
    db_path.symlink_to(target)
    result = cli("sync", "--days-back", "1")
    assert result.code == 2 and "is a symbolic link" in one_line(result.stderr)
    assert not target.exists()


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
def test_a_symlinked_side_file_is_refused(cli, config, db_path, victim, suffix):
    assert cli("sync", "--days-back", "1").code == 0
    side = db_path.with_name(db_path.name + suffix)
    if side.exists():
        side.unlink()
    side.symlink_to(victim)
    result = cli("sync", "--days-back", "1")
    assert result.code == 2
    assert one_line(result.stderr).startswith(f"error: SQLite side file {side} is a symbolic link: refused")
    assert victim.read_text() == SECRET


def test_a_side_file_without_its_replica_is_refused(cli, config, db_path):
    planted = db_path.with_name(db_path.name + "-wal")
    planted.write_bytes(b"\x37\x7f\x06\x82" + bytes(28))  # a WAL header SQLite would read into a new replica
    result = cli("sync", "--days-back", "1")
    assert result.code == 2
    assert one_line(result.stderr).startswith(f"error: {planted} exists but the replica {db_path} does not: refused")
    assert not db_path.exists()


# --- item 3: modes -------------------------------------------------------------------------------------------


@pytest.fixture
def cron_umask():
    """cron's umask: files it creates are readable by every user unless created otherwise."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_new_replica_lock_and_side_files_are_private_under_umask_022(cli, config, db_path, demo, cron_umask):
    demo.faults.extra_rows = {3: [{"stat_date": demo.today().isoformat(), "grab_sales": 1, "note": "private"}]}
    assert cli("sync", "--days-back", "2").code == 0
    created = [db_path, lock_of(db_path), *(db_path.with_name(db_path.name + s) for s in ("-wal", "-shm"))]
    for path in created:
        if path.exists():  # SQLite may remove its side files when the last connection closes
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    # While a connection holds it open, the side files exist: they follow the replica's mode.
    import sqlite3

    conn = sqlite3.connect(db_path)
    conn.execute("SELECT COUNT(*) FROM client_stats").fetchone()
    try:
        for suffix in ("-wal", "-shm"):
            assert stat.S_IMODE(os.stat(db_path.with_name(db_path.name + suffix)).st_mode) == 0o600
    finally:
        conn.close()


def test_a_replica_made_group_readable_keeps_its_mode(cli, config, db_path, cron_umask):
    assert cli("sync", "--days-back", "1").code == 0
    os.chmod(db_path, 0o640)
    assert cli("sync", "--days-back", "2").code == 0
    assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o640


# --- item 16: a first sync that stored nothing ------------------------------------------------------------


def test_a_first_sync_that_reached_nothing_leaves_no_replica(cli, tmp_path, db_path):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: refused at once
    try:
        write_config(tmp_path / "config.toml", f"http://127.0.0.1:{sock.getsockname()[1]}", db_path, source={"max_retries": 0})
        result = cli("sync", "--days-back", "2")
    finally:
        sock.close()
    assert result.code == 1 and unstamped(result.stderr).strip().splitlines()[-1].startswith("sync failed: 0/0 clients")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]
    status = cli("status")
    assert status.stdout.startswith(f"Replica can be trusted: NO - no replica at {db_path} yet")


def test_a_first_sync_whose_clients_all_failed_leaves_no_replica(cli, config, db_path, demo, tmp_path):
    demo.faults.fail_clients = {cid: 500 for cid in range(1, DEMO_CLIENTS + 1)}
    write_config(config, demo.url, db_path, source={"max_retries": 0, "batch": "never", "max_consecutive_failures": 100})
    result = cli("sync", "--days-back", "1")
    assert result.code == 1 and f"0/{DEMO_CLIENTS} clients" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_a_later_failed_sync_keeps_the_replica_and_records_the_run(cli, config, db_path, demo):
    assert cli("sync", "--days-back", "1").code == 0
    demo.faults.fail_clients = {cid: 500 for cid in range(1, DEMO_CLIENTS + 1)}
    write_config(config, demo.url, db_path, source={"max_retries": 0, "batch": "never", "max_consecutive_failures": 100})
    assert cli("sync", "--days-back", "1").code == 1
    assert query_db(db_path, "SELECT status FROM sync_runs WHERE command = 'sync' ORDER BY id") == [("ok",), ("failed",)]


def test_a_first_collect_is_still_recorded(cli, config, db_path, demo):
    demo.faults.collect_fails = True
    assert cli("collect").code == 1
    assert query_db(db_path, "SELECT command, status FROM sync_runs") == [("collect", "failed")]


# --- item 4: a ./config.toml nobody named -----------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_an_implicit_config_owned_by_another_user_is_refused(cli, config, demo, db_path):
    os.chown(config, 65534, 65534)
    result = cli("sync", "--days-back", "1")
    assert result.code == 2
    assert one_line(result.stderr) == (
        "error: ./config.toml is owned by another user (uid 65534): refused, it was only found in the current folder "
        "(pass it with --config if you trust it)"
    )
    assert demo.requests == [] and not db_path.exists()
    assert cli("--config", str(config), "sync", "--days-back", "1").code == 0  # named, it is the user's choice


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_an_implicit_config_others_may_write_is_refused(cli, config, demo, db_path, mode):
    os.chmod(config, mode)
    for args in (["sync", "--days-back", "1"], ["status"]):
        result = cli(*args)
        assert result.code == 2
        assert one_line(result.stderr) == (
            f"error: ./config.toml may be written by other users (mode {mode:04o}): refused, whoever writes it chooses "
            "where the token is sent (chmod go-w config.toml, or pass it with --config)"
        )
    assert demo.requests == []


def test_a_named_config_others_may_write_is_read(cli, config, monkeypatch):
    os.chmod(config, 0o666)
    assert cli("--config", str(config), "sync", "--days-back", "1").code == 0
    monkeypatch.setenv("DELIVERY_SYNC_CONFIG", str(config))
    assert cli("status", "--check").code == 0


def test_a_token_others_can_read_gets_a_warning(cli, tmp_path, db_path):
    from delivery_sync.demo_source import DemoSource

    with DemoSource(clients=2, token="tok-s3cret") as demo:
        config = write_config(tmp_path / "config.toml", demo.url, db_path, source={"token": "tok-s3cret"})
        os.chmod(config, 0o644)
        shared = cli("sync", "--days-back", "1")
        os.chmod(config, 0o600)
        private = cli("sync", "--days-back", "1")
    assert shared.code == 0 and private.code == 0
    warning = [line for line in shared.stderr.splitlines() if "source.token" in line]
    assert len(warning) == 1 and warning[0].endswith(
        f"warning: {config} holds source.token and other users can read it (mode 0644): chmod 600 it, "
        "or set DELIVERY_SYNC_SOURCE__TOKEN instead"
    )
    assert "tok-s3cret" not in shared.stderr + shared.stdout
    assert "source.token" not in private.stderr


def test_a_database_password_others_can_read_gets_a_warning(cli, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('database = "postgresql://writer:pw-s3cret@127.0.0.1:1/replica"\n')
    os.chmod(config, 0o644)
    shared = cli("--config", str(config), "status", "--format", "prometheus")  # no server: metrics say so, exit 0
    os.chmod(config, 0o600)
    private = cli("--config", str(config), "status", "--format", "prometheus")
    assert shared.code == private.code == 0
    assert f"warning: {config} holds the database password and other users can read it (mode 0644): chmod 600 it, " \
           "or set DELIVERY_SYNC_DATABASE instead" in shared.stderr
    assert "password" not in private.stderr and "pw-s3cret" not in shared.stderr + shared.stdout + private.stdout
