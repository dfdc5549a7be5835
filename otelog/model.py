"""The records as they flow through otelog: levels and columnar batches.

A batch is decoded once at the edge and then only moves: the writer, the live tail
and the segment builder all read the same columns. Records are never objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

DEFAULT_TENANT = "default"


class Level(IntEnum):
    UNSPECIFIED = 0
    TRACE = 1
    DEBUG = 2
    INFO = 3
    WARN = 4
    ERROR = 5
    FATAL = 6


LEVEL_NAMES = {lv.name: lv for lv in Level}
_TEXT_LEVELS = {
    "TRACE": Level.TRACE,
    "DEBUG": Level.DEBUG,
    "INFO": Level.INFO,
    "INFORMATION": Level.INFO,
    "NOTICE": Level.INFO,
    "WARN": Level.WARN,
    "WARNING": Level.WARN,
    "ERROR": Level.ERROR,
    "ERR": Level.ERROR,
    "FATAL": Level.FATAL,
    "CRITICAL": Level.FATAL,
    "CRIT": Level.FATAL,
    "ALERT": Level.FATAL,
    "EMERGENCY": Level.FATAL,
}
# OTLP logs data model, "Field: SeverityNumber": ranges of four per level.
SEVERITY_LEVELS = bytes([0] + [1 + (n - 1) // 4 for n in range(1, 25)])


def level_of(severity_number: int, severity_text: str) -> Level:
    if 0 < severity_number <= 24:
        return Level(SEVERITY_LEVELS[severity_number])
    if severity_text:
        # e.g. "Error", "WARN2", "info" -> strip a trailing digit as the data model allows
        t = severity_text.strip().upper().rstrip("0123456789")
        return _TEXT_LEVELS.get(t, Level.UNSPECIFIED)
    return Level.UNSPECIFIED


@dataclass(frozen=True)
class Resource:
    """One (resource, scope) pair of a request, shared by its records."""

    service: str
    host: str
    resource_pb: bytes  # serialized opentelemetry Resource
    scope_pb: bytes  # serialized InstrumentationScope


@dataclass
class LogBatch:
    """Log records in columns. Row i of every list belongs to record i."""

    ts: list[int] = field(default_factory=list)  # ns since the epoch
    level: bytearray = field(default_factory=bytearray)
    res: list[int] = field(default_factory=list)  # index into resources
    trace_id: list[bytes] = field(default_factory=list)  # 16 bytes, or b""
    span_id: list[bytes] = field(default_factory=list)  # 8 bytes, or b""
    body: list[str] = field(default_factory=list)  # body as text (non-strings rendered)
    # record attributes, each a serialized KeyValue (see anyvalue.kv_terms)
    attrs: list[list[bytes]] = field(default_factory=list)
    rec: list[bytes] = field(default_factory=list)  # the LogRecord, serialized, lossless
    log_id: list[int] = field(default_factory=list)  # wal_seq << 24 | index
    structured: list[int] = field(default_factory=list)  # rows whose body is not a string
    resources: list[Resource] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ts)


@dataclass
class SpanBatch:
    """Spans ready to be keyed by trace: (trace_id, start_ns, span_id) -> value."""

    trace_id: list[bytes] = field(default_factory=list)
    start_ns: list[int] = field(default_factory=list)
    span_id: list[bytes] = field(default_factory=list)
    service: list[str] = field(default_factory=list)
    span_pb: list[bytes] = field(default_factory=list)  # the Span, serialized, lossless
    res: list[int] = field(default_factory=list)  # index into resources
    resources: list[Resource] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.trace_id)


def log_id_str(log_id: int) -> str:
    return f"{log_id:016x}"


def parse_log_id(text: str) -> int:
    return int(text, 16)
