"""Staging for batch fetches: a client's rows wait here until every batch window of its sync window
has arrived, then go to the upsert as one client window (one transaction).

Each client's share of one answer is one row of a TEMP table of the writer's connection, its rows
and rejects packed with `marshal` (the values keep their exact Python types; the rows are read
back only by this connection, never by anyone else). SQLite keeps the table in a temporary file,
not in the replica and not in Python memory, so a year of 10,000 clients stays bounded. Nothing
of it outlives the connection.
"""

from __future__ import annotations

import marshal
from datetime import date

from ..records import ClientRows, ParsedRows, Reject


class Staging:
    """Rows and rejects of clients still being fetched, by client (SQLite's SQL; the PostgreSQL
    replica's subclass has its own)."""

    # The temp schema's name, and the column that keeps the order answers were staged in.
    temp = "temp"
    order = "rowid"

    def __init__(self, db):
        self.db = db
        self.close()
        self.create()

    def create(self) -> None:
        """The TEMP table: one row per client and answer."""
        self.db.execute("CREATE TEMP TABLE staged(client_id INTEGER, answer BLOB)")
        self.db.execute("CREATE INDEX temp.staged_client ON staged(client_id)")

    def add(self, client_id: int, parsed: ParsedRows) -> None:
        """Stage one answer's rows of a client (a later answer for the same day wins)."""
        # Days as ordinals and rows as plain tuples: what marshal packs, at C speed.
        answer = (
            [day.toordinal() for day in parsed.rows],
            list(map(tuple, parsed.rows.values())),
            [(r.stat_date, r.reason, r.payload) for r in parsed.rejects],
            parsed.fetched,
        )
        self.db.execute("INSERT INTO staged(client_id, answer) VALUES (?, ?)", [client_id, marshal.dumps(answer)])

    def take(self, client_id: int) -> ClientRows:
        """Everything staged for a client, in the order it was staged, removed from the stage."""
        values: dict[date, tuple] = {}
        rejects: list[Reject] = []
        fetched = 0
        for (answer,) in self.db.execute(f"SELECT answer FROM staged WHERE client_id = ? ORDER BY {self.order}", [client_id]):
            days, rows, answer_rejects, answer_fetched = marshal.loads(answer)
            values.update(zip(map(date.fromordinal, days), rows))
            rejects += (Reject(*reject) for reject in answer_rejects)
            fetched += answer_fetched
        self.discard(client_id)
        return ClientRows(values, rejects, fetched)

    def discard(self, client_id: int) -> None:
        """Forget a client's staged rows (it failed: nothing of it is written)."""
        self.db.execute("DELETE FROM staged WHERE client_id = ?", [client_id])

    def close(self) -> None:
        """Drop the TEMP table (left by an earlier run of this connection, or done with)."""
        self.db.execute(f"DROP TABLE IF EXISTS {self.temp}.staged")
