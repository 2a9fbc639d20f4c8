"""The remote's failure classes and limits (docs/remote-api.md), against the real demo server over loopback (measured server-side)."""

from __future__ import annotations

import email.utils
import socket
import threading
import time
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from conftest import DEMO_CLIENTS, query_db, write_config

from delivery_sync.config import SourceSettings
from delivery_sync.demo_source import DemoSource
from delivery_sync.errors import AuthFailed, ClientFetchFailed, SourceUnreachable
from delivery_sync.source import _LONG_RUN, _LONG_TEXT, MAX_TEXT, SourceClient, _has_long_run


@pytest.fixture(autouse=True)
def _per_client_endpoint(monkeypatch):
    """These tests are about one request per client (docs/remote-api.md); tests/test_batch.py covers the batch endpoint."""
    monkeypatch.setenv("DELIVERY_SYNC_SOURCE__BATCH", "never")


DAY = date(2026, 1, 10)


def _client(demo, backoff_initial: float = 0.05, **overrides) -> SourceClient:
    values = {"url": demo.url, "min_interval": 0, "max_retries": 2, "timeout": 5, **overrides}
    return SourceClient(SourceSettings(**values), backoff_initial=backoff_initial, backoff_max=0.2)


def _gaps(requests) -> list[float]:
    starts = sorted(r.at for r in requests)
    return [b - a for a, b in zip(starts, starts[1:])]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_rows_and_client_list_over_http(demo):
    demo.faults.wrap_lists = True  # {"success": true, "data": [...]} is unwrapped too
    with _client(demo) as source:
        clients = source.list_clients()
        rows = source.client_stats(3, DAY, DAY + timedelta(days=2))
    assert [c["id"] for c in clients] == list(range(1, DEMO_CLIENTS + 1))
    assert [r["stat_date"] for r in rows] == ["2026-01-09T16:00:00.000Z", "2026-01-10T16:00:00.000Z", "2026-01-11T16:00:00.000Z"]
    assert demo.stats_requests()[0].query == {"start_date": "2026-01-10", "end_date": "2026-01-12"}


def test_429_retry_after_seconds_is_honoured(demo):
    demo.faults.throttle_next = 1
    demo.faults.retry_after = "1"
    with _client(demo) as source:  # its own backoff would be ~0.05 s
        rows = source.client_stats(1, DAY, DAY)
        assert len(rows) == 1
        assert source.requests == 2
    first, second = demo.stats_requests()
    assert second.at - first.at >= 0.95


def test_429_retry_after_http_date_is_honoured(demo):
    when = datetime.now(UTC) + timedelta(seconds=2)
    demo.faults.throttle_next = 1
    demo.faults.retry_after = email.utils.format_datetime(when, usegmt=True)  # whole seconds
    with _client(demo) as source:
        assert len(source.client_stats(1, DAY, DAY)) == 1
        assert source.requests == 2
    first, second = demo.stats_requests()
    assert second.at - first.at >= 0.95  # at least the whole seconds left until `when`


def test_5xx_then_success_counts_every_request(demo):
    demo.faults.flaky_clients = {4: 2}
    with _client(demo) as source:
        rows = source.client_stats(4, DAY, DAY)
        assert rows[0]["client_id"] == 4
        assert source.requests == 3
    assert len(demo.stats_requests()) == 3


def test_retries_stop_after_max_retries(demo):
    demo.faults.fail_clients = {5: 503}
    with _client(demo, max_retries=2) as source:
        with pytest.raises(ClientFetchFailed, match=r"client 5: HTTP 503 after 3 attempts"):
            source.client_stats(5, DAY, DAY)
        assert source.requests == 3
    assert len(demo.stats_requests()) == 3


def test_backoff_is_exponential_from_half_a_second(demo):
    demo.faults.flaky_clients = {2: 2}
    with SourceClient(SourceSettings(url=demo.url, min_interval=0, max_retries=2, timeout=5)) as source:
        source.client_stats(2, DAY, DAY)
    gaps = _gaps(demo.stats_requests())
    assert 0.45 <= gaps[0] <= 1.2  # 0.5 s + jitter
    assert 0.95 <= gaps[1] <= 1.7  # 1 s + jitter


@pytest.mark.parametrize("status", [401, 403])
def test_401_403_raise_auth_failed_at_once(demo, status):
    demo.faults.fail_clients = {6: status}
    with _client(demo) as source:
        with pytest.raises(AuthFailed, match="authentication failed"):
            source.client_stats(6, DAY, DAY)
        assert source.requests == 1


