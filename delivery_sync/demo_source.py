"""The simulated remote: the API of docs/remote-api.md over real HTTP on loopback.

Data are deterministic from the seed: every (client, day) has the same figures
whatever is asked, so a re-sync finds them unchanged. It behaves like the real
Express + mysql2 service: DECIMALs as numeric strings, DATEs as UTC timestamps
of Bali midnight, nulls for a platform a client does not use, extra columns,
429 with Retry-After above the rate limit, random 5xx at the error rate.

Tests drive it in-process through `DemoSource`: `requests` logs what it
received, and `faults` injects failures, bad rows and changed values.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import math
import random
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

DEMO_TZ = ZoneInfo("Asia/Makassar")
FIRST_DAY = date(2023, 1, 1)

_FIRST = ["Warung", "Dapur", "Kedai", "Rumah Makan", "Bakso", "Sate", "Nasi Goreng", "Kopi", "Mie", "Babi Guling"]
_SECOND = ["Made", "Bu Rita", "Ketut", "Sari", "Pak Wayan", "Bali Asli", "Canggu", "Ubud", "Kuta", "Nyoman", "Sanur", "Dewi"]


@dataclass
class Faults:
    """Test-only misbehaviour. Every field is safe to change while the server runs."""

    fail_clients: dict[int, int] = field(default_factory=dict)  # client id -> HTTP status, always
    flaky_clients: dict[int, int] = field(default_factory=dict)  # client id -> how many 503s before success
    throttle_next: int = 0  # answer the next N requests with 429 + Retry-After
    retry_after: str = "1"
    extra_rows: dict[int, list[dict]] = field(default_factory=dict)  # rows appended to a client's answer
    overrides: dict[tuple[int, str], dict] = field(default_factory=dict)  # (client, YYYY-MM-DD) -> fields
    hidden_clients: set[int] = field(default_factory=set)  # not listed by /clients
    extra_clients: list[Any] = field(default_factory=list)  # entries appended to /clients, as given
    # client id -> seconds its stats answer takes to arrive, a few bytes at a time (math.inf: never ends)
    trickle_clients: dict[int, float] = field(default_factory=dict)
    padded_clients: dict[int, float] = field(default_factory=dict)  # client id -> MB of whitespace in its stats answer
    gzip_answers: bool = False  # stats answers gzip-encoded (whitespace then compresses ~1000x)
    # path -> (status, body, headers): answered as given, whatever was asked (a redirect, a bare object)
    raw_paths: dict[str, tuple[int, str, dict[str, str]]] = field(default_factory=dict)
    collect_seconds: float = 0.2
    collect_fails: bool = False
    wrap_lists: bool = False  # answer {"success": true, "data": [...]}
    slow_clients: dict[int, float] = field(default_factory=dict)  # client id -> extra seconds before its stats answer
    deleted_rows: set[tuple[int, str]] = field(default_factory=set)  # (client, YYYY-MM-DD) the remote no longer has
    batch_status: int | None = None  # answer every batch request with this status (405: Express's HTML page)
    batch_delay: float = 0.0  # seconds before every batch answer (a remote that hangs)
    batch_keys_only: bool = False  # batch rows without their own stat_date, keyed by the right (Bali) date
    batch_extra: dict[str, Any] = field(default_factory=dict)  # entries added to every batch answer, as given
    names: dict[int, str] = field(default_factory=dict)  # client id -> the name /clients lists instead
    error_text: str | None = None  # the error message failing clients answer, instead of the usual one
    echo_auth: set[int] = field(default_factory=set)  # these clients answer 422 quoting the Authorization header
    echo_auth_rows: bool = False  # stats answers echo it in a row field and in a row that is rejected


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    body: Any = None
    at: float = field(default_factory=time.monotonic)  # when it arrived (time.monotonic)


def client_name(client_id: int, seed: int) -> str:
    rng = random.Random(f"{seed}:name:{client_id}")
    return f"{rng.choice(_FIRST)} {rng.choice(_SECOND)}"


def _platforms(client_id: int, seed: int) -> tuple[bool, bool]:
    roll = random.Random(f"{seed}:platforms:{client_id}").random()
    if roll < 0.15:
        return True, False  # Grab only
    if roll < 0.25:
        return False, True  # GoJek only
    return True, True


def _platform_day(rng: random.Random, scale: float, ads: bool) -> dict[str, float | int]:
    orders = max(0, int(rng.gauss(scale, scale * 0.25)))
    aov = rng.uniform(45_000, 95_000)
    sales = round(orders * aov, -2)
    spend = round(sales * rng.uniform(0.02, 0.08), -2) if ads else 0.0
    new = int(orders * rng.uniform(0.1, 0.35))
    return {
        "sales": sales,
        "orders": orders,
        "ads_spend": spend,
        "ads_sales": round(spend * rng.uniform(2, 9), -2),
        "new": new,
        "repeat": orders - new,
        "fake": int(orders * rng.uniform(0, 0.02)),
    }


RESTATED_DAYS = 3


def _late_refund(row: dict[str, Any], key: str) -> None:
    """For about one client-day in five, a Grab refund that arrived after the first collection."""
    rng = random.Random(key)
    if rng.random() >= 0.2 or row["grab_sales"] is None:
        return
    refund = round(rng.uniform(20_000, 150_000), -2)
    row["grab_sales"] = _decimal(float(row["grab_sales"]) - refund)
    if row["total_sales"] is not None:
        row["total_sales"] = _decimal(float(row["total_sales"]) - refund)


def _decimal(value: float) -> str:
    return f"{value:.2f}"


def demo_row(client_id: int, day: date, seed: int) -> dict[str, Any]:
    """The row the remote holds for one client-day, serialised as mysql2 would."""
    digest = hashlib.blake2b(f"{seed}:{client_id}:{day.isoformat()}".encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    grab_on, gojek_on = _platforms(client_id, seed)
    size = random.Random(f"{seed}:size:{client_id}").uniform(15, 140)
    midnight = datetime(day.year, day.month, day.day, tzinfo=DEMO_TZ).astimezone(UTC)
    row: dict[str, Any] = {
        "id": client_id * 100_000 + (day - FIRST_DAY).days,
        "client_id": client_id,
        "stat_date": midnight.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }
    for platform, on, returned in (("grab", grab_on, "repeated"), ("gojek", gojek_on, "returned")):
        figures = _platform_day(rng, size * (0.6 if platform == "gojek" else 1.0), ads=client_id % 3 != 0) if on else None
        row[f"{platform}_sales"] = _decimal(figures["sales"]) if figures else None
        row[f"{platform}_orders"] = figures["orders"] if figures else None
        row[f"{platform}_ads_spend"] = _decimal(figures["ads_spend"]) if figures else None
        row[f"{platform}_ads_sales"] = _decimal(figures["ads_sales"]) if figures else None
        row[f"{platform}_new_customers"] = figures["new"] if figures else None
        row[f"{platform}_{returned}_customers"] = figures["repeat"] if figures else None
        row[f"{platform}_fake_orders"] = figures["fake"] if figures else None
    # The collector fills totals for most clients; for some it leaves them NULL.
    if client_id % 7 == 0:
        row["total_sales"] = row["total_orders"] = None
    else:
        row["total_sales"] = _decimal(sum(float(row[f"{p}_sales"] or 0) for p in ("grab", "gojek")))
        row["total_orders"] = sum(row[f"{p}_orders"] or 0 for p in ("grab", "gojek"))
    row["created_at"] = (midnight + timedelta(days=1, hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return row


class DemoSource:
    """A running simulated remote. Use as a context manager; `url` is where it listens."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        clients: int = 127,
        seed: int = 42,
        latency_ms: float = 0,
        error_rate: float = 0,
        rate_limit: float | None = None,
        batch: bool = True,
        token: str | None = None,
        restate: bool = False,
    ):
        self.clients = clients
        self.seed = seed
        self.latency = latency_ms / 1000
        self.error_rate = error_rate
        self.rate_limit = rate_limit
        self.batch = batch
        self.token = token
        # Like the real collector, re-collect the last RESTATED_DAYS days: from the second client
        # listing on (one per sync), some of those days answer late refunds.
        self.restate = restate
        self.listings = 0
        self.faults = Faults()
        self.requests: list[ReceivedRequest] = []
        self.in_flight = 0  # requests being answered right now
        self.max_in_flight = 0  # the most ever answered at once
        self._lock = threading.Lock()
        self._errors = random.Random(f"{seed}:errors")
        # A token bucket of rate_limit requests a second, holding at least one: a fractional rate
        # (0.5: one request every 2 s) throttles as it says, not every request.
        self._tokens = max(1.0, rate_limit or 0)
        self._refilled = time.monotonic()
        self._server = _QuietServer((host, port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> DemoSource:
        # A short poll interval: stop() waits up to one interval, paid by every test that starts a server.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="demo-source", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        if self._thread is None:  # served in the caller's thread (demo-source), which has returned
            self._server.server_close()
            return
        # shutdown() waits until serve_forever next looks at its flag, up to a poll interval after
        # its select; a connection of our own wakes that select at once (every test pays the wait).
        stopping = threading.Thread(target=self._server.shutdown, daemon=True)
        stopping.start()
        host, port = self._server.server_address[:2]
        while stopping.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection((host, port), timeout=0.1).close()
            stopping.join(0.005)
        self._thread.join()
        self._server.server_close()

    def __enter__(self) -> DemoSource:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats_requests(self) -> list[ReceivedRequest]:
        """The per-client stats requests received so far."""
        return [r for r in self.requests if r.path.endswith("/stats")]

    def batch_requests(self) -> list[ReceivedRequest]:
        """The batch requests received so far."""
        return [r for r in self.requests if r.path == "/api/v1/getBatchStats"]

    # --- data ----------------------------------------------------------------------

    def today(self) -> date:
        return datetime.now(DEMO_TZ).date()

    def client_list(self) -> list[dict]:
        with self._lock:
            self.listings += 1
        return [
            {"id": cid, "name": self.faults.names.get(cid) or client_name(cid, self.seed), "is_active": 1}
            for cid in range(1, self.clients + 1)
            if cid not in self.faults.hidden_clients
        ] + list(self.faults.extra_clients)

    def rows(self, client_id: int, start: date, end: date) -> list[dict]:
        first, last = max(start, FIRST_DAY), min(end, self.today())
        out = []
        for offset in range((last - first).days + 1):
            day = first + timedelta(days=offset)
            if (client_id, day.isoformat()) in self.faults.deleted_rows:
                continue
            row = demo_row(client_id, day, self.seed)
            if self.restate and self.listings > 1 and (self.today() - day).days < RESTATED_DAYS:
                _late_refund(row, f"{self.seed}:restate:{client_id}:{day}:{self.listings}")
            row.update(self.faults.overrides.get((client_id, day.isoformat()), {}))
            out.append(row)
        return out + list(self.faults.extra_rows.get(client_id, []))

    # --- behaviour -------------------------------------------------------------------

    def _throttled(self) -> bool:
        with self._lock:
            if self.faults.throttle_next > 0:
                self.faults.throttle_next -= 1
                return True
            if not self.rate_limit:
                return False
            now = time.monotonic()
            self._tokens = min(max(1.0, self.rate_limit), self._tokens + (now - self._refilled) * self.rate_limit)
            self._refilled = now
            if self._tokens >= 1:
                self._tokens -= 1
                return False
            return True

    def _random_error(self) -> bool:
        with self._lock:
            return self.error_rate > 0 and self._errors.random() < self.error_rate


class _QuietServer(ThreadingHTTPServer):
    """The demo's HTTP server, silent when a client goes away mid-request (a timed-out or
    abandoned request, as a remote sees them): socketserver would print a traceback to stderr,
    into the terminal of `sync --source demo` or the output of whatever runs beside it."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def _make_handler(demo: DemoSource) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "demo-source"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests and the CLI own stderr
            pass

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def _handle(self, method: str) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw_body = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw_body) if raw_body else None
            except ValueError:
                body = None
            with demo._lock:
                demo.requests.append(ReceivedRequest(method, url.path, query, self.headers.get("Authorization"), body))
                demo.in_flight += 1
                demo.max_in_flight = max(demo.max_in_flight, demo.in_flight)
            try:
                self._answer(method, url, query, body)
            finally:
                with demo._lock:
                    demo.in_flight -= 1

        def _answer(self, method: str, url: Any, query: dict, body: Any) -> None:
            if demo.latency:
                time.sleep(demo.latency)
            if demo.token is not None and self.headers.get("Authorization") != f"Bearer {demo.token}":
                return self._send(401, {"success": False, "error": "Unauthorized"})
            if demo._throttled():
                return self._send(429, {"success": False, "error": "Too many requests"}, {"Retry-After": demo.faults.retry_after})
            if demo._random_error():
                return self._send(503, {"success": False, "error": "Service unavailable"})
            if url.path in demo.faults.raw_paths:
                status, text, headers = demo.faults.raw_paths[url.path]
                headers = dict(headers)  # a Content-Type given replaces JSON's, as a proxy's page would
                kind = headers.pop("Content-Type", "application/json; charset=utf-8")
                return self._send_raw(status, text.encode(), kind, headers)
            self._route(method, url.path, query, body)

        def _route(self, method: str, path: str, query: dict, body: Any) -> None:
            parts = path.strip("/").split("/")
            if method == "GET" and parts == ["api", "v1", "clients"]:
                return self._send_list(demo.client_list())
            if method == "GET" and len(parts) == 5 and parts[:3] == ["api", "v1", "clients"] and parts[4] == "stats":
                return self._stats(parts[3], query)
            if method == "POST" and parts == ["api", "v1", "getBatchStats"] and demo.batch:
                return self._batch(body)
            if method == "POST" and parts == ["api", "v1", "triggerCollection"]:
                return self._collect()
            self._express_missing(404, method, path)

        def _express_missing(self, status: int, method: str, path: str) -> None:
            """What Express answers for a route it does not have: an HTML page, not JSON."""
            page = (
                '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n'
                f"</head>\n<body>\n<pre>Cannot {method} {path}</pre>\n</body>\n</html>\n"
            )
            self._send_raw(status, page.encode(), "text/html; charset=utf-8")

        def _stats(self, raw_id: str, query: dict) -> None:
            try:
                client_id = int(raw_id)
                start, end = date.fromisoformat(query["start_date"]), date.fromisoformat(query["end_date"])
            except (KeyError, ValueError):
                return self._send(400, {"success": False, "error": "start_date and end_date (YYYY-MM-DD) are required"})
            if client_id in demo.faults.slow_clients:
                time.sleep(demo.faults.slow_clients[client_id])
            auth = self.headers.get("Authorization")
            if client_id in demo.faults.echo_auth:  # a careless error handler that dumps the request
                return self._send(422, {"success": False, "error": f"bad request, headers: Authorization: {auth}"})
            if client_id in demo.faults.fail_clients:
                status = demo.faults.fail_clients[client_id]
                error = demo.faults.error_text or f"simulated failure for client {client_id}"
                return self._send(status, {"success": False, "error": error})
            with demo._lock:
                remaining = demo.faults.flaky_clients.get(client_id, 0)
                if remaining:
                    demo.faults.flaky_clients[client_id] = remaining - 1
            if remaining:
                return self._send(503, {"success": False, "error": "Service unavailable"})
            if not 1 <= client_id <= demo.clients:
                return self._send(404, {"success": False, "error": f"client {client_id} not found"})
            rows = demo.rows(client_id, start, end)
            if demo.faults.echo_auth_rows and rows:
                rows = [{**rows[0], "debug": auth}, *rows[1:], {"stat_date": auth}]
            padding = demo.faults.padded_clients.get(client_id)
            trickle = demo.faults.trickle_clients.get(client_id)
            if padding is None and trickle is None and not demo.faults.gzip_answers:
                return self._send_list(rows)
            data = json.dumps(rows).encode()
            if padding:
                data = b"[" + b" " * int(padding * 1024 * 1024) + data[1:]
            headers = {}
            if demo.faults.gzip_answers:
                data, headers = gzip.compress(data, compresslevel=1), {"Content-Encoding": "gzip"}
            self._send_raw(200, data, "application/json; charset=utf-8", headers, trickle)

        def _batch(self, body: Any) -> None:
            if demo.faults.batch_delay:
                time.sleep(demo.faults.batch_delay)
            if demo.faults.batch_status == 405:
                return self._express_missing(405, "POST", "/api/v1/getBatchStats")
            if demo.faults.batch_status:
                return self._send(demo.faults.batch_status, {"success": False, "error": "batch failed"})
            try:
                start, end = date.fromisoformat(body["start_date"]), date.fromisoformat(body["end_date"])
                ids = [int(i) for i in body["client_ids"]]
            except (TypeError, KeyError, ValueError):
                return self._send(400, {"success": False, "error": "start_date, end_date and client_ids are required"})
            answer: dict[str, Any] = {}
            for cid in ids:
                if not 1 <= cid <= demo.clients:
                    continue
                days = {}
                for row in demo.rows(cid, start, end):
                    # As the real endpoint builds it: row.stat_date.toISOString().slice(0, 10), the UTC
                    # date of Bali midnight, one day early; the row keeps its own stat_date and columns.
                    if demo.faults.batch_keys_only:  # a remote that formats the DATE itself and sends no stat_date
                        days[_bali_date(row["stat_date"])] = {k: v for k, v in row.items() if k != "stat_date"}
                    else:
                        days[str(row["stat_date"])[:10]] = row
                if days:
                    answer[str(cid)] = days
            answer.update(demo.faults.batch_extra)
            self._send(200, {"success": True, "data": answer} if demo.faults.wrap_lists else answer)

        def _collect(self) -> None:
            time.sleep(demo.faults.collect_seconds)
            if demo.faults.collect_fails:
                return self._send(500, {"success": False, "error": "Grab login failed for 3 clients"})
            self._send(200, {"success": True, "message": f"Collection finished for {demo.clients} clients"})

        def _send_list(self, items: list) -> None:
            self._send(200, {"success": True, "data": items} if demo.faults.wrap_lists else items)

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            self._send_raw(status, json.dumps(payload).encode(), "application/json; charset=utf-8", headers)

        def _send_raw(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None,
                      trickle: float | None = None) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if trickle is None:
                    self.wfile.write(data)
                else:
                    self._trickle(data, trickle)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout): nothing to answer

        def _trickle(self, data: bytes, seconds: float) -> None:
            """Send `data` a few bytes at a time over `seconds`; forever (until the client goes) if infinite."""
            if math.isinf(seconds):
                for _ in range(600):  # a minute at most: a test's server thread must end
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.1)
                self.close_connection = True
                return
            pieces = 20
            step = max(1, -(-len(data) // pieces))
            for i in range(0, len(data), step):
                self.wfile.write(data[i:i + step])
                self.wfile.flush()
                time.sleep(seconds / pieces)

    return Handler


def _bali_date(stamp: str) -> str:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return moment.astimezone(DEMO_TZ).date().isoformat()

