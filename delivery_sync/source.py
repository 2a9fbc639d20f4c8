"""HTTP client for the remote (docs/remote-api.md): endpoints, auth, retries, concurrency, rate limit.

Knows nothing of SQLite or the terminal. Errors are classified once, here:

    transport error (connect, timeout, protocol)  retried, then SourceUnreachable
    429, 500, 502, 503, 504                       retried (Retry-After honoured), then ClientFetchFailed
    401, 403                                      AuthFailed at once: the whole run stops
    404, 405 from the batch endpoint              BatchUnavailable: the remote has no batch endpoint
    any other status >= 400, unreadable JSON      ClientFetchFailed at once: that client only
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import heapq
import itertools
import json as jsonlib
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlencode, urlsplit, urlunsplit

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from .config import SourceSettings
from .errors import AuthFailed, BatchUnavailable, ClientFetchFailed, DeadlineReached, SourceError, SourceUnreachable, one_line
from .httpx_lean import httpx

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
AUTH_STATUSES = frozenset({401, 403})
# How a remote without the batch endpoint answers it (Express: 404 with an HTML page).
BATCH_ABSENT_STATUSES = frozenset({404, 405})
BATCH_PATH = "/api/v1/getBatchStats"
# Never sleep longer than this on one Retry-After: a broken header must not stall cron for hours.
MAX_RETRY_AFTER = 300.0
REDACTED = "[redacted]"
# The most characters of one text value the remote sends (a name, an error text, an `extra` value, a
# key) that are kept; the rest is cut, with CUT_MARK saying how much. Every table, log line and
# status output then stays readable whatever the remote sends.
MAX_TEXT = 4096
NOT_JSON_SHOWN = 60  # bytes of an answer that is not JSON quoted in its error
CUT_MARK = "...[{} more characters cut]"
# Deeper answers are "not JSON": nothing the remote means to send is nested like that, and every
# later step (records, json.dumps of `extra`) then works far from Python's recursion limit.
MAX_DEPTH = 64
# Nor longer than this in all the waits of one request: 5 retries x 300 s would be 25 minutes.
MAX_TOTAL_WAIT = 300.0


class RetryableStatus(Exception):
    """A 429/5xx answer that may succeed if asked again."""

    def __init__(self, response: httpx.Response, body: bytes):
        super().__init__(f"HTTP {response.status_code}")
        self.response = response
        self.body = body


class _TooDeep(ValueError):
    """An answer nested deeper than MAX_DEPTH: JSON, but not one this tool reads."""


def redact_url(url: str) -> str:
    """The URL without any user:password part, safe to print."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Seconds a `Retry-After` header asks us to wait (delta-seconds or HTTP date), if any, at most
    MAX_RETRY_AFTER."""
    asked = retry_after_asked(response)
    return None if asked is None else min(asked, MAX_RETRY_AFTER)


def retry_after_asked(response: httpx.Response) -> float | None:
    """Seconds a `Retry-After` header asks us to wait, as asked (delta-seconds or HTTP date), if any."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(seconds, 0.0) if math.isfinite(seconds) else MAX_RETRY_AFTER


class _Watchdog:
    """Calls each action at its time (time.monotonic()) unless cancelled first, on one thread for
    every request of a client. A threading.Timer per request started a thread each time, which the
    request waited for while holding its slot: about 0.5 ms of CPU a request, and longer waits for
    the GIL while the writer held it."""

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._due: list[list] = []  # a heap of [when, order, action], action None once cancelled
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def call_at(self, when: float, action: Callable[[], None]) -> list:
        """Call `action` at `when` on the watchdog's thread; returns the handle `cancel` takes."""
        entry = [when, next(self._order), action]
        with self._changed:
            heapq.heappush(self._due, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="source-watchdog", daemon=True)
                self._thread.start()
            elif self._due[0] is entry:  # sooner than the time the thread waits for
                self._changed.notify()
        return entry

    def cancel(self, entry: list) -> None:
        """Do not call the action of `entry` (it may be running already, as a Timer's may)."""
        entry[2] = None  # left in the heap, without its action, until its time comes

    def close(self) -> None:
        """End the thread; no action is called after this."""
        with self._changed:
            self._closed = True
            self._changed.notify()

    def _run(self) -> None:
        with self._changed:
            while not self._closed:
                if not self._due:
                    self._changed.wait()
                    continue
                left = self._due[0][0] - time.monotonic()
                if left > 0:
                    self._changed.wait(left)
                    continue
                action = heapq.heappop(self._due)[2]
                if action is not None:
                    action()


