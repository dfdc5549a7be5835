"""OTLP/gRPC transport: raw bytes in, the shared handler, protobuf responses out."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from otelog import metrics
from otelog.errors import OtelogError
from otelog.ingest.shedding import count_refused_request
from otelog.receiver.errors import grpc_status
from otelog.receiver.handler import OtlpHandler

log = logging.getLogger(__name__)

LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"


def _identity(b: bytes) -> bytes:
    return b


def build_server(
    handler: OtlpHandler, max_message_bytes: int, max_streams: int, max_rpcs: int | None = None
) -> grpc.aio.Server:
    async def export_logs(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            res = await handler.export_logs(raw)
        except Exception as e:  # noqa: BLE001 - mapped to a status below
            await _abort(context, e, metrics.SIGNAL_LOGS)
        resp = ExportLogsServiceResponse()
        if res.rejected or res.message:
            resp.partial_success.CopyFrom(
                ExportLogsPartialSuccess(
                    rejected_log_records=res.rejected, error_message=res.message
                )
            )
        return resp.SerializeToString()

    async def export_traces(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            res = await handler.export_traces(raw)
        except Exception as e:  # noqa: BLE001
            await _abort(context, e, metrics.SIGNAL_TRACES)
        resp = ExportTraceServiceResponse()
        if res.rejected or res.message:
            resp.partial_success.CopyFrom(
                ExportTracePartialSuccess(rejected_spans=res.rejected, error_message=res.message)
            )
        return resp.SerializeToString()

    async def export_metrics(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "otelog stores logs and traces; metrics are not supported",
        )
        raise AssertionError("unreachable")

    def unary(fn: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=_identity, response_serializer=_identity
        )

    # Flow control, deliberately: gRPC reads a whole message before the handler sees it,
    # so what it can hold outside otelog's byte budget is max_rpcs x max_message_bytes.
    # Calls past max_rpcs are refused at once with RESOURCE_EXHAUSTED (no RetryInfo: the
    # SDKs back off on their own), streams past max_streams wait in the client (HTTP/2
    # SETTINGS_MAX_CONCURRENT_STREAMS; RFC 9113 recommends no less than 100).
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", 4 << 20),
            ("grpc.max_concurrent_streams", max_streams),
            # a second otelog on the same port must fail, not silently share it
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=max_rpcs,
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(LOGS_SERVICE, {"Export": unary(export_logs)}),
            grpc.method_handlers_generic_handler(TRACE_SERVICE, {"Export": unary(export_traces)}),
            grpc.method_handlers_generic_handler(
                METRICS_SERVICE, {"Export": unary(export_metrics)}
            ),
        )
    )
    return server


async def _abort(context: grpc.aio.ServicerContext, err: Exception, signal: str) -> None:
    if not isinstance(err, OtelogError):
        log.exception("export failed", exc_info=err)
    count_refused_request(signal, err)
    code, message, md = grpc_status(err)
    if md:
        context.set_trailing_metadata(tuple(md))
    await context.abort(code, message)
