from conftest import DEMO_CLIENTS, query_db


def test_sync_replicates_every_client_day(cli, config, db_path):
    result = cli("sync", "--days-back", "30")
    assert result.code == 0, result.stderr
    assert query_db(db_path, "SELECT COUNT(*), COUNT(DISTINCT client_id) FROM client_stats") == [(DEMO_CLIENTS * 30, DEMO_CLIENTS)]
    assert "sync ok: 12/12 clients, 360 rows (360 inserted, 0 updated, 0 unchanged)" in result.stderr


def test_version_from_the_command_and_python_m(cli):
    import subprocess
    import sys
    from importlib.metadata import version

    result = cli("--version")
    assert (result.code, result.stdout) == (0, f"delivery-sync {version('delivery-sync')}\n")
    module = subprocess.run([sys.executable, "-m", "delivery_sync", "--version"], capture_output=True, text=True, timeout=30)
    assert (module.returncode, module.stdout) == (0, result.stdout)
