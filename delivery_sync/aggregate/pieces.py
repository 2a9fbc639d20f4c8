"""Pieces: Monday-started weeks cut at month ends, so that every week and every month is a union
of whole pieces; and a window covered by whole months, whole pieces and single days."""

from __future__ import annotations

from datetime import date, timedelta

from ..days import COMPARISONS, Window, base_window, month_end, next_month, week_end, week_start
from .sql import ROLLING_PERIODS


def piece_span(day: date) -> tuple[date, date]:
    """First and last day of the piece holding `day`: its Monday-started week, cut at month ends."""
    return max(week_start(day), day.replace(day=1)), min(week_end(day), month_end(day))


def piece_row(first: date) -> tuple[str, str, str, str]:
    """(piece, piece_end, week, month) of the piece starting on `first`."""
    last = piece_span(first)[1]
    return first.isoformat(), last.isoformat(), week_start(first).isoformat(), first.isoformat()[:7]


def calendar(first: date, last: date) -> list[tuple[str, str, str, str]]:
    """`piece_row` of every piece from the one holding `first` to the one holding `last`, in order."""
    rows, day = [], piece_span(first)[0]
    while day <= last:
        rows.append(piece_row(day))
        day = piece_span(day)[1] + timedelta(days=1)
    return rows


def cover(start: date, end: date) -> tuple[list, list, list]:
    """[start, end] as disjoint spans of whole months, of whole pieces and of single days."""
    first_full = start if start.day == 1 else next_month(start)
    last_full = end if month_end(end) == end else end.replace(day=1) - timedelta(days=1)
    if first_full > last_full:
        months, edges = [], [(start, end)]
    else:
        months = [(first_full, last_full)]
        edges = [(start, first_full - timedelta(days=1)), (last_full + timedelta(days=1), end)]
    pieces, days = [], []
    for a, b in edges:
        if a > b:
            continue
        pa = a if piece_span(a)[0] == a else piece_span(a)[1] + timedelta(days=1)
        pb = b if piece_span(b)[1] == b else piece_span(b)[0] - timedelta(days=1)
        if pa > pb:
            days.append((a, b))
            continue
        pieces.append((pa, pb))
        if a < pa:
            days.append((a, pa - timedelta(days=1)))
        if pb < b:
            days.append((pb + timedelta(days=1), b))
    return months, pieces, days


def edge_spans(as_of: date) -> list[tuple[date, date]]:
    """The partial weeks and months at each end of every rolling period ending at `as_of`, each
    cut to the period: the spans whose clients with data the aggregate stores (EDGE_CLIENTS)."""
    spans = set()
    for window in rolling_windows(as_of):
        start = window.start
        for day in (start, as_of):
            for first, last in ((week_start(day), week_end(day)), (day.replace(day=1), month_end(day))):
                span = (max(first, start), min(last, as_of))
                if span != (first, last):
                    spans.add(span)
    return sorted(spans)


def rolling_windows(as_of: date) -> list[Window]:
    """Every rolling period ending at `as_of`, in ROLLING_PERIODS' order."""
    return [Window(as_of - timedelta(days=days - 1), as_of) for days in ROLLING_PERIODS.values()]


def base_windows(as_of: date) -> list[Window]:
    """The base windows (`--compare previous|year`) of the rolling periods ending at `as_of`, in order."""
    return sorted({base for _, base in window_pairs(as_of)}, key=lambda w: (w.start, w.end))


def window_pairs(as_of: date) -> list[tuple[Window, Window]]:
    """Each rolling period ending at `as_of` beside each of its base windows (`--compare
    previous|year`), once: the pairs whose sums the aggregate stores (WINDOW_PAIRS)."""
    return sorted({(window, base_window(window, compare)) for window in rolling_windows(as_of) for compare in COMPARISONS},
                  key=lambda pair: (pair[0].start, pair[1].start))
