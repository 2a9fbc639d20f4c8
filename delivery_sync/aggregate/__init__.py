"""Rollups: `client_aggregates` and `overall_aggregates` (docs/reference.md, Tables), plus `overall_daily` and
`overall_weekly`, built from partial sums kept beside them, in one transaction.

One row per (client, period) and per period for all clients, where a period is
`last_7d`, `last_30d`, `last_90d`, `last_365d` (ending at the as-of date) or a
calendar month `YYYY-MM` with data. Every rollup row gives the numbers of the
named SQL (`CLIENT_SUMS`, `OVERALL_SUMS`, `with_ratios`) that `reports.py` runs
on raw rows for that window. Amounts are summed in whole cents (integers):
exact, and independent of the order SQLite visits rows in.

- sql.py: the named SQL of sums and ratios, and the names of the tables;
- pieces.py: the calendar of pieces (weeks cut at month ends) and a window's cover;
- windows.py: any window as a sum of partial sums, read by reports and rolling periods;
- current.py: whether the rollups are current (read by reports, and by build before a refresh);
- parts.py: the partial sums' tables and the SQL that fills them;
- helper.py: the helper process that sums a share of a large SQLite aggregate on another core;
- build.py: SQLite's rollup build (rebuild everything, or refresh what a sync wrote), and the
  refresh and rolling periods both engines share;
- postgres.py: PostgreSQL's full rebuild;
- run.py: the `aggregate` run around the engine's build.

Only the standard library is imported at module level: `reports.py` imports sql.py,
current.py and windows.py on the fast read path.
"""
