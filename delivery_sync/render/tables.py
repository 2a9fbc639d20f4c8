"""Reports on stdout: terminal tables, CSV and JSON (csv/json never import rich).

A terminal table never cuts a number, a date or an id and never hides the name:
it shows the columns that fit, in the report's priority order, and says in one
line which it left out. When even the columns a report cannot do without do
not fit, each row is stacked as `column  value` lines instead.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from functools import cached_property

from ..metrics import shown_as
from .text import safe

_NAME_MIN = 12  # a name column narrower than this wraps into too many lines to read
_NAME_LINE = 32  # names up to this long stay on one line while the essential columns still fit
_STACK_LABEL = "-[ row {} ]"


def report(rep, fmt: str) -> None:
    """Print a `reports.Report` on stdout as a table, CSV or a JSON array; CSV and JSON keep the exact text.

    A report with a `deadline` (query sql --max-seconds) raises QueryTimeout when rendering runs past it.
    """
    if fmt == "json":
        import json

        # Row by row, as json.dumps(rows, indent=2) would write them all at once.
        print("[" if rep.rows else "[]")
        for at, row in enumerate(_in_time(rep)):
            values = {c: row[c] for c in rep.columns}
            if rep.raw:  # query sql on PostgreSQL may give NaN or Infinity, which JSON cannot hold: null
                values = {c: None if isinstance(v, float) and not math.isfinite(v) else v for c, v in values.items()}
            text = json.dumps(values, indent=2, ensure_ascii=False, allow_nan=False, default=_json_value)
            print("  " + text.replace("\n", "\n  ") + ("," if at < len(rep.rows) - 1 else ""))
        if rep.rows:
            print("]")
    elif fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(rep.columns)
        writer.writerows(["" if row[c] is None else _csv_value(row[c]) for c in rep.columns] for row in _in_time(rep))
    else:
        _report_table(rep)


def _in_time(rep, rows=None):
    """The report's rows (or `rows`), checking its deadline every 500 rows."""
    for at, row in enumerate(rep.rows if rows is None else rows):
        if at % 500 == 0:
            _check_deadline(rep)
        yield row


def _check_deadline(rep) -> None:
    """QueryTimeout once the report's deadline (query sql --max-seconds) has passed."""
    import time

    if rep.deadline is not None and time.monotonic() > rep.deadline:
        from ..errors import QueryTimeout

        raise QueryTimeout("query interrupted: its rows were not printed within --max-seconds",
                           hint="raise --max-seconds, use --format csv (quickest), or narrow the query")


def _json_value(value):
    if isinstance(value, bytes):  # a BLOB from `query sql`
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _csv_value(value):
    if isinstance(value, bool):  # PostgreSQL's, as JSON writes it
        return "true" if value else "false"
    return value.hex() if isinstance(value, bytes) else value


