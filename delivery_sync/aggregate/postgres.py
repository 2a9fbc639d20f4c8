"""The rollup build on PostgreSQL, in the aggregate run's transaction: after a sync, when the
rollups were current before it, a refresh of only what it wrote, as on SQLite; else a rebuild of
the partial sums (`agg_client_pieces`, `agg_client_months`, `agg_days`) from `client_stats`, then
of the rollups (`client_aggregates`, `overall_aggregates`, `overall_daily`, `overall_weekly`).

The partial sums are whole cents as SQLite keeps them. The refresh, the rolling periods (and
EDGE_CLIENTS) and the calendar rollups are the SQLite build's own steps and SQL (aggregate/build.py,
aggregate/rollup_rows.py) in PostgreSQL's words (`dialect.POSTGRES`); only the tables' definitions
and the rebuild of the partial sums are this module's. So a PostgreSQL replica holds the numbers a
SQLite one does, value for value, and the reports read it the same way. Rows are deleted, inserted
or updated, tables never dropped or truncated: readers keep their snapshot of the old rollups and
never wait.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING

from ..dialect import POSTGRES as PG
from ..metrics import AMOUNT_METRICS, METRICS
from .build import (
    OLD_WINDOW_SUMS,
    can_refresh,
    list_unlisted_clients,
    months_built,
    parts_done,
    refresh,
    rolling,
    sums_meanwhile,
)
from .parts import calendar_table
from .pieces import calendar, piece_span
from .rollup_rows import client_month_rows, insert_rows, overall_rows
from .sql import EDGE_CLIENTS, FINE_TABLES, LAST_DAYS, RATIOS, WINDOW_PAIRS, cents_of
from .windows import data_span

if TYPE_CHECKING:
    from ..replica import ChangedRows
    from ..replica.postgres import PostgresReplica

_METRIC_TYPES = ", ".join(f"{m} {'DOUBLE PRECISION' if m in AMOUNT_METRICS else 'BIGINT'}" for m in METRICS)
_TAIL = f"{_METRIC_TYPES}, {', '.join(f'{r} DOUBLE PRECISION' for r in RATIOS)}, computed_at TEXT"
_HEAD = "period TEXT NOT NULL, period_start DATE, period_end DATE"
_PART_METRICS = ", ".join(f"{m} BIGINT" for m in METRICS)
OVERALL_TABLES = ("overall_aggregates", *FINE_TABLES.values())


def build(replica: PostgresReplica, as_of: date, run_id: int, changed: ChangedRows | None):
    """The rollups as of `as_of`: refreshed for what `changed` lists when the rollups were current
    just before the sync that wrote it (and their tables are this version's), else rebuilt.
    Returns the periods built, whether it was a refresh, and the run's counters."""
    from ..days import utc_now

    db = replica.db
    computed_at = utc_now()
    if can_refresh(db, changed) and _made_here(db):
        # Its statements read thousands of rows, not millions: compiling them (JIT, on by default)
        # cost more than it saved, 3.40 against 2.92 s at 10,000 x 365. The full rebuild keeps it
        # (17.0-17.6 s with it, 18.1-19.3 s without). For this transaction only.
        db.execute("SET LOCAL jit = off")
        built, refreshed = refresh(db, PG, as_of, computed_at, changed, lambda sums: sums_meanwhile(replica.open_reader, sums)), True
    else:
        db.execute(f"DROP TABLE IF EXISTS {OLD_WINDOW_SUMS}")  # the first rebuild after an upgrade: a table no longer written
        for name, definition, indexes in _TABLES:
            _emptied(db, name, definition, indexes)
        _build_parts(db)
        list_unlisted_clients(db)
        params = {"computed_at": computed_at}
        # Calendar months, days and weeks, rolling periods and their edges from the partial sums, as SQLite writes them.
        insert_rows(db, "client_aggregates", "client_id", client_month_rows("agg_client_months", PG), params)
        overall_rows(db, params, dialect=PG)
        built, refreshed = rolling(db, PG, as_of, params) + months_built(db), False
    return built, refreshed, parts_done(db, run_id)


def _made_here(db) -> bool:
    """Whether every table the build writes was made by this version's definition (see `_emptied`):
    a refresh writes into them as they are."""
    made_by = db.execute(
        "SELECT obj_description(to_regclass(name), 'pg_class') FROM unnest(CAST(:names AS TEXT[])) WITH ORDINALITY AS t(name, i) ORDER BY i",
        {"names": [name for name, _, _ in _TABLES]},
    ).fetchall()
    return [row[0] for row in made_by] == [definition for _, definition, _ in _TABLES]


def _emptied(db, name: str, definition: str, indexes: tuple[str, ...]) -> None:
    """Empty the table `name` in the build's transaction, or (re)create it when it is missing or
    was made by another version of this code (its comment holds the definition it was made by).

    Rows are deleted, not the table dropped: DROP and TRUNCATE lock out readers until the build
    commits, while a DELETE leaves every reader its snapshot of the old rollups.
    """
    made_by = db.execute("SELECT obj_description(to_regclass(:name), 'pg_class')", {"name": name}).fetchone()[0]
    if made_by == definition:
        db.execute(f"DELETE FROM {name}")
        return
    db.execute(f"DROP TABLE IF EXISTS {name}")
    db.execute(f"CREATE TABLE {name} ({definition})")
    for columns in indexes:
        db.execute(f"CREATE INDEX {name}_{columns.replace(', ', '_')} ON {name} ({columns})")
    db.execute(f"COMMENT ON TABLE {name} IS {_quoted(definition)}")


def _quoted(text: str) -> str:
    """An SQL string literal of our own text (COMMENT ON takes no parameter)."""
    return "'" + text.replace("'", "''") + "'"


# Every table the build writes: (name, columns and keys, indexes).
_TABLES = (
    ("client_aggregates", f"client_id BIGINT NOT NULL, {_HEAD}, days_with_data BIGINT, {_TAIL}, PRIMARY KEY (client_id, period)",
     ("period",)),
    *((table, f"{_HEAD}, clients_with_data BIGINT, days_with_data BIGINT, {_TAIL}, PRIMARY KEY (period)", ()) for table in OVERALL_TABLES),
    ("agg_client_pieces", "client_id BIGINT NOT NULL, piece DATE NOT NULL, piece_end DATE NOT NULL, week DATE NOT NULL, "
     f"month TEXT NOT NULL, days_with_data BIGINT NOT NULL, {_PART_METRICS}, PRIMARY KEY (client_id, piece)", ("piece",)),
    ("agg_client_months", f"client_id BIGINT NOT NULL, month TEXT NOT NULL, days_with_data BIGINT NOT NULL, {_PART_METRICS}, "
     "PRIMARY KEY (client_id, month)", ("month",)),
    ("agg_days", f"day DATE PRIMARY KEY, clients_with_data BIGINT NOT NULL, {_PART_METRICS}", ()),
    ("agg_parts_run", "run_id BIGINT NOT NULL", ()),
    (EDGE_CLIENTS, "period_start DATE NOT NULL, period_end DATE NOT NULL, clients_with_data BIGINT NOT NULL, "
     "PRIMARY KEY (period_start, period_end)", ()),
    (WINDOW_PAIRS, f"period_start DATE NOT NULL, period_end DATE NOT NULL, base_start DATE NOT NULL, base_end DATE NOT NULL, "
     f"client_id BIGINT NOT NULL, last_day DATE, {_PART_METRICS}, {', '.join(f'base_{m} BIGINT' for m in METRICS)}, "
     "PRIMARY KEY (period_start, period_end, base_start, base_end, client_id)", ()),
    (LAST_DAYS, "client_id BIGINT PRIMARY KEY, last_day DATE NOT NULL", ()),
)


def _build_parts(db) -> None:
    """The partial sums the reports read any window from, in whole cents as SQLite keeps them
    (see aggregate/sql.py), into the emptied tables."""
    # The pieces come from aggregate/pieces.py, as SQLite's do, not from a second definition in
    # SQL: each row finds its piece in an array of every day's piece, then the few pieces are
    # joined to their calendar (faster than date_trunc per row or a join per row).
    span = data_span(db)
    if span is None:  # no rows: no partial sums
        return
    first, last = span
    calendar_table(db, PG, calendar(first, last))
    day_pieces = [piece_span(first + timedelta(days=i))[0] for i in range((last - first).days + 1)]
    db.execute(
        f"INSERT INTO agg_client_pieces SELECT g.client_id, c.piece, c.piece_end, c.week, c.month, g.days, {', '.join(f'g.{m}' for m in METRICS)} "
        f"FROM (SELECT s.client_id, (CAST(:pieces AS DATE[]))[s.stat_date - CAST(:first AS DATE) + 1] AS piece, COUNT(*) AS days, {cents_of('s')} "
        "FROM client_stats AS s GROUP BY 2, 1) AS g JOIN agg_calendar AS c ON c.piece = g.piece ORDER BY c.piece, g.client_id",
        {"pieces": day_pieces, "first": first},
    )
    # Each in key order: a window reads every client's row of one piece or month, then from a
    # few pages instead of one page a client (4x faster at 10,000 clients).
    db.execute(f"INSERT INTO agg_client_months SELECT client_id, month, SUM(days_with_data), {', '.join(f'SUM({m})' for m in METRICS)} "
               "FROM agg_client_pieces GROUP BY client_id, month ORDER BY month, client_id")
    db.execute(f"INSERT INTO agg_days SELECT stat_date, COUNT(*), {cents_of('s')} FROM client_stats AS s GROUP BY stat_date")
