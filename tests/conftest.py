"""Shared fixtures: a real simulated remote on loopback, a config file, and the CLI in-process."""

from __future__ import annotations

import os
import sqlite3
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

# Imported now, not by a test's first sync: pydantic builds StatRow's schema as records.py is
# imported, and under freezegun `date` is freezegun's class, which it cannot build one for (a
# test whose first sync ran inside freeze_time, as tests/test_postgres.py's do run alone, failed).
import delivery_sync.records  # noqa: F401
from delivery_sync.cli import main
from delivery_sync.demo_source import DemoSource

# The installed command, beside this interpreter: the form users run, in a process of its own.
SCRIPT = str(Path(sys.executable).with_name("delivery-sync"))

# Small but realistic: enough clients for concurrency, few enough to be quick.
DEMO_CLIENTS = 12


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str  # without the UTC time that starts each line off a terminal (tests/test_cron_logs.py checks it)
    stamped_stderr: str = ""  # as written, times included


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test runs in its own folder with no delivery-sync environment leaking in."""
    import os

    for name in list(os.environ):
        if name.startswith("DELIVERY_SYNC_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def demo():
    """A simulated remote with DEMO_CLIENTS clients, listening on a free loopback port."""
    with DemoSource(clients=DEMO_CLIENTS) as server:
        yield server


ENGINES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc):
    """A test marked `both_engines` (usually its whole module, `pytestmark`) runs once per replica
    engine: its `db_path`, and so its `config` and every read through `query_db`, is a SQLite file
    (`[sqlite]` in -v output), then a PostgreSQL database (`[postgresql]`). `both_engines("name")`
    does the same to a module's own replica fixture `name` (which reads `request.param`). A test of
    the SQLite file itself, or a slow near-duplicate kept to one engine for the suite's time, says
    so with `sqlite_only(reason)` and runs once, on SQLite."""
    marker = metafunc.definition.get_closest_marker("both_engines")
    if marker and not metafunc.definition.get_closest_marker("sqlite_only"):
        name = marker.args[0] if marker.args else "db_path"
        if name in metafunc.fixturenames and name not in _parametrized_by_the_test(metafunc):
            metafunc.parametrize(name, ENGINES, indirect=True)


def _parametrized_by_the_test(metafunc) -> set[str]:
    """Names the test's own `parametrize` marks set: a test that names the engine of each case
    (`"db_path, signum"`, `[("sqlite", ...), ("postgresql", ...)]`, indirect) is taken as it is."""
    names: set[str] = set()
    for mark in metafunc.definition.iter_markers("parametrize"):
        argnames = mark.args[0]
        names.update(argnames.replace(" ", "").split(",") if isinstance(argnames, str) else argnames)
    return names


@pytest.fixture
def db_path(request, tmp_path) -> Path | str:
    """The replica's `database` setting: a SQLite file, or under `both_engines`'s `postgresql` a
    new PostgreSQL database (a postgresql:// URL, see `pg_url`)."""
    if getattr(request, "param", "sqlite") == "postgresql":
        return request.getfixturevalue("pg_url")
    return tmp_path / "replica.db"


def write_config(path: Path, url: str, database: Path, **sections: dict) -> Path:
    """A config.toml for `url`, quick for tests (no request spacing, few retries), plus `sections`."""
    source = {"url": url, "min_interval": 0, "max_retries": 2, "timeout": 5}
    source.update(sections.pop("source", {}))
    lines = [f'database = "{database}"', "", "[source]"]
    lines += [f"{key} = {_toml(value)}" for key, value in source.items()]
    for name, values in sections.items():
        lines += ["", f"[{name}]", *(f"{key} = {_toml(value)}" for key, value in values.items())]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)  # whatever the umask: a ./config.toml others may write is refused
    return path


def _toml(value) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@pytest.fixture
def config(tmp_path, demo, db_path) -> Path:
    """./config.toml pointing at the `demo` remote and `db_path` (found without --config)."""
    return write_config(tmp_path / "config.toml", demo.url, db_path)


@pytest.fixture
def cli(capsys):
    """Run `delivery-sync ARGS...` in-process; returns exit code, stdout and stderr."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:  # main always exits
            raise AssertionError("main() returned without exiting")
        out, err = capsys.readouterr()
        return Result(code, out, unstamped(err), err)

    return run


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any DELIVERY_SYNC_* setting, plus `extra`: for a command
    run as its own process, which must read only the config its test gives it."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("DELIVERY_SYNC_")}, **extra}


def kill_when(command: list[str], env: dict[str, str], seen) -> None:
    """Run `command` as its own process and SIGKILL it as soon as `seen()` is true (within 30 s):
    a run killed mid-way, as a power cut or the OOM killer would."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        limit = time.monotonic() + 30
        while time.monotonic() < limit and not seen():
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()


