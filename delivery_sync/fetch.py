"""Fetching a sync's windows from the remote: batch requests or one request per client (docs/remote-api.md).

Requests run on `source.concurrency` threads with at most PENDING_PER_THREAD x
that many submitted at once, so memory stays bounded however many clients there
are: the calling thread, which writes, is the back-pressure. Answers are parsed
on their fetch thread; everything else happens on the calling thread, which
hands complete windows to the `Writer` and lets it commit whenever it would
otherwise wait for an answer.

Batch mode (`source.batch` auto or always) tiles each window into windows of at
most `source.batch_days` days and the clients into lists of at most
BATCH_MAX_IDS, asking one list's windows before the next list's. A client's rows
wait in the writer's staging (on disk) until every tile of its window has
arrived; its last tile's rows join them in memory and the writer gets the
client's whole window at once, whenever the calling thread would otherwise wait
for the remote (so writing overlaps the fetch of the next tiles). A tile that fails
after the retry policy is fetched client by client; `auto` falls back to
per-client requests for the whole run when the endpoint is missing, `always`
stops the run.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from .config import SourceSettings
from .days import Window
from .errors import AuthFailed, BatchUnavailable, DeadlineReached, SourceError, SourceUnreachable
from .records import ClientRows, ParsedRows, parse_batch, parse_rows
from .source import SourceClient

log = logging.getLogger(__name__)

# One batch request names at most this many clients: its body stays a few KB, and its
# answer (500 clients x 31 days, ~8 MB of JSON) is parsed in well under a second.
BATCH_MAX_IDS = 500
# Requests submitted ahead of the writer, per fetch thread: enough to keep every thread busy.
PENDING_PER_THREAD = 2
# A batch answer is up to BATCH_MAX_IDS clients x batch_days rows (tens of MB as parsed JSON):
# at most this many ahead in all, whatever the concurrency, so peak memory stays bounded.
PENDING_TILES = 3

Progress = Callable[[int, int, str], None]


class Staging(Protocol):
    """Batch rows of clients whose window has not fully arrived, by client."""

    def add(self, client_id: int, parsed: ParsedRows) -> None: ...
    def take(self, client_id: int) -> ClientRows: ...
    def discard(self, client_id: int) -> None: ...
    def close(self) -> None: ...


class Writer(Protocol):
    """Where fetched windows go (`replica.SyncWriter`): the fetcher never sees the database."""

    def write(self, client_id: int, window: Window, rows: ClientRows) -> None: ...
    def expect(self, clients: Iterable[tuple[int, Window]]) -> int: ...
    def fail(self, client_id: int | None, error: str) -> None: ...
    def commit(self) -> None: ...
    def staging(self) -> Staging: ...


class StopRun(Exception):
    """Ends the fetch early; the message becomes the run's error."""


class DeadlineStop(StopRun):
    """The run's deadline passed: what was fetched is written, the run ends partial."""


@dataclass(frozen=True)
class Tile:
    """One batch request: these clients over this window."""

    window: Window
    client_ids: tuple[int, ...]


def plan_tiles(windows: dict[int, Window], batch_days: int) -> list[Tile]:
    """Batch requests covering every client's window: consecutive windows of at most `batch_days`
    days, each asking every client that shares the window, at most BATCH_MAX_IDS at a time.

    All the windows of one list of clients come before the next list's: its clients are then
    complete, and written, while the next list is fetched, and few wait in the staging."""
    by_window: dict[Window, list[int]] = {}
    for cid, window in windows.items():
        by_window.setdefault(window, []).append(cid)
    tiles = []
    for window, ids in by_window.items():
        for i in range(0, len(ids), BATCH_MAX_IDS):
            group = tuple(ids[i:i + BATCH_MAX_IDS])
            start = window.start
            while start <= window.end:
                end = min(start + timedelta(days=batch_days - 1), window.end)
                tiles.append(Tile(Window(start, end), group))
                start = end + timedelta(days=1)
    return tiles


