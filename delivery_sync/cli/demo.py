"""The `demo-source` command: the simulated remote, served until interrupted."""

from __future__ import annotations

import logging

from ..errors import Interrupted, UsageError
from .app import app, examples, option

log = logging.getLogger("delivery_sync")


@app.command("demo-source", epilog=examples(
    "delivery-sync demo-source --port 8765 --latency-ms 50",
    "delivery-sync sync --source http://127.0.0.1:8765     # in another terminal",
))
def demo_source(
    host: str = option("127.0.0.1", "--host", help="Address to listen on; keep it on loopback (default: 127.0.0.1)."),
    port: int = option(8765, "--port", min=0, max=65535, help="Port to listen on, 0 picks a free one (default: 8765)."),
    clients: int = option(127, "--clients", min=1, help="How many clients it lists (default: 127)."),
    seed: int = option(42, "--seed", help="Seed of the deterministic data (default: 42)."),
    latency_ms: float = option(0, "--latency-ms", min=0, help="Delay added to every answer (default: 0)."),
    error_rate: float = option(0, "--error-rate", min=0, max=1, help="Share of requests answered with a random 503, 0 to 1 (default: 0)."),
    rate_limit: float | None = option(None, "--rate-limit", metavar="RPS", min=0.1,
        help="Requests per second before it answers 429 + Retry-After (default: no limit)."),
    no_batch: bool = option(False, "--no-batch", help="Answer 404 to POST /api/v1/getBatchStats."),
    restate: bool = option(False, "--restate", help="From the second sync on, restate some of the last 3 days (late refunds)."),
) -> None:
    """Serve a realistic simulated remote (the API of the real one) on loopback until interrupted."""
    from ..demo_source import DemoSource

    try:
        demo = DemoSource(host, port, clients, seed, latency_ms, error_rate, rate_limit, batch=not no_batch, restate=restate)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    log.info("demo-source: serving %d clients on %s (Ctrl-C to stop)", clients, demo.url)
    try:
        demo.serve_forever()
    except (KeyboardInterrupt, Interrupted):  # how a server is meant to be stopped: not an error
        pass
    finally:
        demo.stop()
