"""Validated rows from the remote: every quirk of docs/remote-api.md is handled here, once.

- `stat_date` is `YYYY-MM-DD` or a mysql2 UTC timestamp meaning the calendar
  date in the source time zone (`2026-01-24T16:00:00.000Z` is 2026-01-25 in Bali).
- A metric is a JSON number, a numeric string (DECIMAL), or null (kept NULL).
- Unknown fields, and remote fields named like a replica column, go to `extra`.
- `total_sales`/`total_orders` sent as null are Grab + GoJek (nulls as 0).
- A (client, date) seen twice in one answer: the last wins.
- An unreadable row, or one dated outside the window asked for, becomes a
  `Reject` with its raw payload and the reason.
- A batch answer `{"<client_id>": {"<day>": row}}` keys days by the UTC date of
  the mysql2 timestamp (one day early for Bali): a row's own readable
  `stat_date` wins, and the key stands in only for a row that has none.
"""

from __future__ import annotations

import json
import json.encoder
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .metrics import AMOUNT_METRICS, COUNT_METRICS, METRICS

# Bounds of a plausible client-day: far above any restaurant's day, and far below what
# overflows SQLite's 64-bit integers (a count of 1e30, an amount of 1e308) in a single row.
MAX_AMOUNT = 1e12  # rupiah
MAX_COUNT = 1e9

# ASCII only: `\d` alone also matches digits such as "٣", which float() would accept.
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)


def parse_stat_date(value: Any, tz: ZoneInfo) -> date:
    """The calendar date a remote `stat_date` means in the source time zone."""
    if isinstance(value, str):
        return _cached_stat_date(value, tz)
    raise ValueError(f"no usable stat_date ({value!r})")


# A year of answers repeats the same 365 date strings for every client.
@lru_cache(maxsize=4096)
def _cached_stat_date(value: str, tz: ZoneInfo) -> date:
    if not value.strip():
        raise ValueError(f"no usable stat_date ({value!r})")
    text = value.strip()
    try:
        if _DATE.fullmatch(text):
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"no usable stat_date ({value!r})") from None
    # A naive timestamp is already on the remote's calendar.
    try:
        return moment.astimezone(tz).date() if moment.tzinfo else moment.date()
    except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00: past the calendar's last day in tz
        raise ValueError(f"no usable stat_date ({value!r})") from None


