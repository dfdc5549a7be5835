"""The JSON shape of one log record outside GraphQL: REST search, `/logs/stream`, exports.

It sits below the API so that every producer of records (the REST layer, export jobs in
otelog/lifecycle) writes the same fields the same way without importing the API.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from otelog.model import log_id_str
from otelog.query.rows import LogRow

__all__ = ["json_safe", "log_json", "rfc3339"]


def rfc3339(ns: int) -> str:
    """Nanoseconds since the epoch as RFC 3339 in UTC with all nine fraction digits."""
    secs, frac = divmod(ns, 10**9)
    return f"{datetime.fromtimestamp(secs, UTC):%Y-%m-%dT%H:%M:%S}.{frac:09d}Z"


def json_safe(v: Any) -> Any:
    """Attribute values as strict JSON: NaN and infinities (valid in OTLP) as strings."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [json_safe(x) for x in v]
    return v


def log_json(r: LogRow) -> dict[str, Any]:
    return {
        "log_id": log_id_str(r.log_id),
        "timestamp": rfc3339(r.ts),
        "service": r.service,
        "level": r.level_name,
        "message": r.body,
        "trace_id": r.trace_id or None,
        "span_id": r.span_id or None,
        "host": r.host or None,
        "attributes": json_safe(r.attributes()),
    }