class Fetcher:
    """Fetches every client's window and hands each complete one to the writer, failures too."""

    def __init__(self, source: SourceClient, settings: SourceSettings, writer: Writer, progress: Progress | None = None):
        self.source = source
        self.settings = settings
        self.tz: ZoneInfo = settings.tz
        self.writer = writer
        self.progress = progress
        self.consecutive = 0
        self.failed: set[int] = set()
        # Batch clients whose last tile arrived, with that tile's rows, not yet handed to the writer:
        # written while the fetch threads wait for the remote, so that writing overlaps fetching.
        self._complete: deque[tuple[int, ClientRows]] = deque()
        self._expected = 0  # how many at the head of _complete the writer was told to expect

    def run(self, windows: dict[int, Window]) -> None:
        """Fetch and write every window; raises StopRun when the run must end early."""
        if self.settings.batch != "never" and windows:
            try:
                self._batched(windows)
                return
            except BatchUnavailable as exc:
                if self.settings.batch == "always":
                    raise StopRun(f"{exc}; source.batch = \"always\" allows no per-client requests") from None
                log.info("%s: fetching one client at a time", exc)
        self._per_client(windows)

    # --- one request per client -------------------------------------------------------

    def _per_client(self, windows: dict[int, Window]) -> None:
        done, total = 0, len(windows)
        self._report(0, total, "clients")

        for cid, future in self._pump((cid, lambda cid=cid: self._fetch_client(cid, windows[cid])) for cid in windows):
            done += 1
            try:
                parsed = future.result()
            except SourceError as exc:
                self._failed(cid, exc, f"{total - done} clients not fetched")
            else:
                self.consecutive = 0
                self.writer.write(cid, windows[cid], parsed.stored())
            self._report(done, total, "clients")

    def _fetch_client(self, cid: int, window: Window) -> ParsedRows:
        """One client's window by the per-client endpoint, parsed (on a fetch thread)."""
        return parse_rows(self.source.client_stats(cid, window.start, window.end), self.tz, (window.start, window.end))

    # --- batch ---------------------------------------------------------------------------

    def _batched(self, windows: dict[int, Window]) -> None:
        tiles = plan_tiles(windows, self.settings.batch_days)
        self._windows = windows
        self._staging = self.writer.staging()
        self._staged: set[int] = set()  # clients with rows in the staging
        self._outstanding = dict.fromkeys(windows, 0)  # tiles of each client not yet staged
        for tile in tiles:
            for cid in tile.client_ids:
                self._outstanding[cid] += 1
        fallback: list[tuple[int, Window]] = []
        try:
            try:
                # The first tile alone: a remote without the endpoint says so once, not once per tile.
                self._take_tile(tiles[0], self._fetch_tile(tiles[0]), fallback)
                self._report(1, len(tiles), "batch windows")
                tasks = ((tile, lambda tile=tile: self._fetch_tile(tile)) for tile in tiles[1:])
                for done, (tile, future) in enumerate(self._pump(tasks, PENDING_TILES), start=2):
                    try:
                        answer = future.result()
                    except BatchUnavailable as exc:  # the endpoint vanished mid-run: this tile per client
                        answer = exc
                    self._take_tile(tile, answer, fallback)
                    self._report(done, len(tiles), "batch windows")
                self._fallback(fallback)
            except StopRun:
                self._write_complete()  # what was fetched whole is kept
                raise
            self._write_complete()
        finally:
            self._staging.close()

    def _write_complete(self) -> None:
        """Hand every client whose last tile arrived to the writer."""
        while self._complete:
            self._write_next()

    def _write_next(self) -> None:
        """Hand the first complete client to the writer: its staged rows and its last tile's, one whole window."""
        if not self._expected:  # the writer reads the stored rows of the next few clients at once
            self._expected = self.writer.expect((c, self._windows[c]) for c, _ in self._complete)
        cid, rows = self._complete.popleft()
        self._expected -= 1
        if cid in self._staged:  # the earlier tiles, then the last: a later answer for the same day wins
            self._staged.discard(cid)
            staged = self._staging.take(cid)
            staged.values.update(rows.values)
            values = dict(sorted(staged.values.items()))  # by day, as one answer lists them, whatever order the tiles came in
            rows = ClientRows(values, staged.rejects + rows.rejects, staged.fetched + rows.fetched)
        self.writer.write(cid, self._windows[cid], rows)

    def _arrived(self, cid: int, parsed: ParsedRows) -> None:
        """Stage one tile of a client's rows; on its last tile, the client is complete, to be written."""
        if cid in self.failed:
            return
        self._outstanding[cid] -= 1
        if self._outstanding[cid]:
            self._staging.add(cid, parsed)
            self._staged.add(cid)
            return
        self._complete.append((cid, parsed.stored()))
        if len(self._complete) > BATCH_MAX_IDS:  # the remote outpaces the writer: last tiles held stay about one tile
            self._write_next()

    def _fetch_tile(self, tile: Tile):
        """The parsed answer of one batch request, or the SourceError it ended with (BatchUnavailable raises)."""
        try:
            raw = self.source.batch_stats(list(tile.client_ids), tile.window.start, tile.window.end)
        except BatchUnavailable:
            raise
        except SourceError as exc:
            return exc
        return parse_batch(raw, tile.client_ids, self.tz, (tile.window.start, tile.window.end))

    def _take_tile(self, tile: Tile, answer, fallback: list) -> None:
        if isinstance(answer, (DeadlineReached, AuthFailed)):  # they stop the whole run
            self._failed(None, answer, "")
        if isinstance(answer, SourceUnreachable):
            # The remote could not be reached or did not answer, retries included: after as many such
            # tiles in a row as client failures stop a run, it looks down, and asking each of their
            # clients alone would only go on hammering it (a batch endpoint that answers an error,
            # while the per-client one may work, is not counted).
            self.consecutive += 1
            if self.consecutive >= self.settings.max_consecutive_failures:
                left = self._not_fetched()
                raise StopRun(f"stopped after {self.consecutive} consecutive batch requests that could not reach the remote "
                              f"(it looks down): {answer}; {left} clients not fetched")
        if isinstance(answer, Exception):
            log.warning("%s; fetching its %d clients one at a time", answer, len(tile.client_ids))
            fallback.extend((cid, tile.window) for cid in tile.client_ids)
            return
        self.consecutive = 0
        if answer.unexpected:
            shown = ", ".join(answer.unexpected[:10]) + (", ..." if len(answer.unexpected) > 10 else "")
            extra = len(answer.unexpected)
            log.warning("batch %s: ignored %d client%s not asked for (%s)", tile.window, extra, "" if extra == 1 else "s", shown)
        for cid in tile.client_ids:
            if cid in answer.unreadable:
                log.warning("client %s: %s; fetching it alone", cid, answer.unreadable[cid])
                fallback.append((cid, tile.window))
            else:
                self._arrived(cid, answer.clients.get(cid) or ParsedRows({}, [], 0))

    def _not_fetched(self, but: int | None = None) -> int:
        """How many clients of a batched run still wait for a tile and have not failed (`but` aside)."""
        return sum(1 for c, n in self._outstanding.items() if n and c != but and c not in self.failed)

    def _fallback(self, fallback: list[tuple[int, Window]]) -> None:
        """Per-client requests for the tiles whose batch failed."""
        tasks = (((cid, window), lambda cid=cid, window=window: self._fetch_client(cid, window)) for cid, window in fallback)
        for done, ((cid, _window), future) in enumerate(self._pump(tasks), start=1):
            if cid in self.failed:
                continue
            try:
                parsed = future.result()
            except SourceError as exc:
                self._staging.discard(cid)
                self._staged.discard(cid)
                self._failed(cid, exc, f"{self._not_fetched(but=cid)} clients not fetched")
            else:
                self.consecutive = 0
                self._arrived(cid, parsed)
            self._report(done, len(fallback), "clients fetched one at a time")

    # --- shared ----------------------------------------------------------------------------

    def _failed(self, cid: int | None, exc: SourceError, not_fetched: str) -> None:
        """Record a client that could not be fetched (None: a whole batch); stop the run at the
        deadline, on auth failure, or after too many failures in a row."""
        if isinstance(exc, DeadlineReached):  # not the client's failure: it is left for --retry-failed
            raise DeadlineStop()
        if cid is not None:
            self.failed.add(cid)
        self.writer.fail(cid, str(exc))
        if isinstance(exc, AuthFailed):
            raise StopRun(str(exc))
        log.error("%s", exc)
        self.consecutive += 1
        if self.consecutive >= self.settings.max_consecutive_failures:
            raise StopRun(f"stopped after {self.consecutive} consecutive client failures (the remote looks down); {not_fetched}")

    def _pump(self, tasks: Iterable[tuple[object, Callable]], ahead: int | None = None) -> Iterator[tuple[object, Future]]:
        """Run `tasks` on the fetch threads, at most `ahead` submitted and not yet taken (default
        PENDING_PER_THREAD per thread); yield (key, future) as each completes, in submission order
        among those done together (stable logs)."""
        limit = ahead or self.settings.concurrency * PENDING_PER_THREAD
        pool = ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="fetch")
        tasks = iter(tasks)
        pending: dict[Future, tuple[int, object]] = {}
        order = 0
        try:
            while True:
                for key, task in tasks:
                    pending[pool.submit(task)] = (order, key)
                    order += 1
                    if len(pending) >= limit:
                        break
                if not pending:
                    return
                finished, _ = wait(pending, timeout=0, return_when=FIRST_COMPLETED)
                while not finished and self._complete:  # waiting for the remote: write complete clients meanwhile
                    self._write_next()
                    finished, _ = wait(pending, timeout=0, return_when=FIRST_COMPLETED)
                if not finished:  # nothing to write yet: the writer's COMMIT overlaps the network
                    self.writer.commit()
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=lambda f: pending[f][0]):
                    yield pending.pop(future)[1], future
        finally:
            # Never wait for requests still in flight (retries, Retry-After sleeps): on Ctrl-C,
            # SIGTERM or a stop the run must be recorded now. Their answers are discarded.
            pool.shutdown(wait=False, cancel_futures=True)

    def _report(self, done: int, total: int, unit: str) -> None:
        if self.progress:
            self.progress(done, total, unit)
