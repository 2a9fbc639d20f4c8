"""Log lines and the progress bar (issue 18, item 13): on a terminal a warning logged while the bar is
live is printed above it, on a line of its own, never into the bar's line."""

from __future__ import annotations

import re

from conftest import SCRIPT, clean_env, run_on_terminal, write_config

from delivery_sync.demo_source import DemoSource

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def shown_lines(raw: str) -> list[str]:
    """What each line of the terminal ends up showing: escapes dropped, and of the text redrawn
    after carriage returns only the last, as the terminal overwrites the rest."""
    return [line.split("\r")[-1] for line in ESCAPES.sub("", raw).replace("\r\n", "\n").split("\n")]


def test_a_warning_during_the_progress_bar_gets_its_own_line(tmp_path, db_path):
    with DemoSource(clients=12, latency_ms=150) as demo:
        write_config(tmp_path / "config.toml", demo.url, db_path, source={"batch": "never", "concurrency": 2})
        demo.faults.flaky_clients = {5: 1}  # one 503, retried: a warning while the bar is drawn
        env = clean_env()
        env.update(TERM="xterm", COLUMNS="100")
        code, raw = run_on_terminal([SCRIPT, "sync", "--days-back", "2"], tmp_path, env)
    assert code == 0
    assert "clients" in raw  # the bar was drawn
    lines = shown_lines(raw)
    [warning] = [line for line in lines if "retry 1/2" in line]
    assert re.fullmatch(r"warning: client 5: HTTP 503, retry 1/2 in \d(\.\d)? s", warning), lines
    assert re.fullmatch(r"sync ok: 12/12 clients, 24 rows .* s", lines[-2]), lines  # unstamped on a terminal
