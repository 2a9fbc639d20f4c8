"""Hostile answers for the parsers of records.py, fuzzed: with
arbitrary JSON, every row is stored, rejected with a reason, or fails its client; every client entry
is read or named unreadable; nothing raises anything unexpected."""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from zoneinfo import ZoneInfo

from conftest import DEMO_CLIENTS, query_db
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delivery_sync.metrics import METRICS
from delivery_sync.records import parse_batch, parse_clients, parse_rows

BALI = ZoneInfo("Asia/Makassar")
WINDOW = (date(2026, 1, 1), date(2026, 1, 31))
INT64 = 2**63 - 1

# Any JSON value, weighted towards what breaks parsers: huge and boundary integers, odd floats,
# timestamps at the edges of the calendar, numeric-looking strings.
_numbers = st.one_of(
    st.integers(), st.sampled_from([0, -1, 2**63, 2**63 - 1, -(2**63) - 1, 10**400, -(10**400), True, False]),
    st.floats(allow_nan=False, allow_infinity=False),
)
_strings = st.one_of(
    st.text(max_size=30),
    st.sampled_from([
        "2026-01-15", "0000-00-00", "9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00",
        "2026-01-14T16:00:00.000Z", "1e999", "-0", "12345.00", "NaN", "٣", " 7 ", "2026-01-15T25:00",
    ]),
)
_scalars = st.one_of(st.none(), _numbers, _strings)
json_values = st.recursive(
    _scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12,
)
_row_fields = st.sampled_from(["stat_date", *METRICS, "client_id", "id", "extra", "created_at"])
rows = st.one_of(
    json_values,
    st.dictionaries(st.one_of(_row_fields, st.text(max_size=8)), st.one_of(_scalars, json_values), max_size=8),
    st.fixed_dictionaries({"stat_date": st.one_of(_strings, st.just("2026-01-15"))},
                          optional={m: _scalars for m in METRICS}),
)


def _assert_parsed(parsed, given_rows: list) -> None:
    assert parsed.fetched == len(given_rows)
    assert len(parsed.rows) + len(parsed.rejects) <= len(given_rows)
    # Every row is stored or rejected (duplicates of a day: the last one stands for them).
    assert len(parsed.rejects) + len(parsed.rows) >= (1 if given_rows else 0)
    for day, row in parsed.rows.items():
        assert WINDOW[0] <= day <= WINDOW[1]
        assert len(row.values()) == len(METRICS) + 1
    for reject in parsed.rejects:
        assert reject.reason and isinstance(reject.payload, str)
        json.loads(reject.payload)


def _storable(values: tuple) -> None:
    """What SQLite would be given for a row: no value it cannot bind."""
    conn = sqlite3.connect(":memory:")
    conn.execute(f"SELECT {', '.join('?' * len(values))}", values)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(rows, max_size=6))
def test_rows_are_stored_or_rejected_never_raised(raw_rows):
    parsed = parse_rows(raw_rows, BALI, WINDOW)
    _assert_parsed(parsed, raw_rows)
    for values in parsed.stored().values.values():
        _storable(values)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(["1", "2", " 3", "99", "x"]), st.one_of(
        json_values, st.dictionaries(st.one_of(_strings, st.just("2026-01-15")), rows, max_size=3), st.lists(rows, max_size=3),
    ), max_size=4),
))
def test_batch_answers_are_read_client_by_client(answer):
    if not isinstance(answer, dict):
        return  # source.batch_stats refuses a non-object answer before parsing (tested over HTTP)
    result = parse_batch(answer, [1, 2, 3], BALI, WINDOW)
    assert set(result.clients) | set(result.unreadable) <= {1, 2, 3}
    assert not set(result.clients) & set(result.unreadable)
    for parsed in result.clients.values():
        for day in parsed.rows:
            assert WINDOW[0] <= day <= WINDOW[1]


client_entries = st.one_of(
    json_values,
    st.fixed_dictionaries({"id": st.one_of(_numbers, _strings, json_values)}, optional={"name": json_values}),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(client_entries, max_size=6))
def test_client_entries_are_read_or_named_unreadable(entries):
    clients, problems = parse_clients(entries)
    assert len(clients) + len(problems) <= len(entries)
    assert len(problems) + (1 if clients else 0) >= (1 if entries else 0)
    for client in clients:
        assert type(client.id) is int and -INT64 - 1 <= client.id <= INT64
        assert client.name is None or isinstance(client.name, str)
        _storable((client.id, client.name))
    for problem in problems:
        assert problem.startswith("unreadable client entry")


# --- over HTTP --------------------------------------------------------------------------------------


def test_odd_client_ids_are_unreadable_entries_not_a_crash(cli, config, demo, db_path):
    demo.faults.extra_clients = [
        {"id": 2**64 + 5, "name": "Too Big"},
        {"id": True, "name": "Boolean Warung"},
        {"id": "abc", "name": "Stringy"},
        {"id": 1e300, "name": "Float Huge"},
    ]
    result = cli("sync", "--days-back", "2")
    assert result.code == 0, result.stderr
    assert "unexpected" not in result.stderr and "Traceback" not in result.stderr
    assert query_db(db_path, "SELECT COUNT(*) FROM clients") == [(DEMO_CLIENTS,)]
    assert query_db(db_path, "SELECT COUNT(*) FROM clients WHERE name IN ('Too Big', 'Boolean Warung', 'Stringy', 'Float Huge')") == [(0,)]
    (error,) = query_db(db_path, "SELECT error FROM sync_runs WHERE command = 'sync'")[0]
    assert error.count("unreadable client entry") == 4
    assert "18446744073709551621" in error and "Boolean Warung" in error
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats") == [(DEMO_CLIENTS * 2,)]


def test_rows_with_unbounded_numbers_and_edge_dates_are_rejected_over_http(cli, config, demo, db_path, monkeypatch):
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__BATCH", "never")
    today = demo.today().isoformat()
    demo.faults.extra_rows[3] = [
        {"stat_date": today, "grab_orders": 10**30},
        {"stat_date": today, "grab_sales": -(10**400)},
        {"stat_date": "9999-12-31T23:00:00-05:00", "grab_sales": "1.00"},
        {"stat_date": "0001-01-01T00:00:00+14:00"},
    ]
    result = cli("sync", "--days-back", "2")
    assert result.code == 1, result.stderr  # partial: rows rejected
    assert "unexpected" not in result.stderr
    reasons = [r for (r,) in query_db(db_path, "SELECT reason FROM sync_rejects WHERE client_id = 3 ORDER BY rowid")]
    assert len(reasons) == 4
    assert "not a plausible count" in reasons[0] and "too large" in reasons[1]
    assert all("stat_date" in r for r in reasons[2:])
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats WHERE client_id = 3") == [(2,)]
