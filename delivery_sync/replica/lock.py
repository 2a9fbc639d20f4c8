"""The writing lock: `<database>.lock`, held (flock) by one writing run at a time (SPEC §5)."""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import LockHeld, UsageError
from .schema import utc_now


@contextmanager
def writer_lock(database: Path, command: str) -> Iterator[None]:
    """Hold the exclusive `<database>.lock` for a whole writing run, or raise LockHeld at once."""
    lock_path = database.with_name(database.name + ".lock")
    if not lock_path.parent.exists():
        raise UsageError(f"cannot create replica {database}: folder {lock_path.parent} does not exist")
    fd, created = _acquire(lock_path, database)
    try:
        holder = {"pid": os.getpid(), "command": command, "started_at": utc_now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield
        finally:
            if created and not database.exists():
                # The run stopped before creating the replica (e.g. an unknown client id):
                # leave no file behind. Unlinked while still locked; _acquire re-checks.
                os.unlink(lock_path)
            else:
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(lock_path: Path, database: Path) -> tuple[int, bool]:
    """Open and flock the lock file; returns the fd and whether this call created the file."""
    while True:
        try:
            fd, created = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            try:
                fd, created = os.open(lock_path, os.O_RDWR), False
            except FileNotFoundError:
                continue  # removed by its holder meanwhile: try again
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            message = f"another run holds the lock on {database}: {_describe_holder(fd)}"
            os.close(fd)
            raise LockHeld(message) from None
        try:
            current = os.stat(lock_path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            return fd, created
        os.close(fd)  # we locked a file its holder had just removed: lock the current one


def _describe_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {holder['pid']} running '{holder['command']}' since {holder['started_at']}"
    except (ValueError, KeyError, OSError):
        return "holder unknown"

