"""crontab.example: every line is a valid cron entry naming only real commands and flags."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from delivery_sync.cli import app

CRONTAB = Path(__file__).resolve().parents[1] / "crontab.example"
ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
# minute, hour, day of month, month, day of week (0 and 7 are Sunday)
FIELD_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
SHELL_JOIN = re.compile(r"\|\||&&|;|\|")
REDIRECTION = re.compile(r"\d*>>?\s*[^\s&]+|\d*>&\d+")
GLOBALS_WITH_VALUE = {"--config", "--db"}


def cron_entries() -> list[tuple[list[str], str]]:
    """(five time fields, command) of every line that is neither blank, comment nor VAR=value."""
    entries = []
    for line in CRONTAB.read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#") or ENV_ASSIGNMENT.match(text):
            continue
        fields = text.split(None, 5)
        assert len(fields) == 6, f"not 5 time fields and a command: {line!r}"
        entries.append((fields[:5], fields[5]))
    return entries


def field_is_valid(text: str, low: int, high: int) -> bool:
    """A cron time field: `*`, numbers, ranges and lists, each with an optional /step."""
    for part in text.split(","):
        base, slash, step = part.partition("/")
        if slash and not (step.isdigit() and int(step) > 0):
            return False
        if base == "*":
            continue
        bounds = base.split("-")
        if len(bounds) > 2 or not all(b.isdigit() and low <= int(b) <= high for b in bounds):
            return False
    return True


def invocations(command: str) -> list[list[str]]:
    """The arguments of each `delivery-sync` call in a cron command (shell joins and redirections removed)."""
    calls = []
    for segment in SHELL_JOIN.split(command):
        words = shlex.split(REDIRECTION.sub(" ", segment))
        while words and ENV_ASSIGNMENT.match(words[0]):  # `VAR=value delivery-sync ...`: that call's environment
            words = words[1:]
        if words and Path(words[0]).name == "delivery-sync":
            calls.append(words[1:])
    return calls


def split_globals(args: list[str]) -> tuple[list[str], str, list[str]]:
    """(global options, command, the command's arguments)."""
    index = 0
    while index < len(args) and args[index].startswith("-"):
        index += 2 if args[index] in GLOBALS_WITH_VALUE else 1
    assert index < len(args), f"no command in {args}"
    return args[:index], args[index], args[index + 1 :]


def help_text(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result.output


ENTRIES = cron_entries()
CALLS = [call for _, command in ENTRIES for call in invocations(command)]


def test_there_are_entries_and_calls():
    assert len(ENTRIES) >= 3 and len(CALLS) >= 3


@pytest.mark.parametrize("fields", [fields for fields, _ in ENTRIES], ids=lambda f: " ".join(f))
def test_time_fields_are_valid(fields):
    assert all(field_is_valid(text, low, high) for text, (low, high) in zip(fields, FIELD_RANGES)), fields


@pytest.mark.parametrize("args", CALLS, ids=lambda a: " ".join(a))
def test_every_call_names_real_commands_and_flags(args):
    global_options, command, rest = split_globals(args)
    top = help_text()
    for option in global_options:
        if option.startswith("-"):
            assert option in top, f"unknown global option {option}"
    command_help = help_text(command)
    for word in rest:
        if word.startswith("-"):
            assert re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", command_help), f"{command} has no {word}"


def test_the_daily_schedule_in_utc():
    by_command = {}
    for fields, command in ENTRIES:
        for args in invocations(command):
            _, name, rest = split_globals(args)
            by_command.setdefault(name, []).append((fields, rest, command))
    (collect,) = by_command["collect"]
    (sync,) = by_command["sync"]
    assert collect[0] == ["30", "0", "*", "*", "*"]  # 08:30 in Bali
    assert sync[0] == ["0", "1", "*", "*", "*"]  # 09:00 in Bali
    assert sync[1] == ["--days-back", "365"]
    (check,) = [command for _, rest, command in by_command["status"] if rest == ["--check"]]
    # The 02:00 check wants today's sync: yesterday's, 25 h old, must not pass for fresh.
    assert check.count("DELIVERY_SYNC_STATUS__STALE_AFTER_HOURS=2 delivery-sync status") == 2
    for _fields, _, command in collect, sync:
        assert ">> " in command and "2>&1" in command, "output is appended to a log file"


def test_the_comments_an_operator_needs():
    text = CRONTAB.read_text()
    assert re.search(r"^MAILTO=", text, re.M)
    assert re.search(r"^PATH=.*venv/bin", text, re.M)
    assert "DELIVERY_SYNC_CONFIG" in text and "--config" in text
    assert "lock" in text and "75" in text
    assert "UTC" in text and "Bali" in text


def test_the_prometheus_line_writes_a_parsable_file_atomically(cli, config, demo, tmp_path):
    """The monitoring entry, run by a shell as cron would, against a real replica."""
    import os
    import subprocess
    import sys

    from prometheus_client.parser import text_string_to_metric_families

    [line] = [command for _, command in ENTRIES if "--format prometheus" in command]
    assert "> " in line and ".tmp && mv " in line  # the collector never reads half a file
    assert cli("sync", "--days-back", "1").code == 0
    target = tmp_path / "node_exporter"
    target.mkdir()
    shell = line.replace("/var/lib/node_exporter", str(target))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DELIVERY_SYNC_CONFIG": str(config)}
    assert subprocess.run(["sh", "-c", shell], env=env, cwd=tmp_path, timeout=60).returncode == 0
    assert [p.name for p in target.iterdir()] == ["delivery_sync.prom"]
    families = {f.name: f for f in text_string_to_metric_families((target / "delivery_sync.prom").read_text())}
    assert families["delivery_sync_fresh"].samples[0].value == 1


def test_the_check_line_mails_when_today_s_sync_never_ran(cli, config, demo, tmp_path):
    """The 02:00 entry, run by a shell as cron would: after a sync an hour ago it prints nothing
    to mail; after one 25 hours ago (today's never ran) it mails the status view, though
    status.stale_after_hours (26) still calls that replica fresh at any other hour."""
    import os
    import subprocess
    import sys

    from freezegun import freeze_time

    [line] = [command for _, command in ENTRIES if "status --check" in command]
    shell = line.replace("/var/log/delivery-sync", str(tmp_path))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DELIVERY_SYNC_CONFIG": str(config)}

    def cron_mail() -> str:
        return subprocess.run(["sh", "-c", shell], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60).stdout

    from datetime import UTC, datetime, timedelta

    with freeze_time(datetime.now(UTC) - timedelta(hours=25), tick=True):  # yesterday's; today's never ran
        assert cli("sync", "--days-back", "1").code == 0
    mail = cron_mail()
    assert mail.startswith("Replica can be trusted: NO - stale, last ok sync finished 25.0 h ago (limit 2 h)"), mail
    assert cli("status", "--check").code == 0  # any other hour: 26 h
    with freeze_time(datetime.now(UTC) - timedelta(hours=1), tick=True):  # today's, at 01:00
        assert cli("sync", "--days-back", "1").code == 0
    assert cron_mail() == ""