class _RateLimiter:
    """Request starts at least `interval` seconds apart, across threads."""

    def __init__(self, interval: float):
        self.interval = interval
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self) -> None:
        if self.interval <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


def unwrap_list(payload: Any, what: str) -> list:
    """A list sent bare or as `{"success": true, "data": [...]}`."""
    if isinstance(payload, dict):
        if payload.get("success") is False:
            raise ClientFetchFailed(f"{what}: remote answered an error: {payload.get('error') or payload.get('message')}")
        if "data" not in payload:
            raise ClientFetchFailed(f"{what}: expected a list, got an object without \"data\"")
        payload = payload["data"]
    if not isinstance(payload, list):
        raise ClientFetchFailed(f"{what}: expected a list, got {_json_type(payload)}")
    return payload


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), "a number")


class SourceClient:
    """The remote API with the retry policy, concurrency limit and rate limit of `SourceSettings`.

    Thread-safe: the sync fetches clients from several threads at once.
    `requests` counts every HTTP request sent, retries included.
    """

    def __init__(self, settings: SourceSettings, backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 deadline: float | None = None):
        self.settings = settings
        # time.monotonic() after which no request starts, no wait runs and none is waited for.
        self.deadline = deadline
        self.base_url = settings.url.rstrip("/")
        self.display_url = redact_url(self.base_url)
        headers = {"Accept": "application/json", "User-Agent": "delivery-sync"}
        token = settings.token.get_secret_value()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # What a refusal says to check: the classic cron failure is a token missing from its environment.
        self._token_hint = ("check source.token" if token else
                            "no token was sent: source.token is empty; set it, or DELIVERY_SYNC_SOURCE__TOKEN in cron's environment")
        parts = urlsplit(self.base_url)
        self._secrets = _secret_forms(token, parts.password and unquote(parts.password),
                                      parts.password and _basic(unquote(parts.username or ""), unquote(parts.password)))
        self._secret_bytes = tuple(secret.encode() for secret in self._secrets)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=settings.timeout,
            limits=httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency),
            verify=tls_verification(self.base_url),
        )
        self._in_flight = threading.BoundedSemaphore(settings.concurrency)
        # Answers are read at once on `concurrency` threads, each up to max_answer_mb. Each may grow
        # to its share of max_answer_mb freely; beyond that it needs `_large`, which one answer
        # holds at a time until it is decoded. The answers in memory then hold about twice
        # max_answer_mb in all, never concurrency x max_answer_mb; nothing waits while holding
        # `_large`, so no reader deadlocks.
        self._share = int(settings.max_answer_mb * 1024 * 1024 / settings.concurrency)
        self._large = threading.Lock()
        self._holds_large = threading.local()  # .held: this thread's answer holds `_large`
        self._cut = threading.local()  # .note: this thread's last Retry-After waited out in part, and why
        self._rate = _RateLimiter(settings.min_interval)
        self._watchdog = _Watchdog()
        self._count_lock = threading.Lock()
        self._backoff = wait_exponential_jitter(multiplier=backoff_initial, max=backoff_max, jitter=backoff_initial)
        self.requests = 0
        self.delivered = 0  # requests whose bytes began to reach the server (a refused connection sends none)
        self._closed = False

    def close(self) -> None:
        """End the client. A run that stops early (a deadline, a failure streak, Ctrl-C) does not
        wait for its requests in flight; once closed, none of them is retried nor logs a retry."""
        self._closed = True
        self._http.close()
        self._watchdog.close()

    def __enter__(self) -> SourceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- endpoints ---------------------------------------------------------------

    def list_clients(self) -> list[Any]:
        """`GET /api/v1/clients`: the raw client entries."""
        return unwrap_list(self._request("GET", "/api/v1/clients", what="client list"), "client list")

    def client_stats(self, client_id: int, start: date, end: date) -> list[Any]:
        """`GET /api/v1/clients/{id}/stats`: the client's raw rows in the window."""
        what = f"client {client_id}"
        params = {"start_date": start.isoformat(), "end_date": end.isoformat()}
        return unwrap_list(self._request("GET", f"/api/v1/clients/{client_id}/stats", params=params, what=what), what)

    def batch_stats(self, client_ids: list[int], start: date, end: date) -> dict:
        """`POST /api/v1/getBatchStats`: the raw `{"<client_id>": {"<day>": row}}` answer for these clients.

        Raises BatchUnavailable when the remote has no such endpoint (404/405).
        """
        what = f"batch {start}..{end} ({len(client_ids)} clients)"
        body = {"start_date": start.isoformat(), "end_date": end.isoformat(), "client_ids": client_ids}
        payload = self._request("POST", BATCH_PATH, what=what, json=body, absent=BATCH_ABSENT_STATUSES)
        if isinstance(payload, dict) and "success" in payload:
            if payload["success"] is False:
                raise ClientFetchFailed(f"{what}: remote answered an error: {payload.get('error') or payload.get('message')}")
            payload = payload.get("data")
        if not isinstance(payload, dict):
            raise ClientFetchFailed(f"{what}: expected an object keyed by client id, got {_json_type(payload)}")
        return payload

    def trigger_collection(self, timeout: float) -> dict:
        """`POST /api/v1/triggerCollection`, waiting up to `timeout` seconds.

        Retried only when no connection could be made: once the request was sent the
        remote may be collecting, and a second trigger would start a second collection.
        """
        payload = self._request(
            "POST",
            "/api/v1/triggerCollection",
            what="collection",
            timeout=httpx.Timeout(self.settings.timeout, read=timeout, write=timeout),
            retry_on=_is_connect_failure,
            accept_error_body=True,
        )
        if not isinstance(payload, dict):
            raise SourceError(f"collection: unexpected answer {str(payload)[:200]!r}")
        return payload

    # --- the one request path ----------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: dict | None = None,
        json: Any = None,
        timeout: httpx.Timeout | None = None,
        retry_on=None,
        accept_error_body: bool = False,
        absent: frozenset[int] = frozenset(),
    ) -> Any:
        limit = f"{timeout.read:g} s" if timeout is not None and timeout.read is not None else f"source.timeout = {self.settings.timeout:g} s"
        self._cut.note = None  # a note of this request's own waits only
        retrying = Retrying(
            stop=stop_after_attempt(self.settings.max_retries + 1) | _waited_enough | self._ended,
            wait=self._wait,
            retry=retry_if_exception(retry_on or _is_retryable),
            before_sleep=lambda state: _log_retry(what, state, self.settings.max_retries, limit, getattr(self._cut, "note", None)),
            reraise=True,
        )
        try:
            try:
                response, body = retrying(self._send, method, path, what, params, json, timeout)
            except RetryableStatus as exc:
                if accept_error_body:
                    response, body = exc.response, exc.body
                else:
                    raise ClientFetchFailed(f"{what}: HTTP {exc.response.status_code} after {self._attempts(retrying)}") from None
            except httpx.TransportError as exc:
                raise SourceUnreachable(
                    f"cannot reach {self.display_url} ({what}): {_describe_transport(exc, limit)} after {self._attempts(retrying)}"
                ) from None
            if response.status_code in absent:
                raise BatchUnavailable(f"{self.display_url} has no batch endpoint (POST {path} answered HTTP {response.status_code})")
            return self._decode(response, body, what, accept_error_body)
        finally:
            self._release_large()

    def _release_large(self) -> None:
        """Let the next large answer be read: this thread's is decoded, or failed."""
        if getattr(self._holds_large, "held", False):
            self._holds_large.held = False
            self._large.release()

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None without one)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def _send(self, method: str, path: str, what: str, params: dict | None, json: Any,
              timeout: httpx.Timeout | None) -> tuple[httpx.Response, bytearray]:
        with self._in_flight:
            # Space starts only once a slot is ours: waiting for the slot after the
            # spacing would let two waiters start together when two slots free at once.
            self._rate.wait()
            left = self.remaining()
            if left is not None and left <= 0:
                note = getattr(self._cut, "note", None)
                raise DeadlineReached("the run's deadline was reached" + (f" while {note[0]}" if note else ""))
            with self._count_lock:
                self.requests += 1
            cut_by_deadline = left is not None and left < self.settings.timeout
            if left is not None:  # a request in flight is abandoned at the deadline
                timeout = httpx.Timeout(min(left, self.settings.timeout))
            request = self._http.build_request(method, path, params=params, json=json, extensions={"trace": self._trace},
                                               timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
            # The read timeout bounds the whole request, not each network read: a body that
            # trickles in (or never ends) is cut off when it runs out (source.timeout).
            budget = timeout.read if timeout is not None and timeout.read is not None else self.settings.timeout
            started = time.monotonic()
            try:
                response = self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                self._stop_at_deadline(exc, cut_by_deadline)
                mismatch = self._scheme_mismatch(exc)
                if mismatch:  # asking again cannot help: say what to change
                    raise SourceUnreachable(f"cannot reach {self.display_url}: {mismatch}") from None
                raise
            try:
                body = self._read_body(response, what, started + budget)
            except BaseException as exc:
                self._release_large()  # never held through the wait before a retry
                if isinstance(exc, httpx.TransportError):
                    self._stop_at_deadline(exc, cut_by_deadline)
                raise
            finally:
                response.close()
        # Our own request log: httpx's would print the URL with any user:password in it.
        log.debug("%s %s%s%s -> HTTP %d in %.2f s", method, self.display_url, path, f"?{urlencode(params)}" if params else "",
                  response.status_code, time.monotonic() - started)
        if response.status_code in AUTH_STATUSES:
            raise AuthFailed(f"authentication failed: {self.display_url} answered HTTP {response.status_code} ({self._token_hint})")
        if response.status_code in RETRY_STATUSES:
            self._release_large()  # never held through the wait before a retry
            raise RetryableStatus(response, body)
        return response, body

    def _trace(self, event: str, info: dict) -> None:
        """httpcore's progress of a request: count it as delivered once its headers start out."""
        if event.endswith("send_request_headers.started"):
            with self._count_lock:
                self.delivered += 1

    def _stop_at_deadline(self, exc: httpx.TransportError, cut_by_deadline: bool) -> None:
        """A request cut off by the run's deadline (its timeout was the time left, or no time is
        left) is not retried, nor logged as one to be: the run ends, its client for --retry-failed."""
        left = self.remaining()
        if (cut_by_deadline and isinstance(exc, httpx.TimeoutException)) or (left is not None and left <= 0):
            raise DeadlineReached("the run's deadline was reached") from None

    def _scheme_mismatch(self, exc: httpx.TransportError) -> str | None:
        """Why an https:// URL reached a plain HTTP server, or an http:// one a TLS server; else None."""
        scheme = urlsplit(self.base_url).scheme
        if scheme == "https" and isinstance(exc, httpx.ConnectError) and _TLS_ON_PLAIN.search(str(exc)):
            return "the server speaks plain HTTP, not TLS (use an http:// URL in source.url)"
        if scheme == "http" and isinstance(exc, (httpx.ReadError, httpx.RemoteProtocolError)) and _speaks_tls(self.base_url):
            return "the server speaks TLS (use an https:// URL in source.url)"
        return None

    def _read_body(self, response: httpx.Response, what: str, cut_off: float) -> bytearray:
        """The decoded body, read as it streams in: at most `source.max_answer_mb`, and done by `cut_off`
        (time.monotonic()), else ClientFetchFailed (too large) or httpx.ReadTimeout (retried)."""
        limit = int(self.settings.max_answer_mb * 1024 * 1024)
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and "Content-Encoding" not in response.headers and int(declared) > limit:
            raise ClientFetchFailed(self._too_large(what))
        # A socket blocked on a read that trickles wakes only when shut down: the watchdog does that.
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        fired = threading.Event()

        def cut() -> None:
            fired.set()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

        watchdog = self._watchdog.call_at(cut_off, cut) if sock is not None else None
        body = bytearray()
        try:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise ClientFetchFailed(self._too_large(what))
                if len(body) > self._share and not getattr(self._holds_large, "held", False):
                    # Past its share: wait (at most until the cut-off) for the one large-answer slot.
                    self._holds_large.held = self._large.acquire(timeout=max(0.0, cut_off - time.monotonic()))
                    if not self._holds_large.held:
                        fired.set()
                        break
                if time.monotonic() > cut_off:
                    fired.set()
                    break
        except httpx.HTTPError:
            if not fired.is_set():
                raise
        finally:
            if watchdog:
                self._watchdog.cancel(watchdog)
        if fired.is_set():
            raise httpx.ReadTimeout("the whole answer did not arrive within the timeout", request=response.request)
        return body  # json.loads takes a bytearray: no bytes() copy of a large answer

    def _too_large(self, what: str) -> str:
        return (f"{what}: the answer is larger than source.max_answer_mb = {self.settings.max_answer_mb:g} MB "
                "(decoded); raise it if the remote really sends that much")

    def _decode(self, response: httpx.Response, body: bytes, what: str, accept_error_body: bool) -> Any:
        too_deep = False
        try:
            payload = jsonlib.loads(body, parse_constant=str, parse_float=_finite_or_text)
            if self._plain(body):  # nothing to redact or cut: only the depth is left to check
                if _too_deep(payload):
                    raise _TooDeep()
            else:
                payload = self._clean(payload)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than Python's own limit
            payload, too_deep = None, isinstance(exc, (_TooDeep, RecursionError))
        if response.is_error:
            detail = payload.get("error") if isinstance(payload, dict) else None
            if accept_error_body and isinstance(payload, dict):
                return {**payload, "success": False, "http_status": response.status_code}
            if detail is not None and not isinstance(detail, str):  # an object or list: its text, cut too
                detail = _cut(jsonlib.dumps(detail, ensure_ascii=False))
            if detail is None and response.status_code == 404:  # most often a source.url with a wrong path
                detail = f"{self.display_url}{response.request.url.path} not found (check source.url)"
            raise ClientFetchFailed(f"{what}: HTTP {response.status_code}" + (f": {detail}" if detail else ""))
        if response.is_redirect:  # never followed: the token would go along to wherever it points
            location = _cut(self.redact_text(redact_url(response.headers.get("Location", "?"))))
            raise ClientFetchFailed(f"{what}: HTTP {response.status_code} redirect to {location} (set source.url to the new address)")
        if payload is None and too_deep:
            raise ClientFetchFailed(f"{what}: the answer is not JSON this tool reads (nested deeper than {MAX_DEPTH} levels)")
        if payload is None:  # what came instead (an HTML page of a proxy or a login), bounded and redacted
            # Redacted before it is cut: a secret the cut would halve is never shown in part.
            kind = self.redact_text(response.headers.get("Content-Type", "no Content-Type")[:MAX_TEXT])[:80]
            start = one_line(self.redact_text(bytes(body[:MAX_TEXT]).decode("utf-8", "replace")), NOT_JSON_SHOWN)
            raise ClientFetchFailed(f"{what}: the answer is not JSON (HTTP {response.status_code}, {kind}: {start!r})")
        return payload

    def _clean(self, value: Any, depth: int = 0) -> Any:
        """A decoded answer with every string (keys too) redacted, then cut to MAX_TEXT characters.

        Redaction works on the decoded text, so a secret the remote sent JSON-escaped
        (`\\u0073...`) is caught like a plain one. NaN and Infinity, which JSON does not
        have, were decoded as the strings "NaN", "Infinity" and "-Infinity" (`parse_constant`),
        and a number too large for a float (`1e400`) as its text: a metric sent so is rejected,
        and `extra` stays valid JSON. Raises _TooDeep when nested deeper than MAX_DEPTH.
        """
        if isinstance(value, str):
            return _cut(self.redact_text(value))
        if depth >= MAX_DEPTH:
            raise _TooDeep()
        if isinstance(value, dict):
            return {self._clean(key, depth + 1): self._clean(item, depth + 1) for key, item in value.items()}
        if isinstance(value, list):
            return [self._clean(item, depth + 1) for item in value]
        return value

    def _plain(self, body: bytes) -> bool:
        """Whether `_clean` would leave every string of the JSON `body` as it is, seen in its bytes.

        In UTF-8 JSON without a backslash (so without escapes) every decoded string is the text of
        bytes found as they are in the body: none holds a secret whose bytes the body lacks, and
        none is longer than MAX_TEXT characters unless MAX_TEXT bytes in a row hold no quote (a
        number too large for a float, which becomes its text, is such a run too).
        """
        return (b"\\" not in body and jsonlib.detect_encoding(body) == "utf-8"
                and not any(secret in body for secret in self._secret_bytes)
                and not _has_long_run(body))

    def redact_text(self, text: str) -> str:
        """Remote text with our token and URL password (and the Basic form of it) replaced by
        `[redacted]`: the one place remote text enters, so an error body, a name or a row field
        that echoes a secret is never printed, logged or stored with it."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        asked = retry_after_asked(exc.response) if isinstance(exc, RetryableStatus) else None
        delay = self._backoff(state) if asked is None else min(asked, MAX_RETRY_AFTER)
        delay = min(delay, max(0.0, MAX_TOTAL_WAIT - state.idle_for))
        left = self.remaining()
        # Never sleep past the deadline: the next attempt then finds it reached and stops.
        waited = delay if left is None else max(0.0, min(delay, left))
        # A Retry-After waited out only in part is said, in the retry's warning and, when the
        # deadline cut it, in the deadline's reason: else a 429 asking for an hour reads as nothing.
        self._cut.note = None
        if asked is not None and asked > waited + 0.5:
            why = "the run's deadline" if left is not None and waited >= left else f"waits are capped at {MAX_RETRY_AFTER:g} s"
            self._cut.note = (f"the remote asked to wait {asked:g} s (HTTP {exc.response.status_code} Retry-After)", why)
        return waited

    def _ended(self, state: RetryCallState) -> bool:
        """Stop retrying once the client is closed: the run that sent the request is over."""
        return self._closed

    @staticmethod
    def _attempts(retrying: Retrying) -> str:
        attempts = retrying.statistics.get("attempt_number", 1)
        return f"{attempts} attempt{'s' if attempts != 1 else ''}"


# What OpenSSL says when the "TLS" answer is plain HTTP.
_TLS_ON_PLAIN = re.compile(r"wrong version number|record layer failure|packet length too long|http request", re.I)


def tls_verification(base_url: str):
    """httpx's `verify` for the remote at `base_url`: True (its default: the CA certificates
    loaded, every certificate checked), except for an http:// remote reached with no proxy. That
    client never speaks TLS (it follows no redirect), so it gets a context that trusts no
    certificate, loading none: any TLS it were ever asked for would fail, and the 20-40 ms that
    loading the CA bundle costs every start is saved."""
    from urllib.request import getproxies  # the proxy settings httpx reads from the environment too

    if urlsplit(base_url).scheme != "http" or getproxies():
        return True
    import ssl

    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificates and host names, trusting none


def _speaks_tls(base_url: str) -> bool:
    """Whether the host:port of an http:// URL completes a TLS handshake (a probe after a failed request)."""
    import ssl

    parts = urlsplit(base_url)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # only asking whether it speaks TLS
    try:
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=3) as sock:
            with context.wrap_socket(sock, server_hostname=parts.hostname):
                return True
    except (OSError, ValueError):
        return False


