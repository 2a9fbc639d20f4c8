"""Remote text is data: a remote that echoes our token, or sends
control codes and forged lines, reaches no terminal, log, status or stored row as such."""

from __future__ import annotations

import json

import pytest
from conftest import query_db, write_config

from delivery_sync.demo_source import DemoSource

TOKEN = "tok-9f8e7d6c5b4a39281706/xyz"


def _dump(db_path) -> str:
    """Every stored value of the tables remote text can reach, as one string."""
    tables = ("sync_runs", "sync_failures", "sync_rejects", "client_stats", "clients", "meta")
    return json.dumps([query_db(db_path, f"SELECT * FROM {table}") for table in tables])


@pytest.mark.parametrize("verbose", [False, True])
def test_a_remote_echoing_the_token_never_shows_or_stores_it(cli, tmp_path, db_path, monkeypatch, verbose):
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__TOKEN", TOKEN)
    with DemoSource(clients=4, token=TOKEN) as demo:
        write_config(tmp_path / "config.toml", demo.url, db_path, source={"batch": "never"})
        demo.faults.echo_auth = {2}  # a 422 quoting the Authorization header
        demo.faults.echo_auth_rows = True  # a row field and a rejected row quoting it
        result = cli(*(["-v"] if verbose else []), "sync", "--days-back", "2")
        status, status_json, check = cli("status"), cli("status", "--json"), cli("status", "--check")
    assert result.code == 1, result.stderr
    seen = result.stdout + result.stderr + status.stdout + status_json.stdout + check.stdout + _dump(db_path)
    assert TOKEN not in seen and TOKEN.replace("/", "\\/") not in seen
    assert "Authorization: Bearer [redacted]" in result.stderr  # the failure is still explained
    assert "Bearer [redacted]" in query_db(db_path, "SELECT error FROM sync_failures WHERE client_id = 2")[0][0]
    extra = query_db(db_path, "SELECT extra FROM client_stats WHERE client_id = 1 AND extra LIKE '%debug%'")
    assert [json.loads(e)["debug"] for (e,) in extra] == ["Bearer [redacted]"]
    payloads = query_db(db_path, "SELECT payload FROM sync_rejects WHERE client_id = 1")
    assert [json.loads(p)["stat_date"] for (p,) in payloads] == ["Bearer [redacted]"]


def test_the_url_password_is_redacted_from_answers_too(cli, tmp_path, db_path):
    with DemoSource(clients=2) as demo:
        host = demo.url.removeprefix("http://")
        write_config(tmp_path / "config.toml", f"http://ops:pa55-word-x@{host}", db_path, source={"batch": "never"})
        demo.faults.fail_clients = {1: 422}
        demo.faults.error_text = "denied for http://ops:pa55-word-x@collector"
        result = cli("sync", "--days-back", "1")
    assert result.code == 1
    assert "pa55-word-x" not in result.stderr + _dump(db_path)
    assert "denied for http://ops:[redacted]@collector" in result.stderr


FORGED = "boom\x1b[2J\x1b]0;owned\x07\nsync ok: 12/12 clients"


def test_control_codes_and_forged_lines_in_remote_errors_are_escaped(cli, config, db_path, demo):
    write_config(config, demo.url, db_path, source={"batch": "never"})
    demo.faults.fail_clients = {3: 422}
    demo.faults.error_text = FORGED
    demo.faults.extra_rows = {4: [{"stat_date": "2026-01-01\x1b[31m\nsync ok: forged"}]}
    result = cli("sync", "--days-back", "2")
    status, check = cli("status"), cli("status", "--check")
    assert result.code == 1
    for text in (result.stderr, status.stdout, check.stdout):
        assert "\x1b" not in text and "\x07" not in text
        assert not any(line.startswith("sync ok") for line in text.splitlines())
    assert "boom\\x1b[2J\\x1b]0;owned\\x07\\nsync ok: 12/12 clients" in result.stderr
    assert "2026-01-01\\x1b[31m\\nsync ok: forged" in result.stderr
    assert "boom\\x1b[2J" in status.stdout
    # stored as sent, and --json keeps the exact text for scripts
    assert query_db(db_path, "SELECT error FROM sync_failures WHERE client_id = 3")[0][0].endswith(FORGED)
    assert FORGED in json.loads(cli("status", "--json").stdout)["failures"]["3"]
