"""Materialized log rows: what queries return and what residual predicates look at."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourcePb

from otelog.anyvalue import attributes_to_python, body_text, flatten_attributes
from otelog.model import Level, LogBatch


@dataclass
class LogRow:
    ts: int
    log_id: int
    level: int
    service: str
    host: str
    trace_id: str  # hex, "" when absent
    span_id: str
    body: str
    severity_text: str = ""
    _flat_attrs: dict[str, str] | None = None
    flat_resource: dict[str, str] = field(default_factory=dict)
    rec_pb: bytes = b""
    resource_pb: bytes = b""
    scope_pb: bytes = b""

    @property
    def flat_attrs(self) -> dict[str, str]:
        """Scalar attributes as text with dotted keys; decoded only when a filter asks."""
        if self._flat_attrs is None:
            self._flat_attrs = dict(flatten_attributes(self.record().attributes))
        return self._flat_attrs

    @property
    def level_name(self) -> str:
        return Level(self.level).name

    def attributes(self) -> dict[str, Any]:
        return attributes_to_python(LogRecord.FromString(self.rec_pb).attributes)

    def resource(self) -> dict[str, Any]:
        return attributes_to_python(ResourcePb.FromString(self.resource_pb).attributes)

    def record(self) -> LogRecord:
        return LogRecord.FromString(self.rec_pb)


class ResourceCache:
    """Flattened resource attributes per serialized resource, decoded once."""

    def __init__(self) -> None:
        self._cache: dict[bytes, dict[str, str]] = {}

    def flat(self, resource_pb: bytes) -> dict[str, str]:
        d = self._cache.get(resource_pb)
        if d is None:
            d = dict(flatten_attributes(ResourcePb.FromString(resource_pb).attributes))
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[resource_pb] = d
        return d


def row_from_record(
    rec_pb: bytes,
    ts: int,
    log_id: int,
    level: int,
    service: str,
    host: str,
    resource_pb: bytes,
    scope_pb: bytes,
    resources: ResourceCache,
) -> LogRow:
    lr = LogRecord.FromString(rec_pb)
    return LogRow(
        ts=ts,
        log_id=log_id,
        level=level,
        service=service,
        host=host,
        trace_id=lr.trace_id.hex(),
        span_id=lr.span_id.hex(),
        body=body_text(lr.body),
        severity_text=lr.severity_text,
        flat_resource=resources.flat(resource_pb),
        rec_pb=rec_pb,
        resource_pb=resource_pb,
        scope_pb=scope_pb,
    )


def row_from_batch(b: LogBatch, i: int, resources: ResourceCache) -> LogRow:
    r = b.resources[b.res[i]]
    return LogRow(
        ts=b.ts[i],
        log_id=b.log_id[i],
        level=b.level[i],
        service=r.service,
        host=r.host,
        trace_id=b.trace_id[i].hex(),
        span_id=b.span_id[i].hex(),
        body=b.body[i],
        flat_resource=resources.flat(r.resource_pb),
        rec_pb=b.rec[i],
        resource_pb=r.resource_pb,
        scope_pb=r.scope_pb,
    )