def _secret_forms(*secrets: str | None) -> tuple[str, ...]:
    """Each secret as it may appear in decoded remote text: as is, and percent-encoded (in a URL)."""
    forms: set[str] = set()
    for secret in secrets:
        if secret and len(secret) >= 4:  # a one-letter password would blank every such letter
            forms.update({secret, quote(secret, safe=""), quote_plus(secret, safe="")})
    return tuple(sorted(forms, key=len, reverse=True))


def _basic(username: str, password: str) -> str:
    """The credentials of an `Authorization: Basic ...` header, as httpx sends a URL's user:password."""
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def _finite_or_text(text: str) -> float | str:
    """A JSON number with a fraction or exponent as a float, or as its text when no float holds it."""
    number = float(text)
    return number if math.isfinite(number) else text


# MAX_TEXT + 1 bytes without a quote, at the start of a body or after a quote: every such run
# starts at one or the other, and searching from each quote alone stays linear in the body.
_LONG_RUN = re.compile(b'[^"]{%d}' % (MAX_TEXT + 1))
_LONG_TEXT = re.compile(b'"[^"]{%d}' % (MAX_TEXT + 1))
# Such a run holds at least one whole block of this many bytes aligned on a multiple of it.
_BLOCK = (MAX_TEXT + 2) // 2


