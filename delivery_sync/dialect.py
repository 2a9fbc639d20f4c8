"""The few SQL fragments that differ between SQLite and PostgreSQL, in one place.

The project's SQL is written once for both engines (`:name` and `?` parameters, `"column"`
quoting, `CAST(... AS DOUBLE PRECISION)`, `CASE` for the larger of two values); where an engine
really needs its own words (calendar arithmetic, the catalogue, dynamic types), the SQL asks
the connection's `Dialect`. Standard library only: the fast `query` path imports it.
"""

from __future__ import annotations

import sqlite3


class Dialect:
    """SQLite's forms (days are `YYYY-MM-DD` text there)."""

    name = "sqlite"
    table_names = "SELECT name FROM sqlite_master WHERE type = 'table'"
    row_order = "rowid"  # insertion order of rows that share a key
    begin_snapshot = "BEGIN"  # a read transaction sees one committed state (WAL)
    # Listed clients' sums over a span of several days (or pieces, months), read client by client
    # along the (client_id, key) keys, where a client's rows lie together.
    sums_client_by_client = True
    temp = "temp"  # the schema of the session's temporary tables, to name one
    # `WITH x AS MATERIALIZED (...)`: compute a step once, however often it is named. The word
    # came with SQLite 3.35; before it a CTE named more than once is computed once anyway, so the
    # results are the same without it (only a step named once may be folded into its reader).
    materialized = "MATERIALIZED" if sqlite3.sqlite_version_info >= (3, 35) else ""
    day_type = "TEXT"  # the column type of a day
    # A join done in the order written: SQLite's CROSS JOIN keeps its left table outside, where
    # its planner would otherwise start from the big table.
    ordered_join = "CROSS JOIN"

    def temp_table(self, name: str, columns: dict[str, str], key: str | None = None) -> str:
        """CREATE of a temporary table `name` of `columns` (name: type), keyed by `key` (a list of
        columns); it lives until dropped, or on PostgreSQL until the transaction ends."""
        body = ", ".join(f"{c} {t}" for c, t in columns.items())
        return f"CREATE TEMP TABLE {name}({body}, PRIMARY KEY ({key})) WITHOUT ROWID" if key else f"CREATE TEMP TABLE {name}({body})"

    def temp_table_as(self, name: str, select: str) -> str:
        """CREATE of a temporary table `name` holding the rows of `select`."""
        return f"CREATE TEMP TABLE {name} AS {select}"

    def fresh_statistics(self, table: str) -> list[str]:
        """Statements that give the planner the row counts of a just-filled temporary table."""
        return []  # SQLite plans the joins of these tables by the order they are written in

    def insert_into(self, table: str, columns: list[str], replace: str | None = None) -> tuple[str, str]:
        """The head and tail of an INSERT of rows of `columns` into `table` by a SELECT between
        them (which must end in a WHERE or GROUP BY clause: SQLite would read the tail's ON as a
        join's); with `replace` (the table's key columns) a row replaces the one with its key.

        Replaced in place: SQLite then rewrites only the row, where INSERT OR REPLACE deleted it
        and inserted it again, with every index entry (measured in README.md, Development)."""
        head = f"INSERT INTO {table}({', '.join(columns)})"
        if not replace:
            return head, ""
        keys = {k.strip() for k in replace.split(",")}
        updated = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in keys)
        return head, f" ON CONFLICT ({replace}) DO UPDATE SET {updated}"

    def week_start(self, day: str) -> str:
        """The Monday of `day`'s week."""
        # SQLite's %w is 0 for Sunday: step back (w + 6) % 7 days to the Monday.
        return f"date({day}, '-' || ((CAST(strftime('%w', {day}) AS INTEGER) + 6) % 7) || ' days')"

    def month_key(self, day: str) -> str:
        """`YYYY-MM` of `day`."""
        return f"substr({day}, 1, 7)"

    def day_text(self, day: str) -> str:
        """`day` as `YYYY-MM-DD` text, the type of a rollup's `period`."""
        return day

    def as_date(self, day: str) -> str:
        """A `YYYY-MM-DD` text, such as a daily rollup's `period`, as the engine's day type."""
        return day

    def month_first(self, month: str) -> str:
        """The first day of the month `YYYY-MM`."""
        return f"({month} || '-01')"

    def month_last(self, month: str) -> str:
        """The last day of the month `YYYY-MM`."""
        return f"date({month} || '-01', '+1 month', '-1 day')"

    def plus_days(self, day: str, days: int) -> str:
        """`day` moved by a whole number of days."""
        return f"date({day}, '{int(days):+d} days')"

    def days_between(self, later: str, earlier: str) -> str:
        """Whole days from `earlier` to `later`."""
        return f"CAST(julianday({later}) - julianday({earlier}) AS INTEGER)"

    def is_number(self, value: str) -> str:
        """Whether a value of stat_changes is a number."""
        return f"typeof({value}) IN ('integer', 'real')"

    def is_integer(self, value: str) -> str:
        """Whether a value of stat_changes is an integer."""
        return f"typeof({value}) = 'integer'"

    def integer(self, value: str) -> str:
        """An integer value of stat_changes, for arithmetic."""
        return value

    def real(self, value: str) -> str:
        """A number value of stat_changes as a float, for arithmetic."""
        return value

    def round2(self, expr: str) -> str:
        """A float rounded to 2 decimals (half away from zero)."""
        return f"ROUND({expr}, 2)"

    def counted(self, total: str) -> str:
        """A sum of integers as an integer (SQLite's already is one)."""
        return total


