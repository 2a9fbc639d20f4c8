"""The replica on a PostgreSQL server: `database = "postgresql://user@host/dbname"`.

The same tables, columns and guarantees as the SQLite file, written by the same engine-neutral
code (runs.py, clients.py, upsert.py, writer.py) through a `postgres.Connection`. What differs
lives here: the schema's types and its migrations (the same numbered list as SQLite's), the
advisory lock in place of the lock file, and the staging of batch rows.

Types: amounts DOUBLE PRECISION (SQLite's REAL), counts BIGINT (SQLite's INTEGER), days DATE,
times TEXT (`YYYY-MM-DDTHH:MM:SS+00:00`, as in SQLite), `extra` TEXT (the JSON as the remote's
row had it), `stat_changes.old_value`/`new_value` JSONB (a number stays a number, text stays text).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import date

from .. import postgres
from ..config import PostgresURL
from ..dialect import POSTGRES
from ..errors import DeliverySyncError, UsageError
from ..metrics import AMOUNT_METRICS, METRICS, RUN_COUNTERS
from ..postgres import psycopg  # through our module: without the driver, one line says what to install
from ..records import Client, ClientRows, ParsedRows, Reject
from . import clients, runs
from .runs import RunCounts
from .schema import SCHEMA_VERSION, SCHEMA_VERSION_KEY, migrations, utc_now
from .upsert import WriteGroup

MIGRATIONS_TABLE = "delivery_sync_migrations"

_METRIC_COLUMNS = ", ".join(f"{m} {'DOUBLE PRECISION' if m in AMOUNT_METRICS else 'BIGINT'}" for m in METRICS)
_COUNTER_COLUMNS = ", ".join(f"{c} BIGINT" for c in RUN_COUNTERS)

# The PostgreSQL form of each SQLite migration, by the same name and in the same order
# (tests/test_postgres.py holds the two lists together).
MIGRATIONS: dict[str, list[str]] = {
    "0001_initial": [
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)",
        "CREATE TABLE clients (id BIGINT PRIMARY KEY, name TEXT, active BIGINT NOT NULL DEFAULT 1, "
        "first_seen_at TEXT, last_seen_at TEXT, last_synced_at TEXT)",
        f"CREATE TABLE client_stats (client_id BIGINT NOT NULL, stat_date DATE NOT NULL, {_METRIC_COLUMNS}, "
        "extra TEXT, synced_at TEXT, created_at TEXT, updated_at TEXT)",
        "CREATE UNIQUE INDEX idx_client_stats_client_id_stat_date ON client_stats (client_id, stat_date)",
        "CREATE INDEX idx_client_stats_stat_date ON client_stats (stat_date)",
        "CREATE INDEX idx_client_stats_total_sales ON client_stats (total_sales)",
        "CREATE INDEX idx_client_stats_synced_at ON client_stats (synced_at)",
        "CREATE TABLE sync_runs (id BIGSERIAL PRIMARY KEY, command TEXT NOT NULL, status TEXT NOT NULL, started_at TEXT NOT NULL, "
        f"finished_at TEXT, window_start DATE, window_end DATE, {_COUNTER_COLUMNS}, error TEXT)",
        "CREATE TABLE sync_failures (run_id BIGINT REFERENCES sync_runs (id), client_id BIGINT, error TEXT)",
        "CREATE INDEX idx_sync_failures_run_id ON sync_failures (run_id)",
        "CREATE TABLE sync_rejects (run_id BIGINT REFERENCES sync_runs (id), client_id BIGINT, stat_date TEXT, reason TEXT, payload TEXT)",
        "CREATE INDEX idx_sync_rejects_run_id ON sync_rejects (run_id)",
    ],
    "0002_stat_changes": [
        'CREATE TABLE stat_changes (run_id BIGINT REFERENCES sync_runs (id), client_id BIGINT NOT NULL, stat_date DATE NOT NULL, '
        '"column" TEXT NOT NULL, old_value JSONB, new_value JSONB, changed_at TEXT NOT NULL)',
        "CREATE INDEX idx_stat_changes_client_id_stat_date ON stat_changes (client_id, stat_date)",
        "CREATE INDEX idx_stat_changes_run_id ON stat_changes (run_id)",
    ],
    "0003_sync_unfetched": [
        "CREATE TABLE sync_unfetched (run_id BIGINT REFERENCES sync_runs (id), client_id BIGINT)",
        "CREATE INDEX idx_sync_unfetched_run_id ON sync_unfetched (run_id)",
    ],
    "0004_client_stats_named": [
        "CREATE VIEW client_stats_named AS SELECT s.client_id, c.name, s.stat_date, "
        + ", ".join(f"s.{m}" for m in METRICS)
        + ", s.extra, s.synced_at, s.created_at, s.updated_at FROM client_stats s LEFT JOIN clients c ON c.id = s.client_id",
    ],
}


def migration_names() -> list[str]:
    """The SQLite replica's migrations, in order: the list both engines follow."""
    return [m.name for m in migrations._migrations]


