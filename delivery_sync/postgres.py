"""PostgreSQL access shared by readers and writers: connecting, the one-writer advisory lock and
who holds it, and a connection that speaks the project's SQL.

The project's SQL is written once, for both engines: `:name` and `?` parameters, dates as
`YYYY-MM-DD` text in parameters, `"column"` quoting. `Connection.execute` turns the parameters
into psycopg's, and rows come back as SQLite gives them: dates as `YYYY-MM-DD` text, exact sums
of integers as int. Where the SQL of the engines really differs, `dialect.py` holds both forms.

psycopg is imported only here and in `replica/postgres.py`, never on the SQLite path.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import re
import select
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal

try:
    import psycopg
    from psycopg import sql as pgsql
    from psycopg.types.json import Jsonb
except ImportError:  # the optional extra is not installed: one line, not a traceback
    from .errors import UsageError as _UsageError

    raise _UsageError(
        "a postgresql:// database needs the PostgreSQL driver",
        hint="from a checkout of delivery-sync: pip install '.[postgres]'; "
             "into an installed one's environment: pip install 'psycopg[binary]>=3.1'",
    ) from None

from .config import PostgresURL
from .days import utc_now
from .dialect import POSTGRES
from .errors import DeliverySyncError, LockHeld, NoReplica, QueryTimeout, ReadOnlyViolation, UsageError, one_line

# The advisory lock every writing run holds (per database): a fixed key of our own.
LOCK_KEY = 0x64656C7379  # "delsy"
# Writers name themselves in application_name, so a second run and `status` can say who holds the lock.
APP_PREFIX = "delivery-sync "
CONNECT_TIMEOUT = 10


_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|(?<!:):([A-Za-z_]\w*)|\?|%")


@functools.lru_cache(maxsize=512)
def translate(statement: str) -> str:
    """The project's parameter style (`:name`, `?`) as psycopg's (`%(name)s`, `%s`), every `%`
    doubled; a `:` or `?` inside a quoted string or name is left as it is."""

    def one(match: re.Match) -> str:
        token = match.group(0)
        if token == "%":
            return "%%"
        if token == "?":
            return "%s"
        if match.group(1):
            return f"%({match.group(1)})s"
        return token.replace("%", "%%")  # a quoted string or name: psycopg reads % there too

    return _TOKENS.sub(one, statement)


class Row(tuple):
    """A row readable by position and by column name, like sqlite3.Row (`dict(row)` works)."""

    __slots__ = ()
    _names: tuple[str, ...] = ()

    def keys(self) -> list[str]:
        return list(self._names)

    def __getitem__(self, key):
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names.index(key))
        return tuple.__getitem__(self, key)


def _value(value):
    """A value as the SQLite replica gives it: dates as text, an exact integer sum as int."""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        if not value.is_finite():  # NUMERIC 'Infinity' or 'NaN' (query sql): a float like float8's
            return float(value)
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _plain(value):
    """A value of any PostgreSQL type as `query sql` shows it in every format: what SQLite could
    hold (NULL, a number, text, bytes; a bool as it is), anything else as text. JSON and arrays
    as JSON text, times in ISO 8601, an interval, a UUID or an address as Python writes it."""
    if value is None or isinstance(value, (int, float, str, bytes)):  # bool is an int
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    if hasattr(value, "isoformat"):  # a time or a timestamp (dates are text already)
        return value.isoformat()
    return str(value)


# Result types (by oid) whose values psycopg already gives as the SQLite replica does: bool, bytea,
# name, int8, int2, int4, text, json, float4, float8, varchar, jsonb. Only other columns (dates,
# numeric sums, anything unknown) go through `_value`: per value, it cost as much as the query
# itself on a report of a few hundred rows.
_AS_IS = frozenset({16, 17, 19, 20, 21, 23, 25, 114, 700, 701, 1043, 3802})


def _rows(cursor):
    """psycopg's row factory for `Row`s (by position and by column name)."""
    names = tuple(c.name for c in cursor.description or ())
    return _maker(cursor, type("Row", (Row,), {"__slots__": (), "_names": names}))


def _tuple_rows(cursor):
    """psycopg's row factory for plain tuples: for callers that only unpack rows, where a `Row`
    made per row cost movers at 10,000 clients about 0.7 us a row."""
    return _maker(cursor, tuple)