def _has_long_run(body: bytes) -> bool:
    """Whether `body` holds more than MAX_TEXT bytes in a row without a quote. Only when some
    whole aligned _BLOCK lacks a quote (memchr finds one in each of the others at C speed) are the
    runs looked for by the patterns, whose walk from every quote costs 0.8 µs a stats row."""
    for start in range(0, len(body) - _BLOCK + 1, _BLOCK):
        if body.find(b'"', start, start + _BLOCK) < 0:
            return bool(_LONG_RUN.match(body) or _LONG_TEXT.search(body))
    return False


def _too_deep(value: Any, depth: int = 0) -> bool:
    """Whether `_clean` would find `value` nested deeper than MAX_DEPTH: a value other than a
    string at depth MAX_DEPTH or more (a container's items are one level below it)."""
    items = value.values() if type(value) is dict else value if type(value) is list else None
    if items is None:
        return False
    if depth + 2 < MAX_DEPTH and _CONTAINERS.isdisjoint(map(type, items)):
        return False  # scalars only, well above the limit: e.g. a whole stats row at C speed
    for item in items:
        if depth + 1 >= MAX_DEPTH and type(item) is not str:
            return True
        if type(item) in _CONTAINERS and _too_deep(item, depth + 1):
            return True
    return False


_CONTAINERS = frozenset((dict, list))


