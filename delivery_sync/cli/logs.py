"""Logging to stderr: `error:`/`warning:` prefixes, UTC timestamps off a terminal; -v for debug, -q for errors only."""

from __future__ import annotations

import logging
import sys


class _Formatter(logging.Formatter):
    """`warning: ...`; off a terminal (cron mail, log files) prefixed with the UTC time."""

    def __init__(self, stamped: bool):
        super().__init__()
        self.stamped = stamped

    def format(self, record: logging.LogRecord) -> str:
        from ..render.text import safe

        message = safe(record.getMessage())  # remote text inside: one line, no control codes
        if record.levelno >= logging.ERROR:
            message = f"error: {message}"
        elif record.levelno >= logging.WARNING:
            message = f"warning: {message}"
        if self.stamped:
            from ..render.lines import utc_stamp

            message = f"{utc_stamp(record.created)} {message}"
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return message


class _CurrentStderr(logging.StreamHandler):
    """A handler writing to whatever `sys.stderr` is when a line is logged. While a progress bar or
    spinner is live, rich points sys.stderr at its console, which prints the line above the bar
    (a fixed stream would write it into the bar's line, and the next redraw would garble both)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it: always sys.stderr instead
        pass


def setup_logging(verbose: bool, quiet: bool) -> None:
    """Send every log line to stderr at the level -v/-q ask for."""
    handler = _CurrentStderr()
    handler.setFormatter(_Formatter(stamped=not sys.stderr.isatty()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO)
    # httpx and httpcore log raw URLs (with any password in them): source.py logs requests instead.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
