"""A hostile remote: `source.timeout` bounds a whole request, a trickling or
endless body included; one answer may decode to at most `source.max_answer_mb`, gzip bombs included."""

from __future__ import annotations

import math
import time

import pytest
from conftest import DEMO_CLIENTS, query_db, write_config


@pytest.fixture(autouse=True)
def _per_client_endpoint(monkeypatch):
    """The faults are on the per-client endpoint."""
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__BATCH", "never")


def failures(db_path) -> dict[int, str]:
    return dict(query_db(db_path, "SELECT client_id, error FROM sync_failures"))


def rows_of(db_path) -> dict[int, int]:
    return dict(query_db(db_path, "SELECT client_id, COUNT(*) FROM client_stats GROUP BY client_id"))


def test_a_trickling_answer_is_cut_off_at_the_timeout(cli, tmp_path, demo, db_path):
    write_config(tmp_path / "config.toml", demo.url, db_path, source={"timeout": 1, "max_retries": 0})
    demo.faults.trickle_clients[3] = 8.0  # every piece arrives well within 1 s; the whole takes 8 s
    began = time.monotonic()
    result = cli("sync", "--days-back", "5")
    took = time.monotonic() - began
    assert result.code == 1, result.stderr
    assert took < 4, took
    assert list(failures(db_path)) == [3] and "timed out (no complete answer within source.timeout = 1 s)" in failures(db_path)[3]
    assert 3 not in rows_of(db_path) and len(rows_of(db_path)) == DEMO_CLIENTS - 1


def test_an_endless_answer_cannot_stall_the_run(cli, tmp_path, demo, db_path):
    write_config(tmp_path / "config.toml", demo.url, db_path, source={"timeout": 1, "max_retries": 1})
    demo.faults.trickle_clients[4] = math.inf
    began = time.monotonic()
    result = cli("sync", "--days-back", "3")
    took = time.monotonic() - began
    assert result.code == 1
    # Two attempts of 1 s each and one backoff: nowhere near the minute the remote would go on for.
    assert took < 6, took
    assert "timed out (no complete answer within source.timeout = 1 s) after 2 attempts" in failures(db_path)[4]
    assert len([r for r in demo.stats_requests() if r.path.endswith("/4/stats")]) == 2


def test_a_slow_but_complete_answer_within_the_timeout_is_stored(cli, tmp_path, demo, db_path):
    write_config(tmp_path / "config.toml", demo.url, db_path, source={"timeout": 5})
    demo.faults.trickle_clients[5] = 1.0
    result = cli("sync", "--days-back", "4")
    assert result.code == 0, result.stderr
    assert rows_of(db_path)[5] == 4


def test_gzip_answers_are_stored_like_plain_ones(cli, tmp_path, demo, db_path):
    write_config(tmp_path / "config.toml", demo.url, db_path)
    assert cli("sync", "--days-back", "3", "--no-aggregate").code == 0
    plain = query_db(db_path, "SELECT client_id, stat_date, grab_sales, total_orders, extra FROM client_stats ORDER BY 1, 2")
    demo.faults.gzip_answers = True
    again = cli("sync", "--days-back", "3", "--no-aggregate")
    assert again.code == 0, again.stderr
    assert f"0 inserted, 0 updated, {DEMO_CLIENTS * 3} unchanged" in again.stderr
    assert query_db(db_path, "SELECT client_id, stat_date, grab_sales, total_orders, extra FROM client_stats ORDER BY 1, 2") == plain