def _maker(cursor, shape):
    """What makes each row of `cursor` a `shape` (a tuple type) of its values, the columns whose
    type psycopg does not give as the SQLite replica does converted by `_value`."""
    converted = [i for i, c in enumerate(cursor.description or ()) if c.type_code not in _AS_IS]
    if not converted:
        return shape

    def make(values):
        values = list(values)
        for i in converted:
            values[i] = _value(values[i])
        return shape(values)

    return make


class Cursor:
    """What `Connection.cursor()` gives, like a sqlite3 cursor as far as reports use one: read the
    rows from what `execute` returns (`Row`s, or with `row_factory` set to None, plain tuples);
    this object keeps none."""

    def __init__(self, connection: Connection):
        self.connection = connection
        self.row_factory = _rows  # a psycopg row factory; None: plain tuples

    def execute(self, statement: str, params=None):
        """Run one statement; returns its cursor (of plain tuples, `_AllAtOnce`, with `row_factory` None)."""
        if self.row_factory is None:
            # Plain tuples are what reports read 10,000 rows at a time: in binary, psycopg copies
            # numbers instead of parsing their text (5.3 against 8.7 ms for 10,000 rows of three).
            return _AllAtOnce(self.connection.execute(statement, params, _tuple_rows, binary=True))
        return self.connection.execute(statement, params, self.row_factory)


class _AllAtOnce:
    """A psycopg cursor whose rows are iterated from one `fetchall`: psycopg steps `for row in
    cursor` in Python, row by row (16 ms for 10,000 rows, where fetchall takes 2.5), where the
    same loop over a sqlite3 cursor runs in C. Only iteration, `fetchall` and `fetchone`."""

    def __init__(self, cursor):
        self.cursor = cursor

    def __iter__(self):
        return iter(self.cursor.fetchall())

    def fetchall(self) -> list:
        return self.cursor.fetchall()

    def fetchone(self):
        return self.cursor.fetchone()