class PostgresStore:
    """The replica in a PostgreSQL database, one writer at a time by an advisory lock."""

    def __init__(self, url: PostgresURL):
        self.url = url
        self._lock: postgres.Connection | None = None

    def __str__(self) -> str:
        return str(self.url)

    def exists(self) -> bool:
        return postgres.replica_exists(self.url)

    @contextmanager
    def writer_lock(self, command: str) -> Iterator[None]:
        """Hold the advisory lock for the whole run; a database error inside is one line."""
        with postgres.advisory_lock(self.url, command):
            try:
                yield
            except psycopg.Error as exc:
                raise storage_error(self.url, exc) from None

    def open(self) -> PostgresReplica:
        conn = postgres.connect(self.url, application="delivery-sync writer")
        try:
            migrate(conn, self.url)
        except BaseException:
            conn.close()
            raise
        return PostgresReplica(conn)

    def open_reader(self) -> postgres.Connection:
        return postgres.open_readonly(self.url)

    def describe_failure(self, exc: Exception) -> str:
        """Why a run failed, on one line (a server error as `storage_error` says it)."""
        if isinstance(exc, psycopg.Error):
            return str(storage_error(self.url, exc))
        return " ".join(str(exc).split())


def storage_error(url: PostgresURL, exc: psycopg.Error) -> DeliverySyncError:
    """The one-line error for a server that failed a run: exit 2 where the user must act (rights),
    exit 1 otherwise; every client stays as it was or fully updated."""
    text = " ".join(str(exc).split())
    if isinstance(exc, psycopg.errors.InsufficientPrivilege | psycopg.errors.ReadOnlySqlTransaction):
        return UsageError(f"cannot write replica {url}: {text}", hint="a writing run needs a role that may create and write its tables")
    if isinstance(exc, psycopg.OperationalError):
        return postgres.connect_error(url, exc)
    return DeliverySyncError(f"replica {url}: {text}", hint="every stored client is as it was or fully updated; run again")


def migrate(conn: postgres.Connection, url: PostgresURL) -> None:
    """Create or upgrade the schema in place, each migration in its own transaction; refuse a
    database whose tables are not a replica's, or a replica of a newer delivery-sync."""
    tables = {row[0] for row in conn.execute(POSTGRES.table_names)}
    if MIGRATIONS_TABLE not in tables:
        if tables & {"client_stats", "sync_runs", "clients"}:
            raise UsageError(f"{url} holds tables named like a replica's but is not one", hint="check --db or `database`")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    applied = {row[0] for row in conn.execute(f"SELECT name FROM {MIGRATIONS_TABLE}")}
    unknown = applied - set(MIGRATIONS)
    if unknown:
        raise UsageError(
            f"replica {url} has migrations this delivery-sync does not know ({', '.join(sorted(unknown))})", hint="upgrade delivery-sync"
        )
    for name in migration_names():
        if name in applied:
            continue
        with conn.atomic():
            for statement in MIGRATIONS[name]:
                conn.execute(statement)
            conn.execute(f"INSERT INTO {MIGRATIONS_TABLE}(name, applied_at) VALUES (?, ?)", [name, utc_now()])
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [SCHEMA_VERSION_KEY, str(SCHEMA_VERSION)],
    )


