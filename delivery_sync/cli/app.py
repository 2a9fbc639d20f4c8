"""The Typer app, the global options (before the command), and flag parsers shared by commands."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import typer

from ..errors import UsageError
from .logs import setup_logging

app = typer.Typer(
    name="delivery-sync",
    help="Keep a fast local SQLite replica of the remote Grab/GoJek delivery statistics.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion for bash, zsh, fish and PowerShell
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="\b\nExamples:\n  delivery-sync sync --source demo && delivery-sync query top --limit 5\n"
           "  delivery-sync --config /etc/delivery-sync/config.toml -q sync --days-back 365\n\n"
           "Reference: docs/reference.md. Global options go before the command.",
)


def option(*args: Any, **kwargs: Any) -> Any:
    """typer.Option in the one help style of delivery-sync: the default is written in the help as
    "(default: ...)", never as click's "[default: ...]" (which cannot say "today" or name a config key)."""
    return typer.Option(*args, show_default=False, **kwargs)


def argument(*args: Any, **kwargs: Any) -> Any:
    """typer.Argument in the same style."""
    return typer.Argument(*args, show_default=False, **kwargs)


def examples(*lines: str) -> str:
    """The epilog every command's --help ends with: example command lines, kept as written."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)  # \b: click must not rewrap them


@dataclass
class Globals:
    """Options given before the command."""

    config: Path | None
    db: str | None  # a path, or a postgresql:// URL: the config's validator tells them apart
    verbose: bool
    quiet: bool

    def settings(self, **overrides: Any):
        """Settings with these flag overrides (flag > environment > file > default)."""
        from ..config import load_settings

        return load_settings(self.config, database=self.db, **overrides)


# The global options this command line gave that choose the replica (`--config`, `--db`; None when
# not given), repeated in every hint that names a command, so that copying the hint acts on the same replica.
_given_options: dict[str, str | None] = {"--config": None, "--db": None}
_COMMAND_IN_HINT = re.compile(r"\bdelivery-sync (?=(?:sync|collect|aggregate|status|query)\b)")


# What a command line still holds when its command ends (see `hold_until_exit`).
_held: list[Any] = []


def hold_until_exit(value: Any) -> None:
    """Keep `value` alive until the process ends, to be freed by its exit rather than object by
    object as the command returns: the 46,355 keys of the rows a first sync of 127 clients x 365
    days wrote took 7 ms to free, after its work was done. Released by the next command line run
    in the same process (tests)."""
    _held.append(value)


def remember_global_options(config: Path | None, db: str | None) -> None:
    """Keep `--config` and `--db` as given, for `with_global_options` (reset by every command line,
    which also lets go of what the previous one held until its exit)."""
    _held.clear()
    _given_options.update({"--config": str(config) if config else None, "--db": db or None})


def with_global_options(text: str) -> str:
    """`delivery-sync sync ...` in a hint as `delivery-sync --db x.db sync ...` when `--db x.db` was
    given, or when $DELIVERY_SYNC_DATABASE chose it (and the same for `--config` and
    $DELIVERY_SYNC_CONFIG): cron's crontab sets them, the shell a mailed hint is pasted into does not."""
    if not _COMMAND_IN_HINT.search(text):
        return text
    import os

    from ..config import CONFIG_ENV, ENV_PREFIX, shown_database  # loaded for the settings anyway

    def from_environment(name: str) -> str | None:  # a path in full: the hint may be pasted in another folder
        value = os.environ.get(name)
        return value if not value or "://" in value else os.path.abspath(os.path.expanduser(value))

    db = _given_options["--db"]
    if db:
        db = shown_database(db)  # a hint never shows a password
    else:
        db = from_environment(ENV_PREFIX + "DATABASE")
        if db and shown_database(db) != db:
            # A URL with a password: the hint would show it redacted, and a redacted --db beats the
            # variable that holds the real one in a shell that has it (where the README keeps it).
            db = None
    chosen = {"--config": _given_options["--config"] or from_environment(CONFIG_ENV), "--db": db}
    given = " ".join(_shell_word(word) for option, value in chosen.items() if value for word in (option, value))
    if not given:
        return text
    return _COMMAND_IN_HINT.sub(lambda _: f"delivery-sync {given} ", text)


def _shell_word(word: str) -> str:
    """`word` as the shell reads it back; double quotes, since hints wrap commands in single ones."""
    if shlex.quote(word) == word:
        return word
    return '"' + re.sub(r'(["\\$`])', r"\\\1", word) + '"'


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"delivery-sync {__version__}")
        raise typer.Exit(0)


@app.callback()
def _globals(
    ctx: typer.Context,
    config: Path | None = option(None, "--config", metavar="PATH",
        help="TOML config file (default: $DELIVERY_SYNC_CONFIG, else ./config.toml if it exists)."),
    db: str | None = option(None, "--db", metavar="PATH|URL",
        help="Replica file, or postgresql://user@host/dbname (default: `database` of the config, delivery_stats.db)."),
    verbose: bool = option(False, "-v", "--verbose", help="Debug logs: every request with its duration, and tracebacks on errors."),
    quiet: bool = option(False, "-q", "--quiet", help="Only errors and the summary line (for cron)."),
    _version: bool = option(False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
) -> None:
    if verbose and quiet:
        both = UsageError("-v and -q cannot be used together")
        both.traceback = False
        raise both
    setup_logging(verbose, quiet)
    remember_global_options(config, db)
    ctx.obj = Globals(config, db, verbose, quiet)


def parse_date(value: str | None, flag: str) -> date | None:
    """A `YYYY-MM-DD` flag value, or a UsageError naming the flag."""
    if value is None:
        return None
    try:
        if not _DAY.fullmatch(value):  # fromisoformat also takes 20261201 and 2026-W49-1, which the docs do not promise
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{flag}: {value!r} is not a date (expected YYYY-MM-DD)") from None


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_ids(value: str | None) -> list[int] | None:
    """A `--clients 12,15` value as ids, or a UsageError."""
    if value is None:
        return None
    try:
        ids = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--clients: {value!r} is not a comma-separated list of client ids (e.g. 12,15)") from None
    if not ids:
        raise UsageError("--clients: no client id given")
    return ids
