"""The console entry point: run the app, map every error to one line and its documented exit code."""

from __future__ import annotations

import logging
import os
import signal
import sys

import typer

from ..errors import EXIT_FAILED, EXIT_USAGE, DeliverySyncError, Interrupted, RunFailed
from .app import app, remember_global_options, with_global_options

log = logging.getLogger("delivery_sync")
# cron's `timeout` and service managers send SIGTERM, a closed terminal SIGHUP: all stop like Ctrl-C.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class PipeClosed(BaseException):
    """The reader of stdout went away (`... | head`): not an error of ours, and not an OSError,
    which Typer would turn into exit 1."""


class _GuardedStdout:
    """sys.stdout whose write/flush raise PipeClosed instead of BrokenPipeError."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise PipeClosed from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise PipeClosed from None

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one clear line on stderr and the documented exit code for every error."""
    args = sys.argv[1:] if argv is None else argv
    verbose = any(a in ("-v", "--verbose") for a in args)
    handlers = {signum: signal.signal(signum, _stop) for signum in STOP_SIGNALS}
    stdout = sys.stdout
    sys.stdout = _GuardedStdout(stdout)
    try:
        code = _run(args, verbose)
    except PipeClosed:
        if argv is None:  # the real process: in-process callers keep their stdout
            _silence_stdout()
        code = 0  # the reader had what it wanted: `query ... | head` is not a failure
    finally:
        sys.stdout = stdout
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    # Under a profiler or a coverage tracer the normal exit lets them write their reports, unless
    # a signal stopped the run.
    traced = sys.getprofile() is not None or sys.gettrace() is not None
    if argv is None and (code >= 128 or not traced):
        _exit_now(code)
    sys.exit(code)


def _exit_now(code: int) -> None:
    """End the real process once its command is done: every run is closed and every replica
    connection too, so only our streams need flushing. Skipping the interpreter's teardown of
    every imported module saves 45-60 ms, a quarter of a report's time; and after a stop signal,
    fetch threads still waiting on a request or a Retry-After must not keep the process alive."""
    logging.shutdown()
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader had what it wanted, as in main()
        _silence_stdout()
    except OSError as exc:  # a full disk under `> report.json`: the report is not all there
        _error(f"cannot write the output: {exc.strerror or exc}")
        code = code or EXIT_FAILED
    try:
        sys.stderr.flush()
    except OSError:  # nobody reads stderr any more: the exit code still tells
        pass
    os._exit(code)


def _run(args: list[str], verbose: bool) -> int:
    remember_global_options(None, None)  # until the global options are parsed: none
    try:
        code = app(args=args, prog_name="delivery-sync", standalone_mode=False)
        if code == 130:  # Typer turns a KeyboardInterrupt it sees into this exit code, silently
            _error("interrupted")
    except RunFailed as failed:  # the replica failed a sync mid-way: its line, with what it wrote
        from ..render import summary, sync_summary

        if verbose:
            log.exception("traceback")
        for warning in failed.ended.warnings:  # the line counts them: they are shown, as after any run
            log.warning(warning)
        summary(sync_summary(failed.ended))
        code = failed.exit_code
    except DeliverySyncError as exc:
        if verbose and exc.traceback:
            log.exception("traceback")
        _error(with_global_options(str(exc)), exc.hint and with_global_options(exc.hint))
        code = exc.exit_code
    except typer.TyperException as exc:  # click usage errors: bad flag, bad value
        code = getattr(exc, "exit_code", EXIT_USAGE)
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare `delivery-sync` or `query`: the help, as is
            print(exc.format_message(), file=sys.stderr)
        else:
            _error(exc.format_message(), _usage_hint(exc, args))
    except Interrupted as stop:
        _ignore_further_signals()  # a second Ctrl-C must not break the closing of the run
        if stop.ended is not None:  # a sync whose closing aggregate was stopped
            from ..render import summary, sync_summary

            summary(sync_summary(stop.ended))
        elif stop.run is not None:
            from ..render import interrupted_summary, summary

            summary(interrupted_summary(stop.run))
        else:
            _error("interrupted")
        code = stop.exit_code
    except KeyboardInterrupt:
        _error("interrupted")
        code = 128 + signal.SIGINT
    except Exception as exc:  # a bug: still one line unless -v
        if verbose:
            log.exception("unexpected error")
        _error(f"unexpected {type(exc).__name__}: {exc}", "run again with -v for the traceback")
        code = EXIT_FAILED
    return code if isinstance(code, int) else 0


def _usage_hint(exc: Exception, args: list[str]) -> str:
    """`see 'delivery-sync query top --help'`, or where a global option given after the command belongs."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "delivery-sync"
    option = getattr(exc, "option_name", None)
    if ctx is not None and ctx.parent is not None and option in _global_options():
        at = args.index(option) if option in args else -1
        value = args[at + 1] if option not in _GLOBAL_FLAGS and 0 <= at < len(args) - 1 else ""
        if option == "--db" and value:
            from ..config import shown_database

            value = shown_database(value)  # never a password
        import shlex

        quoted = shlex.quote(value) if value else ""  # a path with a space pastes as one word
        mark = '"' if quoted != value else "'"  # around a line that holds single quotes itself: double ones
        sub = command.removeprefix("delivery-sync ")
        return f"global options go before the command: {mark}delivery-sync {option}{' ' + quoted if quoted else ''} {sub} ...{mark}"
    return f"see '{command} --help'"


_GLOBAL_FLAGS = ("-v", "--verbose", "-q", "--quiet", "--version")


def _global_options() -> set[str]:
    import typer.main

    group = typer.main.get_command(app)
    return {name for param in group.params for name in param.opts}


def _stop(signum: int, frame: object) -> None:
    _ignore_further_signals()
    raise Interrupted(signum)


def _ignore_further_signals() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not report the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno())
    except (OSError, AttributeError, ValueError):
        pass


def _error(message: str, hint: str | None = None) -> None:
    from ..render.text import safe

    line = f"error: {message}"
    if hint:
        line += f" ({hint})"
    if not sys.stderr.isatty():  # dated like every log line off a terminal: cron.log says when a run was refused
        from ..render.lines import utc_stamp

        line = f"{utc_stamp()} {line}"
    try:
        print(safe(line), file=sys.stderr)
    except BrokenPipeError:  # nobody reads stderr any more: the exit code still tells
        pass
