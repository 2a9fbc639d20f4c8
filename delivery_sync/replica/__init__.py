"""The replica: the only package that writes the database, SQLite or PostgreSQL.

    store.py    the store interface (`open_store`): lock, open, read; the SQLite implementation
    postgres.py the PostgreSQL implementation (psycopg, imported only for a postgresql:// database)

    schema.py   tables, migrations, `meta.schema_version`, opening read-write
    lock.py     the `<database>.lock` every writing run holds
    runs.py     `sync_runs` rows (start, finish, close on error), `sync_failures`, `sync_unfetched`
    clients.py  the `clients` table
    upsert.py   one client's window into `client_stats` (its own transaction, or inside a WriteGroup's)
    staging.py  batch-fetched rows waiting (in TEMP tables) until their client is complete
    session.py  `OpenReplica`: a run's write side on one connection, either engine
    writer.py   `SyncWriter`: the write side of a sync run as one object the fetcher is handed

Writing runs get a `Store` from `open_store()`, hold its `writer_lock()` and `open()` a
`Replica`; readers use `open_reader()`. The names below are the package's interface.
"""

from .clients import latest_dates, save_client_list
from .lock import writer_lock
from .runs import RunClock, RunCounts, closed_on_error, finish_run, record_failure, record_unfetched, start_run
from .schema import SCHEMA_VERSION, open_replica
from .staging import Staging
from .store import Replica, Store, open_store
from .upsert import ClientWrite, WriteGroup, write_client_window
from .writer import MAX_CHANGED_ROWS, ChangedRows, SyncWriter

__all__ = [
    "MAX_CHANGED_ROWS", "SCHEMA_VERSION", "ChangedRows", "ClientWrite", "Replica", "RunClock", "RunCounts", "Staging", "Store", "SyncWriter",
    "WriteGroup", "closed_on_error", "finish_run", "latest_dates", "open_replica", "open_store", "record_failure", "record_unfetched",
    "save_client_list", "start_run", "write_client_window", "writer_lock",
]
