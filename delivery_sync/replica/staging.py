"""Staging for batch fetches: a client's rows wait here until every batch window of its sync window
has arrived, then go to the upsert as one client window (one transaction).

The rows live in TEMP tables of the writer's connection: SQLite keeps them in a
temporary file, not in the replica and not in Python memory, so a year of 10,000
clients stays bounded. Nothing of it outlives the connection.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from ..metrics import METRICS
from ..records import ClientRows, ParsedRows, Reject

_VALUES = [f"v{i}" for i in range(len(METRICS) + 1)]  # the metrics, then extra (StatRow.values() order)


class Staging:
    """Rows and rejects of clients still being fetched, by client (SQLite's SQL; the PostgreSQL
    replica's subclass has its own)."""

    # The temp schema's name, the order rejects were staged in, and the upsert of a staged row.
    temp = "temp"
    reject_order = "rowid"
    insert = f"INSERT OR REPLACE INTO staged_rows VALUES (?, ?, {', '.join('?' * len(_VALUES))})"

    def __init__(self, db):
        self.db = db
        self.close()
        self.create()
        self._fetched: dict[int, int] = defaultdict(int)

    def create(self) -> None:
        """The two TEMP tables."""
        # Columns without a declared type: SQLite keeps each value exactly as given (no affinity).
        self.db.execute(f"CREATE TEMP TABLE staged_rows(client_id, stat_date, {', '.join(_VALUES)}, PRIMARY KEY (client_id, stat_date))")
        self.db.execute("CREATE TEMP TABLE staged_rejects(client_id, stat_date, reason, payload)")
        self.db.execute("CREATE INDEX temp.staged_rejects_client ON staged_rejects(client_id)")

    def add(self, client_id: int, parsed: ParsedRows) -> None:
        """Stage one answer's rows of a client (a later answer for the same day wins)."""
        self._fetched[client_id] += parsed.fetched
        with self.db.atomic():  # one transaction of the temp database; the replica is not locked by it
            if parsed.rows:
                self.db.executemany(self.insert, [(client_id, day.isoformat(), *row.values()) for day, row in parsed.rows.items()])
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
                f"SELECT stat_date, {', '.join(_VALUES)} FROM staged_rows WHERE client_id = ? ORDER BY stat_date", [client_id]
            )
        }
        rejects = [Reject(*row) for row in self.db.execute(
            f"SELECT stat_date, reason, payload FROM staged_rejects WHERE client_id = ? ORDER BY {self.reject_order}", [client_id]
        )]
        self.discard(client_id)
        return ClientRows(values, rejects, self._fetched.pop(client_id, 0))

    def discard(self, client_id: int) -> None:
        """Forget a client's staged rows (it failed: nothing of it is written)."""
        with self.db.atomic():
            self.db.execute("DELETE FROM staged_rows WHERE client_id = ?", [client_id])
            self.db.execute("DELETE FROM staged_rejects WHERE client_id = ?", [client_id])

    def close(self) -> None:
        """Drop the TEMP tables (left by an earlier run of this connection, or done with)."""
        self.db.execute(f"DROP TABLE IF EXISTS {self.temp}.staged_rows")
        self.db.execute(f"DROP TABLE IF EXISTS {self.temp}.staged_rejects")