class Connection:
    """A psycopg connection that runs the project's SQL (see `translate`) and returns `Row`s.

    Autocommit, like the SQLite connections: `BEGIN` opens a transaction explicitly.
    """

    dialect = POSTGRES
    # A write group's new rows go in by one COPY at its commit (or once LATER_MAX_ROWS rows
    # wait): a COPY a client was a round trip a client, one new row each on a daily sync.
    inserts_wait_for_commit = True

    def __init__(self, conn: psycopg.Connection, url: PostgresURL | None = None, read_only: bool = False):
        self.conn = conn
        self.url, self.read_only = url, read_only
        self._savepoints = itertools.count(1)

    def execute(self, statement: str, params=None, rows=_rows, binary: bool = False):
        """Run one statement; returns its cursor, which makes each row with `rows` (a psycopg row factory)."""
        cursor = self.conn.cursor(row_factory=rows)
        with self._stoppable():
            if params:
                cursor.execute(translate(statement), params, binary=binary)
            else:
                cursor.execute(statement, binary=binary)
        return cursor

    @contextmanager
    def _stoppable(self) -> Iterator[None]:
        """Around a statement: a stop signal (errors.Interrupted) arriving while it runs cancels it
        in the server, as psycopg does itself only for KeyboardInterrupt. Left running, it kept the
        connection busy, so the rollback that follows failed and its error replaced the signal's
        exit, and it went on in the server after the run had let the writers' lock go."""
        try:
            yield
        except psycopg.Error as exc:
            if self.read_only:  # a report's or status's read: one line, as the writers' storage_error
                raise read_error(self.url, exc) from None
            raise
        except Exception:
            raise
        except BaseException:
            self._cancel_running()
            raise

    def _cancel_running(self, seconds: float = 5) -> None:
        """Cancel the statement the server is running for this connection, if any, and read its
        end (within `seconds`), leaving the connection ready for ROLLBACK."""
        pgconn = self.conn.pgconn
        if pgconn.transaction_status != psycopg.pq.TransactionStatus.ACTIVE:
            return
        with contextlib.suppress(psycopg.Error, OSError):
            getattr(self.conn, "cancel_safe", self.conn.cancel)()
            deadline = time.monotonic() + seconds
            while True:
                pgconn.consume_input()
                while not pgconn.is_busy():
                    if pgconn.get_result() is None:
                        return
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([pgconn.socket], [], [], left)[0]:
                    return  # no answer: the run closes the connection, which ends the statement too

    def cursor(self) -> Cursor:
        """A cursor whose `row_factory` may be set to None for plain tuples, as with sqlite3."""
        return Cursor(self)

    def executemany(self, statement: str, rows) -> None:
        """Run one statement for every parameter row."""
        with self.conn.cursor() as cursor, self._stoppable():
            cursor.executemany(translate(statement), rows)

    def insert_rows(self, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        """Insert `rows` (values of `columns`) into `table` by one COPY: psycopg parses again, on
        every execute, a statement of more than 50 parameters, which made a multi-row INSERT of a
        client's year cost about 3 times its server time in this process."""
        if not rows:
            return
        with self.conn.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    @property
    def in_transaction(self) -> bool:
        return self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def insert_id(self, statement: str, params) -> int:
        """Run one INSERT and return the id it gave its row."""
        return self.execute(statement + " RETURNING id", params).fetchone()[0]

    @staticmethod
    def encode_change(value):
        """A value as stat_changes keeps it: JSON, so a number stays a number and text stays text."""
        return None if value is None else Jsonb(value)

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """A transaction, or a savepoint inside the open one: all of the block or none of it."""
        if self.in_transaction:
            with self.conn.transaction(savepoint_name=f"sp{next(self._savepoints)}", force_rollback=False):
                yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        """End an open transaction, keeping nothing of it."""
        if self.in_transaction:
            self.conn.execute("ROLLBACK")

    def commit(self) -> None:
        if self.in_transaction:
            self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()

    def read_only_statement(self, statement: str, max_seconds: float, max_rows: int | None = None) -> tuple[list[str], list[tuple]]:
        """`query sql` here: one statement in a transaction (read-only, as every transaction of a
        reader's session is), cancelled by the server after `max_seconds` (statement_timeout);
        returns its column names and its first `max_rows` rows (all without it)."""
        refused = _REFUSED_FUNCTIONS.search(_COMMENTS.sub(" ", statement))  # `pg_read_file/**/(` calls it too
        if refused:
            raise ReadOnlyViolation(f"refused: {refused.group(1)}() - query sql runs no function that reaches past the replica's "
                                    "rows (server files, other servers or sessions, settings, waits)")
        try:
            with self.conn.transaction():
                self.conn.execute(pgsql.SQL("SET LOCAL statement_timeout = {}").format(pgsql.Literal(max(1, int(max_seconds * 1000)))))
                cursor = self.conn.cursor(row_factory=_rows)
                cursor.execute(statement, prepare=False)
                rows = [] if not cursor.description else cursor.fetchall() if max_rows is None else cursor.fetchmany(max_rows)
                columns = [c.name for c in cursor.description or ()]
            rows = [tuple(_plain(value) for value in row) for row in rows]
        except psycopg.errors.QueryCanceled:
            raise QueryTimeout(f"query interrupted after {max_seconds:g} s", hint="raise --max-seconds or narrow the query") from None
        except psycopg.errors.InsufficientPrivilege as exc:  # the role may not read a table: say what to grant
            raise read_error(self.url, exc) from None
        except psycopg.errors.ReadOnlySqlTransaction as exc:
            raise ReadOnlyViolation(f"refused: a statement that writes - the replica is read-only here ({' '.join(str(exc).split())})") from None
        except psycopg.Error as exc:
            raise UsageError(f"SQL error: {' '.join(str(exc).split())}") from None
        return columns, rows


# Functions a read-only transaction still lets run, which read the server's files, reach other
# servers or change settings: refused by name (a read-only role is the real fence: docs/reference.md).
_COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*", re.DOTALL)
# A name may be written quoted ("pg_read_file"(...)), which calls the same function.
_REFUSED_FUNCTIONS = re.compile(
    r"\b\"?(pg_read_file|pg_read_binary_file|pg_ls_\w+|pg_stat_file|lo_\w+|dblink\w*|set_config|pg_reload_conf|pg_rotate_logfile"
    r"|pg_terminate_backend|pg_cancel_backend|pg_sleep\w*|pg_advisory\w*|pg_try_advisory\w*|query_to_xml\w*|copy"
    r"|pg_switch_wal|pg_stat_reset\w*|pg_logical_emit_message|pg_create_\w+|pg_drop_replication_slot|pg_promote"
    r"|pg_backup_\w+|pg_start_backup|pg_stop_backup|pg_file_\w+|pg_replication_origin_\w+)\"?\s*\(",
    re.IGNORECASE,
)


def connect(url: PostgresURL, *, read_only: bool = False, application: str = "delivery-sync") -> Connection:
    """A connection to the replica's server (autocommit; `read_only`: every transaction read-only).

    Failures are one line naming the URL without its password: exit 2 for what the user must fix
    (no such database, role or password refused), exit 1 for a server that cannot be reached.
    """
    # Readers: JIT compiling costs 30-400 ms a report and pays back only on far longer queries.
    ours = "-c jit=off -c default_transaction_read_only=on" if read_only else ""
    try:
        # The URL's own `?options=` (a search_path, a timeout) first: ours after them win, so a
        # reader stays read-only whatever the URL says.
        given = psycopg.conninfo.conninfo_to_dict(url.dsn).get("options") or ""
        conn = psycopg.connect(url.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT, options=f"{given} {ours}".strip(),
                               application_name=application[:63])
    except psycopg.OperationalError as exc:
        raise connect_error(url, exc) from None
    except psycopg.ProgrammingError as exc:  # a malformed connection string
        raise UsageError(f"cannot use database {url}: {_one_line(exc, url)}") from None
    return Connection(conn, url, read_only)


def read_error(url: PostgresURL, exc: psycopg.Error) -> DeliverySyncError | psycopg.Error:
    """A reader's failed statement as one line: exit 2 for a role without the rights to read the
    replica, the connection's error for a server gone away; any other error as it is."""
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return UsageError(f"cannot read replica {url}: {_one_line(exc, url)}",
                          hint="grant it SELECT on the replica's tables; see the README, Serving a team")
    if isinstance(exc, psycopg.errors.QueryCanceled):  # e.g. a statement_timeout set for the role or database
        return DeliverySyncError(f"the server cancelled a read of replica {url}: {_one_line(exc, url)}",
                                 hint="a statement_timeout set for this role or database? raise it for delivery-sync")
    if isinstance(exc, psycopg.OperationalError):
        if exc.sqlstate is None or exc.sqlstate.startswith("08"):  # the connection itself: lost or refused
            return connect_error(url, exc)
        return DeliverySyncError(f"cannot read replica {url}: {_one_line(exc, url)}")
    return exc


def connect_error(url: PostgresURL, exc: Exception) -> DeliverySyncError:
    """The one line for a server that refused or could not be reached."""
    text = _one_line(exc, url)
    lowered = text.lower()
    if "does not exist" in lowered or "authentication failed" in lowered or "no password" in lowered or "permission denied" in lowered:
        return UsageError(f"cannot connect to database {url}: {text}", hint="check `database` (--db): role, password and database name")
    if re.search(r"\binvalid [\w ]*(value|parameter|option)\b", lowered) or "does not support ssl" in lowered:
        # ?sslmode=bogus, or ?sslmode=require against a server without SSL: the URL to fix
        return UsageError(f"cannot use database {url}: {text}", hint="check the options after '?' in `database` (--db)")
    # libpq often asks itself ("Is the server running on that host ...?"): not a second time.
    asked = "is the server running" in lowered
    return DeliverySyncError(f"cannot connect to database {url}: {text}", hint=None if asked else "is the PostgreSQL server running and reachable?")


def _one_line(exc: Exception, url: PostgresURL) -> str:
    """The driver's message on one line, never with the password in it."""
    return url.without_secrets(one_line(exc))


def replica_exists(url: PostgresURL) -> bool:
    """Whether the database holds a replica (its `sync_runs` table); a server that cannot be
    reached raises the one-line error."""
    conn = connect(url, read_only=True)
    try:
        return _holds_replica(conn, url)
    finally:
        conn.close()


def _holds_replica(conn: Connection, url: PostgresURL) -> bool:
    """Whether the database holds a replica (its `sync_runs` table) where this role looks for one;
    a role that may use no schema of its search path (it sees no table at all) is told so, not
    that there is no replica to sync."""
    visible, no_schema = conn.execute("SELECT to_regclass('sync_runs') IS NOT NULL, current_schema() IS NULL").fetchone()
    if no_schema:
        raise UsageError(f"cannot read replica {url}: the role may use no schema of its search_path",
                         hint="grant it USAGE on the replica's schema and SELECT on its tables; see the README, Serving a team")
    return visible


def open_readonly(url: PostgresURL) -> Connection:
    """A read-only connection to the replica (`status`, `query`); `NoReplica` when there is none."""
    conn = connect(url, read_only=True, application="delivery-sync reader")
    try:
        if not _holds_replica(conn, url):
            raise NoReplica(f"no replica in database {url} (no sync_runs table)", hint="run 'delivery-sync sync' first")
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def advisory_lock(url: PostgresURL, command: str) -> Iterator[Connection]:
    """Hold the writers' advisory lock for a whole run on a connection of its own, or raise LockHeld
    naming the holder. The server also releases it when the holder's connection ends, so a
    killed run never leaves it behind."""
    # "delivery-sync sync 4242 2026-12-05T01:00:00+00:00": within the 63 characters a name may have.
    conn = connect(url, application=f"{APP_PREFIX}{command} {os.getpid()} {utc_now()}")
    locked = False
    try:
        _take_lock(conn, url)
        locked = True
        yield conn
    finally:
        try:
            if locked:
                # Released now: closing the connection releases it only once the server has ended
                # its backend, and a run started right after this one found it still held 1 time in 10.
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(?)", [LOCK_KEY])
        finally:
            conn.close()  # even if a stop signal arrives during the unlock


# How long a run waits, in steps, when the lock is held but no holder of ours is found: the lock
# was let go between the try and the look at its holder (a run ending just then), or a session
# that is no delivery-sync run holds it.
UNKNOWN_HOLDER_WAITS = (0.05, 0.1, 0.2, 0.4)


def _take_lock(conn: Connection, url: PostgresURL) -> None:
    """Take the advisory lock on `conn`, or raise LockHeld: at once naming a delivery-sync holder,
    after UNKNOWN_HOLDER_WAITS when none is found."""
    for wait in (*UNKNOWN_HOLDER_WAITS, None):
        if conn.execute("SELECT pg_try_advisory_lock(?)", [LOCK_KEY]).fetchone()[0]:
            return
        held = lock_holder(conn)
        if held is not None or wait is None:
            who = f"pid {held['pid']} running '{held['command']}' since {held['started_at']}" if held else "holder unknown"
            raise LockHeld(f"another run holds the lock on {url}: {who}")
        time.sleep(wait)


_HOLDER = pgsql.SQL(
    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND ((l.classid::bigint << 32) | l.objid::bigint) = {key} LIMIT 1"
).format(key=pgsql.Literal(LOCK_KEY))


def lock_holder(conn: Connection) -> dict | None:
    """What the live writer holding the lock says of itself (`pid`, `command`, `started_at`), or None."""
    row = conn.conn.execute(_HOLDER).fetchone()
    parts = (row[0] or "").removeprefix(APP_PREFIX).split(" ") if row and (row[0] or "").startswith(APP_PREFIX) else []
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return {"pid": int(parts[1]), "command": parts[0], "started_at": parts[2]}


class PostgresReader:
    """A reader's view of a PostgreSQL replica (`status`, `query`): the SQLite reader's questions."""

    def __init__(self, url: PostgresURL):
        self.url = url
        self.location = str(url)

    def exists(self) -> bool:
        return replica_exists(self.url)

    def size(self) -> int:
        """Bytes the replica's tables and indexes take on the server."""
        conn = connect(self.url, read_only=True)
        try:
            return conn.execute(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "WHERE c.relkind IN ('r', 'm') AND c.relnamespace = current_schema()::regnamespace"
            ).fetchone()[0]
        finally:
            conn.close()

    def check_path(self) -> None:
        """Nothing to check before connecting: the server says what is wrong."""

    def connect(self) -> Connection:
        return open_readonly(self.url)

    # The server checks its own pages and says when one is damaged; any other error (no rights, no
    # server) is no reason to restore a backup.
    damage = (psycopg.errors.DataCorrupted, psycopg.errors.IndexCorrupted)

    def check_intact(self, conn: Connection) -> None:
        """Nothing to check: the server refuses to serve pages it finds damaged."""

    def lock_problem(self) -> None:
        """No lock file to plant: the lock is the server's."""

    def writer_holds_lock(self) -> bool:
        return self.lock_holder() is not None

    def may_write(self, conn: Connection) -> bool:
        """Whether this role may run a writing command on the replica: insert, update and delete in
        every table of its schema, as a sync and an aggregate do (an analysts' role may not)."""
        return bool(conn.execute(
            "SELECT COALESCE(bool_and(has_table_privilege(c.oid, 'INSERT') AND has_table_privilege(c.oid, 'UPDATE') "
            "AND has_table_privilege(c.oid, 'DELETE')), false) FROM pg_class c "
            "WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace").fetchone()[0])

    def lock_holder(self) -> dict | None:
        conn = connect(self.url, read_only=True)
        try:
            return lock_holder(conn)
        finally:
            conn.close()