@pytest.mark.parametrize("status", [400, 404, 410, 422])
def test_other_4xx_fail_that_request_without_retry(demo, status):
    demo.faults.fail_clients = {7: status}
    with _client(demo) as source:
        with pytest.raises(ClientFetchFailed, match=f"client 7: HTTP {status}"):
            source.client_stats(7, DAY, DAY)
        assert source.requests == 1


def test_unreachable_remote_is_source_unreachable():
    settings = SourceSettings(url=f"http://127.0.0.1:{free_port()}", min_interval=0, max_retries=1, timeout=2)
    with SourceClient(settings, backoff_initial=0.01) as source:
        with pytest.raises(SourceUnreachable, match=r"cannot reach http://127\.0\.0\.1:\d+ \(client list\).*2 attempts"):
            source.list_clients()
        assert source.requests == 2


def test_in_flight_never_exceeds_concurrency_during_sync(cli, tmp_path, db_path):
    with DemoSource(clients=DEMO_CLIENTS, latency_ms=80) as demo:
        write_config(tmp_path / "config.toml", demo.url, db_path, source={"concurrency": 3})
        result = cli("sync", "--days-back", "2")
    assert result.code == 0, result.stderr
    assert demo.max_in_flight == 3  # used, and never more
    assert len(demo.stats_requests()) == DEMO_CLIENTS


# Arrival times are stamped by the demo server's thread, which shares the GIL (and 2 cores) with the
# client under test: up to ~20 ms of that stamping jitter is the harness's, not the rate limiter's.
# A 0.3 s interval keeps the allowance under 7 % of what is measured.
INTERVAL, JITTER = 0.3, 0.02


def test_request_starts_are_min_interval_apart_during_sync(cli, tmp_path, db_path, demo):
    write_config(tmp_path / "config.toml", demo.url, db_path, source={"concurrency": 4, "min_interval": INTERVAL})
    result = cli("sync", "--days-back", "1", "--clients", "1,2,3,4,5,6")
    assert result.code == 0, result.stderr
    assert len(demo.requests) == 7  # the client list and 6 stats requests
    assert min(_gaps(demo.requests)) >= INTERVAL - JITTER
    assert query_db(db_path, "SELECT COUNT(*) FROM client_stats") == [(6,)]


