from conftest import DEMO_CLIENTS, query_db


def test_sync_replicates_every_client_day(cli, config, db_path):
    result = cli("sync", "--days-back", "30")
    assert result.code == 0, result.stderr
    assert query_db(db_path, "SELECT COUNT(*), COUNT(DISTINCT client_id) FROM client_stats") == [(DEMO_CLIENTS * 30, DEMO_CLIENTS)]
    assert "sync ok: 12/12 clients, 360 rows (360 inserted, 0 updated, 0 unchanged)" in result.stderr
