"""The `demo-source` command: the simulated remote, served until interrupted."""

from __future__ import annotations

import logging
from typing import Optional

import typer

from ..errors import Interrupted, UsageError
from .app import app

log = logging.getLogger("delivery_sync")


@app.command("demo-source")
def demo_source(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (keep it on loopback)."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port to listen on (0 picks a free one)."),
    clients: int = typer.Option(127, "--clients", min=1, help="How many clients it lists."),
    seed: int = typer.Option(42, "--seed", help="Seed of the deterministic data."),
    latency_ms: float = typer.Option(0, "--latency-ms", min=0, help="Delay added to every answer."),
    error_rate: float = typer.Option(0, "--error-rate", min=0, max=1, help="Share of requests answered with a random 503."),
    rate_limit: Optional[float] = typer.Option(None, "--rate-limit", metavar="RPS", min=0.1, help="Requests per second before it answers 429 + Retry-After."),
    no_batch: bool = typer.Option(False, "--no-batch", help="Answer 404 to POST /api/v1/getBatchStats."),
    restate: bool = typer.Option(False, "--restate", help="From the second sync on, restate some of the last 3 days (late refunds)."),
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
