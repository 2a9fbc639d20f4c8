"""The metric columns of `client_stats` (docs/reference.md, Tables), by kind.

Names only, no imports: the fast `query` path needs them without loading the
pydantic models of records.py.
"""

AMOUNT_METRICS = (
    "grab_sales",
    "grab_ads_spend",
    "grab_ads_sales",
    "gojek_sales",
    "gojek_ads_spend",
    "gojek_ads_sales",
    "total_sales",
)
COUNT_METRICS = (
    "grab_orders",
    "grab_new_customers",
    "grab_repeated_customers",
    "grab_fake_orders",
    "gojek_orders",
    "gojek_new_customers",
    "gojek_returned_customers",
    "gojek_fake_orders",
    "total_orders",
)
# Column order of client_stats (docs/reference.md, Tables).
METRICS = (
    "grab_sales",
    "grab_orders",
    "grab_ads_spend",
    "grab_ads_sales",
    "grab_new_customers",
    "grab_repeated_customers",
    "grab_fake_orders",
    "gojek_sales",
    "gojek_orders",
    "gojek_ads_spend",
    "gojek_ads_sales",
    "gojek_new_customers",
    "gojek_returned_customers",
    "gojek_fake_orders",
    "total_sales",
    "total_orders",
)


def shown_as(column: str) -> str:
    """How the reports show a figure: "rupiah" (amounts, `avg_order_value`, the platform split's
    `sales`), "percent" (rates and shares, stored as fractions), "ratio" (ROAS), else "number"."""
    if column == "sales" or column.endswith(("_sales", "_spend")) or column == "avg_order_value":
        return "rupiah"
    if column.endswith("_roas"):
        return "ratio"
    if column.endswith(("_rate", "_share")):
        return "percent"
    return "number"


# The counters of a `sync_runs` row (docs/reference.md, Tables), in column order.
RUN_COUNTERS = (
    "clients_total", "clients_ok", "clients_failed", "rows_fetched", "rows_inserted", "rows_updated",
    "rows_unchanged", "rows_rejected", "rows_deleted", "requests",
)
