"""Every quirk of docs/remote-api.md as records.py reads it: dates, numbers, nulls, extra, totals, duplicates, rejects."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delivery_sync.metrics import METRICS
from delivery_sync.records import MAX_AMOUNT, MAX_COUNT, parse_amount, parse_count, parse_rows, parse_stat_date

BALI = ZoneInfo("Asia/Makassar")


# --- stat_date ----------------------------------------------------------------------


def test_mysql2_timestamp_is_the_calendar_date_in_the_source_time_zone():
    # The example of docs/remote-api.md: Bali midnight of 2026-01-25, serialised by mysql2 as UTC.
    assert parse_stat_date("2026-01-24T16:00:00.000Z", BALI) == date(2026, 1, 25)


@pytest.mark.parametrize(
    "stamp, expected",
    [
        ("2026-01-24T15:59:59.999Z", date(2026, 1, 24)),  # last instant of the 24th in Bali
        ("2026-01-24T16:00:00.000Z", date(2026, 1, 25)),  # first instant of the 25th
        ("2026-12-31T16:00:00.000Z", date(2027, 1, 1)),  # year boundary
        ("2024-02-28T16:00:00.000Z", date(2024, 2, 29)),  # leap day
        ("2026-01-25T00:00:00+08:00", date(2026, 1, 25)),  # explicit offset
        ("2026-01-25", date(2026, 1, 25)),  # plain DATE
        (" 2026-01-25 ", date(2026, 1, 25)),
    ],
)
def test_stat_date_forms_and_day_boundaries(stamp, expected):
    assert parse_stat_date(stamp, BALI) == expected


def test_timestamp_follows_the_configured_time_zone_not_bali():
    assert parse_stat_date("2026-01-24T16:00:00.000Z", ZoneInfo("UTC")) == date(2026, 1, 24)
    assert parse_stat_date("2026-01-25T09:59:59.000Z", ZoneInfo("Pacific/Honolulu")) == date(2026, 1, 24)


@pytest.mark.parametrize("bad", ["0000-00-00", "2026-02-30", "", "   ", None, 20260125, "yesterday", "２０２６-01-25"])
def test_unusable_stat_dates_raise(bad):
    with pytest.raises(ValueError):
        parse_stat_date(bad, BALI)


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_any_mysql2_timestamp_maps_to_its_local_date(moment):
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    expected = moment.replace(microsecond=moment.microsecond // 1000 * 1000).astimezone(BALI).date()
    assert parse_stat_date(stamp, BALI) == expected


@settings(max_examples=200, deadline=None)
@given(st.dates(min_value=date(1950, 1, 1), max_value=date(2200, 12, 31)))
def test_any_local_midnight_round_trips(day):
    # What mysql2 does to a DATE column: local midnight of `day`, written in UTC.
    midnight = datetime(day.year, day.month, day.day, tzinfo=BALI).astimezone(UTC)
    assert parse_stat_date(midnight.strftime("%Y-%m-%dT%H:%M:%S.000Z"), BALI) == day
    assert parse_stat_date(day.isoformat(), BALI) == day


# --- numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [("12345.00", 12345.0), (12345, 12345.0), (0.5, 0.5), (" 7.25 ", 7.25), ("-1500.00", -1500.0), (-3, -3.0), (None, None)],
)
def test_amounts(raw, expected):
    value = parse_amount(raw)
    assert value == expected and (value is None or isinstance(value, float))


@pytest.mark.parametrize("bad", ["N/A", "", "abc", "nan", "inf", "1e999", True, [1], {"a": 1}, "1,000.00", "٣", 1e308, "-1e12"])
def test_non_numbers_and_implausible_amounts_are_not_amounts(bad):
    with pytest.raises(ValueError):
        parse_amount(bad)


@pytest.mark.parametrize("raw, expected", [("12", 12), (12, 12), (12.0, 12), ("12.00", 12), ("0", 0), (None, None)])
def test_counts(raw, expected):
    value = parse_count(raw)
    assert value == expected and (value is None or type(value) is int)


@pytest.mark.parametrize("bad", [-1, "-3", 1.5, "2.50", "N/A", False, "1e30", 10**9])
def test_negative_fractional_implausible_or_non_numeric_counts_raise(bad):
    with pytest.raises(ValueError):
        parse_count(bad)


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-MAX_AMOUNT + 1, max_value=MAX_AMOUNT - 1))
def test_decimal_strings_read_as_their_value(number):
    text = f"{number:.2f}"
    assert parse_amount(text) == float(text)
    assert parse_amount(number) == number


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=int(MAX_COUNT) - 1))
def test_whole_counts_in_every_form(number):
    assert parse_count(number) == number
    assert parse_count(str(number)) == number
    assert parse_count(f"{number}.00") == number


@settings(max_examples=200, deadline=None)
@given(st.integers(max_value=-1))
def test_negative_counts_always_raise(number):
    with pytest.raises(ValueError):
        parse_count(number)
    with pytest.raises(ValueError):
        parse_count(str(number))


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_text_is_a_number_or_a_clear_error(text):
    try:
        value = parse_amount(text)
    except ValueError:
        return
    # Accepted text must be a plain ASCII decimal number.
    assert value == float(text)
    assert text.strip().isascii()


# --- whole rows ---------------------------------------------------------------------------


def _row(**fields):
    return {"stat_date": "2026-01-24T16:00:00.000Z", **fields}


def test_a_demo_like_row_is_read_in_full():
    raw = _row(grab_sales="125000.00", grab_orders=3, gojek_sales=None, gojek_orders=None, total_sales="125000.00", total_orders=3)
    parsed = parse_rows([raw], BALI)
    row = parsed.rows[date(2026, 1, 25)]
    assert row.grab_sales == 125000.0 and row.grab_orders == 3
    assert row.gojek_sales is None and row.gojek_orders is None  # nulls stay NULL
    assert row.grab_ads_spend is None  # absent metric is NULL too
    assert (row.total_sales, row.total_orders) == (125000.0, 3)
    assert row.extra_json is None
    assert parsed.fetched == 1 and parsed.rejects == []


def test_null_totals_are_computed_from_both_platforms_with_nulls_as_zero():
    parsed = parse_rows(
        [
            _row(grab_sales="100.50", gojek_sales="20.25", grab_orders=2, gojek_orders=1, total_sales=None, total_orders=None),
            {"stat_date": "2026-01-26", "grab_sales": None, "gojek_sales": "30.00", "grab_orders": None, "gojek_orders": 4},
            {"stat_date": "2026-01-27", "grab_sales": "1.00", "total_sales": "999.00", "total_orders": 9},
        ],
        BALI,
    )
    rows = parsed.rows
    assert (rows[date(2026, 1, 25)].total_sales, rows[date(2026, 1, 25)].total_orders) == (120.75, 3)
    assert (rows[date(2026, 1, 26)].total_sales, rows[date(2026, 1, 26)].total_orders) == (30.0, 4)
    # Sent totals are taken as they are.
    assert (rows[date(2026, 1, 27)].total_sales, rows[date(2026, 1, 27)].total_orders) == (999.0, 9)


def test_unknown_and_replica_named_fields_go_to_extra():
    raw = _row(
        grab_sales="1.00",
        id=4242,
        client_id=999,
        created_at="2026-01-25T17:00:00.000Z",
        updated_at="x",
        synced_at="y",
        extra="z",
        is_promo=True,
        notes={"a": [1, 2]},
    )
    row = parse_rows([raw], BALI).rows[date(2026, 1, 25)]
    assert json.loads(row.extra_json) == {
        "id": 4242,
        "client_id": 999,
        "created_at": "2026-01-25T17:00:00.000Z",
        "updated_at": "x",
        "synced_at": "y",
        "extra": "z",
        "is_promo": True,
        "notes": {"a": [1, 2]},
    }
    # Canonical JSON: the same fields in another order give the same text (no false "changed").
    again = parse_rows([dict(reversed(list(raw.items())))], BALI).rows[date(2026, 1, 25)]
    assert again.extra_json == row.extra_json
    values = row.values()
    assert len(values) == len(METRICS) + 1 and values[-1] == row.extra_json


def test_duplicates_in_one_answer_last_wins():
    parsed = parse_rows(
        [_row(grab_sales="1.00"), {"stat_date": "2026-01-26", "grab_sales": "5.00"}, {"stat_date": "2026-01-25", "grab_sales": "2.00"}],
        BALI,
    )
    # The timestamp and the plain date are the same day; the later one wins.
    assert parsed.rows[date(2026, 1, 25)].grab_sales == 2.0
    assert len(parsed.rows) == 2 and parsed.fetched == 3


def test_unreadable_rows_are_rejected_with_raw_payload_and_reason():
    bad = [
        {"stat_date": "0000-00-00", "grab_sales": "1.00"},
        {"stat_date": "2026-01-02", "grab_orders": "N/A"},
        {"stat_date": "2026-01-03", "gojek_orders": -1},
        {"stat_date": "2026-01-04", "grab_new_customers": 1.5},
        {"grab_sales": "1.00"},
        "not a row",
    ]
    good = [{"stat_date": "2026-01-05", "grab_sales": "-2500.00", "grab_orders": 0}]  # a refund is kept
    parsed = parse_rows(bad + good, BALI)
    assert parsed.fetched == 7
    assert list(parsed.rows) == [date(2026, 1, 5)]
    assert parsed.rows[date(2026, 1, 5)].grab_sales == -2500.0
    assert parsed.rows[date(2026, 1, 5)].total_sales == -2500.0
    reasons = [r.reason for r in parsed.rejects]
    assert len(reasons) == 6
    assert "stat_date" in reasons[0] and "0000-00-00" in reasons[0]
    assert "grab_orders" in reasons[1] and "not a number" in reasons[1]
    assert "gojek_orders" in reasons[2] and "negative" in reasons[2]
    assert "grab_new_customers" in reasons[3] and "fractional" in reasons[3]
    assert "stat_date" in reasons[4]
    assert "not an object" in reasons[5]
    assert [r.stat_date for r in parsed.rejects] == ["0000-00-00", "2026-01-02", "2026-01-03", "2026-01-04", None, None]
    for raw, reject in zip(bad, parsed.rejects):
        assert json.loads(reject.payload) == raw


def test_a_row_rejected_after_a_good_duplicate_does_not_erase_it():
    parsed = parse_rows([{"stat_date": "2026-01-05", "grab_sales": "1.00"}, {"stat_date": "2026-01-05", "grab_sales": "N/A"}], BALI)
    assert parsed.rows[date(2026, 1, 5)].grab_sales == 1.0
    assert len(parsed.rejects) == 1


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=9), st.integers(min_value=0, max_value=10**6)),
        max_size=30,
    )
)
def test_last_wins_for_any_sequence_of_duplicates(entries):
    start = date(2026, 3, 1)
    raw = [{"stat_date": (start + timedelta(days=d)).isoformat(), "grab_orders": n} for d, n in entries]
    parsed = parse_rows(raw, BALI)
    expected: dict[date, int] = {}
    for d, n in entries:
        expected[start + timedelta(days=d)] = n
    assert {day: row.grab_orders for day, row in parsed.rows.items()} == expected
    assert all(row.total_orders == row.grab_orders for row in parsed.rows.values())
    assert parsed.fetched == len(entries)


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=MAX_AMOUNT, max_value=1e308), st.booleans())
def test_implausible_amounts_raise_whatever_their_sign(number, negative):
    with pytest.raises(ValueError, match="not a plausible amount"):
        parse_amount(-number if negative else number)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=int(MAX_COUNT), max_value=10**40))
def test_implausible_counts_raise(number):
    with pytest.raises(ValueError, match="not a plausible count"):
        parse_count(str(number))