def terminal_width() -> int | None:
    """The width to lay tables out in: `COLUMNS`, else the terminal's; None when piped (as wide as needed)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        import shutil

        return shutil.get_terminal_size().columns
    return None


@dataclass
class _Column:
    key: str
    cells: list[str]
    numeric: bool
    label: str = ""  # the header: `_label(key)` unless given

    def __post_init__(self):
        self.label = self.label or _label(self.key)

    @cached_property
    def widest_cell(self) -> int:
        """The widest cell, measured once: a wide `query sql` answer has thousands of them."""
        from rich.cells import cell_len

        return max(map(cell_len, self.cells), default=0)

    @cached_property
    def natural(self) -> int:
        """The width that shows every cell and the header on one line."""
        from rich.cells import cell_len

        return max(cell_len(self.label), self.widest_cell)

    def least(self, name_width: int) -> int:
        """The narrowest width that cuts nothing: headers wrap at spaces, only a name wraps its cells."""
        from rich.cells import cell_len

        words = max(map(cell_len, self.label.split()), default=0)
        if self.key == "name":
            return max(words, min(self.natural, name_width))
        return max(words, self.widest_cell)


def _table_width(widths: list[int]) -> int:
    return sum(widths) + 3 * len(widths) + 1  # one space each side of a cell, a rule between and around


def _fit(columns: list[_Column], keep: int, width: int | None) -> tuple[list[_Column], list[int]] | None:
    """The columns to show and their widths: the first `keep` always, then as many more in order as fit.

    Names stay on one line when the essential columns allow it, else they wrap. None: nothing fits.
    """
    if width is None:
        return columns, [c.natural for c in columns]
    for name_width in (_NAME_LINE, _NAME_MIN):
        chosen = columns[:keep]
        widths = [c.least(name_width) for c in chosen]
        if _table_width(widths) <= width:
            break
    else:
        return None
    for column in columns[keep:]:
        if _table_width([*widths, column.least(name_width)]) > width:
            break
        chosen.append(column)
        widths.append(column.least(name_width))
    # What is left widens the name first (fewer wrapped lines), then puts headers on one line.
    for at in sorted(range(len(chosen)), key=lambda at: chosen[at].key != "name"):
        spare = width - _table_width(widths)
        widths[at] += max(0, min(chosen[at].natural - widths[at], spare))
    return chosen, widths


def _report_table(rep) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    width = terminal_width()
    if rep.chart:
        _bar_chart(rep, width or 80)
        return
    keys = rep.table_columns or rep.columns
    rows = rep.rows if rep.table_rows is None else rep.table_rows
    if rep.figures:  # one row against a base window: a figure a line, its values side by side
        columns, rows = _comparison_columns(rep.rows[0], rep.figures), rep.figures
    else:
        columns = [
            # A `query sql` column is headed by its name exactly as the statement gave it (made safe).
            _Column(key, [_cell(key, row[key], rep.raw) for row in _in_time(rep, rows)], _numeric(key, rows), safe(key) if rep.raw else "")
            for key in keys
        ]
    single = rep.single and not rep.figures
    layout = None if single else _fit(columns, min(2 if rep.figures else rep.keep, len(columns)), width)
    natural = _table_width([c.natural for c in columns])
    console = Console(highlight=False, width=width or max(natural, 80))
    if rep.title:  # its own line: a table-wide title would wrap over a narrow table
        console.print(Text(safe(rep.title), style="bold"), soft_wrap=True)
    _subtitle(console, rep.subtitle, rep.notes)
    if single and rep.rows:
        table = Table(show_header=False)
        table.add_column(style="bold", no_wrap=True)
        table.add_column(justify="right", overflow="fold")
        for column in columns:
            table.add_row(Text(column.label), Text(column.cells[0]))
        console.print(table)
        return
    if layout is None:  # not even the essential columns fit side by side
        _stacked(console, columns, len(rows), rep)
        return
    shown, widths = layout
    table = Table()
    for column, column_width in zip(shown, widths):
        table.add_column(
            Text(column.label), justify="right" if column.numeric else "left", width=column_width, overflow="fold"
        )
    for at in range(len(rows)):
        table.add_row(*(Text(column.cells[at]) for column in shown))
    if not rows:
        table.caption = _no_rows(rep)
    console.print(_Timed(table, rep) if rep.deadline is not None else table)
    left_out = [c.key for c in columns if c not in shown]
    if left_out:
        console.print(Text(left_out_line(left_out, width), style="dim"), soft_wrap=True)


def _subtitle(console, subtitle: str, notes: list[str] = ()) -> None:
    """The lines under a title (ours, never remote text: a line each), then each note, wrapped
    at word boundaries to the width (a note is a sentence, not a fact to grep for)."""
    from rich.text import Text

    for line in subtitle.splitlines():
        console.print(Text(safe(line)), soft_wrap=True)
    for note in notes:
        console.print(Text(f"note: {safe(note)}"))


_EIGHTHS = " ▏▎▍▌▋▊▉"
_SPARKS = "▁▂▃▄▅▆▇█"


def _bar_chart(rep, width: int) -> None:
    """One line per row: its label, its value as the table shows it, and a bar as long as the
    value is large (eighths of a character), all within `width`. Zero, negative and NULL values
    draw no bar. Colour only where rich finds a terminal that wants it (NO_COLOR is honoured)."""
    from rich.console import Console
    from rich.text import Text

    label_key, value_key, each = rep.chart
    shown = rep.rows if rep.table_rows is None else rep.table_rows
    labels = [safe(str(row[label_key])) for row in shown]
    values = [row[value_key] for row in rep.rows]
    cells = [_cell(value_key, value) for value in values]
    largest = max((v for v in values if v is not None and v > 0), default=0)
    label_width, cell_width = max(map(len, labels), default=0), max(map(len, cells), default=0)
    room = max(1, width - label_width - cell_width - 4)
    console = Console(highlight=False, width=width)
    if rep.title:
        console.print(Text(safe(rep.title), style="bold"), soft_wrap=True)
    console.print(Text(f"{_label(value_key)} per {each}", style="dim"), soft_wrap=True)
    _subtitle(console, rep.subtitle, rep.notes)
    for label, cell, value in zip(labels, cells, values):
        eighths = round(value / largest * room * 8) if largest and value is not None and value > 0 else 0
        bar = "█" * (eighths // 8) + (_EIGHTHS[eighths % 8] if eighths % 8 else "")
        console.print(Text.assemble(f"{label:<{label_width}}  {cell:>{cell_width}}  ", (bar, "cyan")), no_wrap=True)
    if not rep.rows:
        console.print(_no_rows(rep), soft_wrap=True)


def sparkline(values: list) -> str:
    """Values as one character each, from ▁ (the smallest) to █ (the largest); a space for NULL."""
    present = [v for v in values if v is not None]
    if not present:
        return " " * len(values)
    low, high = min(present), max(present)
    steps = len(_SPARKS) - 1
    return "".join(" " if v is None else _SPARKS[round((v - low) / (high - low) * steps) if high > low else steps // 2]
                   for v in values)


def _comparison_columns(row: dict, figures: list[str]) -> list[_Column]:
    """The columns of a compared row shown a figure a line: figure, current, change %, base, change
    (in that order of importance: a narrow terminal drops the last first; the title names both windows)."""
    def cells(suffix: str) -> list[str]:
        return [_cell(f"{figure}{suffix}", row[f"{figure}{suffix}"]) for figure in figures]

    return [
        _Column("figure", [_label(figure) for figure in figures], False),
        _Column("current", cells(""), True),
        _Column("change %", cells("_change_pct"), True),
        _Column("base", cells("_base"), True),
        _Column("change", cells("_change"), True),
    ]


class _Timed:
    """A renderable drawn as `inner` is, checking the report's deadline as it goes: drawing a table is
    the slow part of a report (~3 s for 10,000 rows). Rich prints nothing until all is drawn."""

    def __init__(self, inner, rep):
        self.inner, self.rep = inner, rep

    def __rich_console__(self, console, options):
        for at, segment in enumerate(console.render(self.inner, options)):
            if at % 2000 == 0:
                _check_deadline(self.rep)
            yield segment


def left_out_line(names: list[str], width: int) -> str:
    """`left out: a, b and 5 more (see --columns, --format csv|json)`: one line within `width`."""
    head, tail = "left out: ", " (see --columns, --format csv|json)"
    for shown in range(len(names), 0, -1):
        listed = ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if shown < len(names) else "")
        if len(head + listed + tail) <= width:
            return head + listed + tail
    return head + f"{len(names)} columns" + tail


def _stacked(console, columns: list[_Column], count: int, rep) -> None:
    """Each row as `column  value` lines: nothing is cut, however narrow the terminal."""
    from rich.text import Text

    labels = [safe(c.key) for c in columns]
    label_width = max(map(len, labels))
    for at in range(count):
        if at % 100 == 0:
            _check_deadline(rep)
        console.print(Text(_STACK_LABEL.format(at + 1), style="dim"), soft_wrap=True)
        for label, column in zip(labels, columns):
            console.print(Text.assemble((f"{label:<{label_width}}  ", "bold"), column.cells[at]), soft_wrap=True)
    if not count:
        console.print(_no_rows(rep), soft_wrap=True)


def _no_rows(rep) -> str:
    """What a terminal says of a report without rows: the report's own words, if it has them."""
    return rep.empty or ("no data in this window" if not rep.raw else "no rows")


