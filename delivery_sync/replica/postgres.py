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
from contextlib import contextmanager

from .. import postgres
from ..config import PostgresURL
from ..days import utc_now
from ..dialect import POSTGRES
from ..errors import DeliverySyncError, UsageError, one_line
from ..metrics import AMOUNT_METRICS, METRICS, RUN_COUNTERS
from ..postgres import psycopg  # through our module: without the driver, one line says what to install
from .runs import RunCounts
from .schema import SCHEMA_VERSION, SCHEMA_VERSION_KEY, announce_upgrade, migrations
from .session import OpenReplica
from .staging import Staging

MIGRATIONS_TABLE = "delivery_sync_migrations"

_METRIC_COLUMNS = ", ".join(f"{m} {'DOUBLE PRECISION' if m in AMOUNT_METRICS else 'BIGINT'}" for m in METRICS)
_COUNTER_COLUMNS = ", ".join(f"{c} BIGINT" for c in RUN_COUNTERS)


def _stat_date_index(name: str) -> str:
    """The statement of the stat_date index (schema version 7), made under `name`."""
    return f"CREATE INDEX {name} ON client_stats (stat_date, client_id) INCLUDE ({', '.join(METRICS)})"


# Indexes of client_stats that a large first sync builds once its rows are in, as on SQLite
# (schema.DEFERRED_INDEXES), each with its statement. Filled row by row in the order a first sync
# writes (client by client), the stat_date index, whose INCLUDE columns hold every metric, took
# 294 bytes a row at 10,000 x 365; built at once, 165.
DEFERRED_INDEXES = {
    "idx_client_stats_total_sales": "CREATE INDEX idx_client_stats_total_sales ON client_stats (total_sales)",
    "idx_client_stats_stat_date": _stat_date_index("idx_client_stats_stat_date"),
}

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
    # The metrics as INCLUDE columns: the key stays (stat_date, client_id), the sums ride along for
    # index-only scans.
    "0005_stat_date_index_sums": [
        "DROP INDEX IF EXISTS idx_client_stats_stat_date",
        "CREATE INDEX idx_client_stats_stat_date ON client_stats (stat_date, client_id) INCLUDE (total_sales, total_orders)",
    ],
    "0006_sync_selected": [
        "CREATE TABLE sync_selected (run_id BIGINT REFERENCES sync_runs (id), client_id BIGINT)",
        "CREATE INDEX idx_sync_selected_run_id ON sync_selected (run_id)",
    ],
    # Built under another name, then put in the old one's place: building takes a SHARE lock,
    # which readers pass (seconds per million rows), where dropping the old index first would
    # lock every reader out until the new one is built and the migration commits.
    "0007_stat_date_index_all_metrics": [
        _stat_date_index("idx_client_stats_stat_date_7"),
        "DROP INDEX IF EXISTS idx_client_stats_stat_date",
        "ALTER INDEX idx_client_stats_stat_date_7 RENAME TO idx_client_stats_stat_date",
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
    def writer_lock(self, command: str, discard_unused: bool = False) -> Iterator[None]:
        """Hold the advisory lock for the whole run; a database error inside is one line. (A server
        database is the operator's to create and drop: `discard_unused` removes nothing here.)"""
        with postgres.advisory_lock(self.url, command):
            try:
                yield
            except psycopg.Error as exc:
                raise storage_error(self.url, exc) from None

    def open(self) -> OpenReplica:
        conn = postgres.connect(self.url, application="delivery-sync writer")
        try:
            migrate(conn, self.url)
            restore_deferred_indexes(conn)
        except BaseException:
            conn.close()
            raise
        return PostgresReplica(conn, self.open_reader)

    def open_reader(self) -> postgres.Connection:
        return postgres.open_readonly(self.url)

    def describe_failure(self, exc: Exception) -> str:
        """Why a run failed, on one line (a server error as `storage_error` says it)."""
        if isinstance(exc, psycopg.Error):
            return str(storage_error(self.url, exc))
        return one_line(exc)

    def failure(self, exc: Exception) -> DeliverySyncError | None:
        """The one-line error of a server failure mid-run (None: `exc` is none)."""
        return storage_error(self.url, exc) if isinstance(exc, psycopg.Error) else None


def storage_error(url: PostgresURL, exc: psycopg.Error) -> DeliverySyncError:
    """The one-line error for a server that failed a run: exit 2 where the user must act (rights),
    exit 1 otherwise; every client stays as it was or fully updated."""
    text = url.without_secrets(one_line(exc))
    if isinstance(exc, psycopg.errors.InsufficientPrivilege | psycopg.errors.ReadOnlySqlTransaction):
        return UsageError(f"cannot write replica {url}: {text}", hint="a writing run needs a role that may create and write its tables")
    if isinstance(exc, psycopg.errors.QueryCanceled):  # 57014: not the connection, which is still there
        return DeliverySyncError(f"the server cancelled a statement of the run on database {url}: {text}",
                                 hint="a statement_timeout set for this role or database? index builds and the aggregate can take "
                                      "minutes: raise it for delivery-sync; every stored client is as it was or fully updated")
    if isinstance(exc, psycopg.OperationalError) and (exc.sqlstate is None or exc.sqlstate[:2] in ("08", "57")):
        # Connected, then lost: a server stopped or restarted, a backend ended, the network gone.
        return DeliverySyncError(f"lost the connection to database {url}: {text}",
                                 hint="every stored client is as it was or fully updated; run again once the server is back")
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
    if "meta" in tables:  # a newer schema_version is refused, as on SQLite, not written back down
        row = conn.execute("SELECT value FROM meta WHERE key = ?", [SCHEMA_VERSION_KEY]).fetchone()
        if row and str(row[0]).isdigit() and int(row[0]) > SCHEMA_VERSION:
            raise UsageError(
                f"replica {url} has schema version {row[0]}, newer than this delivery-sync knows ({SCHEMA_VERSION})", hint="upgrade delivery-sync"
            )
    if "client_stats" in tables:
        announce_upgrade(url, [name for name in migration_names() if name not in applied])
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


def restore_deferred_indexes(conn: postgres.Connection) -> None:
    """Create any DEFERRED_INDEXES missing: after a first sync's rows are in, or, at the next
    writing run's open, after one that was killed before it built them."""
    present = {row[0] for row in conn.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'client_stats'")}
    for name, statement in DEFERRED_INDEXES.items():
        if name not in present:
            conn.execute(statement)


class PostgresStaging(Staging):
    """Batch rows waiting in a TEMP table of the writer's session (on the server's disk, not in
    this process's memory): the SQLite staging with PostgreSQL's types."""

    temp = "pg_temp"
    order = "seq"

    def create(self) -> None:
        self.db.execute("CREATE TEMP TABLE staged (client_id BIGINT, answer BYTEA, seq BIGSERIAL)")
        self.db.execute("CREATE INDEX staged_client ON staged (client_id)")


class PostgresReplica(OpenReplica):
    """A run's write side on a PostgreSQL replica."""

    engine = "postgresql"
    staging_type = PostgresStaging
    deferred_indexes = tuple(DEFERRED_INDEXES)
    engine_errors = (psycopg.Error,)

    def restore_deferred_indexes(self) -> None:
        restore_deferred_indexes(self.db)

    def finish_run(self, run_id: int, status: str, counts: RunCounts, error: str | None = None, finished_at: str | None = None) -> dict:
        if self.db.conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            self.db.rollback()  # a failed statement left the transaction unusable: record the run outside it
        return super().finish_run(run_id, status, counts, error, finished_at)