def stop_when(proc, seen, signum: int, settle: float = 0.0) -> tuple[int, str]:
    """Send `signum` to the running `proc` once `seen()` is true (within 20 s) and `settle` seconds
    more, as a person's Ctrl-C or a service manager would; its exit code and stderr once it ended."""
    import time

    try:
        limit = time.monotonic() + 20
        while time.monotonic() < limit and not seen():
            time.sleep(0.02)
        time.sleep(settle)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    return proc.returncode, stderr


def client_by_client_sync(tmp_path: Path, demo, database, days: int) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of `sync --days-back DAYS --no-aggregate` of `database`
    from `demo`, for its own process: one request per client on two connections, so clients
    arrive, and commit, one after another (a test can kill it between two)."""
    config = write_config(tmp_path / "config.toml", demo.url, database, source={"batch": "never", "concurrency": 2})
    return [SCRIPT, "--config", str(config), "sync", "--days-back", str(days), "--no-aggregate"], clean_env()


def last_run(db_path: Path, columns: str, command: str = "sync") -> tuple:
    """`columns` of the latest `command` run in the replica's sync_runs."""
    return query_db(db_path, f"SELECT {columns} FROM sync_runs WHERE command = ? ORDER BY id DESC LIMIT 1", [command])[0]


def query_db(database: Path | str, sql: str, params=()) -> list[tuple]:
    """Rows of `sql` (`?` parameters) read straight from the replica: a SQLite file with sqlite3,
    a postgresql:// database with the project's connection (dates as text, as SQLite gives them)."""
    return [tuple(row) for row in _read(database, sql, params)[1]]


def dict_rows(database: Path | str, sql: str, params=()) -> list[dict]:
    """Rows of `sql` as {column name: value}, the names from the query itself (either engine)."""
    names, rows = _read(database, sql, params)
    return [dict(zip(names, row)) for row in rows]


def execute_db(database: Path | str, sql: str, params=()) -> None:
    """Run one writing statement on the replica, committed: a change made behind delivery-sync's back."""
    _read(database, sql, params)


def is_postgres(database: Path | str) -> bool:
    """Whether the replica `database` is a PostgreSQL one (else a SQLite file)."""
    return str(database).startswith("postgresql://")


def dialect(database: Path | str):
    """The SQL forms of `database`'s engine (delivery_sync/dialect.py), e.g. `.row_order`."""
    from delivery_sync.dialect import POSTGRES, SQLITE

    return POSTGRES if is_postgres(database) else SQLITE


def setting(database: Path | str):
    """`database` as Settings.database holds it: a PostgresURL, or the Path of a SQLite file."""
    from delivery_sync.config import PostgresURL

    return PostgresURL(str(database)) if is_postgres(database) else Path(database)


def store_of(database: Path | str):
    """The replica `database`'s store (delivery_sync/replica/store.py): its writer lock, `open()`."""
    from delivery_sync import replica

    return replica.open_store(setting(database))


@contextmanager
def connected(database: Path | str):
    """A connection to the replica, closed after: sqlite3 (rows as sqlite3.Row), or the project's
    PostgreSQL connection (autocommit); rows of either read by column name, `?` parameters."""
    if is_postgres(database):
        from delivery_sync import postgres

        conn = postgres.connect(setting(database))
    else:
        conn = sqlite3.connect(database)
        conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def replica_copy(database: Path | str, folder: Path):
    """A copy of the replica `database` (no session may be open on it): a file in `folder`, or a
    new PostgreSQL database made from it as a template (dropped after)."""
    if is_postgres(database):
        with new_pg_database(template=str(database)) as copy:
            yield copy
        return
    copy = folder / "copy.db"
    copy.unlink(missing_ok=True)
    with connected(database) as source, connected(copy) as target:
        source.backup(target)
    yield copy


def _read(database: Path | str, sql: str, params) -> tuple[list[str], list]:
    """Column names and rows of one statement (committed), on either engine."""
    with connected(database) as conn:
        if is_postgres(database):
            cursor = conn.execute(sql, list(params) or None)
            return [c.name for c in cursor.description or ()], cursor.fetchall() if cursor.description else []
        with conn:
            cursor = conn.execute(sql, params)
            rows = [tuple(row) for row in cursor.fetchall()]
        return [c[0] for c in cursor.description or ()], rows


