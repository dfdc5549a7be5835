"""`GET /metrics`: the Prometheus exposition of otelog.metrics.REGISTRY.

The format follows the scraper's Accept header (prometheus-client's negotiation): the
classic text format 0.0.4 by default, which every Prometheus version parses, OpenMetrics
when asked for.
"""

from __future__ import annotations

import asyncio

from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from otelog.metrics import REGISTRY


async def metrics_endpoint(request: Request) -> Response:
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    # a scrape reads RocksDB properties and /proc: off the event loop, which serves ingest
    body = await asyncio.to_thread(encode, REGISTRY)
    return Response(body, headers={"Content-Type": content_type})


def route() -> Route:
    return Route("/metrics", metrics_endpoint, methods=["GET"])