class PostgresDialect(Dialect):
    """PostgreSQL's forms (days are DATE there; stat_changes values are JSONB)."""

    name = "postgresql"
    table_names = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    row_order = "ctid"  # insert-only tables: physical order is insertion order
    begin_snapshot = "BEGIN ISOLATION LEVEL REPEATABLE READ"  # every statement sees the same committed state
    # Listed clients' sums over a span: PostgreSQL's planner reads the key's index for the listed
    # ids and groups the rows, as it does for all clients.
    sums_client_by_client = False
    temp = "pg_temp"
    materialized = "MATERIALIZED"
    day_type = "DATE"
    ordered_join = "JOIN"  # PostgreSQL's planner orders joins by its statistics

    def temp_table(self, name: str, columns: dict[str, str], key: str | None = None) -> str:
        body = ", ".join(f"{c} {t}" for c, t in columns.items())
        return f"CREATE TEMP TABLE {name}({body}{f', PRIMARY KEY ({key})' if key else ''}) ON COMMIT DROP"

    def temp_table_as(self, name: str, select: str) -> str:
        return f"CREATE TEMP TABLE {name} ON COMMIT DROP AS {select}"

    def fresh_statistics(self, table: str) -> list[str]:
        # Without them the planner guesses a new table's rows and their spread from its size alone.
        return [f"ANALYZE {table}"]

    def week_start(self, day: str) -> str:
        return f"CAST(date_trunc('week', CAST({day} AS DATE)) AS DATE)"

    def month_key(self, day: str) -> str:
        return f"to_char(CAST({day} AS DATE), 'YYYY-MM')"

    def day_text(self, day: str) -> str:
        return f"to_char(CAST({day} AS DATE), 'YYYY-MM-DD')"

    def as_date(self, day: str) -> str:
        return f"CAST({day} AS DATE)"

    def month_first(self, month: str) -> str:
        return f"CAST({month} || '-01' AS DATE)"

    def month_last(self, month: str) -> str:
        return f"CAST(CAST({month} || '-01' AS DATE) + INTERVAL '1 month' - INTERVAL '1 day' AS DATE)"

    def plus_days(self, day: str, days: int) -> str:
        return f"(CAST({day} AS DATE) + {int(days)})"

    def days_between(self, later: str, earlier: str) -> str:
        return f"(CAST({later} AS DATE) - CAST({earlier} AS DATE))"

    def is_number(self, value: str) -> str:
        return f"jsonb_typeof({value}) = 'number'"

    def is_integer(self, value: str) -> str:
        # A JSON number written without a fraction or exponent: Python wrote ints that way, floats never.
        return f"(jsonb_typeof({value}) = 'number' AND CAST({value} AS TEXT) ~ '^-?[0-9]+$')"

    def integer(self, value: str) -> str:
        return f"CAST(CAST({value} AS TEXT) AS BIGINT)"

    def real(self, value: str) -> str:
        return f"CAST(CAST({value} AS TEXT) AS DOUBLE PRECISION)"

    def round2(self, expr: str) -> str:
        return f"CAST(ROUND(CAST({expr} AS NUMERIC), 2) AS DOUBLE PRECISION)"

    def counted(self, total: str) -> str:
        # A SUM of BIGINTs is NUMERIC here, which psycopg reads as Decimal and the connection then
        # makes int value by value: 32 against 16 ms for 10,000 rows of two such sums.
        return f"CAST({total} AS BIGINT)"


SQLITE = Dialect()
POSTGRES = PostgresDialect()


def dialect_of(conn) -> Dialect:
    """The dialect of a connection: PostgreSQL connections say so, anything else is SQLite."""
    return getattr(conn, "dialect", SQLITE)
