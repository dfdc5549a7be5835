"""OTLP AnyValue <-> Python and text: shared by decoding (indexing) and querying (display)."""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

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
                out.extend(
                    flatten_attributes(v.kvlist_value.values, f"{prefix}{kv.key}.", depth + 1)
                )
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


# ---- attributes as serialized KeyValues (the ingest path never builds KeyValue objects)


def _kv_key(kv: bytes) -> str | None:
    """The key of a serialized KeyValue in canonical short form, else None.

    Canonical: field 1 (key, < 128 bytes) then field 2 (a scalar AnyValue < 128 bytes)
    and nothing else, which is how every protobuf encoder writes a simple attribute.
    """
    if len(kv) < 4 or kv[0] != 0x0A or kv[1] >= 0x80:
        return None
    n = kv[1]
    if len(kv) < n + 4 or kv[2 + n] != 0x12 or kv[3 + n] >= 0x80:
        return None
    if len(kv) != n + 4 + kv[3 + n] or (len(kv) > n + 4 and kv[4 + n] == 0x32):
        return None  # trailing fields, or a nested map to flatten
    try:
        return kv[2 : 2 + n].decode()
    except UnicodeDecodeError:
        return None


def kv_terms(kv: bytes) -> list[tuple[str, bytes]]:
    """(dotted key, canonical scalar KeyValue bytes) for one serialized attribute.

    The common case (short key, scalar value) is the input itself; nested maps are
    flattened into one KeyValue per leaf with a dotted key, like flatten_attributes.
    """
    key = _kv_key(kv)
    if key is not None:
        return [(key, kv)]
    try:
        parsed = KeyValue.FromString(kv)
    except Exception:  # noqa: BLE001 - a record we cannot index is still stored
        return []
    out: list[tuple[str, bytes]] = []
    _flatten_kv(parsed.key, parsed.value, out, 0)
    return out


def _flatten_kv(key: str, v: AnyValue, out: list[tuple[str, bytes]], depth: int) -> None:
    kind = v.WhichOneof("value")
    if kind == "kvlist_value":
        if depth < _FLATTEN_DEPTH:
            for kv in v.kvlist_value.values:
                _flatten_kv(f"{key}.{kv.key}", kv.value, out, depth + 1)
        return
    if kind in ("string_value", "int_value", "double_value", "bool_value"):
        out.append((key, KeyValue(key=key, value=v).SerializeToString()))


def attribute_terms(key: str, text: str) -> list[bytes]:
    """Every serialized scalar KeyValue whose value reads as `text` (see _scalar_text)."""
    values = [AnyValue(string_value=text)]
    if text in ("true", "false"):
        values.append(AnyValue(bool_value=text == "true"))
    try:
        i = int(text)
        if str(i) == text and -(1 << 63) <= i < (1 << 63):
            values.append(AnyValue(int_value=i))
    except ValueError:
        pass
    try:
        d = float(text)
        dv = AnyValue(double_value=d)
        if _scalar_text(dv, "double_value") == text:
            values.append(dv)
    except (ValueError, OverflowError):
        pass
    return [KeyValue(key=key, value=v).SerializeToString() for v in values]


def flatten_serialized(kvs: list[bytes]) -> dict[str, str]:
    """Flattened text attributes of a batch row (for row-at-a-time matching)."""
    out: dict[str, str] = {}
    for kv in kvs:
        try:
            parsed = KeyValue.FromString(kv)
        except Exception:  # noqa: BLE001
            continue
        for k, t in flatten_attributes([parsed]):
            out[k] = t
    return out