def _numeric(key: str, rows: list[dict]) -> bool:
    """Right-aligned: every value a number, or none at all (a ratio with no denominator in the window)."""
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (row[key] for row in rows) if v is not None)


def _label(column: str) -> str:
    """A header: `total sales`, `total sales change %`; a `query sql` alias may hold anything, so
    it is made safe like a cell."""
    if column.endswith("_change_pct"):
        column = column.removesuffix("_pct") + " %"
    return safe(column.replace("_", " "))


def _rupiah(value: float) -> str:
    """An amount in whole rupiah, a refund's sign before the currency as a change's is: `-Rp 1,234`.

    Half a rupiah rounds away from zero, as a bank statement or a spreadsheet rounds (Rp 1,234.50
    is Rp 1,235): Python's formatting would round it to the even neighbour, Rp 1,234. The
    fraction of the float is exact (a float minus its floor), so only a true half rounds up."""
    size = abs(value)
    whole = math.floor(size)
    whole += size - whole >= 0.5
    return f"{'-' if value < 0 and whole else ''}Rp {whole:,}"


def _cell(column: str, value, raw: bool = False) -> str:
    """A value as a table shows it, safe for a terminal.

    Reports: Rupiah for amounts, thousands separators for counts, 2 decimals for
    ROAS, percentages for rates and shares. `raw` (query sql): values as SQLite
    gave them, since an alias says nothing sure about what a column holds.
    """
    if value is None:
        return "NULL" if raw else "-"
    if isinstance(value, list):  # a series (top --spark)
        return sparkline(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, bool):  # PostgreSQL's, as JSON writes it
        return "true" if value else "false"
    if not isinstance(value, (int, float)):
        return safe(str(value))
    if raw or column in ("client_id", "id", "run_id"):
        return str(value)
    # A comparison: the base as its figure, the change signed, the change in percent.
    if column.endswith("_change_pct"):
        return f"{value:+,.1f}%"
    if column.endswith("_change"):
        sign = "+" if value > 0 else "-" if value < 0 else ""
        figure = column.removesuffix("_change")
        if shown_as(figure) == "percent":  # a change of a percentage is in points: "+0.19 pp" beside "+44.3%"
            return f"{sign}{abs(value) * 100:.2f} pp"
        return sign + _cell(figure, abs(value))
    if column.endswith("_base"):
        return _cell(column.removesuffix("_base"), value)
    kind = shown_as(column)
    if kind == "rupiah":
        return _rupiah(value)
    if kind == "ratio":
        return f"{value:,.2f}"
    if kind == "percent":
        return f"{value * 100:.2f}%"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"
