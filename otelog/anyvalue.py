"""OTLP AnyValue <-> Python and text: shared by decoding (indexing) and querying (display)."""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

_FLATTEN_DEPTH = 8  # nested maps deeper than this stay in the record, unindexed


def any_value_to_python(v: AnyValue, depth: int = 0) -> Any:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "bytes_value":
        return v.bytes_value.hex()
    if depth > 64:
        return None
    if kind == "array_value":
        return [any_value_to_python(x, depth + 1) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value_to_python(kv.value, depth + 1) for kv in v.kvlist_value.values}
    return None


def attributes_to_python(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value_to_python(kv.value) for kv in kvs}


def _scalar_text(v: AnyValue, kind: str | None) -> str | None:
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return str(v.int_value)
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind == "double_value":
        d = v.double_value
        return str(int(d)) if d.is_integer() else repr(d)
    return None


def flatten_attributes(kvs: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")
        if kind == "kvlist_value":
            if depth < _FLATTEN_DEPTH:
                out.extend(flatten_attributes(v.kvlist_value.values, f"{prefix}{kv.key}.", depth + 1))
            continue
        text = _scalar_text(v, kind)
        if text is not None:
            out.append((prefix + kv.key, text))
    return out


def body_text(v: AnyValue) -> str:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind is None:
        return ""
    text = _scalar_text(v, kind)
    if text is not None:
        return text
    return json.dumps(any_value_to_python(v), separators=(",", ":"), default=str)
