"""Helpers of the tests/test_hardening_*.py files: the console script in a subprocess, under a file-size
limit or as another user, so faults come from the real kernel and real files."""

from __future__ import annotations

import os
import resource
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SCRIPT, clean_env

IS_ROOT = os.geteuid() == 0
# Root ignores file modes: permission tests then run the command as this unprivileged user.
NOBODY = 65534
SETPRIV = shutil.which("setpriv")


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str, fsize: int | None = None, as_nobody: bool = False, cwd: Path | None = None,
            timeout: float = 60, env: dict | None = None, script: list[str] | None = None) -> Run:
    """`delivery-sync ARGS...` (or `script` ARGS...) in a subprocess, optionally under RLIMIT_FSIZE
    or as an unprivileged user."""

    def preexec() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    prefix: list[str] = []
    if as_nobody:
        # setpriv rather than setuid() in preexec_fn: the interpreter behind the script can then
        # still be started where the kernel refuses a plain setuid child (seen under sandboxes).
        if not SETPRIV:
            pytest.skip("running as root without setpriv: cannot act as an unprivileged user")
        prefix = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]

    environment = clean_env()
    environment.update(env or {})
    proc = subprocess.run([*prefix, *(script or [SCRIPT]), *args], capture_output=True, text=True, timeout=timeout, preexec_fn=preexec,
                          cwd=cwd, env=environment)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def one_line(stderr: str) -> str:
    """The single `error: ...` line a fault must produce (never a traceback, never "unexpected")."""
    from conftest import unstamped  # off a terminal an error line starts with its UTC time

    stderr = unstamped(stderr)
    lines = [line for line in stderr.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "unexpected" not in stderr, stderr
    return lines[0]


def failed_summary(stderr: str) -> str:
    """The summary line a sync the replica failed mid-way ends with, in place of an error line: it
    says what was written before (never a traceback, never "unexpected")."""
    from conftest import unstamped

    stderr = unstamped(stderr)
    lines = [line for line in stderr.strip().splitlines() if line.startswith("sync failed: ")]
    assert len(lines) == 1 and not any(line.startswith("error: ") for line in stderr.splitlines()), stderr
    assert "Traceback" not in stderr and "unexpected" not in stderr, stderr
    return lines[0]


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def shared_folder(tmp_path: Path, name: str = "shared") -> Path:
    """A folder another user can enter: pytest's tmp_path is private (0700) to its owner."""
    folder = tmp_path / name
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    for parent in (tmp_path, *tmp_path.parents):
        if parent == Path("/tmp") or parent == parent.parent:
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o011)  # x for group and others: enter, not list
    return folder


def synced_shared_replica(tmp_path: Path, url: str, days: int) -> tuple[Path, Path, Path]:
    """(folder, config, replica): a replica synced from `url` in a shared folder, its config readable by all."""
    from conftest import write_config

    folder = shared_folder(tmp_path)
    db = folder / "replica.db"
    config = write_config(folder / "config.toml", url, db)
    os.chmod(config, 0o644)
    assert run_cli("--config", str(config), "sync", "--days-back", str(days)).code == 0
    # New replicas and locks are private to their owner (0600): sharing them is the operator's choice.
    for path in (db, db.with_name(db.name + ".lock")):
        os.chmod(path, 0o644)
    return folder, config, db
