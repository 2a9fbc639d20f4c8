"""The helper process of a large SQLite aggregate: a second process that sums a share of the
rebuild's clients, or the refresh's base windows, into a file of its own that the writer attaches,
so that the aggregate runs on two cores (two threads of one process slow each other down).
`helper_main` is the process; the rest is the writer's side."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..dialect import SQLITE
from ..errors import one_line
from .parts import ALL_DAYS, MONTH_LIST_COLUMNS, calendar_columns, create_parts, fill_share, layout
from .windows import data_span

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from concurrent.futures import Future

    from ..days import Window

# How much lower the readers' priority is than the writer's: CFS weighs a thread at nice 5 a third
# of one at 0, so the readers yield on a busy core without being starved by other processes.
READER_NICENESS = 5
# Clients a statement of the rebuild's pass over client_stats sums (at 1,095 days, about half a
# second of work): small enough that the writer and the helper end close together.
CLIENTS_A_SHARE = 256
# From how many clients x days of data a rebuild has a helper process sum shares of the clients,
# and a refresh its base windows: below, starting it (about 0.1 s) costs more than it saves.
HELPER_MIN_ROWS = 2_000_000
# The name under which the writer attaches the helper's file.
HELPER_SCHEMA = "agg_helper"
# The helper process, importing this module from where the writer imported it.
HELPER_CODE = "import sys; sys.path.insert(0, sys.argv[1]); from delivery_sync.aggregate.helper import helper_main; helper_main()"


class Shares:
    """The listed clients, in shares of CLIENTS_A_SHARE consecutive ids, handed out from the low end
    to the writer and from the high end to the helper until none is left: whichever runs faster
    sums more, on a busy machine too, and the writer's rows and then the helper's go into the
    partial sums' tables in key order."""

    def __init__(self, ids: list[int]):
        self._bounds = [(ids[i], ids[min(i + CLIENTS_A_SHARE, len(ids)) - 1]) for i in range(0, len(ids), CLIENTS_A_SHARE)]
        self._lock = threading.Lock()
        self._low, self._high = 0, len(self._bounds)
        self._stopped = False
        self.helpers: list[tuple[int, int]] = []  # the helper's shares, the last taken first

    def take(self, helper: bool) -> tuple[int, int] | None:
        """The first and last id of the next share from the writer's end or the helper's, or None."""
        with self._lock:
            if self._low >= self._high or (helper and self._stopped):
                return None
            if helper:
                self._high -= 1
                self.helpers.append(self._bounds[self._high])
                return self._bounds[self._high]
            self._low += 1
            return self._bounds[self._low - 1]

    def stop(self) -> None:
        """Hand the helper no further share: the writer is done, or failed."""
        with self._lock:
            self._stopped = True


class HelperFailed(Exception):
    """The helper process ended, or answered an error."""


