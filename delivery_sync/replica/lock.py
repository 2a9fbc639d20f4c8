"""The writing lock: `<database>.lock`, held (flock) by one writing run at a time; a second exits 75."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..days import utc_now
from ..errors import DeliverySyncError, LockHeld, UsageError
from ..readonly import open_lock_file
from . import schema
from .schema import storage_error


@contextmanager
def writer_lock(database: Path, command: str, discard_unused: bool = False) -> Iterator[None]:
    """Hold the exclusive `<database>.lock` for a whole writing run, or raise LockHeld at once.

    With `discard_unused` (a sync), a replica this run created is removed again at the end
    when the run stored nothing in it and did not end ok (`schema.discard_if_unused`).

    Every write of a run happens inside this block, so it is where a storage fault
    (full disk, read-only file, I/O error) becomes one clear line instead of a bug report.
    """
    lock_path = database.with_name(database.name + ".lock")
    if not lock_path.parent.exists():
        raise UsageError(f"cannot create replica {database}: folder {lock_path.parent} does not exist")
    schema.check_replica_path(database)  # before the lock is created: a refused path leaves nothing
    try:
        fd, created = _acquire(lock_path, database)
    except OSError as exc:
        raise _lock_error(lock_path, exc) from None
    try:
        # Checked again under the lock: whether this run is the one creating the replica.
        new_replica = not schema.check_replica_path(database)
        holder = {"pid": os.getpid(), "command": command, "started_at": utc_now()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        except OSError as exc:
            raise _lock_error(lock_path, exc) from None
        schema.verified.discard(database.resolve())  # this run checks the replica's integrity once
        refused = False
        try:
            try:
                yield
            except sqlite3.DatabaseError as exc:
                raise storage_error(database, exc) from None
        except UsageError:
            refused = True  # e.g. a file that is not a replica: nothing of ours should stay beside it
            raise
        finally:
            schema.verified.discard(database.resolve())
            if new_replica and discard_unused and database.exists():
                # A first run that fetched nothing (unreachable remote, refused token, Ctrl-C before
                # the first client) leaves no empty replica for status and query to trust.
                schema.discard_if_unused(database)
            if created and (refused or not database.exists()):
                # The run stopped before it wrote anything (an unknown client id, a file that
                # is not ours): leave no file behind. Unlinked while still locked; _acquire re-checks.
                os.unlink(lock_path)
            else:
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(lock_path: Path, database: Path) -> tuple[int, bool]:
    """Open and flock the lock file; returns the fd and whether this call created the file.

    Created private (0600) and exclusively (O_EXCL never follows a symlink); an existing one is
    opened only if it is a plain file (`open_lock_file`), so a planted symlink or FIFO is refused.
    """
    while True:
        try:
            fd, created = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600), True
        except FileExistsError:
            try:
                fd, created = open_lock_file(lock_path, os.O_RDWR), False
            except FileNotFoundError:
                continue  # removed by its holder meanwhile: try again
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            message = f"another run holds the lock on {database}: {_describe_holder(fd)}"
            os.close(fd)
            raise LockHeld(message) from None
        try:
            current = os.lstat(lock_path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            return fd, created
        os.close(fd)  # we locked a file its holder had just removed: lock the current one


def _lock_error(lock_path: Path, exc: OSError) -> DeliverySyncError:
    """One line for a lock file that cannot be created or written."""
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO):
        return DeliverySyncError(f"cannot write lock file {lock_path}: {exc.strerror}", hint="free space and run again")
    if lock_path.exists():
        return UsageError(f"cannot open lock file {lock_path}: {exc.strerror}", hint=f"a writing run needs write permission on {lock_path}")
    return UsageError(
        f"cannot create lock file {lock_path}: {exc.strerror}",
        hint=f"a writing run needs write permission on the folder {lock_path.parent}",
    )


def _describe_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {holder['pid']} running '{holder['command']}' since {holder['started_at']}"
    except (ValueError, KeyError, OSError):
        return "holder unknown"

