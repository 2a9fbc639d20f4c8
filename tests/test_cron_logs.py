"""Logs for cron: timestamps off a terminal, request durations, retry warnings, a live collect."""

from __future__ import annotations

import re

from conftest import SCRIPT, clean_env, run_on_terminal, write_config

from delivery_sync.render import lines

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ "


def test_off_a_terminal_every_log_line_and_the_summary_has_a_utc_timestamp(cli, config, demo):
    demo.faults.extra_rows = {2: [{"stat_date": "N/A"}]}
    result = cli("sync", "--days-back", "2")
    *logged, summary = result.stamped_stderr.strip().splitlines()
    assert logged and all(re.match(STAMP + "(warning|error): ", line) for line in logged), logged
    assert re.match(STAMP + "sync partial: ", summary), summary  # cron.log under -q is then dated too
    quiet = cli("-q", "sync", "--days-back", "2")
    assert re.fullmatch(STAMP + r"sync partial: .*\n", quiet.stamped_stderr), quiet.stamped_stderr


def test_off_a_terminal_an_error_line_of_the_command_line_is_dated_too(cli, config, demo, tmp_path):
    """Usage errors and a refused run (another holds the lock, exit 75) land in cron.log as well."""
    usage = cli("-q", "sync", "--days-back", "0")
    assert usage.code == 2 and re.fullmatch(STAMP + r"error: .*\n", usage.stamped_stderr), usage.stamped_stderr
    assert usage.stderr.startswith("error: ")  # the fixture's text, the time taken off


def test_verbose_request_lines_carry_their_duration(cli, config):
    result = cli("-v", "sync", "--days-back", "1")
    requests = [line for line in result.stderr.splitlines() if "-> HTTP" in line]
    assert requests and all(re.search(r"-> HTTP 200 in \d+\.\d\d s$", line) for line in requests), requests


def test_retries_are_one_warning_each_at_the_default_level(cli, tmp_path, db_path, demo):
    write_config(tmp_path / "config.toml", demo.url, db_path, source={"batch": "never", "max_retries": 3})
    demo.faults.flaky_clients = {4: 2}
    result = cli("sync", "--days-back", "1")
    assert result.code == 0, result.stderr
    retries = [line for line in result.stamped_stderr.splitlines() if "retry" in line]
    assert len(retries) == 2
    assert re.fullmatch(STAMP + r"warning: client 4: HTTP 503, retry 1/3 in \d\.\d s", retries[0]), retries
    assert re.fullmatch(STAMP + r"warning: client 4: HTTP 503, retry 2/3 in \d(\.\d)? s", retries[1]), retries
    assert "retry" not in cli("-q", "sync", "--days-back", "1").stderr


def test_a_long_collect_says_it_is_still_waiting_off_a_terminal(cli, config, demo, monkeypatch):
    monkeypatch.setattr(lines, "STILL_WAITING_EVERY", 0.1)
    demo.faults.collect_seconds = 0.45
    result = cli("collect")
    assert result.code == 0, result.stderr
    waiting = [line for line in result.stamped_stderr.splitlines() if "still waiting" in line]
    assert len(waiting) >= 3 and all(re.fullmatch(STAMP + r"collect: still waiting \(0\.0 min\)", w) for w in waiting), waiting
    assert re.match(STAMP + "collect ok: ", result.stamped_stderr.strip().splitlines()[-1])
    assert "still waiting" not in cli("-q", "collect").stderr


def test_collect_shows_an_elapsed_time_spinner_on_a_terminal(tmp_path, demo, db_path):
    write_config(tmp_path / "config.toml", demo.url, db_path)
    demo.faults.collect_seconds = 1.2
    env = clean_env()
    env.update(TERM="xterm", COLUMNS="100")
    code, shown = run_on_terminal([SCRIPT, "collect"], tmp_path, env)
    assert code == 0
    assert "collect: waiting for the remote's answer" in shown and "0:00:01" in shown
    assert re.search(r"collect ok: Collection finished for 12 clients, 1 request, 1\.\d s", shown)
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", shown)  # a person at a terminal gets no timestamps
