"""`query sql` bounds (issue 18, item 9): at most --max-rows rows are read and printed (more is said,
exit 1), --max-seconds covers printing them too, and out-of-range numbers are usage errors (exit 2)."""

from __future__ import annotations

import csv
import io
import json

import pytest

COUNT = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT {}) SELECT i, 'r' || i AS label FROM n"


@pytest.fixture
def synced(cli, config, db_path):
    assert cli("sync", "--days-back", "2").code == 0
    return db_path


def test_more_rows_than_max_rows_prints_the_first_ones_and_says_so(cli, synced):
    result = cli("query", "sql", COUNT.format(25_000), "--format", "csv")
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert result.code == 1
    assert rows[0] == ["i", "label"] and len(rows) == 1 + 10_000 and rows[-1] == ["10000", "r10000"]
    assert result.stderr.strip().endswith("warning: only the first 10000 rows were printed: the statement returns more "
                                     "(raise --max-rows, or add LIMIT/OFFSET)")
    exact = cli("query", "sql", COUNT.format(300), "--format", "json", "--max-rows", "300")
    assert exact.code == 0 and exact.stderr == ""
    assert [row["i"] for row in json.loads(exact.stdout)] == list(range(1, 301))
    wider = cli("query", "sql", COUNT.format(25_000), "--format", "csv", "--max-rows", "30000")
    assert wider.code == 0 and len(wider.stdout.splitlines()) == 1 + 25_000


def test_json_written_row_by_row_is_what_one_dump_would_write(cli, synced):
    statement = "SELECT id, name, NULL AS empty, 1.5 AS x, 'a\"b\nc' AS odd FROM clients ORDER BY id LIMIT 3"
    result = cli("query", "sql", statement, "--format", "json")
    assert result.code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 3 and rows[0]["odd"] == 'a"b\nc'
    assert result.stdout == json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
    empty = cli("query", "sql", "SELECT id FROM clients WHERE id < 0", "--format", "json")
    assert empty.stdout == "[]\n"


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_max_seconds_covers_printing_the_rows(cli, synced, monkeypatch, fmt):
    """Rows that SQLite hands over at once, but that take seconds to print: stopped, nothing printed."""
    import time

    from delivery_sync.render import tables

    slow = tables._cell if fmt == "table" else tables._csv_value

    def slowly(*args):  # a slow terminal or pipe: every value takes 0.2 ms to print
        time.sleep(0.0002)
        return slow(*args)

    monkeypatch.setattr(tables, "_cell" if fmt == "table" else "_csv_value", slowly)
    monkeypatch.setattr(tables, "_json_value", slowly)
    statement = COUNT.format(10_000).replace("'r' || i", "x'0001'")  # BLOBs: every format converts them
    began = time.monotonic()
    result = cli("query", "sql", statement, "--format", fmt, "--max-seconds", "0.5")
    assert result.code == 1, result.stderr
    assert time.monotonic() - began < 2.5
    assert "query interrupted: its rows were not printed within --max-seconds" in result.stderr
    if fmt == "table":
        assert result.stdout == ""


def test_drawing_a_large_table_counts_against_max_seconds(cli, synced):
    result = cli("query", "sql", COUNT.format(10_000), "--max-seconds", "0.3")
    assert result.code == 1
    assert result.stdout == ""
    assert "query interrupted: its rows were not printed within --max-seconds" in result.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1"])
def test_max_seconds_must_be_a_finite_positive_number(cli, synced, value):
    result = cli("query", "sql", "SELECT 1", "--max-seconds", value)
    assert result.code == 2
    assert result.stderr.startswith("error: --max-seconds must be more than 0 and finite")
    assert result.stdout == ""


@pytest.mark.parametrize("args, said", [
    (["top", "--limit", "0"], "error: --limit must be at least 1 and below 2^63 (got 0)"),
    (["top", "--limit", "99999999999999999999"], "error: --limit must be at least 1 and below 2^63 (got 99999999999999999999)"),
    (["client", "99999999999999999999"], "error: Invalid value for 'ID': Input should be less than or equal to 9223372036854775807"),
    (["client", "--", "-99999999999999999999"], "error: Invalid value for 'ID': Input should be greater than or equal to -9223372036854775808"),
    (["changes", "--client", "9223372036854775808"],
     "error: Invalid value for '--client': Input should be less than or equal to 9223372036854775807"),
    (["sql", "SELECT 1", "--max-rows", "0"], "error: Invalid value for '--max-rows': Input should be greater than or equal to 1"),
    # The largest id SQLite can hold is a fine question: that client is just not there.
    (["client", "9223372036854775807"], "error: unknown client id 9223372036854775807: not in the replica"),
])
def test_limits_and_ids_out_of_range_are_usage_errors(cli, synced, args, said):
    result = cli("query", *args)
    assert result.code == 2, result.stderr
    assert result.stderr.startswith(said), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
