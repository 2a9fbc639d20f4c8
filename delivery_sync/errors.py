"""The errors delivery-sync raises, and the exit code each one maps to.

    DeliverySyncError            exit 1   base: the run failed
     ├── UsageError              exit 2   bad flag, date, client id, or `query` misuse
     │    ├── ConfigError        exit 2   invalid configuration (names the key)
     │    ├── NoReplica          exit 2   `query` with no replica file
     │    ├── UnsafeLockFile     exit 2   `<database>.lock` is a symlink, FIFO or other non-plain file
     │    └── ReadOnlyViolation  exit 2   a write attempted through `query sql`
     ├── LockHeld                exit 75  another writing run holds the lock (EX_TEMPFAIL)
     ├── QueryTimeout            exit 1   `query sql` ran past --max-seconds
    ├── RunFailed               exit of its cause  the replica failed a sync mid-way: its summary line tells what was written
     └── SourceError             exit 1   the remote failed us
          ├── AuthFailed         exit 1   401/403: stops the whole run at once
          ├── SourceUnreachable  exit 1   no connection / timeouts after every retry
          ├── BatchUnavailable   exit 1   the remote has no batch endpoint (404/405)
          ├── DeadlineReached    exit 1   the run's --deadline passed: no request may start
          └── ClientFetchFailed  exit 1   one client's request failed (the run goes on)

    Interrupted (BaseException)  exit 128 + N  SIGINT, SIGTERM or SIGHUP: the run is closed at once

Messages are one line meant for an operator; they never contain the token.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TEMPFAIL = 75


class DeliverySyncError(Exception):
    """Base error; `exit_code` is what the command exits with, `hint` an optional next step."""

    exit_code = EXIT_FAILED
    traceback = True  # shown with -v; False where -v itself is the mistake

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class UsageError(DeliverySyncError):
    exit_code = EXIT_USAGE


class RunFailed(DeliverySyncError):
    """The replica failed a sync after it had begun writing (a full disk, a database server gone):
    `ended` is the run as it stood (a SyncResult), whose summary line is printed instead of an
    error line, with the store's error `cause` (its exit code) as the line's reason."""

    def __init__(self, cause: DeliverySyncError, ended):
        super().__init__(str(cause), cause.hint)
        self.exit_code = cause.exit_code
        self.ended = ended


class ConfigError(UsageError):
    pass


class NoReplica(UsageError):
    pass


class DamagedReplica(NoReplica):
    """The replica file is there but SQLite finds it corrupt, or not a database at all."""


class ReadOnlyViolation(UsageError):
    pass


class UnsafeLockFile(UsageError):
    pass


class LockHeld(DeliverySyncError):
    exit_code = EXIT_TEMPFAIL


class QueryTimeout(DeliverySyncError):
    pass


class SourceError(DeliverySyncError):
    pass


class AuthFailed(SourceError):
    pass


class SourceUnreachable(SourceError):
    pass


class BatchUnavailable(SourceError):
    pass


class DeadlineReached(SourceError):
    pass


class ClientFetchFailed(SourceError):
    pass


class Interrupted(BaseException):
    """A stop signal (SIGINT, SIGTERM, SIGHUP) arrived; exits 128 + its number, as shells report it.

    A BaseException, like KeyboardInterrupt, so no `except Exception` swallows it and
    Typer does not turn it into its own exit code. `run` is the run it closed, if any; `ended`
    the result of a command that had ended when it stopped what came after (a sync whose
    closing aggregate it stopped), whose summary line is then the one to print.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.run: dict | None = None
        self.ended = None

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def one_line(message: object, limit: int | None = None) -> str:
    """`message` (an exception, say) on one line, its runs of whitespace made single spaces, and cut
    at `limit` characters when given: what a log line or summary quotes of an error."""
    text = " ".join(str(message).split())
    return text if limit is None else text[:limit]


def capped(items: list, limit: int) -> str:
    """`1, 2, 3`, or past `limit` items `1, 2, 3 ... and 17 more`: a message, summary line or
    verdict that names clients stays readable with 10,000 of them."""
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f" ... and {len(items) - limit} more" if len(items) > limit else "")
