"""Reports on stdout: terminal tables, CSV and JSON (csv/json never import rich)."""

from __future__ import annotations

import sys


def report(rep, fmt: str) -> None:
    """Print a `reports.Report` on stdout as a rich table, CSV or a JSON array (csv/json never import rich)."""
    if fmt == "json":
        import json

        print(json.dumps(rep.rows, indent=2, ensure_ascii=False, default=_json_value))
    elif fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(rep.columns)
        writer.writerows(["" if row[c] is None else _csv_value(row[c]) for c in rep.columns] for row in rep.rows)
    else:
        _report_table(rep)


def _json_value(value):
    if isinstance(value, bytes):  # a BLOB from `query sql`
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _csv_value(value):
    return value.hex() if isinstance(value, bytes) else value


def _report_table(rep) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output is not wrapped at 80 columns: an operator pastes or greps it.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 240)
    columns = rep.table_columns or rep.columns
    rows = rep.rows if rep.table_rows is None else rep.table_rows
    if rep.title:  # its own line: a table-wide title would wrap over a narrow table
        console.print(rep.title, style="bold", soft_wrap=True)
    if rep.single and rep.rows:
        table = Table(show_header=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        for column in columns:
            table.add_row(_label(column), _cell(column, rep.rows[0][column]))
    else:
        table = Table()
        text = {c for c in columns if any(isinstance(row[c], (str, bytes)) for row in rows)}
        for column in columns:
            table.add_column(_label(column), justify="left" if column in text else "right", no_wrap=column != "name")
        for row in rows:
            table.add_row(*(_cell(column, row[column]) for column in columns))
        if not rows:
            table.caption = "no data in this window"
    console.print(table)


def _label(column: str) -> str:
    return column.replace("_", " ")


def _cell(column: str, value) -> str:
    """Rupiah for amounts, thousands separators for counts, 2 decimals for ROAS, percentages for shares."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or column in ("client_id", "id", "run_id"):
        return value.hex() if isinstance(value, bytes) else str(value)
    if column.endswith(("_sales", "_spend")) or column == "avg_order_value":
        return f"Rp {value:,.0f}"
    if column.endswith("_roas"):
        return f"{value:,.2f}"
    if column.endswith(("_rate", "_share")):
        return f"{value * 100:.2f}%"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"