class HelperProcess:
    """A helper process of a writing run (`helper_main`), started with its task and spoken to one
    line at a time. A process, not a thread: two threads of one process both reading client_stats
    by its indexes took twice as long each (SQLite's page cache and memory allocator take a lock
    of the whole process), two processes no longer than one alone."""

    def __init__(self, task: dict, errors: Path):
        import subprocess

        package_root = str(Path(__file__).resolve().parents[2])
        self._errors = errors  # what it writes on stderr (say, why it could not start), in the run's folder
        with open(errors, "w") as stderr:
            # -I: nothing from the environment or the working folder decides what the helper imports.
            self._process = subprocess.Popen([sys.executable, "-I", "-c", HELPER_CODE, package_root],
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True)
        self.send(json.dumps(task))

    def send(self, line: str) -> None:
        """Send the helper one line."""
        assert self._process.stdin is not None
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()

    def answer(self) -> dict:
        """The helper's next answer; `HelperFailed` when it ended or answered an error."""
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise HelperFailed(self._ended())
        reply = json.loads(line)
        if not isinstance(reply, dict) or "error" in reply:
            raise HelperFailed(reply.get("error") if isinstance(reply, dict) else "it answered no JSON object")
        return reply

    def _ended(self) -> str:
        """Why the helper ended without an answer: its status, and the last line it wrote on stderr."""
        import subprocess

        try:
            status = f"it ended with status {self._process.wait(5)}"
        except subprocess.TimeoutExpired:
            status = "it closed its output"
        try:
            said = [line for line in self._errors.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            said = []
        return f"{status}: {said[-1]}" if said else status

    def finish(self) -> None:
        """Tell the helper to leave its file to the writer, and wait for it to end."""
        self.send("end")
        assert self._process.stdin is not None
        self._process.stdin.close()
        if self._process.wait() != 0:
            raise HelperFailed(f"it exited with status {self._process.returncode}")

    def kill(self) -> None:
        """End the helper now, if it still runs."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()


def helper_shares(run: HelperRun, database: Path, shares: Shares, calendar_rows: list[tuple],
                  month_rows: list[tuple]) -> tuple[list[tuple] | None, Path | None]:
    """Run on a thread of the writer: start the helper process, read `ALL_DAYS` from it, then
    hand it shares until none is left; returns the days' rows and the helper's file when it holds
    the partial sums of `shares.helpers` (else None). A failure costs time, not the run: the
    writer sums the helper's shares itself."""
    days, scratch = None, run.folder / "parts.db"
    try:
        helper = run.start({"database": str(database.resolve()), "scratch": str(scratch), "layout": layout(),
                            "calendar": calendar_rows, "months": month_rows})
        days = [tuple(row) for row in helper.answer()["days"]]
        while (share := shares.take(helper=True)) is not None:
            helper.send(f"{share[0]} {share[1]}")
            helper.answer()
        helper.finish()
        return days, scratch if shares.helpers else None
    except Exception as exc:  # noqa: BLE001 - whatever befell the helper, the writer can sum its shares
        # Silent when the writer took every share first (nothing is lost) or stopped the helper.
        if (shares.helpers or days is None) and not run.stopped:
            log.warning("aggregate: its helper process failed (%s); the writer summed its share itself",
                        one_line(exc, 200))
        return days, None


@dataclass(frozen=True)
class HelperTable:
    """Rows a helper process left in a table of its file (`path`), for the writer to attach."""

    path: Path
    table: str


def sums_in_helper(run: HelperRun, database: Path, sums: dict[Window, tuple[str, dict]]) -> dict[Window, Future[HelperTable]]:
    """`sums_meanwhile` for a large SQLite replica: the rows of each of `sums` summed by a helper
    process of `run` into a table of its file, below the writer's priority, while the writer
    refreshes the partial sums; each future gives its table once the helper has ended, or its failure."""
    from concurrent.futures import Future

    futures: dict[Window, Future[HelperTable]] = {window: Future() for window in sums}
    scratch = run.folder / "sums.db"
    names = {window: f"w{i}" for i, window in enumerate(sums)}

    def sum_them() -> None:
        helper = None
        try:
            helper = run.start({"database": str(database.resolve()), "scratch": str(scratch), "niceness": READER_NICENESS,
                                "sums": [[names[w], sql, params] for w, (sql, params) in sums.items()]})
            for window in sums:
                if helper.answer().get("ok") != names[window]:
                    raise HelperFailed("it answered out of turn")
            # Only once the helper has ended: the writer reads the file in its transaction,
            # which keeps a lock on it that would hold up the helper's next table until it commits.
            helper.finish()
            for window in sums:
                futures[window].set_result(HelperTable(scratch, names[window]))
        except Exception as exc:  # noqa: BLE001 - each window left is the writer's to sum
            for future in futures.values():
                if not future.done():
                    future.set_exception(exc)
            if helper is not None:
                helper.kill()

    threading.Thread(target=sum_them, name="aggregate-sums", daemon=True).start()
    return futures


def copy_from_helper(db, path: Path, copies: list[tuple[str, str]]) -> bool:
    """Copy the rows of each (table of the helper's file `path`, table of the writer) on the
    writer's connection `db`, all or none (a savepoint): False, with one warning, when the file
    cannot be read as the helper left it; the caller then sums those rows itself. The file stays
    attached as HELPER_SCHEMA until the writer's transaction ends (SQLite detaches no database a
    transaction has read); an earlier run's, on the same connection, is detached first."""
    import sqlite3

    db.execute("SAVEPOINT agg_helper_copy")
    try:
        attached = {name: file for _, name, file in db.execute("PRAGMA database_list")}.get(HELPER_SCHEMA)
        if attached not in (None, str(path)):
            db.execute(f"DETACH {HELPER_SCHEMA}")
        if attached != str(path):
            db.execute(f"ATTACH ? AS {HELPER_SCHEMA}", [str(path)])
        for source, target in copies:
            db.execute(f"INSERT INTO {target} SELECT * FROM {HELPER_SCHEMA}.{source}")
    except sqlite3.Error as exc:
        db.execute("ROLLBACK TO agg_helper_copy")
        log.warning("aggregate: its helper's file could not be read (%s); the writer summed it itself", one_line(exc, 200))
        return False
    finally:
        db.execute("RELEASE agg_helper_copy")
    return True


def helper_main() -> None:
    """The helper process of a writing run: reads its task (a JSON line: the replica, its own
    file, and the calendar's pieces and months of a rebuild, or the SQL of the sums of a refresh)
    from stdin. For a rebuild it answers every day's sums, then sums each share of clients (a line
    "first last") into its file and answers when it is written; for a refresh it stores each sum
    in a table of its file and answers its name. On "end" it leaves the file to the writer; at
    the end of its input without it (the writer is gone), or after a failure, it removes its
    folder. Every answer is a JSON line; a failure answers {"error": ...}."""
    import sqlite3
    from urllib.parse import quote

    def say(reply: dict) -> None:
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()

    task = json.loads(sys.stdin.readline())
    scratch, handed, rebuild = Path(task["scratch"]), False, "calendar" in task
    try:
        if rebuild and task["layout"] != layout():
            raise RuntimeError("the partial sums of another delivery-sync version (upgraded while the writer ran)")
        if task.get("niceness"):
            os.nice(task["niceness"])
        conn = sqlite3.connect(f"file:{quote(task['scratch'])}", uri=True, isolation_level=None)
        # Throwaway rows: no journal, no sync; a failure discards the whole file.
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "cache_size = -16384"):
            conn.execute(f"PRAGMA {pragma}")
        if rebuild:
            create_parts(conn)  # before the replica is attached, whose tables have the same names
        conn.execute("ATTACH ? AS replica", [f"file:{quote(task['database'])}?mode=ro"])
        # Unqualified, the replica's tables are the replica's, unless this file has one of the name.
        if rebuild:
            for name, columns, rows in (("agg_calendar", calendar_columns(SQLITE), task["calendar"]),
                                        ("agg_month_list", MONTH_LIST_COLUMNS, task["months"])):
                conn.execute(SQLITE.temp_table(name, columns, next(iter(columns))))
                conn.executemany(f"INSERT INTO temp.{name} VALUES ({', '.join('?' * len(columns))})", rows)
            say({"days": conn.execute(ALL_DAYS).fetchall()})
        for name, sql, params in task.get("sums", []):
            conn.execute(f"CREATE TABLE main.{name} AS {sql}", params)
            say({"ok": name})
        for line in sys.stdin:
            if line.strip() == "end":
                conn.close()
                handed = True
                return
            first, last = (int(word) for word in line.split())
            conn.execute("BEGIN")
            fill_share(conn, (first, last))
            conn.execute("COMMIT")
            say({"ok": True})
        conn.close()
    except Exception as exc:  # noqa: BLE001 - the writer is told, and sums it itself
        say({"error": one_line(exc, 200)})
        sys.exit(1)
    finally:  # unless handed to the writer: a killed writer removed nothing, not even its folder
        if not handed:
            import shutil

            shutil.rmtree(scratch.parent, ignore_errors=True)


