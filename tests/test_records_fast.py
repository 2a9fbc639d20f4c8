"""The fast row path of records.parse_rows gives exactly what the pydantic model path gives:
the same stored values (type for type), the same rejects, for any mix of readable and unreadable rows."""

from __future__ import annotations

import json
from datetime import date
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from delivery_sync import records
from delivery_sync.metrics import AMOUNT_METRICS, METRICS

BALI = ZoneInfo("Asia/Makassar")

# Values the remote sends, and the quirks that must be rejected (or kept) exactly as before.
NUMBERS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-10**13, max_value=10**13),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(places=2, min_value=-10**12, max_value=10**12, allow_nan=False).map(str),
    st.sampled_from(["12", "12.0", " 7 ", "1e3", ".5", "5.", "+3", "-0", "1_000", "٣", "inf", "NaN", "N/A", "", "0x10",
                     "1e400", "999999999", "1000000000", "12.5", "-2500.00"]),
    st.lists(st.integers(), max_size=2),
)
AMOUNT = st.one_of(st.none(), st.integers(-10**9, 10**9), st.floats(-1e9, 1e9),
                   st.decimals(places=2, min_value=-10**9, max_value=10**9, allow_nan=False).map(str))
COUNT = st.one_of(st.none(), st.integers(0, 10**6), st.integers(0, 10**6).map(float), st.integers(0, 10**6).map(lambda n: f"{n}.00"))


def mostly(readable, anything, one_in: int):
    """`anything` one time in `one_in`, else `readable`: most rows then get through whole."""
    return st.integers(0, one_in - 1).flatmap(lambda k: anything if k == 0 else readable)



GOOD_DATES = st.one_of(
    st.dates(min_value=date(2024, 1, 1), max_value=date(2026, 12, 31)).map(date.isoformat),
    st.dates(min_value=date(2024, 1, 1), max_value=date(2026, 12, 31)).map(lambda d: f"{d.isoformat()}T16:00:00.000Z"),
)
ANY_DATES = st.one_of(
    st.dates(min_value=date(2024, 1, 1), max_value=date(2026, 12, 31)).map(date.isoformat),
    st.dates(min_value=date(2024, 1, 1), max_value=date(2026, 12, 31)).map(lambda d: f"{d.isoformat()}T16:00:00.000Z"),
    st.sampled_from(["0000-00-00", "", " 2026-01-05 ", "2026-01-05T00:00:00", "2026-1-5", "yesterday"]),
    st.none(),
    st.integers(),
)
EXTRA_KEYS = st.sampled_from(["id", "client_id", "created_at", "extra", "notes", "_private", "values"])
ROW = st.fixed_dictionaries(
    {"stat_date": mostly(GOOD_DATES, ANY_DATES, 10)},
    optional={name: mostly(AMOUNT if name in AMOUNT_METRICS else COUNT, NUMBERS, 40) for name in METRICS},
).flatmap(lambda row: st.dictionaries(EXTRA_KEYS, st.one_of(st.none(), st.integers(), st.text(max_size=5)), max_size=3).map(
    lambda extra: {**extra, **row}))
RAW = mostly(ROW, st.one_of(ROW.map(lambda row: {k: v for k, v in row.items() if k != "stat_date"}),
                            st.sampled_from(["not a row", None, 3, ["x"]])), 10)


def model_path(raw_rows, tz, window):
    """parse_rows as it was: every row through the pydantic StatRow model."""
    rows, rejects = {}, []
    for raw in raw_rows:
        try:
            day, row = records._model_row(raw, tz)
            if window and not window[0] <= day <= window[1]:
                raise ValueError(f"stat_date {day} is outside the requested window {window[0]}..{window[1]}")
        except (records.ValidationError, ValueError) as exc:
            rejects.append(records._reject(raw, exc))
            continue
        rows.pop(day, None)
        rows[day] = row
    return rows, rejects


def typed(rows: dict) -> list:
    """Values with their types: 1 and 1.0 are equal in Python but not stored alike."""
    return [(day, [(type(v).__name__, v) for v in row]) for day, row in rows.items()]


@settings(max_examples=400, deadline=None)
@given(st.lists(RAW, max_size=12), st.booleans())
def test_fast_path_equals_the_model_path(raw_rows, windowed):
    window = (date(2024, 3, 1), date(2026, 11, 30)) if windowed else None
    parsed = records.parse_rows(raw_rows, BALI, window)
    rows, rejects = model_path(raw_rows, BALI, window)
    assert typed(parsed.rows) == typed(rows)
    assert parsed.rejects == rejects
    assert parsed.fetched == len(raw_rows)


def test_a_demo_answer_reads_identically_on_both_paths(demo):
    raw_rows = demo.rows(5, date(2025, 1, 1), date(2025, 12, 31))
    parsed = records.parse_rows(raw_rows, BALI)
    rows, rejects = model_path(raw_rows, BALI, None)
    assert len(parsed.rows) == 365 and rejects == parsed.rejects == []
    assert typed(parsed.rows) == typed(rows)
    assert json.dumps(typed(parsed.rows), default=str) == json.dumps(typed(rows), default=str)
