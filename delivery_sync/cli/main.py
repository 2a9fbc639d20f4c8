"""The console entry point: run the app, map every error to one line and the spec's exit code."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Optional

import typer

from ..errors import EXIT_FAILED, EXIT_USAGE, DeliverySyncError
from .app import app

log = logging.getLogger("delivery_sync")
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: one clear line on stderr and the spec's exit code for every error."""
    args = sys.argv[1:] if argv is None else argv
    verbose = any(a in ("-v", "--verbose") for a in args)
    # cron's `timeout` and service managers send SIGTERM: stop like Ctrl-C, closing the run.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = app(args=args, prog_name="delivery-sync", standalone_mode=False)
        if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C into this exit code, silently
            _error("interrupted")
    except DeliverySyncError as exc:
        if verbose:
            log.exception("traceback")
        _error(str(exc), exc.hint)
        code = exc.exit_code
    except typer.TyperException as exc:  # click usage errors: bad flag, bad value
        code = getattr(exc, "exit_code", EXIT_USAGE)
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare `delivery-sync` or `query`: the help, as is
            print(exc.format_message(), file=sys.stderr)
        else:
            command = f" {exc.ctx.info_name}" if getattr(exc, "ctx", None) and exc.ctx.parent else ""
            _error(exc.format_message(), f"see 'delivery-sync{command} --help'")
    except KeyboardInterrupt:
        _error("interrupted")
        code = EXIT_INTERRUPTED
    except Exception as exc:  # a bug: still one line unless -v
        if verbose:
            log.exception("unexpected error")
        _error(f"unexpected {type(exc).__name__}: {exc}", "run again with -v for the traceback")
        code = EXIT_FAILED
    sys.exit(code if isinstance(code, int) else 0)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _error(message: str, hint: Optional[str] = None) -> None:
    from ..render.text import safe

    line = f"error: {message}"
    if hint:
        line += f" ({hint})"
    print(safe(line), file=sys.stderr)
