"""The partial sums (`agg_client_pieces`, `agg_client_months`, `agg_days`): their tables, their
key indexes and the SQL that fills them, which the SQLite rebuild, the refresh of both engines and
the rebuild's helper process run. Every amount is summed in whole cents (`cents_of`)."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from ..days import month_end
from ..dialect import SQLITE, Dialect
from ..metrics import METRICS
from .sql import PARTS_TABLES, SUMMED, cents_of

if TYPE_CHECKING:
    import sqlite_utils


_ADDED_P = ", ".join(f"SUM(p.{m}) AS {m}" for m in METRICS)
_PIECE_COLUMNS = ["client_id", "piece", "piece_end", "week", "month", "days_with_data", *METRICS]
_MONTH_COLUMNS = ["client_id", "month", "days_with_data", *METRICS]


PART_METRICS = ", ".join(f"{m} INTEGER" for m in METRICS)


def create_parts(db: sqlite_utils.Database) -> None:
    for table in PARTS_TABLES:
        db.execute(f"DROP TABLE IF EXISTS {table}")
    db.execute(
        "CREATE TABLE agg_client_pieces(client_id INTEGER NOT NULL, piece TEXT NOT NULL, piece_end TEXT NOT NULL, "
        f"week TEXT NOT NULL, month TEXT NOT NULL, days_with_data INTEGER NOT NULL, {PART_METRICS}, "
        "PRIMARY KEY (client_id, piece)) WITHOUT ROWID"
    )
    db.execute(
        "CREATE TABLE agg_client_months(client_id INTEGER NOT NULL, month TEXT NOT NULL, days_with_data INTEGER NOT NULL, "
        f"{PART_METRICS}, PRIMARY KEY (client_id, month)) WITHOUT ROWID"
    )
    db.execute(f"CREATE TABLE agg_days(day TEXT PRIMARY KEY, clients_with_data INTEGER NOT NULL, {PART_METRICS}) WITHOUT ROWID")
    db.execute("CREATE TABLE agg_parts_run(run_id INTEGER NOT NULL)")


# The by-key indexes of the partial sums: (index, table, key), each holding client_id and every
# sum (SUMMED) after its key, so that a span of pieces or months is read from the index alone.
_PART_INDEXES = (("agg_client_pieces_piece", "agg_client_pieces", "piece"), ("agg_client_months_month", "agg_client_months", "month"))


def index_parts(db: sqlite_utils.Database) -> None:
    """The by-key indexes of the partial sums, made once they are filled: one sort of the keys,
    where keeping them up to date row by row (the rows come client by client) cost the
    rebuild a scattered index write per row. A refresh calls it too, to make again any index an
    earlier version made otherwise (about a second at 10,000 clients x 365 days, once)."""
    made = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name IN ('agg_client_pieces', 'agg_client_months')"))
    for name, table, key in _PART_INDEXES:
        sql = f"CREATE INDEX {name} ON {table}({key}, client_id, {', '.join(SUMMED)})"
        if made.get(name) != sql:
            db.execute(f"DROP INDEX IF EXISTS {name}")
            db.execute(sql)


def temp_rows(db, dialect: Dialect, name: str, columns: dict[str, str], key: str, rows) -> None:
    """A new temporary table `name` of `columns` (name: type) keyed by `key`, holding `rows`."""
    db.execute(f"DROP TABLE IF EXISTS {dialect.temp}.{name}")
    db.execute(dialect.temp_table(name, columns, key))
    db.insert_rows(f"{dialect.temp}.{name}", tuple(columns), list(rows))
    for statement in dialect.fresh_statistics(f"{dialect.temp}.{name}"):
        db.execute(statement)


def calendar_table(db, dialect: Dialect, rows: list[tuple[str, str, str, str]]) -> None:
    """The temporary table `agg_calendar` (piece, piece_end, week, month) of `rows`, the pieces of
    pieces.calendar() that a rebuild sums client_stats into."""
    temp_rows(db, dialect, "agg_calendar", calendar_columns(dialect), "piece", rows)


def calendar_columns(dialect: Dialect) -> dict[str, str]:
    """The columns (name: type) of the temporary table `agg_calendar`, keyed by the first."""
    day = dialect.day_type
    return {"piece": day, "piece_end": day, "week": day, "month": "TEXT"}


def fill_parts(db, pieces: str, months: str, days: str | None, within: tuple[str, str] | None = None, dialect: Dialect = SQLITE,
                deleted: bool = True) -> None:
    """Partial sums of the (client, piece), (client, month) and day keys the three queries list
    (no day when `days` is None); their rows must not be in the tables yet, or with `within` (the
    first and last day of the listed pieces), they are replaced. A key left with no rows at all
    keeps its old row, unless `deleted` (rows were deleted): then _drop_emptied removes it."""
    join, temp, replace = dialect.ordered_join, dialect.temp, within is not None
    # The listed keys' days as constants too: PostgreSQL's planner, which cannot tell how few
    # rows a join to the listed keys reads, then reads them by the index (at 2,000 clients 15 ms,
    # where it chose to read all of client_stats, 215 ms); SQLite's plans are the same either way.
    bounds = {"first": within[0], "last": within[1], "month_first": within[0][:8] + "01",
              "month_last": month_end(date.fromisoformat(within[1])).isoformat()} if replace else {}
    head, tail = dialect.insert_into("agg_client_pieces", _PIECE_COLUMNS, "client_id, piece" if replace else None)
    # Grouped by every column of `d` (the key first): PostgreSQL takes no column that is neither
    # grouped nor summed, and SQLite still groups in the key's order, without a sort.
    db.execute(
        f"{head} SELECT d.client_id, d.piece, d.piece_end, d.week, d.month, COUNT(*), {cents_of('s')} "
        f"FROM ({pieces}) AS d {join} client_stats AS s ON s.client_id = d.client_id AND s.stat_date BETWEEN d.piece AND d.piece_end "
        f"{'AND s.stat_date BETWEEN :first AND :last ' if replace else ''}GROUP BY d.client_id, d.piece, d.piece_end, d.week, d.month{tail}",
        bounds,
    )
    if replace and deleted:
        _drop_emptied(db, "agg_client_pieces", "piece", f"{temp}.agg_dirty_pieces",
                      "client_stats s WHERE s.client_id = d.client_id AND s.stat_date BETWEEN d.piece AND d.piece_end")
    head, tail = dialect.insert_into("agg_client_months", _MONTH_COLUMNS, "client_id, month" if replace else None)
    in_month = f"p.piece BETWEEN {dialect.month_first('d.month')} AND {dialect.month_last('d.month')}"
    db.execute(
        f"{head} SELECT d.client_id, d.month, SUM(p.days_with_data), {_ADDED_P} "
        f"FROM ({months}) AS d {join} agg_client_pieces AS p ON p.client_id = d.client_id AND {in_month} "
        f"{'AND p.piece BETWEEN :month_first AND :month_last ' if replace else ''}GROUP BY d.client_id, d.month{tail}",
        bounds,
    )
    if replace and deleted:
        _drop_emptied(db, "agg_client_months", "month", f"{temp}.agg_dirty_months",
                      f"agg_client_pieces p WHERE p.client_id = d.client_id AND {in_month}", ("client_aggregates", "period"))
    if days is not None:
        db.execute(
            f"INSERT INTO agg_days SELECT d.day, COUNT(*), {cents_of('s')} "
            f"FROM ({days}) AS d {join} client_stats AS s ON s.stat_date = d.day GROUP BY d.day"
        )


def _drop_emptied(db, table: str, key: str, dirty: str, rows: str, also: tuple[str, str] | None = None) -> None:
    """Delete the rows of `table` (and of the table `also[0]`, keyed by `also[1]`) whose dirty
    (client_id, `key`) has no `rows` left (days deleted by --prune). By key from Python: SQLite
    plans `(client_id, key) IN (SELECT ...)` on client_id alone and then reads every key of the
    client; there are few such keys, while deleting every dirty key first cost 0.1 s at 10,000 clients."""
    emptied = db.execute(f"SELECT d.client_id, d.{key} FROM {dirty} AS d WHERE NOT EXISTS (SELECT 1 FROM {rows})").fetchall()
    for name, column in ((table, key), *([also] if also else [])):
        db.executemany(f"DELETE FROM {name} WHERE client_id = ? AND {column} = ?", emptied)


# Every day's partial sums, read in order from the stat_date index, which holds every metric: at
# 10,000 clients x 1,095 days 7.3 s, where a pass over the table and a sort took 17.7.
ALL_DAYS = f"SELECT stat_date, COUNT(*), {cents_of('s')} FROM client_stats AS s GROUP BY 1"

# The temporary table of a rebuild's months.
MONTH_LIST_COLUMNS = {"month": "TEXT"}


def fill_clients(db, clients: str) -> None:
    """The partial sums of every piece (temp.agg_calendar) and month (temp.agg_month_list) of the
    clients the SQL `clients` lists (a column `client_id`), by a rebuild."""
    fill_parts(db, f"SELECT c.client_id, p.piece, p.piece_end, p.week, p.month FROM ({clients}) AS c CROSS JOIN temp.agg_calendar AS p",
               f"SELECT c.client_id, m.month FROM ({clients}) AS c CROSS JOIN temp.agg_month_list AS m", None)


def fill_share(db, share: tuple[int, int]) -> None:
    """The partial sums of the pieces and months of the clients of `share` (first and last id)."""
    fill_clients(db, f"SELECT id AS client_id FROM clients WHERE id BETWEEN {int(share[0])} AND {int(share[1])}")


def layout() -> str:
    """A fingerprint of the partial sums' tables and of the SQL that fills them, as this process
    loaded them: the rebuild's helper process, which imports them anew, refuses the task of a
    writer whose differ (delivery-sync upgraded in place while the writer ran)."""
    import hashlib

    class Statements(list):
        def execute(self, sql: str, params=None) -> None:
            self.append(sql)

    statements = Statements()
    create_parts(statements)
    fill_share(statements, (1, 2))
    return hashlib.sha256("\n".join([*statements, ALL_DAYS]).encode()).hexdigest()

