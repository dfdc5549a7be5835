"""The API application on :8080: GraphQL (+GraphiQL), health and readiness."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from strawberry.asgi import GraphQL

from otelog.alerting.engine import AlertEngine
from otelog.api import metrics_route, rest
from otelog.api.alerts_rest import routes as alert_routes
from otelog.api.export_rest import routes as export_routes
from otelog.api.schema import schema
from otelog.api.stream import stream_endpoint
from otelog.api.tail import TailHub
from otelog.lifecycle.export import ExportManager
from otelog.lifecycle.manager import LifecycleManager
from otelog.query.service import QueryService


class _GraphQL(GraphQL):  # type: ignore[type-arg]
    def __init__(self, context: dict[str, Any]) -> None:
        super().__init__(schema)
        self._context = context

    async def get_context(self, request: Any, response: Any = None) -> dict[str, Any]:
        return {**self._context, "request": request, "response": response}


def build_app(
    query_service: QueryService,
    query_timeout: float,
    ready: Any,
    exporter: rest.LogExporter | None = None,
    max_body: int = 16 << 20,
    tail_hub: TailHub | None = None,
    alert_engine: AlertEngine | None = None,
    lifecycle: LifecycleManager | None = None,
    export_manager: ExportManager | None = None,
) -> Starlette:
    gql = _GraphQL(
        {
            "query_service": query_service,
            "query_timeout": query_timeout,
            "tail_hub": tail_hub,
            "alert_engine": alert_engine,
            "lifecycle": lifecycle,
            "export_manager": export_manager,
        }
    )
    # the live tail (GraphQL subscriptions, /logs/stream) needs the hub the writer feeds
    live = [WebSocketRoute("/logs/stream", stream_endpoint(tail_hub))] if tail_hub else []

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        if ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "starting"}, status_code=503)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            metrics_route.route(),
            Route("/graphql", gql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", gql),
            *rest.routes(query_service, query_timeout, exporter, max_body),
            *live,
            *(alert_routes(alert_engine) if alert_engine else []),
            *(export_routes(export_manager) if export_manager else []),
        ]
    )