class PostgresReplica:
    """The write side of a run on a PostgreSQL replica: the engine-neutral functions on one connection."""

    engine = "postgresql"

    def __init__(self, conn: postgres.Connection):
        self.db = conn

    def save_client_list(self, listed: list[Client]) -> None:
        clients.save_client_list(self.db, listed)

    def latest_dates(self) -> dict[int, date]:
        return clients.latest_dates(self.db)

    def start_run(self, command: str, window: tuple[date, date] | None = None, clients_total: int = 0) -> int:
        return runs.start_run(self.db, command, window, clients_total)

    def finish_run(self, run_id: int, status: str, counts: RunCounts, error: str | None = None) -> dict:
        if self.db.in_transaction and self.db.conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            self.db.rollback()  # a failed statement left the transaction unusable: record the run outside it
        return runs.finish_run(self.db, run_id, status, counts, error)

    def closed_on_error(self, run_id: int, counts: RunCounts | None = None) -> AbstractContextManager[None]:
        return runs.closed_on_error(self.db, run_id, counts)

    def record_failure(self, run_id: int, client_id: int | None, error: str) -> None:
        runs.record_failure(self.db, run_id, client_id, error)

    def record_unfetched(self, run_id: int, client_ids: list[int]) -> None:
        runs.record_unfetched(self.db, run_id, client_ids)

    def last_sync_to_retry(self) -> tuple[int, str, str | None, str | None, list[int]] | None:
        return runs.last_sync_to_retry(self.db)

    def write_group(self) -> WriteGroup:
        return WriteGroup(self.db)

    def staging(self) -> PostgresStaging:
        return PostgresStaging(self.db)

    def transaction(self) -> AbstractContextManager[None]:
        """One transaction: everything inside commits together or not at all."""
        return self.db.atomic()

    def close(self) -> None:
        self.db.close()


class PostgresStaging:
    """Batch rows of clients still being fetched, in a TEMP table of the writer's session (on the
    server's disk, not in this process's memory); the SQLite `Staging` with PostgreSQL's SQL."""

    def __init__(self, db: postgres.Connection):
        self.db = db
        values = ", ".join(f"v{i} {'DOUBLE PRECISION' if m in AMOUNT_METRICS else 'BIGINT'}" for i, m in enumerate(METRICS))
        extra = f"v{len(METRICS)}"
        self._values = [f"v{i}" for i in range(len(METRICS) + 1)]
        db.execute("DROP TABLE IF EXISTS pg_temp.staged_rows")
        db.execute("DROP TABLE IF EXISTS pg_temp.staged_rejects")
        db.execute(f"CREATE TEMP TABLE staged_rows (client_id BIGINT, stat_date TEXT, {values}, {extra} TEXT, "
                   "PRIMARY KEY (client_id, stat_date))")
        db.execute("CREATE TEMP TABLE staged_rejects (seq BIGSERIAL, client_id BIGINT, stat_date TEXT, reason TEXT, payload TEXT)")
        self._fetched: dict[int, int] = {}
        updates = ", ".join(f"{v} = excluded.{v}" for v in self._values)
        self._insert = (f"INSERT INTO staged_rows VALUES (?, ?, {', '.join('?' * len(self._values))}) "
                        f"ON CONFLICT (client_id, stat_date) DO UPDATE SET {updates}")

    def add(self, client_id: int, parsed: ParsedRows) -> None:
        """Stage one answer's rows of a client (a later answer for the same day wins)."""
        self._fetched[client_id] = self._fetched.get(client_id, 0) + parsed.fetched
        with self.db.atomic():
            if parsed.rows:
                self.db.executemany(self._insert, [(client_id, day.isoformat(), *row.values()) for day, row in parsed.rows.items()])
            if parsed.rejects:
                self.db.executemany(
                    "INSERT INTO staged_rejects (client_id, stat_date, reason, payload) VALUES (?, ?, ?, ?)",
                    [(client_id, r.stat_date, r.reason, r.payload) for r in parsed.rejects],
                )

    def take(self, client_id: int) -> ClientRows:
        """Everything staged for a client, removed from the stage."""
        values = {
            date.fromisoformat(row[0]): tuple(row[1:])
            for row in self.db.execute(
                f"SELECT stat_date, {', '.join(self._values)} FROM staged_rows WHERE client_id = ? ORDER BY stat_date", [client_id]
            )
        }
        rejects = [Reject(*row) for row in self.db.execute(
            "SELECT stat_date, reason, payload FROM staged_rejects WHERE client_id = ? ORDER BY seq", [client_id]
        )]
        self.discard(client_id)
        return ClientRows(values, rejects, self._fetched.pop(client_id, 0))

    def discard(self, client_id: int) -> None:
        """Forget a client's staged rows (it failed: nothing of it is written)."""
        with self.db.atomic():
            self.db.execute("DELETE FROM staged_rows WHERE client_id = ?", [client_id])
            self.db.execute("DELETE FROM staged_rejects WHERE client_id = ?", [client_id])

    def close(self) -> None:
        self.db.execute("DROP TABLE IF EXISTS pg_temp.staged_rows")
        self.db.execute("DROP TABLE IF EXISTS pg_temp.staged_rejects")
