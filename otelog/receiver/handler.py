"""The one OTLP export handler behind both transports: decode once, write, acknowledge.

Transports (otlp_grpc, otlp_http) only move bytes and map errors to their statuses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelog.ingest.writer import Writer
from otelog.model import DEFAULT_TENANT
from otelog.receiver.decode import (
    DecodeLimits,
    decode_logs,
    decode_spans,
    parse_traces_request,
)


@dataclass
class ExportResult:
    rejected: int = 0
    message: str = ""
    # ids of the stored log records, in request order (set by the writer at commit)
    log_ids: list[int] = field(default_factory=list)


class OtlpHandler:
    def __init__(self, writer: Writer, limits: DecodeLimits) -> None:
        self.writer = writer
        self.limits = limits

    async def export_logs(self, raw: bytes, tenant: str = DEFAULT_TENANT) -> ExportResult:
        """Store a serialized ExportLogsServiceRequest; returns once it is durable."""
        receipt_ns = time.time_ns()
        batch, d = decode_logs(raw, receipt_ns, self.limits)
        if len(batch):
            await self.writer.write_logs(tenant, batch, raw, receipt_ns)
        return ExportResult(d.rejected, d.message, batch.log_id)

    async def export_traces(
        self, raw: bytes, tenant: str = DEFAULT_TENANT, req: ExportTraceServiceRequest | None = None
    ) -> ExportResult:
        if req is None:
            req = parse_traces_request(raw)
        batch, d = decode_spans(req, time.time_ns(), self.limits)
        if len(batch):
            await self.writer.write_spans(tenant, batch, len(raw))
        return ExportResult(d.rejected, d.message)