def test_spacing_holds_when_slots_free_together(demo):
    """More callers than slots: two slots freeing at once must not start two requests together."""
    demo.faults.slow_clients = {1: 3.5 * INTERVAL, 2: 2.5 * INTERVAL}  # started INTERVAL apart, both end together
    with _client(demo, concurrency=2, min_interval=INTERVAL) as source:
        threads = [threading.Thread(target=source.client_stats, args=(cid, DAY, DAY)) for cid in (1, 2, 3, 4, 5, 6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert demo.max_in_flight <= 2
    assert len(demo.stats_requests()) == 6
    assert min(_gaps(demo.stats_requests())) >= INTERVAL - JITTER


def test_only_a_plain_http_remote_without_proxy_skips_the_ca_certificates(monkeypatch):
    import ssl

    from delivery_sync.source import tls_verification

    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    plain = tls_verification("http://127.0.0.1:8080")
    assert isinstance(plain, ssl.SSLContext)  # fails closed: checks every certificate, trusts none
    assert (plain.verify_mode, plain.check_hostname, plain.get_ca_certs()) == (ssl.CERT_REQUIRED, True, [])
    assert tls_verification("https://stats.example.com") is True
    monkeypatch.setenv("HTTP_PROXY", "https://proxy.example.com:3128")  # TLS to the proxy: verified as ever
    assert tls_verification("http://127.0.0.1:8080") is True


@pytest.mark.parametrize("run", [MAX_TEXT - 1, MAX_TEXT, MAX_TEXT + 1, MAX_TEXT + 2, 3 * MAX_TEXT])
def test_a_long_run_without_a_quote_is_found_wherever_it_lies(run):
    """The block-wise look for a run of more than MAX_TEXT bytes without a quote (a text to cut)
    says what the patterns say, the run starting at the body's start, after any quote, or at its end."""
    for offset in (0, 1, 7, 2047, 2048, 2049, 2050, 4095, 4096, 4097, 5000):
        head = b'["' + b'"a", "' * (offset // 6) + b'x' * (offset % 6)
        for body in (b'x' * run + b'"' + head, head + b'"' + b'y' * run + b'"]', head + b'"' + b'z' * run):
            expected = bool(_LONG_RUN.match(body) or _LONG_TEXT.search(body))
            assert expected == (run > MAX_TEXT)
            assert _has_long_run(body) == expected, (offset, run)
            assert _has_long_run(bytearray(body)) == expected


def test_one_watchdog_thread_serves_every_request_and_ends_with_the_client(demo):
    """The cut-off of each answer is kept by one thread per client, not a thread per request."""
    def watchdogs() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "source-watchdog"]

    before = len(watchdogs())
    with _client(demo, concurrency=2) as source:
        for cid in (1, 2, 3, 4):
            source.client_stats(cid, DAY, DAY)
        assert len(watchdogs()) == before + 1
        thread = source._watchdog._thread
    thread.join(5)
    assert not thread.is_alive() and len(watchdogs()) == before


def test_the_watchdog_calls_in_time_order_and_skips_the_cancelled():
    from delivery_sync.source import _Watchdog

    called: list[str] = []
    watchdog = _Watchdog()
    now = time.monotonic()
    watchdog.call_at(now + 0.2, lambda: called.append("late"))
    skipped = watchdog.call_at(now + 0.1, lambda: called.append("cancelled"))
    watchdog.call_at(now + 0.05, lambda: called.append("soon"))  # sooner than the thread waits for
    watchdog.cancel(skipped)
    time.sleep(0.4)
    watchdog.close()
    assert called == ["soon", "late"]


def test_a_request_in_flight_when_the_client_closes_is_neither_retried_nor_logged(demo, caplog):
    """A run that stops early does not wait for its requests in flight (fetch.py). When one of
    them times out after the client closed, it must not be sent again, nor log a retry into
    whatever the process prints next."""
    demo.faults.slow_clients[2] = 1.5
    client = _client(demo, timeout=0.5)
    failed: list[BaseException] = []

    def fetch() -> None:
        try:
            client.client_stats(2, DAY, DAY)
        except Exception as exc:  # noqa: BLE001 (any end will do: the run that wanted it is over)
            failed.append(exc)

    thread = threading.Thread(target=fetch)
    caplog.set_level("WARNING")
    thread.start()
    time.sleep(0.2)  # the request is in flight: the server holds it for 1.5 s
    client.close()
    thread.join(timeout=10)
    assert not thread.is_alive() and len(failed) == 1
    assert [r for r in caplog.records if "retry" in r.getMessage()] == []
    assert sum(1 for r in demo.requests if r.path == "/api/v1/clients/2/stats") == 1


def test_a_client_that_resets_its_connection_mid_request_leaves_the_demo_silent(demo, capfd):
    """socketserver prints a traceback when a client goes away mid-request; the demo remote must
    not, or a stopped run's abandoned requests print one into the terminal of `--source demo`."""
    host, port = demo.url.removeprefix("http://").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"GET /api/v1/clients HTTP/1.1\r\nHost: x\r\n")  # the headers never end
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close with a reset
    time.sleep(0.5)
    assert "Exception occurred" not in capfd.readouterr().err
    with _client(demo) as client:
        assert len(client.list_clients()) == DEMO_CLIENTS  # and still serves


@pytest.mark.parametrize("error, said", [
    (httpx.ConnectError("[Errno 111] Connection refused"), "connection refused or host unknown"),
    (httpx.ReadTimeout("timed out"), "timed out (no complete answer within source.timeout = 30 s)"),
    (httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
     "the remote closed the connection mid-answer"),
    (httpx.ReadError("[Errno 104] Connection reset by peer"), "the connection broke while the answer was read"),
    (httpx.WriteError("[Errno 32] Broken pipe"), "the connection broke while the request was sent"),
    (httpx.ProxyError("502"), "the proxy failed"),
    (httpx.UnsupportedProtocol("ftp"), "network error (UnsupportedProtocol)"),
])
def test_network_failures_are_said_in_words_not_class_names(error, said):
    """`client 32: ReadError` says nothing to an operator at 3 a.m.; each failure on the wire has a phrase."""
    from delivery_sync.source import _describe_transport

    assert _describe_transport(error, "source.timeout = 30 s") == said


@pytest.mark.parametrize("rate, burst", [(5, 5), (0.5, 1)])
def test_the_demo_s_rate_limit_throttles_as_many_requests_a_second_as_it_says(rate, burst):
    """`demo-source --rate-limit RPS`: a burst of RPS requests (at least one) is answered, the next
    gets 429 with Retry-After, and the bucket refills at RPS a second (0.5: one request in 2 s;
    it answered every request 429 before)."""
    with DemoSource(clients=2, rate_limit=rate) as demo, httpx.Client(base_url=demo.url) as client:
        codes = [client.get("/api/v1/clients").status_code for _ in range(burst + 1)]
        assert codes == [200] * burst + [429]
        time.sleep(1 / rate + 0.05)
        assert client.get("/api/v1/clients").status_code == 200
