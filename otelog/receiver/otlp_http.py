"""OTLP/HTTP transport (OTLP spec, "OTLP/HTTP"): protobuf and JSON bodies, gzip and zstd."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from google.protobuf.json_format import MessageToJson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from otelog import metrics
from otelog.errors import InvalidArgument, OtelogError, Overloaded, PayloadTooLarge
from otelog.ingest.limits import Hold
from otelog.ingest.shedding import count_refused_request
from otelog.receiver import otlp_json
from otelog.receiver.body import decompress_capped, read_capped
from otelog.receiver.errors import http_status, status_message
from otelog.receiver.handler import ExportResult, OtlpHandler

log = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def _content_kind(request: Request) -> str | None:
    ct = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ct in (PROTOBUF, "application/protobuf"):
        return PROTOBUF
    if ct == JSON:
        return JSON
    return None


def _error(
    code: int, message: str, kind: str | None, headers: dict[str, str] | None = None
) -> Response:
    st = status_message(code, message)
    if kind == PROTOBUF:
        return Response(st.SerializeToString(), code, headers=headers, media_type=PROTOBUF)
    return Response(MessageToJson(st, indent=None).encode(), code, headers=headers, media_type=JSON)


def build_app(handler: OtlpHandler, max_body: int, max_decompressed: int) -> Starlette:
    async def export(
        request: Request,
        signal: str,
        from_pb: Callable[[bytes, Hold], Awaitable[ExportResult]],
        from_json: Callable[[bytes, Hold], Awaitable[ExportResult]],
        response_pb: Callable[[ExportResult], bytes],
        response_json: Callable[[ExportResult], bytes],
    ) -> Response:
        kind = _content_kind(request)
        if kind is None:
            return _error(
                415,
                f"unsupported Content-Type {request.headers.get('content-type')!r}; "
                f"use {PROTOBUF} or {JSON}",
                JSON,
            )
        # The body's bytes count against the ingest budget from before it is read until
        # it joins the writer's queue: a client ignoring 429s cannot grow memory past it.
        hold = Hold(handler.control.budget)
        try:
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) <= max_body:
                hold.grow(int(declared))  # refused here without reading a byte of the body
            body = await read_capped(request.stream(), declared, max_body, hold.at_least)
            body = decompress(body, request.headers.get("content-encoding", ""), hold)
            hold.resize(len(body))
            res = await (from_pb(body, hold) if kind == PROTOBUF else from_json(body, hold))
        except Exception as e:  # noqa: BLE001 - every error maps to a status
            if not isinstance(e, OtelogError):
                log.exception("export failed")
            count_refused_request(signal, e)
            code, message, headers = http_status(e)
            return _error(code, message, kind, headers)
        finally:
            hold.release()
        if kind == PROTOBUF:
            return Response(response_pb(res), 200, media_type=PROTOBUF)
        return Response(response_json(res), 200, media_type=JSON)

    def decompress(body: bytes, encoding: str, hold: Hold) -> bytes:
        """Decompressed within max_decompressed and within what the budget has left."""
        if encoding.strip().lower() in ("", "identity"):
            return body
        budget = hold.budget
        room = budget.limit - budget.used()
        cap = min(max_decompressed, room)
        try:
            out = decompress_capped(body, encoding, max(cap, 0))
        except PayloadTooLarge:
            if cap < max_decompressed:
                raise Overloaded(1.0, "ingest queue full, retry later") from None
            raise
        hold.at_least(len(body) + len(out))  # both are alive until the caller drops `body`
        return out

    async def logs_from_pb(body: bytes, hold: Hold) -> ExportResult:
        return await handler.export_logs(body, hold=hold)

    async def traces_from_pb(body: bytes, hold: Hold) -> ExportResult:
        return await handler.export_traces(body, hold=hold)

    async def logs_from_json(body: bytes, hold: Hold) -> ExportResult:
        req = otlp_json.logs_request_from_json(body)
        return await handler.export_logs(req.SerializeToString(), hold=hold)

    async def traces_from_json(body: bytes, hold: Hold) -> ExportResult:
        req = otlp_json.traces_request_from_json(body)
        return await handler.export_traces(req.SerializeToString(), req=req, hold=hold)

    def logs_pb(r: ExportResult) -> bytes:
        resp = ExportLogsServiceResponse()
        if r.rejected or r.message:
            resp.partial_success.rejected_log_records = r.rejected
            resp.partial_success.error_message = r.message
        return resp.SerializeToString()

    def traces_pb(r: ExportResult) -> bytes:
        resp = ExportTraceServiceResponse()
        if r.rejected or r.message:
            resp.partial_success.rejected_spans = r.rejected
            resp.partial_success.error_message = r.message
        return resp.SerializeToString()

    async def v1_logs(request: Request) -> Response:
        return await export(
            request,
            metrics.SIGNAL_LOGS,
            logs_from_pb,
            logs_from_json,
            logs_pb,
            lambda r: otlp_json.logs_response_json(r.rejected, r.message),
        )

    async def v1_traces(request: Request) -> Response:
        return await export(
            request,
            metrics.SIGNAL_TRACES,
            traces_from_pb,
            traces_from_json,
            traces_pb,
            lambda r: otlp_json.traces_response_json(r.rejected, r.message),
        )

    async def v1_metrics(request: Request) -> Response:
        return _error(
            404,
            "otelog stores logs and traces; OTLP metrics are not supported",
            _content_kind(request) or JSON,
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, f"no OTLP endpoint at {request.url.path}", JSON)

    async def bad_method(request: Request, exc: Exception) -> Response:
        return _error(405, "OTLP/HTTP exports use POST", JSON, {"Allow": "POST"})

    _ = InvalidArgument  # errors raised below the handler are InvalidArgument subclasses
    return Starlette(
        routes=[
            Route("/v1/logs", v1_logs, methods=["POST"]),
            Route("/v1/traces", v1_traces, methods=["POST"]),
            Route("/v1/metrics", v1_metrics, methods=["POST"]),
        ],
        exception_handlers={404: not_found, 405: bad_method},
    )
