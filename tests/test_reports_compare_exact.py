"""Rankings by any metric or ratio, either way and with an order floor, and the two windows of a
comparison, for any window: bit for bit the numbers and order of the raw-row SQL."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_aggregate_exact import DAYS, aggregated, exact, synced  # noqa: F401 (synced is a fixture)

from delivery_sync import reports
from delivery_sync.aggregate.sql import CLIENT_COLUMNS, CLIENT_SUMS, OVERALL_COLUMNS, OVERALL_SUMS, RATIOS, with_ratios
from delivery_sync.metrics import AMOUNT_METRICS, METRICS

CLIENT = [*CLIENT_COLUMNS, *RATIOS]
ANY_WINDOW = (st.integers(min_value=-DAYS - 20, max_value=10), st.integers(min_value=1, max_value=DAYS + 30))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(*ANY_WINDOW, st.sampled_from([*METRICS, *RATIOS]), st.booleans(), st.sampled_from([None, 0, 500, 5000]), st.integers(1, 13))
def test_top_by_any_metric_or_ratio_ranks_as_the_raw_path(synced, end_offset, days, by, ascending, min_orders, limit):  # noqa: F811
    with aggregated(synced, end_offset, days) as (conn, window):
        floor = "" if min_orders is None else f" WHERE total_orders >= {min_orders}"
        raw_sql = (f"SELECT * FROM ({with_ratios(CLIENT_SUMS, CLIENT_COLUMNS)}){floor} "
                   f"ORDER BY {by} IS NULL, {by} {'ASC' if ascending else 'DESC'}, client_id LIMIT :limit")
        expected = [[exact(r[c]) for c in CLIENT] for r in conn.execute(raw_sql, {**window.params(), "limit": limit})]
        got = reports.top(conn, window, by, limit, ascending=ascending, min_orders=min_orders).rows
        assert [[exact(r[c]) for c in CLIENT] for r in got] == expected


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(*ANY_WINDOW, st.sampled_from(["total_sales", "gojek_orders", "ads_roas", "avg_order_value"]), st.sampled_from(["previous", "year"]))
def test_both_windows_of_a_comparison_are_the_raw_paths(synced, end_offset, days, by, compare):  # noqa: F811
    with aggregated(synced, end_offset, days) as (conn, window):
        base = reports.base_window(window, compare)

        def raw(span):
            return {r["client_id"]: r for r in conn.execute(with_ratios(CLIENT_SUMS, CLIENT_COLUMNS), span.params())}

        now, before = raw(window), raw(base)
        for row in reports.movers(conn, window, by, limit=100, compare=compare, rank="change").rows:
            c = row["client_id"]
            assert exact(row[by]) == exact(now[c][by] if c in now else None)
            assert exact(row[f"{by}_base"]) == exact(before[c][by] if c in before else None)
        for row in reports.top(conn, window, limit=5, compare=compare).rows:
            if row["client_id"] in before:
                assert [exact(row[f"{c}_base"]) for c in CLIENT[1:]] == [exact(before[row["client_id"]][c]) for c in CLIENT[1:]]
            else:
                assert row["days_with_data_base"] == 0 and row["total_sales_base"] is None
        totals = reports.totals(conn, window, compare=compare).rows[0]
        raw_base = conn.execute(with_ratios(OVERALL_SUMS, OVERALL_COLUMNS), base.params()).fetchone()
        for c in [*OVERALL_COLUMNS, *RATIOS]:
            assert exact(totals[f"{c}_base"]) == exact(raw_base[c] if raw_base else (0 if c.endswith("_with_data") else None)), c


# A client's sum of an amount up to 2^49 cents (5.6 trillion rupiah): cents / 100 rounds back exactly.
CENTS = st.integers(min_value=-(2**49), max_value=2**49)
# All clients' totals, which reach 2^51 cents and more at 10,000 clients over years.
TOTAL_CENTS = st.integers(min_value=-(2**60), max_value=2**60)


@given(CENTS, CENTS, st.sampled_from(sorted(AMOUNT_METRICS)))
def test_movers_change_in_cents_is_every_reports_change_in_rupiah(now, base, figure):
    """`movers` reads an amount in whole cents and ranks by `_moved` of them; every other report
    gives change() the rupiah SQL reads (cents / 100): the same difference and percent, bit for
    bit, and that percent within a few units in the last place of the exact ratio."""
    diff, pct = reports._moved(now, base, base / 100, in_cents=True)
    assert (diff, pct) == reports.change(figure, now / 100, base / 100)
    assert diff == (now - base) / 100
    if base == 0:
        assert pct is None
    else:
        exact_pct = Fraction(now - base, abs(base)) * 100
        assert abs(Fraction(pct) - exact_pct) <= abs(exact_pct) * Fraction(1, 2**50)


@given(TOTAL_CENTS, TOTAL_CENTS, st.sampled_from(sorted(AMOUNT_METRICS)))
def test_change_of_large_totals_divides_by_the_base_shown(now, base, figure):
    """change() of totals too large for cents / 100 to round back exactly: the difference of the
    amounts rounded to cents, in percent of the base as shown (not of its rounding)."""
    current, before = now / 100, base / 100
    diff = (round(current * 100) - round(before * 100)) / 100
    assert reports.change(figure, current, before) == (diff, diff / abs(before) * 100 if before else None)
