"""`query sql` and a corrupt replica: fts3_tokenizer() refused, table-valued read-only
pragmas allowed, output bounded; a damaged replica is refused before anything is written."""

from __future__ import annotations

import hashlib

import pytest
from conftest import DEMO_CLIENTS, overwrite_page, query_db


@pytest.fixture
def synced(cli, config, db_path):
    assert cli("sync", "--days-back", "30").code == 0
    return db_path


def test_table_valued_pragmas_are_allowed(cli, synced):
    result = cli("query", "sql", "SELECT name FROM pragma_table_info('clients') ORDER BY cid", "--format", "csv")
    assert result.code == 0, result.stderr
    assert result.stdout.split() == ["name", "id", "name", "active", "first_seen_at", "last_seen_at", "last_synced_at"]
    joined = cli("query", "sql", "SELECT COUNT(*) AS n FROM pragma_index_list('client_stats')", "--format", "csv")
    assert joined.stdout.split() == ["n", "4"]


@pytest.mark.parametrize("statement", [
    "SELECT fts3_tokenizer('simple')",
    "SELECT hex(FTS3_TOKENIZER('porter'))",
    "WITH t AS (SELECT fts3_tokenizer('simple') AS p) SELECT * FROM t",
])
def test_fts3_tokenizer_is_refused(cli, synced, statement):
    before = hashlib.sha256(synced.read_bytes()).hexdigest()
    result = cli("query", "sql", statement)
    assert result.code == 2
    assert result.stderr.startswith("error: refused:") and "fts3_tokenizer" in result.stderr.lower()
    assert hashlib.sha256(synced.read_bytes()).hexdigest() == before


def test_a_schema_update_is_still_refused(cli, synced):
    result = cli("query", "sql", "WITH x AS (SELECT 1) UPDATE sqlite_master SET name = 'x'")
    assert result.code == 2
    assert query_db(synced, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'x'") == [(0,)]


def test_a_huge_value_is_refused_not_printed(cli, synced):
    result = cli("query", "sql", "SELECT zeroblob(999999999) AS b")
    assert result.code == 2
    assert result.stdout == ""
    assert result.stderr.strip() == "error: SQL error: a value would exceed 16 MB (string or blob too big)"
    ok = cli("query", "sql", "SELECT length(zeroblob(1000)) AS n", "--format", "csv")
    assert ok.stdout.split() == ["n", "1000"]


def test_fetching_many_rows_counts_against_max_seconds(cli, synced):
    # Cheap per row for SQLite, but ten million of them: interrupted, never printed.
    statement = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 10000000) SELECT i FROM n"
    result = cli("query", "sql", statement, "--max-seconds", "0.5", "--max-rows", "100000000")
    assert result.code == 1
    assert result.stdout == "" and "query interrupted after 0.5 s" in result.stderr


@pytest.mark.parametrize("command", [["sync", "--days-back", "2"], ["aggregate"], ["collect"]])
def test_a_corrupt_replica_is_refused_before_anything_is_written(cli, synced, command):
    overwrite_page(synced, table="client_stats")  # not the first page: the file still opens
    before = hashlib.sha256(synced.read_bytes()).hexdigest()
    result = cli(*command)
    assert result.code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: replica {synced} is corrupt (")
    assert "nothing was written" in lines[0] and "restore it from a backup" in lines[0]
    assert hashlib.sha256(synced.read_bytes()).hexdigest() == before
    assert not synced.with_name(synced.name + "-wal").exists() or synced.with_name(synced.name + "-wal").stat().st_size == 0


def test_an_intact_replica_passes_the_check_and_syncs(cli, synced):
    result = cli("sync", "--days-back", "30")
    assert result.code == 0
    assert query_db(synced, "SELECT COUNT(*) FROM client_stats") == [(DEMO_CLIENTS * 30,)]
