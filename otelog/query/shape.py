"""The JSON shape of one log record outside GraphQL: REST search, `/logs/stream`, exports.

It sits below the API so that every producer of records (the REST layer, export jobs in
otelog/lifecycle) writes the same fields the same way without importing the API.
"""

from __future__ import annotations

import functools
import json
import math
from datetime import UTC, datetime
from typing import Any

from otelog.model import log_id_str
from otelog.query.rows import LogRow

__all__ = ["json_safe", "log_json", "rfc3339"]


@functools.lru_cache(maxsize=4096)
def _second(secs: int) -> str:
    return f"{datetime.fromtimestamp(secs, UTC):%Y-%m-%dT%H:%M:%S}"


def rfc3339(ns: int) -> str:
    """Nanoseconds since the epoch as RFC 3339 in UTC with all nine fraction digits."""
    # records come in runs of one second (exports walk them in time order): format each
    # second once
    secs, frac = divmod(ns, 10**9)
    return f"{_second(secs)}.{frac:09d}Z"


def _replace_non_finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _replace_non_finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_replace_non_finite(x) for x in v]
    return v


def json_safe(v: Any) -> Any:
    """Attribute values as strict JSON: NaN and infinities (valid in OTLP) as strings."""
    try:
        # the C encoder tells at once whether there is anything to replace; walking the
        # values in Python costs several times more, and there rarely is
        json.dumps(v, allow_nan=False)
        return v
    except (ValueError, TypeError):
        return _replace_non_finite(v)


def log_json(r: LogRow, strict: bool = True) -> dict[str, Any]:
    """The record. strict=False keeps non-finite floats in `attributes` as floats: for a
    caller whose encoder refuses them anyway and then asks again, strictly."""
    attrs = r.attributes()
    return {
        "log_id": log_id_str(r.log_id),
        "timestamp": rfc3339(r.ts),
        "service": r.service,
        "level": r.level_name,
        "message": r.body,
        "trace_id": r.trace_id or None,
        "span_id": r.span_id or None,
        "host": r.host or None,
        "attributes": json_safe(attrs) if strict else attrs,
    }
