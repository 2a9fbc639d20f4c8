"""The SQLite replica: the only package that writes the database.

    schema.py   tables, migrations, `meta.schema_version`, opening read-write
    lock.py     the `<database>.lock` every writing run holds
    runs.py     `sync_runs` rows (start, finish, close on error), `sync_failures`, `sync_unfetched`
    clients.py  the `clients` table
    upsert.py   one client's window into `client_stats` (its own transaction, or a savepoint of a WriteGroup)
    staging.py  batch-fetched rows waiting (in TEMP tables) until their client is complete

Writers open it with `open_replica()` while holding `writer_lock()`; readers use
`readonly.py`. The names below are the package's interface.
"""

from .clients import latest_dates, save_client_list
from .lock import writer_lock
from .runs import RunClock, RunCounts, closed_on_error, finish_run, record_failure, record_unfetched, start_run
from .schema import SCHEMA_VERSION, open_replica, utc_now
from .staging import Staging
from .upsert import ClientWrite, WriteGroup, write_client_window

__all__ = [
    "SCHEMA_VERSION", "ClientWrite", "RunClock", "RunCounts", "Staging", "WriteGroup", "closed_on_error",
    "finish_run", "latest_dates", "open_replica",
    "record_failure", "record_unfetched", "save_client_list", "start_run", "utc_now", "write_client_window", "writer_lock",
]