def _number(value: Any) -> float | None:
    """A JSON number or numeric string as a finite float; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a number ({value!r})")
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float (JSON integers are unbounded)
            raise ValueError("not a finite number (an integer too large)") from None
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        number = float(value)
    else:
        raise ValueError(f"not a number ({value!r})")
    if not math.isfinite(number):
        raise ValueError(f"not a finite number ({value!r})")
    return number


def parse_amount(value: Any) -> float | None:
    """A rupiah amount: number or numeric string; negative amounts are refunds and kept."""
    number = _number(value)
    if number is not None and abs(number) >= MAX_AMOUNT:
        raise ValueError(f"not a plausible amount ({value!r})")
    return number


def parse_count(value: Any) -> int | None:
    """A count: a whole, non-negative number (`12`, `12.0`, `"12"` all read as 12)."""
    number = _number(value)
    if number is None:
        return None
    if number < 0:
        raise ValueError(f"negative count ({value!r})")
    if not number.is_integer():
        raise ValueError(f"fractional count ({value!r})")
    if number >= MAX_COUNT:
        raise ValueError(f"not a plausible count ({value!r})")
    return int(number)


class StatRow(BaseModel):
    """One client-day as the replica stores it; build with `parse_row`."""

    model_config = ConfigDict(extra="allow", frozen=True)

    stat_date: date
    grab_sales: float | None = None
    grab_orders: int | None = None
    grab_ads_spend: float | None = None
    grab_ads_sales: float | None = None
    grab_new_customers: int | None = None
    grab_repeated_customers: int | None = None
    grab_fake_orders: int | None = None
    gojek_sales: float | None = None
    gojek_orders: int | None = None
    gojek_ads_spend: float | None = None
    gojek_ads_sales: float | None = None
    gojek_new_customers: int | None = None
    gojek_returned_customers: int | None = None
    gojek_fake_orders: int | None = None
    total_sales: float | None = None
    total_orders: int | None = None

    @field_validator("stat_date", mode="before")
    @classmethod
    def _date(cls, value: Any, info) -> date:
        return parse_stat_date(value, info.context["tz"])

    @field_validator(*AMOUNT_METRICS, mode="before")
    @classmethod
    def _amount(cls, value: Any) -> float | None:
        return parse_amount(value)

    @field_validator(*COUNT_METRICS, mode="before")
    @classmethod
    def _count(cls, value: Any) -> int | None:
        return parse_count(value)

    @property
    def extra_json(self) -> str | None:
        """Fields that are not metrics, as canonical JSON (None when there are none)."""
        if not self.model_extra:
            return None
        return json.dumps(self.model_extra, sort_keys=True, separators=(",", ":"), default=str)

    def values(self) -> tuple:
        """Metrics in `METRICS` order, then `extra`: what the replica compares and stores."""
        return (*(getattr(self, name) for name in METRICS), self.extra_json)


class Row(NamedTuple("_Row", [(name, Any) for name in (*METRICS, "extra")])):
    """A validated row as the replica compares and stores it: the metrics in `METRICS` order, then
    `extra` (canonical JSON or None). A plain tuple to SQLite; read by name like a StatRow."""

    __slots__ = ()

    @property
    def extra_json(self) -> str | None:
        return self.extra

    def values(self) -> tuple:
        """The row itself: `StatRow.values()` order."""
        return self


def _fast_amount(value: Any) -> float:
    """parse_amount for the values a readable row carries; raises ValueError on anything else."""
    kind = type(value)
    if kind is float:
        number = value
    elif kind is int:
        number = float(value)
    elif kind is str and value.isascii() and "_" not in value:
        number = float(value)  # ASCII, no underscores: float() then accepts exactly what _NUMBER matches
    else:
        raise ValueError(value)
    if not -MAX_AMOUNT < number < MAX_AMOUNT:  # also false for NaN and infinities
        raise ValueError(value)
    return number


def _fast_count(value: Any) -> int:
    """parse_count for the values a readable row carries; raises ValueError on anything else."""
    if type(value) is int and 0 <= value < MAX_COUNT:
        return value
    number = _fast_amount(value)
    if not (0 <= number < MAX_COUNT and number.is_integer()):
        raise ValueError(value)
    return int(number)


# What StatRow.extra_json's json.dumps does, with the encoder built once rather than per row: the C
# encoder json.JSONEncoder itself builds on each call, when the interpreter has it (0.9 against 1.7 µs
# a row). No circular-reference check: `extra` comes from decoded JSON, which has no cycles.
if json.encoder.c_make_encoder is not None:
    _ENCODE = json.encoder.c_make_encoder(None, str, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, True)

    def _extra_json(extra: dict) -> str:
        return "".join(_ENCODE(extra, 0))
else:
    _extra_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode

_FAST = {name: (METRICS.index(name), name in AMOUNT_METRICS) for name in METRICS}  # column -> (position, is an amount)
_SALES, _ORDERS = METRICS.index("total_sales"), METRICS.index("total_orders")
_GRAB_SALES, _GOJEK_SALES = METRICS.index("grab_sales"), METRICS.index("gojek_sales")
_GRAB_ORDERS, _GOJEK_ORDERS = METRICS.index("grab_orders"), METRICS.index("gojek_orders")


def _fast_row(raw: dict, tz: ZoneInfo) -> tuple[date, Row]:
    """What `StatRow` plus `_fill_totals` make of a readable row, without building a model (about
    5x faster). Raises on any row it cannot read plainly: the model path then decides and says why.

    The values the remote usually sends (DECIMAL strings, whole counts) are read inline, as
    `_fast_amount` and `_fast_count` read them, without a call per value (8.5 -> 7.9 µs a demo row)."""
    day = parse_stat_date(raw["stat_date"], tz)
    row: list[Any] = [None] * len(METRICS)
    extra = {}
    for key, value in raw.items():
        fast = _FAST.get(key)
        if fast is None:
            if key != "stat_date":
                extra[key] = value
        elif value is not None:
            index, amount = fast
            if not amount:
                row[index] = value if type(value) is int and 0 <= value < MAX_COUNT else _fast_count(value)
            elif type(value) is str and value.isascii() and "_" not in value and -MAX_AMOUNT < (number := float(value)) < MAX_AMOUNT:
                row[index] = number
            else:
                row[index] = _fast_amount(value)
    if row[_SALES] is None:
        row[_SALES] = (row[_GRAB_SALES] or 0.0) + (row[_GOJEK_SALES] or 0.0)
    if row[_ORDERS] is None:
        row[_ORDERS] = (row[_GRAB_ORDERS] or 0) + (row[_GOJEK_ORDERS] or 0)
    row.append(_extra_json(extra) if extra else None)
    return day, Row._make(row)


def _model_row(raw: Any, tz: ZoneInfo) -> tuple[date, Row]:
    """The reference path through the pydantic model: raises ValidationError/ValueError with the reason."""
    if not isinstance(raw, dict):
        raise ValueError(f"row is not an object ({type(raw).__name__})")
    row = _fill_totals(StatRow.model_validate(raw, context={"tz": tz}))
    return row.stat_date, Row._make(row.values())


def _fill_totals(row: StatRow) -> StatRow:
    updates: dict[str, Any] = {}
    if row.total_sales is None:
        updates["total_sales"] = (row.grab_sales or 0.0) + (row.gojek_sales or 0.0)
    if row.total_orders is None:
        updates["total_orders"] = (row.grab_orders or 0) + (row.gojek_orders or 0)
    return row.model_copy(update=updates) if updates else row


@dataclass(frozen=True)
class Reject:
    """A row that could not be read: stored in `sync_rejects`."""

    stat_date: str | None
    reason: str
    payload: str


@dataclass
class ParsedRows:
    """One answer's rows: valid rows by date (last wins), rejects, and how many arrived."""

    rows: dict[date, Row]
    rejects: list[Reject]
    fetched: int

    def stored(self) -> ClientRows:
        """The rows as the replica compares and stores them."""
        return ClientRows(self.rows, self.rejects, self.fetched)