def _cut(text: str) -> str:
    """Remote text of at most MAX_TEXT characters, and a marker saying how much was cut."""
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + CUT_MARK.format(len(text) - MAX_TEXT)


def _waited_enough(state: RetryCallState) -> bool:
    """Stop retrying once one request has slept MAX_TOTAL_WAIT in all."""
    return state.idle_for >= MAX_TOTAL_WAIT


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, (RetryableStatus, httpx.TransportError))


def _is_connect_failure(exc: BaseException) -> bool:
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))


def _describe_transport(exc: httpx.TransportError, timeout: str) -> str:
    """What went wrong on the wire, in an operator's words (httpx's class names say little at 3 a.m.);
    `timeout` says the limit, e.g. `source.timeout = 30 s`."""
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out (no complete answer within {timeout})"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unknown"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the remote closed the connection mid-answer"
    if isinstance(exc, httpx.ReadError):
        return "the connection broke while the answer was read"
    if isinstance(exc, httpx.WriteError):
        return "the connection broke while the request was sent"
    if isinstance(exc, httpx.ProxyError):
        return "the proxy failed"
    return f"network error ({type(exc).__name__})"


def _log_retry(what: str, state: RetryCallState, retries: int, timeout: str, cut: tuple[str, str] | None) -> None:
    """One warning per retry, at the default level: an operator sees a struggling remote as it
    happens; `cut`, a Retry-After waited out only in part, and why."""
    exc = state.outcome.exception() if state.outcome else None
    reason = (str(exc) if isinstance(exc, RetryableStatus) else
              _describe_transport(exc, timeout) if isinstance(exc, httpx.TransportError) else repr(exc))
    wait = state.upcoming_sleep
    note = f" ({cut[0]}; {cut[1]})" if cut else ""
    log.warning("%s: %s, retry %d/%d in %s s%s", what, reason, state.attempt_number, retries, f"{wait:.0f}" if wait >= 1 else f"{wait:.1f}", note)
