"""Whether the rollups and their partial sums are current: the one test the reports make before
reading them, and the aggregate ending a sync makes before refreshing only what the sync wrote.

Standard library only: the fast `query` path imports it.
"""

from __future__ import annotations

from datetime import date

from ..dialect import dialect_of
from .sql import EDGE_CLIENTS, FINE_TABLES, LAST_DAYS, PARTS_TABLES, WINDOW_PAIRS

ROLLUP_TABLES = ("client_aggregates", "overall_aggregates", *FINE_TABLES.values(), *PARTS_TABLES, EDGE_CLIENTS, WINDOW_PAIRS, LAST_DAYS)
# The layout of the tables above, raised whenever one is added or means something new. Every
# aggregate records it in `meta` beside its run id (`layout_stamp`): an aggregate of an older
# delivery-sync does not, and leaves any table it does not know as it was (stale), so after a
# downgrade and an upgrade the rollups are not current until this version's next aggregate.
ROLLUP_LAYOUT = 3
LAYOUT_KEY = "rollups_layout"


def layout_stamp(run_id: int) -> str:
    """The `meta` value an aggregate run of this version writes: ROLLUP_LAYOUT and its run id."""
    return f"{ROLLUP_LAYOUT}:{int(run_id)}"


def rollups_as_of(conn, before_run: int | None = None) -> date | None:
    """The as-of date of the rollups if they are current, else None (read raw rows, or rebuild).

    Current means: the latest `aggregate` run (before run `before_run`, when given) is `ok` (its
    row commits with its tables), brought the partial sums up to date (`agg_parts_run`) and was
    one of this layout's (`layout_stamp`), every rollup table exists, and no `sync` since (and before `before_run`) may have changed
    `client_stats`: one running, interrupted, or that wrote or deleted rows. `conn` is any
    connection whose `execute` returns a cursor.
    """
    present = {row[0] for row in conn.execute(dialect_of(conn).table_names)}
    if not present.issuperset(ROLLUP_TABLES):  # rollups of an older delivery-sync, without partial sums
        return None
    # The rest in one statement (on PostgreSQL each is a round trip); partial sums left by another
    # aggregate than the latest (an older delivery-sync's, or one rolled back) are not current.
    bound = "" if before_run is None else f" AND id < {int(before_run)}"
    latest = conn.execute(
        "SELECT a.status, a.window_end, (SELECT MAX(run_id) FROM agg_parts_run) = a.id "
        f"AND (SELECT value FROM meta WHERE key = '{LAYOUT_KEY}') = '{ROLLUP_LAYOUT}:' || a.id, "
        f"EXISTS (SELECT 1 FROM sync_runs WHERE id > a.id{bound} AND command = 'sync' AND (status = 'running' "
        "OR COALESCE(error, '') LIKE '%interrupted%' "
        "OR COALESCE(rows_inserted, 0) + COALESCE(rows_updated, 0) + COALESCE(rows_deleted, 0) > 0)) "
        f"FROM (SELECT id, status, window_end FROM sync_runs WHERE command = 'aggregate'{bound} ORDER BY id DESC LIMIT 1) AS a"
    ).fetchone()
    if latest is None:
        return None
    status, as_of, parts_current, changed = latest
    return date.fromisoformat(as_of) if status == "ok" and parts_current and not changed else None