@pytest.mark.parametrize("gzipped", [True, False])
def test_an_answer_larger_than_max_answer_mb_fails_its_client(cli, tmp_path, demo, db_path, gzipped):
    write_config(tmp_path / "config.toml", demo.url, db_path, source={"max_answer_mb": 1})
    demo.faults.gzip_answers = gzipped
    demo.faults.padded_clients[6] = 3  # 3 MB of whitespace: a few KB once gzipped
    result = cli("sync", "--days-back", "2")
    assert result.code == 1
    error = failures(db_path)[6]
    assert error == ("client 6: the answer is larger than source.max_answer_mb = 1 MB (decoded); "
                     "raise it if the remote really sends that much")
    assert error in result.stderr and "unexpected" not in result.stderr
    assert len(rows_of(db_path)) == DEMO_CLIENTS - 1
    # Not retried: the same answer would come back.
    assert len([r for r in demo.stats_requests() if r.path.endswith("/6/stats")]) == 1


def test_an_answer_under_the_limit_is_read_whole(cli, tmp_path, demo, db_path):
    write_config(tmp_path / "config.toml", demo.url, db_path, source={"max_answer_mb": 2})
    demo.faults.gzip_answers = True
    demo.faults.padded_clients[6] = 1.5
    assert cli("sync", "--days-back", "2").code == 0
    assert rows_of(db_path)[6] == 2


@pytest.mark.parametrize("value", ["0", "-1", "lots"])
def test_max_answer_mb_is_validated(cli, tmp_path, demo, db_path, monkeypatch, value):
    write_config(tmp_path / "config.toml", demo.url, db_path)
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__MAX_ANSWER_MB", value)
    result = cli("sync", "--days-back", "2")
    assert result.code == 2
    assert "source.max_answer_mb" in result.stderr and not db_path.exists()


# --- smaller ones (item 11) ------------------------------------------------------------------------


def test_a_redirect_names_where_it_points(cli, config, demo, db_path):
    demo.faults.raw_paths["/api/v1/clients/2/stats"] = (301, "", {"Location": "https://new.example/api/v1/clients/2/stats"})
    result = cli("sync", "--days-back", "2")
    assert result.code == 1
    assert failures(db_path)[2] == ("client 2: HTTP 301 redirect to https://new.example/api/v1/clients/2/stats "
                                    "(set source.url to the new address)")


@pytest.mark.parametrize("body, said", [
    ('{"success": true}', 'expected a list, got an object without "data"'),
    ('{"success": true, "data": null}', "expected a list, got null"),
    ('"rows"', "expected a list, got a string"),
    ("42", "expected a list, got a number"),
])
def test_an_answer_that_is_not_a_list_says_what_it_is(cli, config, demo, db_path, body, said):
    demo.faults.raw_paths["/api/v1/clients/2/stats"] = (200, body, {})
    result = cli("sync", "--days-back", "2")
    assert result.code == 1
    assert failures(db_path)[2] == f"client 2: {said}"


def test_retry_after_waits_have_a_total_bound_per_request(cli, tmp_path, demo, db_path, monkeypatch):
    from delivery_sync import source

    monkeypatch.setattr(source, "MAX_TOTAL_WAIT", 1.5)
    write_config(tmp_path / "config.toml", demo.url, db_path, source={"max_retries": 5})
    demo.faults.throttle_next = 100
    demo.faults.retry_after = "1"
    began = time.monotonic()
    result = cli("sync", "--days-back", "2")
    assert result.code == 1
    # Waits of 1 s and 0.5 s (1.5 s in all), then no more: 3 attempts of the 6 allowed.
    assert time.monotonic() - began < 3.5
    assert len(demo.requests) == 3
    assert "HTTP 429 after 3 attempts" in result.stderr.strip().splitlines()[-1]  # the summary line
    assert not db_path.exists()  # nothing stored: a first sync leaves no empty replica


@pytest.mark.parametrize("url", ["http://127.0.0.1:", "http://127.0.0.1:99999", "http://127.0.0.1:0", "http://:3000"])
def test_urls_without_a_usable_port_or_host_are_refused(cli, tmp_path, db_path, url):
    result = cli("--db", str(db_path), "sync", "--source", url, "--days-back", "2")
    assert result.code == 2
    assert "error: --source: must name a host, and a port from 1 to 65535" in result.stderr  # blamed on the flag
    assert not db_path.exists()