@dataclass
class ClientRows:
    """One client's rows for a whole sync window, as value tuples (`StatRow.values()` order) by date."""

    values: dict[date, tuple]
    rejects: list[Reject]
    fetched: int


def parse_rows(raw_rows: Iterable[Any], tz: ZoneInfo, window: tuple[date, date] | None = None) -> ParsedRows:
    """Validate one client's raw rows; never raises for a bad row.

    With `window`, a row dated outside it is rejected: it could never be pruned,
    and a far-future date would hide a lagging client.
    """
    rows: dict[date, Row] = {}
    rejects: list[Reject] = []
    fetched = 0
    for raw in raw_rows:
        fetched += 1
        try:
            try:
                day, row = _fast_row(raw, tz)
            except Exception:  # unreadable, or not even a dict: the model path gives the reason
                day, row = _model_row(raw, tz)
            if window and not window[0] <= day <= window[1]:
                raise ValueError(f"stat_date {day} is outside the requested window {window[0]}..{window[1]}")
        except (ValidationError, ValueError) as exc:
            rejects.append(_reject(raw, exc))
            continue
        rows.pop(day, None)  # last wins, and keeps answer order
        rows[day] = row
    return ParsedRows(rows, rejects, fetched)


@dataclass
class BatchAnswer:
    """A batch answer read client by client: rows of the clients asked for, and what could not be read."""

    clients: dict[int, ParsedRows]
    unreadable: dict[int, str]  # client asked for -> why its entry could not be read
    unexpected: list[str]  # keys of clients not asked for (ignored)


def parse_batch(answer: dict, asked: Iterable[int], tz: ZoneInfo, window: tuple[date, date]) -> BatchAnswer:
    """Validate a batch answer `{"<client_id>": {"<YYYY-MM-DD>": row}}`; never raises for a bad entry.

    A row's own readable `stat_date` wins over its key (the real remote keys by
    the UTC date, one day early); the key is read like `stat_date` only for a row
    without one, and never lands in `extra`. A client asked for but absent has
    no rows in the window.
    """
    wanted = {str(cid): cid for cid in asked}
    result = BatchAnswer({}, {}, [])
    for key, days in answer.items():
        cid = wanted.get(str(key).strip())
        if cid is None:
            result.unexpected.append(str(key))
            continue
        if days is None:
            days = {}
        if isinstance(days, dict):
            raw_rows = [_keyed(day, row) for day, row in days.items()]
        elif isinstance(days, list):  # rows that carry their own dates, as the per-client endpoint sends them
            raw_rows = days
        else:
            result.unreadable[cid] = f"batch entry is not an object of days ({type(days).__name__})"
            continue
        result.clients[cid] = parse_rows(raw_rows, tz, window)
    return result


def _keyed(day: str, row: Any) -> Any:
    """A batch row with its key as `stat_date` when it carries none of its own."""
    if isinstance(row, dict) and row.get("stat_date") is None:
        return {**row, "stat_date": day}
    return row


def _reject(raw: Any, exc: Exception) -> Reject:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        reason = f"{field}: {first['msg'].removeprefix('Value error, ')}"
    else:
        reason = str(exc)
    raw_date = raw.get("stat_date") if isinstance(raw, dict) else None
    return Reject(
        stat_date=None if raw_date is None else str(raw_date),
        reason=reason,
        payload=json.dumps(raw, sort_keys=True, default=str),
    )


class Client(BaseModel):
    """A client as the remote lists it."""

    model_config = ConfigDict(extra="ignore")

    id: int = Field(strict=False)
    name: str | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _not_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):  # lax int would read `true` as client 1
            raise ValueError("a boolean is not a client id")
        return value

    @field_validator("id")
    @classmethod
    def _fits_sqlite(cls, value: int) -> int:
        if not -(2**63) <= value < 2**63:  # beyond SQLite's INTEGER: it could never be stored
            raise ValueError("client id beyond 64 bits")
        return value

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str | None:
        return None if value is None else str(value)


def parse_clients(raw_clients: Iterable[Any]) -> tuple[list[Client], list[str]]:
    """Valid clients (by id, last wins) and one problem line per unreadable entry."""
    clients: dict[int, Client] = {}
    problems: list[str] = []
    for raw in raw_clients:
        try:
            client = Client.model_validate(raw)
        except ValidationError:
            problems.append(f"unreadable client entry {json.dumps(raw, default=str)[:200]}")
            continue
        clients[client.id] = client
    return list(clients.values()), problems
