"""Secrets (issue 18, item 6): redaction works on the decoded text. A token the remote echoes
JSON-escaped, in a redirect's Location, or as the Basic form of a URL password reaches no
output and no stored row; a config error never echoes a URL password; a token that cannot be
sent in a header is a config error naming `source.token`."""

from __future__ import annotations

import base64
import json

import pytest
from conftest import query_db, write_config

from delivery_sync.demo_source import DemoSource

TOKEN = "tok+9f8e7d6c5b4a/xyz"
ESCAPED = "".join(f"\\u{ord(char):04x}" for char in TOKEN)  # every character as \uXXXX
PLUS_ONLY = TOKEN.replace("+", "\\u002B")  # only the one character a JSON encoder may escape
PASSWORD = "pa55-word-x"


def _dump(db_path) -> str:
    tables = ("sync_runs", "sync_failures", "sync_rejects", "client_stats", "clients")
    return json.dumps([query_db(db_path, f"SELECT * FROM {table}") for table in tables])


def _everything(cli, result, db_path) -> str:
    """What a run printed, what status shows in every format and a table of names, and every stored value."""
    outputs = [cli("status"), cli("status", "--json"), cli("status", "--check"), cli("status", "--format", "prometheus"),
               cli("query", "sql", "SELECT id, name FROM clients"), cli("query", "sql", "SELECT extra FROM client_stats")]
    return result.stdout + result.stderr + "".join(o.stdout + o.stderr for o in outputs) + _dump(db_path)


def test_a_token_echoed_json_escaped_is_redacted_in_names_rows_and_errors(cli, tmp_path, db_path, monkeypatch):
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__TOKEN", TOKEN)
    with DemoSource(clients=3, token=TOKEN) as demo:
        write_config(tmp_path / "config.toml", demo.url, db_path, source={"batch": "never"})
        today = demo.today().isoformat()
        names = [{"id": 1, "name": f"Kopi {ESCAPED}"}, {"id": 2, "name": "Warung"}, {"id": 3, "name": "Bakso"}]
        demo.faults.raw_paths["/api/v1/clients"] = (200, json.dumps(names).replace("\\\\", "\\"), {})
        demo.faults.raw_paths["/api/v1/clients/2/stats"] = (
            200, f'[{{"stat_date": "{today}", "grab_sales": 10, "note": "key {PLUS_ONLY}"}}]', {})
        demo.faults.raw_paths["/api/v1/clients/3/stats"] = (422, f'{{"error": "bad key {ESCAPED}"}}', {})
        result = cli("sync", "--days-back", "1")
        seen = _everything(cli, result, db_path)
    assert result.code == 1, result.stderr
    for form in (TOKEN, TOKEN.replace("/", "\\/"), ESCAPED, PLUS_ONLY):
        assert form not in seen
    assert query_db(db_path, "SELECT name FROM clients WHERE id = 1") == [("Kopi [redacted]",)]
    assert [json.loads(e) for (e,) in query_db(db_path, "SELECT extra FROM client_stats WHERE client_id = 2")] == [
        {"note": "key [redacted]"}]
    assert "client 3: HTTP 422: bad key [redacted]" in result.stderr


def test_the_basic_form_of_a_url_password_and_a_redirect_location_are_redacted(cli, tmp_path, db_path):
    with DemoSource(clients=3) as demo:
        host = demo.url.removeprefix("http://")
        write_config(tmp_path / "config.toml", f"http://ops:{PASSWORD}@{host}", db_path, source={"batch": "never"})
        demo.faults.echo_auth = {2}  # a 422 quoting the Authorization header httpx sent: Basic base64(ops:password)
        demo.faults.raw_paths["/api/v1/clients/3/stats"] = (
            302, "", {"Location": f"https://ops:{PASSWORD}@moved.example/v2?key={PASSWORD}&next=%2F"})
        result = cli("sync", "--days-back", "1")
        seen = _everything(cli, result, db_path)
        sent = {r.authorization for r in demo.stats_requests()}
    basic = base64.b64encode(f"ops:{PASSWORD}".encode()).decode()
    assert sent == {f"Basic {basic}"}  # what the remote could echo
    assert result.code == 1
    assert PASSWORD not in seen and basic not in seen
    failures = dict(query_db(db_path, "SELECT client_id, error FROM sync_failures"))
    assert failures[2] == "client 2: HTTP 422: bad request, headers: Authorization: Basic [redacted]"
    assert failures[3] == ("client 3: HTTP 302 redirect to https://moved.example/v2?key=[redacted]&next=%2F "
                           "(set source.url to the new address)")


@pytest.mark.parametrize("where", ["file", "env", "flag"])
def test_a_config_error_never_echoes_the_url_password(cli, tmp_path, db_path, monkeypatch, where):
    bad = f"http://ops:{PASSWORD}@collector.example:0"
    args = ["sync"]
    if where == "file":
        write_config(tmp_path / "config.toml", bad, db_path)
    elif where == "env":
        monkeypatch.setenv("DELIVERY_SYNC_SOURCE__URL", bad)
    else:
        args += ["--source", bad]
    result = cli(*args)
    assert result.code == 2
    assert PASSWORD not in result.stderr
    assert "http://[redacted]@collector.example:0" in result.stderr
    assert "must name a host, and a port from 1 to 65535" in result.stderr
    assert not db_path.exists()


# As written in the TOML file (its escapes), and one from the environment.
@pytest.mark.parametrize("toml_token, env_token", [
    ("zq7-123\\r\\nX-Evil: 1", None), ("zq7-ünïcode", None), ("zq7\\u0000null", None), (None, "zq7-123\n"),
])
def test_a_token_that_cannot_be_a_header_is_a_config_error(cli, tmp_path, db_path, demo, monkeypatch, toml_token, env_token):
    write_config(tmp_path / "config.toml", demo.url, db_path, source={"token": toml_token} if toml_token else {})
    if env_token:
        monkeypatch.setenv("DELIVERY_SYNC_SOURCE__TOKEN", env_token)
    result = cli("sync", "--days-back", "1")
    assert result.code == 2
    assert result.stderr.startswith("error: invalid config: source.token: must be printable ASCII")
    assert "zq7" not in result.stderr
    assert "Traceback" not in result.stderr
    assert demo.requests == [] and not db_path.exists()
