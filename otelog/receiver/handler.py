"""The one OTLP export handler behind both transports: decode once, write, acknowledge.

Transports (otlp_grpc, otlp_http) only move bytes and map errors to their statuses.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelog.ingest import shedding
from otelog.ingest.limits import ByteBudget, Hold
from otelog.ingest.shedding import Admission, IngestControl
from otelog.ingest.writer import Writer
from otelog.model import DEFAULT_TENANT, LogBatch, SpanBatch
from otelog.receiver.decode import (
    DecodeLimits,
    count_services,
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
    def __init__(
        self, writer: Writer, limits: DecodeLimits, control: IngestControl | None = None
    ) -> None:
        self.writer = writer
        self.limits = limits
        self.control = control or IngestControl(
            ByteBudget(writer.max_pending_bytes, lambda: writer.pending_bytes)
        )

    async def export_logs(
        self, raw: bytes, tenant: str = DEFAULT_TENANT, hold: Hold | None = None
    ) -> ExportResult:
        """Store a serialized ExportLogsServiceRequest; returns once it is durable.

        `hold` is the transport's reservation of the body, made before reading it; the
        bytes stay reserved until the request joins the writer's queue.
        """
        receipt_ns = time.time_ns()
        ctl = self.control
        h = hold if hold is not None else Hold(ctl.budget)
        batch: LogBatch | None = None
        adm: Admission | None = None
        try:
            try:
                h.resize(max(h.n, len(raw)))  # refused here, before decoding, when full
                lite = None
                if ctl.rates.enabled:
                    lite, counts = count_services(raw)
                    ctl.precheck(counts)
                batch, d = decode_logs(raw, receipt_ns, self.limits, lite)
                shedding.count_received_logs(batch, len(raw))
                adm = ctl.admit_logs(batch, raw, h)
                fut: Future[None] | None = None
                if len(adm.batch):
                    fut = self.writer.submit_logs(tenant, adm.batch, adm.raw, receipt_ns)
            finally:
                h.release()  # from here on the writer's queue accounts for the bytes
            if fut is not None:
                await asyncio.wrap_future(fut)
        except Exception as e:
            if adm is not None:
                ctl.refund(adm)
            shedding.count_refused_logs(e, batch)
            raise
        shedding.count_accepted_logs(adm, d.rejected)
        message = "; ".join(m for m in (d.message, adm.message()) if m)
        return ExportResult(d.rejected + adm.sampled_total, message, adm.batch.log_id)

    async def export_traces(
        self,
        raw: bytes,
        tenant: str = DEFAULT_TENANT,
        req: ExportTraceServiceRequest | None = None,
        hold: Hold | None = None,
    ) -> ExportResult:
        ctl = self.control
        h = hold if hold is not None else Hold(ctl.budget)
        batch: SpanBatch | None = None
        try:
            try:
                h.resize(max(h.n, len(raw)))
                if req is None:
                    req = parse_traces_request(raw)
                batch, d = decode_spans(req, time.time_ns(), self.limits)
                shedding.count_received_spans(batch, len(raw))
                fut: Future[None] | None = None
                if len(batch):
                    ctl.admit_spans(len(raw), h)
                    fut = self.writer.submit_spans(tenant, batch, len(raw))
            finally:
                h.release()
            if fut is not None:
                await asyncio.wrap_future(fut)
        except Exception as e:
            shedding.count_refused_spans(e, batch)
            raise
        shedding.count_accepted_spans(batch, d.rejected)
        return ExportResult(d.rejected, d.message)
