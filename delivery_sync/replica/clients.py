"""The `clients` table: the remote's client list, and what is stored per client."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from ..days import utc_now
from ..records import Client

if TYPE_CHECKING:
    from .schema import ReplicaDatabase


def save_client_list(db: ReplicaDatabase, clients: list[Client]) -> None:
    """Upsert the remote's client list; clients it no longer lists become inactive."""
    now = utc_now()
    with db.atomic():
        db.executemany(
            "INSERT INTO clients(id, name, active, first_seen_at, last_seen_at) VALUES (?, ?, 1, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET name = excluded.name, active = 1, last_seen_at = excluded.last_seen_at",
            [(c.id, c.name, now, now) for c in clients],
        )
        listed = [c.id for c in clients]
        db.execute(
            f"UPDATE clients SET active = 0 WHERE id NOT IN ({','.join('?' * len(listed))})",
            listed,
        )


def latest_dates(db: ReplicaDatabase) -> dict[int, date]:
    """Latest stored stat_date of each client that has rows."""
    return {
        client_id: date.fromisoformat(latest)
        for client_id, latest in db.execute("SELECT client_id, MAX(stat_date) FROM client_stats GROUP BY client_id")
    }