class HelperRun:
    """The helper processes of one aggregate and their private `folder`: each started by `start`,
    every one still running ended by `stop` (the writer is done, or failed)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.stopped = False
        self._lock = threading.Lock()
        self._processes: list[HelperProcess] = []

    def start(self, task: dict) -> HelperProcess:
        """A new helper process given `task`; HelperFailed once the run is stopped."""
        with self._lock:
            if self.stopped:
                raise HelperFailed("the writer stopped")
            process = HelperProcess(task, self.folder / f"helper-{len(self._processes)}.err")
            self._processes.append(process)
            return process

    def stop(self) -> None:
        """End every helper process still running, and start no other."""
        with self._lock:
            self.stopped = True
            processes = list(self._processes)
        for process in processes:
            process.kill()


# Its helpers' folders: `delivery-sync-aggregate-<writer's pid>-<random>`.
_FOLDER_PREFIX = "delivery-sync-aggregate-"


@contextlib.contextmanager
def helper_run(db) -> Iterator[HelperRun | None]:
    """The helper run of an aggregate when the replica is large enough for a helper to pay
    (HELPER_MIN_ROWS), else None. Its folder is private to this user, made anew (never an
    existing path), and removed at the end, its processes ended. When no folder can be made
    there, None and one warning: the writer sums alone."""
    import shutil
    import tempfile

    span = data_span(db)
    clients = db.execute("SELECT COUNT(*) FROM clients").fetchone()[0]
    if span is None or clients * ((span[1] - span[0]).days + 1) < HELPER_MIN_ROWS:
        yield None
        return
    try:
        _sweep(tempfile.gettempdir())
        folder = Path(tempfile.mkdtemp(prefix=f"{_FOLDER_PREFIX}{os.getpid()}-"))
    except OSError as exc:
        log.warning("aggregate: no temporary folder for its helper (%s); summing on one core", one_line(exc, 200))
        yield None
        return
    run = HelperRun(folder)
    try:
        yield run
    finally:
        run.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _sweep(temp: str) -> None:
    """Remove the helper folders of writers that were killed (a SIGKILL removes nothing): this
    user's own folders named for a process that runs no more. Never follows a symbolic link."""
    import re
    import shutil
    import stat

    with os.scandir(temp) as entries:
        for entry in entries:
            named = re.fullmatch(rf"{_FOLDER_PREFIX}(\d+)-\w+", entry.name)
            if named is None:
                continue
            try:
                info = entry.stat(follow_symlinks=False)
                if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                    continue
                os.kill(int(named.group(1)), 0)
            except ProcessLookupError:
                shutil.rmtree(entry.path, ignore_errors=True)
            except OSError:  # gone meanwhile, or the process runs as another user
                continue