def run_on_terminal(args: list[str], cwd: Path, env: dict, stream: str = "stderr") -> tuple[int, str]:
    """Run a command with `stream` (stderr or stdout) on a pseudo-terminal, as a person sees it,
    the other stream discarded; its exit code and what it showed."""
    import os
    import pty
    import subprocess

    parent, child = pty.openpty()
    streams = {"stderr": child, "stdout": subprocess.DEVNULL} if stream == "stderr" else {"stdout": child, "stderr": subprocess.DEVNULL}
    try:
        proc = subprocess.run(args, cwd=cwd, env=env, timeout=30, **streams)
        os.close(child)
        chunks = []
        while True:
            try:
                chunk = os.read(parent, 65536)
            except OSError:  # the terminal closed: all was read
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(parent)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


# --- PostgreSQL -------------------------------------------------------------------------------
# The replica-facing tests that take `engine` run against both engines. PostgreSQL's come from a
# real server: TEST_POSTGRES_URL (not DELIVERY_SYNC_*: those are config keys) names a database on it whose role may create
# databases (.ci/postgres starts one); each test gets a new database of its own.
PG_ENV = "TEST_POSTGRES_URL"


@pytest.fixture
def pg_url():
    """A new, empty PostgreSQL database for this test, as a postgresql:// URL (dropped after)."""
    with new_pg_database() as url:
        yield url


# Emptied test databases, reused: CREATE DATABASE costs a quarter of a second, emptying one far less.
_EMPTIED_PG_DATABASES: list[str] = []


@contextmanager
def new_pg_database(template: str | None = None):
    """A new PostgreSQL database (empty, or a copy of the database `template` names), as a
    postgresql:// URL, emptied or dropped after; the test is skipped without a server."""
    import uuid

    base = os.environ.get(PG_ENV)
    if not base:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {PG_ENV} is not set: .ci/run starts a PostgreSQL server for these tests")
        pytest.skip(f'no PostgreSQL server: run eval "$(.ci/postgres start)" to set {PG_ENV}')
    import psycopg

    if template is None and _EMPTIED_PG_DATABASES:
        name = _EMPTIED_PG_DATABASES.pop()
    else:
        name = f"ds_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}" + (f' TEMPLATE "{template.rsplit("/", 1)[1]}"' if template else ""))
    url = base.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            if template is not None:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            else:
                # Every session the test left (a reader, a killed run's) ends, and with it any
                # advisory lock, before the next test gets the database: a closed session's
                # server process may still be exiting.
                _ended_sessions(admin, name)
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("DROP SCHEMA public CASCADE")
                    conn.execute("CREATE SCHEMA public")
                _ended_sessions(admin, name)
                _EMPTIED_PG_DATABASES.append(name)


def _ended_sessions(admin, name: str) -> None:
    """End every session on the database `name` and wait (10 s at most) until none is left."""
    import time

    limit = time.monotonic() + 10
    left = (
        "SELECT (SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %(name)s)"
        " + (SELECT COUNT(*) FROM pg_locks WHERE database = (SELECT oid FROM pg_database WHERE datname = %(name)s))"
    )
    while admin.execute(left, {"name": name}).fetchone()[0]:
        if time.monotonic() > limit:
            raise AssertionError(f"sessions on {name} did not end within 10 s")
        time.sleep(0.005)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    """The replica `database` of each engine: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "replica.db")
    return request.getfixturevalue("pg_url")


# tests/test_postgres.py's name for query_db, which reads either engine.
rows_of = query_db


def unstamped(text: str) -> str:
    """stderr without the UTC time that starts each line off a terminal (`2026-12-02T01:00:03Z `)."""
    import re

    return re.sub(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", "", text, flags=re.M)


def overwrite_page(path: Path, pageno: int | None = None, *, table: str | None = None) -> None:
    """Damage a SQLite replica: fill page `pageno`, or the root page of `table`, with 0xff bytes
    (never page 1: the file still opens). Checkpointed first, so the page is read from the file itself."""
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    if table is not None:
        (pageno,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", [table]).fetchone()
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(path, "r+b") as f:
        f.seek((pageno - 1) * page_size)
        f.write(b"\xff" * page_size)
