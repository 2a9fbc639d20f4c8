"""--help of every command: one default style, every choice named, an example at the end;
shell completion; the client_stats_named view."""

from __future__ import annotations

import shlex
import subprocess

import pytest
import typer.main
from conftest import SCRIPT, clean_env, query_db

from delivery_sync.cli import app
from delivery_sync.metrics import METRICS


def _commands(group=None, path=()):
    group = group or typer.main.get_command(app)
    yield path, group
    for name, command in getattr(group, "commands", {}).items():
        yield from _commands(command, (*path, name))


COMMANDS = [path for path, _ in _commands()]


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "delivery-sync")
def test_every_help_has_one_default_style_and_ends_with_examples(cli, monkeypatch, path):
    monkeypatch.setenv("COLUMNS", "100")
    result = cli(*path, "--help")
    assert result.code == 0
    text = result.stdout
    assert "[default:" not in text  # click's style, not ours
    tail = text.rstrip().split("\n\n")
    examples = next(block for block in reversed(tail) if block.lstrip().startswith("Examples:"))
    lines = examples.splitlines()[1:]
    assert lines and all(line.startswith("    delivery-sync ") for line in lines), examples
    words = " ".join(path)
    assert any(f" {words} " in f"{line} " for line in lines), examples  # an example of this very command


def test_every_option_with_a_default_says_it_in_the_help():
    for path, command in _commands():
        for param in command.params:
            if param.name in ("help", "install_completion", "show_completion", "version") or not param.help:
                continue
            flag_like = param.is_flag if hasattr(param, "is_flag") else False
            if param.default not in (None, False) and not flag_like:
                assert "(default: " in param.help, (path, param.name, param.help)


def test_top_by_names_every_metric(cli):
    text = cli("query", "top", "--help").stdout.replace("\n", " ")
    text = " ".join(text.split())
    assert all(metric in text for metric in METRICS)
    assert "week (from Monday) or month" in " ".join(cli("query", "totals", "--help").stdout.split())


def test_shell_completion_is_available():
    env = clean_env()
    # Typer names the shell from the process tree: under bash here, whatever runs the tests (`; true`
    # keeps bash from exec-ing the command in its own place). Run bare, it failed where no shell was a parent.
    result = subprocess.run(["bash", "-c", f"{shlex.quote(str(SCRIPT))} --show-completion; true"], capture_output=True, text=True,
                            env=env, timeout=30)
    assert result.returncode == 0 and "_delivery_sync_completion" in result.stdout and "complete " in result.stdout
    assert "--install-completion" in subprocess.run([SCRIPT, "--help"], capture_output=True, text=True, env=env).stdout


def test_client_stats_named_puts_each_name_beside_its_rows(cli, config, demo, db_path):
    assert cli("sync", "--days-back", "2").code == 0
    named = query_db(db_path, "SELECT client_id, name, stat_date, total_sales FROM client_stats_named ORDER BY 1, 3")
    raw = query_db(db_path, "SELECT s.client_id, c.name, s.stat_date, s.total_sales FROM client_stats s "
                   "JOIN clients c ON c.id = s.client_id ORDER BY 1, 3")
    assert named == raw and len(named) == 12 * 2
    columns = [row[1] for row in query_db(db_path, "PRAGMA table_info(client_stats_named)")]
    assert columns[:3] == ["client_id", "name", "stat_date"] and "extra" in columns
    result = cli("query", "sql", "SELECT name FROM client_stats_named WHERE client_id = 3 LIMIT 1", "--format", "csv")
    assert result.stdout.splitlines()[1] == query_db(db_path, "SELECT name FROM clients WHERE id = 3")[0][0]
