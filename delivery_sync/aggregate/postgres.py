"""The rollup build on PostgreSQL: the partial sums (`agg_client_pieces`, `agg_client_months`,
`agg_days`, EDGE_CLIENTS) recomputed from `client_stats`, then the rollups (`client_aggregates`,
`overall_aggregates`, `overall_daily`, `overall_weekly`), in the aggregate run's transaction.

The partial sums are whole cents as SQLite keeps them; the calendar rollups are made from them
by the SQL the SQLite build runs (aggregate/rollup_rows.py), the rolling periods by the named
SQL the reports run on raw rows (`CLIENT_SUMS`, `OVERALL_SUMS`). So a PostgreSQL replica holds
the numbers a SQLite one does, value for value, and the reports read it the same way. The
whole build runs every time: there is no refresh of only what a sync wrote.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING

from ..dialect import POSTGRES as PG
from ..metrics import AMOUNT_METRICS, METRICS
from .pieces import calendar, edge_spans, piece_span
from .rollup_rows import client_month_rows, insert_rows, overall_rows
from .sql import (
    CLIENT_SUMS,
    EDGE_CLIENTS,
    FINE_TABLES,
    OVERALL_SUMS,
    RATIOS,
    ROLLING_PERIODS,
    cents_of,
)
from .windows import clients_with_data

if TYPE_CHECKING:
    from ..replica import ChangedRows, RunCounts
    from ..replica.postgres import PostgresReplica

_METRIC_TYPES = ", ".join(f"{m} {'DOUBLE PRECISION' if m in AMOUNT_METRICS else 'BIGINT'}" for m in METRICS)
_TAIL = f"{_METRIC_TYPES}, {', '.join(f'{r} DOUBLE PRECISION' for r in RATIOS)}, computed_at TEXT"
_HEAD = "period TEXT NOT NULL, period_start DATE, period_end DATE"
_PART_METRICS = ", ".join(f"{m} BIGINT" for m in METRICS)
OVERALL_TABLES = ("overall_aggregates", *FINE_TABLES.values())


def build(replica: PostgresReplica, as_of: date, run_id: int, changed: ChangedRows | None):
    """Recreate every rollup as of `as_of` (a refresh would cost as much: `changed` is not needed);
    returns the periods built, False (not a refresh) and the run's counters."""
    from ..days import utc_now
    from ..replica import RunCounts

    db = replica.db
    computed_at = utc_now()
    for name, definition, indexes in _TABLES:
        _emptied(db, name, definition, indexes)
    _build_parts(db, as_of, run_id)
    params = {"computed_at": computed_at}
    # Calendar months, days and weeks from the partial sums, as SQLite writes them.
    insert_rows(db, "client_aggregates", "client_id", client_month_rows("agg_client_months", PG), params)
    overall_rows(db, params, dialect=PG)
    # Rolling periods ending at as_of.
    rolling = [(name, as_of - timedelta(days=days - 1), as_of) for name, days in ROLLING_PERIODS.items()]
    for name, start, end in rolling:
        period = {**params, "period": name, "start": start, "end": end}
        head = "SELECT CAST(:period AS TEXT) AS period, CAST(:start AS DATE) AS period_start, CAST(:end AS DATE) AS period_end"
        insert_rows(db, "client_aggregates", "client_id", (
            f"{head}, client_id, days_with_data, {', '.join(METRICS)} FROM ({CLIENT_SUMS}) AS c"), period)
        insert_rows(db, "overall_aggregates", "clients_with_data", (
            f"{head}, clients_with_data, days_with_data, {', '.join(METRICS)} FROM ({OVERALL_SUMS}) AS o"), period)
    months = [(m, date.fromisoformat(first), date.fromisoformat(last)) for m, first, last in db.execute(
        "SELECT period, period_start, period_end FROM overall_aggregates WHERE period NOT LIKE 'last%' ORDER BY period")]
    return rolling + months, False, _counts(db, RunCounts)


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
)


def _build_parts(db, as_of: date, run_id: int) -> None:
    """The partial sums the reports read any window from, in whole cents as SQLite keeps them
    (see aggregate/sql.py), the clients with data at the edges of the rolling periods, and the
    run that built them, into the emptied tables."""
    # The pieces come from aggregate/pieces.py, as SQLite's do, not from a second definition in
    # SQL: each row finds its piece in an array of every day's piece, then the few pieces are
    # joined to their calendar (faster than date_trunc per row or a join per row).
    first, last = db.execute("SELECT MIN(stat_date), MAX(stat_date) FROM client_stats").fetchone()
    if first is None:  # no rows: no partial sums, but the run and its (empty) edges still say they are current
        _build_edges(db, as_of, run_id)
        return
    first, last = date.fromisoformat(first), date.fromisoformat(last)
    db.execute("CREATE TEMP TABLE agg_calendar(piece DATE PRIMARY KEY, piece_end DATE, week DATE, month TEXT) ON COMMIT DROP")
    db.executemany("INSERT INTO agg_calendar VALUES (?, ?, ?, ?)", calendar(first, last))
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
    _build_edges(db, as_of, run_id)


def _build_edges(db, as_of: date, run_id: int) -> None:
    """The clients with data at the edges of the rolling periods, and the run that built the parts."""
    for a, b in edge_spans(as_of):
        db.execute(f"INSERT INTO {EDGE_CLIENTS} VALUES (:a, :b, {clients_with_data(':a', ':b')})", {"a": a, "b": b})
    db.execute("INSERT INTO agg_parts_run (run_id) VALUES (:run_id)", {"run_id": run_id})


def _counts(db, run_counts: type[RunCounts]) -> RunCounts:
    """Counters of an aggregate run: clients with data, rows summarised, rollup rows written."""
    clients, rows = db.execute("SELECT COUNT(DISTINCT client_id), COUNT(*) FROM client_stats").fetchone()
    written = sum(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("client_aggregates", *OVERALL_TABLES))
    return run_counts(clients_total=clients, clients_ok=clients, rows_fetched=rows, rows_inserted=written)
