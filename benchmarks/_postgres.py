"""New databases for the benchmarks that load a replica into PostgreSQL (`--postgres URL`)."""

from __future__ import annotations


def new_database(server: str, name: str) -> str:
    """A new, empty database `name` on the PostgreSQL server `server` (one left by an earlier run
    of the same name is dropped first); its URL."""
    import psycopg  # only when --postgres is given: the SQLite runs do not need psycopg

    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    return server.rsplit("/", 1)[0] + "/" + name
