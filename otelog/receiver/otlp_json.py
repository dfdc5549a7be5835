"""OTLP/JSON: decode OTLP/HTTP JSON request bodies into protobuf requests, encode responses.

Follows the OTLP specification's JSON mapping
(https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding), which differs from the
generic protobuf JSON mapping (`google.protobuf.json_format`) in the ids: `traceId`, `spanId`
and `parentSpanId` are lowercase hex strings, not base64. Hand-written because json_format is
both wrong for OTLP and two orders of magnitude slower than this one-pass decoder, which builds
the protobuf messages straight from `json` output.

Accepted, as protobuf JSON parsers do:
- lowerCamelCase field names and the proto (snake_case) names; unknown names are ignored;
  `null` means "absent";
- 64-bit integers as decimal strings or JSON numbers (integral values with a fraction or
  exponent such as `1e3` too); enums as integers or as their value names;
- doubles as numbers, numeric strings or "NaN" / "Infinity" / "-Infinity";
- bytes (`bytesValue`) in standard or URL-safe base64, padded or not;
- ids as hex strings of the exact length, any case; "" means absent.

Rejected: JSON that is not strict RFC 8259 UTF-8 (bare NaN/Infinity, control characters in
strings), strings with unpaired surrogate escapes (not representable in protobuf), integers
outside their field's range, and AnyValue nesting deeper than `MAX_ANY_VALUE_DEPTH`.

Every malformed input raises `InvalidArgument` whose message names the offending path, e.g.
`resourceLogs[0].scopeLogs[1].logRecords[3].timeUnixNano: expected an integer, got boolean`.
No other exception escapes for any bytes input.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from collections.abc import Callable
from decimal import Decimal, DecimalException
from typing import Any, NoReturn, Protocol, TypeVar, cast

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    EntityRef,
    InstrumentationScope,
    KeyValue,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from otelog.errors import InvalidArgument

__all__ = [
    "MAX_ANY_VALUE_DEPTH",
    "logs_request_from_json",
    "logs_response_json",
    "traces_request_from_json",
    "traces_response_json",
]

MAX_ANY_VALUE_DEPTH = 32
"""Deepest accepted AnyValue nesting (a scalar attribute value is depth 1).

32 levels of kvlistValue inside a span event or link attribute (the deepest spot, three
messages per level) is exactly the deepest that protobuf's default 100-message recursion limit
lets parse again, so whatever is decoded here can be serialized and re-parsed downstream.
"""

_U32_MAX = 2**32 - 1
_I32_MIN = -(2**31)
_I32_MAX = 2**31 - 1
_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_U64_MAX = 2**64 - 1
_TOO_BIG = 10**40  # stands in for integers too long to convert; always out of range

_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_URLSAFE_TO_STD = str.maketrans("-_", "+/")
_SPECIAL_DOUBLES = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
_SURROGATE = "string contains an unpaired UTF-16 surrogate"
_SURROGATES = re.compile("[\ud800-\udfff]")

M = TypeVar("M")
M_co = TypeVar("M_co", covariant=True)


class _Messages(Protocol[M_co]):
    """A repeated message field (RepeatedCompositeFieldContainer)."""

    def add(self) -> M_co: ...


class _Strings(Protocol):
    """A repeated string field (RepeatedScalarFieldContainer[str])."""

    def extend(self, values: list[str], /) -> None: ...


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class _Fail(Exception):
    """Internal decode error; `path` gathers segments (".name", "[i]") innermost first.

    Raised at the failing field and completed by each enclosing level on the way out, so
    the happy path never builds a path string.
    """

    def __init__(self, message: str, *path: str) -> None:
        super().__init__(message)
        self.message = message
        self.path = list(path)

    def render(self) -> str:
        where = "".join(reversed(self.path)).removeprefix(".")
        return f"{where}: {self.message}" if where else self.message


def _clip(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(value: Any) -> str:
    """A short, log-safe description of a JSON value for error messages."""
    t = type(value)
    if value is None:
        return "null"
    if t is bool:
        return "boolean"
    if t is str:
        return "string " + _clip(json.dumps(value[:64]))
    if t is int or t is Decimal:
        return "number " + _clip(str(value))
    if t is list:
        return "array"
    if t is dict:
        return "object"
    return t.__name__  # pragma: no cover - json produces nothing else


def _expected(what: str, value: Any) -> str:
    return f"expected {what}, got {_describe(value)}"


def _surrogate(item: Any, index: int, seg: str) -> _Fail:
    """The error for list element `item`, which holds a string protobuf cannot encode.

    JSON escapes can spell lone UTF-16 surrogates ("\\ud800"), which are not Unicode
    scalar values; protobuf refuses them when a field is set. Only then is the element
    searched for the offending string (known fields only; iteratively, for any depth).
    """
    stack: list[tuple[Any, tuple[str, ...]]] = [(item, ())]
    while stack:
        value, path = stack.pop()
        t = type(value)
        if t is str:
            if _SURROGATES.search(value):
                return _Fail(_SURROGATE, *path, f"[{index}]", seg)
        elif t is dict:
            stack.extend((v, ("." + k, *path)) for k, v in value.items() if k in _FIELD_NAMES)
        elif t is list:
            stack.extend((v, (f"[{i}]", *path)) for i, v in enumerate(value))
    return _Fail(_SURROGATE, f"[{index}]", seg)


# --------------------------------------------------------------------------------------
# JSON parsing
# --------------------------------------------------------------------------------------


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON (use the string {json.dumps(name)})")


def _parse_float(text: str) -> Decimal:
    # Decimal keeps every number exact: integral values written with a fraction or exponent
    # convert to int losslessly, and float(Decimal) rounds exactly like float(str).
    try:
        return Decimal(text)
    except DecimalException:
        raise ValueError(f"number {_clip(text)} is out of range") from None


_DECODER = json.JSONDecoder(parse_float=_parse_float, parse_constant=_reject_constant)


def _load(body: bytes) -> Any:
    try:
        text = str(body, "utf-8")
    except UnicodeDecodeError as e:
        raise InvalidArgument(
            f"invalid JSON: body is not valid UTF-8 ({e.reason} at byte {e.start})"
        ) from None
    text = text.removeprefix("\ufeff")  # RFC 8259 lets parsers ignore a byte order mark
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise InvalidArgument("invalid JSON: nesting too deep") from None
    except ValueError as e:  # JSONDecodeError, integer digit limit, our hooks
        raise InvalidArgument(f"invalid JSON: {e}") from None


def _decode(decode: Callable[[Any, M], None], doc: Any, message: M) -> M:
    try:
        decode(doc, message)
    except _Fail as e:
        raise InvalidArgument(e.render()) from None
    except (ValueError, TypeError, ArithmeticError, RecursionError) as e:
        # Safety net: the decoders check types and ranges before touching protobuf, so this
        # is never expected; a hostile body must still not become a 500.
        raise InvalidArgument(f"invalid OTLP/JSON request: {e}") from None
    return message


# --------------------------------------------------------------------------------------
# Field names
# --------------------------------------------------------------------------------------


def _names(descriptor: Any) -> tuple[frozenset[str], dict[str, str]]:
    """(the lowerCamelCase names, {camel or snake name: camel name}) of a message's fields."""
    camel = frozenset(f.json_name for f in descriptor.fields)
    aliases = {f.json_name: f.json_name for f in descriptor.fields}
    aliases.update({f.name: f.json_name for f in descriptor.fields})
    return camel, aliases


def _normalize(obj: dict[str, Any], aliases: dict[str, str]) -> dict[str, Any]:
    """Rename snake_case keys to lowerCamelCase and drop unknown keys and nulls."""
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in obj.items():
        name = aliases.get(key)
        if name is None or value is None:
            continue
        if name in out:
            raise _Fail(f"field {json.dumps(name)} is given twice (as {spelled[name]} and {key})")
        out[name] = value
        spelled[name] = key
    return out


def _object(
    value: Any, names: tuple[frozenset[str], dict[str, str]], seg: str = ""
) -> dict[str, Any]:
    if type(value) is not dict:
        raise _Fail(_expected("an object", value), seg)
    if names[0].issuperset(value):
        return value
    return _normalize(value, names[1])


def _enum_names(descriptor: Any) -> dict[str, int]:
    return {v.name: v.number for v in descriptor.values}


_EXPORT_LOGS = _names(ExportLogsServiceRequest.DESCRIPTOR)
_RESOURCE_LOGS = _names(ResourceLogs.DESCRIPTOR)
_SCOPE_LOGS = _names(ScopeLogs.DESCRIPTOR)
_LOG_RECORD_KEYS, _LOG_RECORD_ALIASES = _names(LogRecord.DESCRIPTOR)
_EXPORT_TRACES = _names(ExportTraceServiceRequest.DESCRIPTOR)
_RESOURCE_SPANS = _names(ResourceSpans.DESCRIPTOR)
_SCOPE_SPANS = _names(ScopeSpans.DESCRIPTOR)
_SPAN_KEYS, _SPAN_ALIASES = _names(Span.DESCRIPTOR)
_EVENT = _names(Span.Event.DESCRIPTOR)
_LINK = _names(Span.Link.DESCRIPTOR)
_STATUS = _names(Status.DESCRIPTOR)
_RESOURCE = _names(Resource.DESCRIPTOR)
_ENTITY_REF = _names(EntityRef.DESCRIPTOR)
_SCOPE = _names(InstrumentationScope.DESCRIPTOR)
_KV_KEYS, _KV_ALIASES = _names(KeyValue.DESCRIPTOR)
_VALUES = _names(AnyValue.DESCRIPTOR.fields_by_name["array_value"].message_type)

_FIELD_NAMES = frozenset(
    name
    for message in (
        ExportLogsServiceRequest,
        ResourceLogs,
        ScopeLogs,
        LogRecord,
        ExportTraceServiceRequest,
        ResourceSpans,
        ScopeSpans,
        Span,
        Span.Event,
        Span.Link,
        Status,
        Resource,
        EntityRef,
        InstrumentationScope,
        KeyValue,
        AnyValue,
    )
    for name in _names(message.DESCRIPTOR)[1]
) | {"values"}

_SEVERITY_NUMBERS = _enum_names(SeverityNumber.DESCRIPTOR)
_SPAN_KINDS = _enum_names(Span.SpanKind.DESCRIPTOR)
_STATUS_CODES = _enum_names(Status.StatusCode.DESCRIPTOR)

# --------------------------------------------------------------------------------------
# Scalars
# --------------------------------------------------------------------------------------


def _string(value: Any, seg: str) -> str:
    if type(value) is not str:
        raise _Fail(_expected("a string", value), seg)
    return value


def _decimal(text: str, seg: str) -> Decimal:
    """A number given as a string (already matched against JSON's number grammar)."""
    try:
        return Decimal(text)
    except DecimalException:  # an exponent beyond what Decimal represents
        raise _Fail(f"{_describe(text)} is out of range", seg) from None


def _int_from_decimal(number: Decimal, original: Any, seg: str) -> int:
    if number.is_zero():
        return 0
    if number.adjusted() > 38:
        return -_TOO_BIG if number < 0 else _TOO_BIG
    if number != number.to_integral_value():
        raise _Fail(_expected("an integer", original), seg)
    return int(number)


def _int_from_string(text: str, seg: str) -> int:
    if text.isascii():
        negative = text.startswith("-")
        digits = text[1:] if negative else text
        if digits.isdigit():  # ASCII digits only (isascii above): no "1_0", " 1", "+1", "0x1"
            if len(digits) > 38:  # keep int() far from its digit limit
                digits = digits.lstrip("0") or "0"
                if len(digits) > 38:
                    return -_TOO_BIG if negative else _TOO_BIG
            number = int(digits)
            return -number if negative else number
        if _JSON_NUMBER.fullmatch(text):  # a fraction or exponent, e.g. "1e3", "5.0"
            return _int_from_decimal(_decimal(text, seg), text, seg)
    raise _Fail(_expected("an integer", text), seg)


def _int(value: Any, seg: str, low: int, high: int, type_name: str) -> int:
    t = type(value)
    number: int
    if t is int:
        number = value
    elif t is str:
        number = _int_from_string(value, seg)
    elif t is Decimal:
        number = _int_from_decimal(value, value, seg)
    else:
        raise _Fail(_expected("an integer", value), seg)
    if low <= number <= high:
        return number
    raise _Fail(f"{_describe(value)} is out of range for {type_name}", seg)


def _uint64(value: Any, seg: str) -> int:
    if type(value) is str and value.isascii() and value.isdigit() and len(value) < 20:
        return int(value)
    return _int(value, seg, 0, _U64_MAX, "uint64")


def _int64(value: Any, seg: str) -> int:
    if type(value) is str and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    return _int(value, seg, _I64_MIN, _I64_MAX, "int64")


def _uint32(value: Any, seg: str) -> int:
    if type(value) is int and 0 <= value <= _U32_MAX:
        return value
    return _int(value, seg, 0, _U32_MAX, "uint32")


def _int32(value: Any, seg: str) -> int:
    return _int(value, seg, _I32_MIN, _I32_MAX, "int32")


def _enum(value: Any, seg: str, names: dict[str, int]) -> int:
    if type(value) is int and _I32_MIN <= value <= _I32_MAX:
        return value  # proto3 enums are open: unknown numbers are kept
    if type(value) is str:
        number = names.get(value)
        if number is not None:
            return number
        if not _JSON_NUMBER.fullmatch(value):
            raise _Fail(f"unknown enum value {_clip(json.dumps(value[:64]))}", seg)
    return _int(value, seg, _I32_MIN, _I32_MAX, "an enum (int32)")


def _double(value: Any, seg: str) -> float:
    t = type(value)
    if t is Decimal or t is int:
        try:
            number = float(value)
        except OverflowError:
            number = float("inf")
        if math.isfinite(number):
            return number
        raise _Fail(f"{_describe(value)} is out of range for double", seg)
    if t is str:
        special = _SPECIAL_DOUBLES.get(value)
        if special is not None:
            return special
        if _JSON_NUMBER.fullmatch(value):
            return _double(_decimal(value, seg), seg)
    raise _Fail(_expected('a number or "NaN", "Infinity", "-Infinity"', value), seg)


def _hex_id(value: Any, size: int, seg: str) -> bytes:
    """A trace (16 bytes) or span (8 bytes) id; "" is an absent id (b"")."""
    if type(value) is not str:
        raise _Fail(_expected("a hex string", value), seg)
    if not value:
        return b""
    if len(value) != 2 * size:
        raise _Fail(
            f"expected {2 * size} hex characters ({size} bytes), got {len(value)} characters", seg
        )
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != size:  # fromhex skips whitespace
        raise _Fail(_expected(f"{2 * size} hex characters", value), seg)
    return raw


def _base64(value: Any, seg: str) -> bytes:
    if type(value) is not str:
        raise _Fail(_expected("a base64 string", value), seg)
    text = value.translate(_URLSAFE_TO_STD) if "-" in value or "_" in value else value
    if len(text) % 4:
        text += "=" * (-len(text) % 4)
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise _Fail(_expected("base64", value), seg) from None


def _strings(value: Any, container: _Strings, seg: str) -> None:
    if type(value) is not list:
        raise _Fail(_expected("an array", value), seg)
    for i, item in enumerate(value):
        if type(item) is not str:
            raise _Fail(_expected("a string", item), f"[{i}]", seg)
    try:
        container.extend(value)
    except UnicodeEncodeError:
        bad = next((i for i, item in enumerate(value) if _SURROGATES.search(item)), 0)
        raise _Fail(_SURROGATE, f"[{bad}]", seg) from None


# --------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------


def _repeated(
    items: Any,
    container: _Messages[M],
    decode: Callable[[Any, M], None],
    seg: str,
) -> None:
    if type(items) is not list:
        raise _Fail(_expected("an array", items), seg)
    add = container.add
    for i, item in enumerate(items):
        try:
            decode(item, add())
        except _Fail as e:
            e.path.append(f"[{i}]")
            e.path.append(seg)
            raise
        except UnicodeEncodeError:
            raise _surrogate(item, i, seg) from None


def _sub(decode: Callable[[Any, M], None], value: Any, message: M, seg: str) -> None:
    try:
        decode(value, message)
    except _Fail as e:
        e.path.append(seg)
        raise


# AnyValue: one setter per oneof member, looked up by the member's JSON key (either
# spelling). Each takes (value, the AnyValue to fill, its depth, the key for error paths).


def _set_string(value: Any, av: AnyValue, depth: int, key: str) -> None:
    if type(value) is not str:
        raise _Fail(_expected("a string", value), "." + key)
    av.string_value = value


def _set_bool(value: Any, av: AnyValue, depth: int, key: str) -> None:
    if type(value) is not bool:
        raise _Fail(_expected("a boolean", value), "." + key)
    av.bool_value = value


def _set_int(value: Any, av: AnyValue, depth: int, key: str) -> None:
    av.int_value = _int64(value, "." + key)


def _set_double(value: Any, av: AnyValue, depth: int, key: str) -> None:
    av.double_value = _double(value, "." + key)


def _set_bytes(value: Any, av: AnyValue, depth: int, key: str) -> None:
    av.bytes_value = _base64(value, "." + key)


def _set_strindex(value: Any, av: AnyValue, depth: int, key: str) -> None:
    av.string_value_strindex = _int32(value, "." + key)


def _set_array(value: Any, av: AnyValue, depth: int, key: str) -> None:
    seg = "." + key
    array = av.array_value
    array.SetInParent()
    values = _object(value, _VALUES, seg).get("values")
    if values is None:
        return
    if type(values) is not list:
        raise _Fail(_expected("an array", values), ".values", seg)
    if values and depth >= MAX_ANY_VALUE_DEPTH:
        raise _Fail(f"AnyValue nesting is deeper than {MAX_ANY_VALUE_DEPTH} levels", seg)
    add = array.values.add
    for i, item in enumerate(values):
        try:
            _any_value(item, add(), depth + 1)
        except _Fail as e:
            e.path.extend((f"[{i}]", ".values", seg))
            raise
        except UnicodeEncodeError:
            e2 = _surrogate(item, i, ".values")
            e2.path.append(seg)
            raise e2 from None


def _set_kvlist(value: Any, av: AnyValue, depth: int, key: str) -> None:
    seg = "." + key
    kvlist = av.kvlist_value
    kvlist.SetInParent()
    values = _object(value, _VALUES, seg).get("values")
    if values is None:
        return
    if values and depth >= MAX_ANY_VALUE_DEPTH:
        raise _Fail(f"AnyValue nesting is deeper than {MAX_ANY_VALUE_DEPTH} levels", seg)
    try:
        _key_values(values, kvlist.values, depth + 1, ".values")
    except _Fail as e:
        e.path.append(seg)
        raise


_AnyValueSetter = Callable[[Any, AnyValue, int, str], None]
_SETTER_BY_FIELD: dict[str, _AnyValueSetter] = {
    "string_value": _set_string,
    "bool_value": _set_bool,
    "int_value": _set_int,
    "double_value": _set_double,
    "array_value": _set_array,
    "kvlist_value": _set_kvlist,
    "bytes_value": _set_bytes,
    "string_value_strindex": _set_strindex,
}
if set(_SETTER_BY_FIELD) != set(AnyValue.DESCRIPTOR.fields_by_name):  # pragma: no cover
    raise ImportError("AnyValue's fields are not the ones this decoder knows")
_ANY_VALUE_SETTERS: dict[str, _AnyValueSetter] = {}
for _field in AnyValue.DESCRIPTOR.fields:
    _ANY_VALUE_SETTERS[_field.name] = _SETTER_BY_FIELD[_field.name]
    _ANY_VALUE_SETTERS[_field.json_name] = _SETTER_BY_FIELD[_field.name]


def _any_value(obj: Any, av: AnyValue, depth: int) -> None:
    """Fill `av` from its JSON object; `depth` is 1 for a top-level value (body, attribute)."""
    if type(obj) is not dict:
        raise _Fail(_expected("an object", obj))
    if len(obj) == 1:  # the usual shape: exactly one member
        [(key, value)] = obj.items()
        setter = _ANY_VALUE_SETTERS.get(key)
        if setter is not None and value is not None:
            setter(value, av, depth, key)
            return
    found = ""
    for key, value in obj.items():
        setter = _ANY_VALUE_SETTERS.get(key)
        if setter is None or value is None:
            continue  # unknown member or null: absent
        if found:
            raise _Fail(f"AnyValue has more than one value ({found} and {key})")
        found = key
        setter(value, av, depth, key)
    if not found:
        av.SetInParent()  # `{}`: a present, empty value


def _key_values(items: Any, container: _Messages[KeyValue], depth: int, seg: str) -> None:
    """A list of KeyValue (attributes, kvlistValue.values); values nest at `depth`."""
    if type(items) is not list:
        raise _Fail(_expected("an array", items), seg)
    add = container.add
    for i, obj in enumerate(items):
        try:
            if type(obj) is not dict:
                raise _Fail(_expected("an object", obj))
            if not _KV_KEYS.issuperset(obj):
                obj = _normalize(obj, _KV_ALIASES)
            kv = add()
            key = obj.get("key")
            if key is not None:
                if type(key) is not str:
                    raise _Fail(_expected("a string", key), ".key")
                kv.key = key
            value = obj.get("value")
            if value is not None:
                # Inlined fast path for the most common attribute value: a lone string.
                text = value.get("stringValue") if type(value) is dict and len(value) == 1 else None
                if type(text) is str:
                    kv.value.string_value = text
                else:
                    try:
                        _any_value(value, kv.value, depth)
                    except _Fail as e:
                        e.path.append(".value")
                        raise
            index = obj.get("keyStrindex")
            if index is not None:
                kv.key_strindex = _int32(index, ".keyStrindex")
        except _Fail as e:
            e.path.append(f"[{i}]")
            e.path.append(seg)
            raise
        except UnicodeEncodeError:
            raise _surrogate(items[i], i, seg) from None


def _entity_ref(obj: Any, ref: EntityRef) -> None:
    obj = _object(obj, _ENTITY_REF)
    v = obj.get("schemaUrl")
    if v is not None:
        ref.schema_url = _string(v, ".schemaUrl")
    v = obj.get("type")
    if v is not None:
        ref.type = _string(v, ".type")
    v = obj.get("idKeys")
    if v is not None:
        _strings(v, ref.id_keys, ".idKeys")
    v = obj.get("descriptionKeys")
    if v is not None:
        _strings(v, ref.description_keys, ".descriptionKeys")


def _resource(obj: Any, resource: Resource) -> None:
    obj = _object(obj, _RESOURCE)
    resource.SetInParent()
    v = obj.get("attributes")
    if v is not None:
        _key_values(v, resource.attributes, 1, ".attributes")
    v = obj.get("droppedAttributesCount")
    if v is not None:
        resource.dropped_attributes_count = _uint32(v, ".droppedAttributesCount")
    v = obj.get("entityRefs")
    if v is not None:
        _repeated(v, resource.entity_refs, _entity_ref, ".entityRefs")


def _scope(obj: Any, scope: InstrumentationScope) -> None:
    obj = _object(obj, _SCOPE)
    scope.SetInParent()
    v = obj.get("name")
    if v is not None:
        scope.name = _string(v, ".name")
    v = obj.get("version")
    if v is not None:
        scope.version = _string(v, ".version")
    v = obj.get("attributes")
    if v is not None:
        _key_values(v, scope.attributes, 1, ".attributes")
    v = obj.get("droppedAttributesCount")
    if v is not None:
        scope.dropped_attributes_count = _uint32(v, ".droppedAttributesCount")


# ---- logs ----------------------------------------------------------------------------


def _log_record(obj: Any, record: LogRecord) -> None:
    if type(obj) is not dict:
        raise _Fail(_expected("an object", obj))
    if not _LOG_RECORD_KEYS.issuperset(obj):
        obj = _normalize(obj, _LOG_RECORD_ALIASES)
    v = obj.get("timeUnixNano")
    if v is not None:
        record.time_unix_nano = _uint64(v, ".timeUnixNano")
    v = obj.get("observedTimeUnixNano")
    if v is not None:
        record.observed_time_unix_nano = _uint64(v, ".observedTimeUnixNano")
    v = obj.get("severityNumber")
    if v is not None:
        number = _enum(v, ".severityNumber", _SEVERITY_NUMBERS)
        record.severity_number = cast("SeverityNumber.ValueType", number)
    v = obj.get("severityText")
    if v is not None:
        if type(v) is not str:
            raise _Fail(_expected("a string", v), ".severityText")
        record.severity_text = v
    v = obj.get("body")
    if v is not None:
        # Inlined fast path for the most common body: a lone string.
        text = v.get("stringValue") if type(v) is dict and len(v) == 1 else None
        if type(text) is str:
            record.body.string_value = text
        else:
            try:
                _any_value(v, record.body, 1)
            except _Fail as e:
                e.path.append(".body")
                raise
    v = obj.get("attributes")
    if v is not None:
        _key_values(v, record.attributes, 1, ".attributes")
    v = obj.get("droppedAttributesCount")
    if v is not None:
        record.dropped_attributes_count = _uint32(v, ".droppedAttributesCount")
    v = obj.get("flags")
    if v is not None:
        record.flags = _uint32(v, ".flags")
    v = obj.get("traceId")
    if v is not None:
        record.trace_id = _hex_id(v, 16, ".traceId")
    v = obj.get("spanId")
    if v is not None:
        record.span_id = _hex_id(v, 8, ".spanId")
    v = obj.get("eventName")
    if v is not None:
        record.event_name = _string(v, ".eventName")


def _scope_logs(obj: Any, scope_logs: ScopeLogs) -> None:
    obj = _object(obj, _SCOPE_LOGS)
    v = obj.get("scope")
    if v is not None:
        _sub(_scope, v, scope_logs.scope, ".scope")
    v = obj.get("logRecords")
    if v is not None:
        _repeated(v, scope_logs.log_records, _log_record, ".logRecords")
    v = obj.get("schemaUrl")
    if v is not None:
        scope_logs.schema_url = _string(v, ".schemaUrl")


def _resource_logs(obj: Any, resource_logs: ResourceLogs) -> None:
    obj = _object(obj, _RESOURCE_LOGS)
    v = obj.get("resource")
    if v is not None:
        _sub(_resource, v, resource_logs.resource, ".resource")
    v = obj.get("scopeLogs")
    if v is not None:
        _repeated(v, resource_logs.scope_logs, _scope_logs, ".scopeLogs")
    v = obj.get("schemaUrl")
    if v is not None:
        resource_logs.schema_url = _string(v, ".schemaUrl")


def _export_logs(doc: Any, request: ExportLogsServiceRequest) -> None:
    if type(doc) is not dict:
        raise _Fail(_expected("a JSON object", doc))
    v = _object(doc, _EXPORT_LOGS).get("resourceLogs")
    if v is not None:
        _repeated(v, request.resource_logs, _resource_logs, ".resourceLogs")


# ---- traces --------------------------------------------------------------------------


def _status(obj: Any, status: Status) -> None:
    obj = _object(obj, _STATUS)
    status.SetInParent()
    v = obj.get("message")
    if v is not None:
        status.message = _string(v, ".message")
    v = obj.get("code")
    if v is not None:
        status.code = cast("Status.StatusCode.ValueType", _enum(v, ".code", _STATUS_CODES))


def _event(obj: Any, event: Span.Event) -> None:
    obj = _object(obj, _EVENT)
    v = obj.get("timeUnixNano")
    if v is not None:
        event.time_unix_nano = _uint64(v, ".timeUnixNano")
    v = obj.get("name")
    if v is not None:
        event.name = _string(v, ".name")
    v = obj.get("attributes")
    if v is not None:
        _key_values(v, event.attributes, 1, ".attributes")
    v = obj.get("droppedAttributesCount")
    if v is not None:
        event.dropped_attributes_count = _uint32(v, ".droppedAttributesCount")


def _link(obj: Any, link: Span.Link) -> None:
    obj = _object(obj, _LINK)
    v = obj.get("traceId")
    if v is not None:
        link.trace_id = _hex_id(v, 16, ".traceId")
    v = obj.get("spanId")
    if v is not None:
        link.span_id = _hex_id(v, 8, ".spanId")
    v = obj.get("traceState")
    if v is not None:
        link.trace_state = _string(v, ".traceState")
    v = obj.get("attributes")
    if v is not None:
        _key_values(v, link.attributes, 1, ".attributes")
    v = obj.get("droppedAttributesCount")
    if v is not None:
        link.dropped_attributes_count = _uint32(v, ".droppedAttributesCount")
    v = obj.get("flags")
    if v is not None:
        link.flags = _uint32(v, ".flags")


def _span(obj: Any, span: Span) -> None:
    if type(obj) is not dict:
        raise _Fail(_expected("an object", obj))
    if not _SPAN_KEYS.issuperset(obj):
        obj = _normalize(obj, _SPAN_ALIASES)
    v = obj.get("traceId")
    if v is not None:
        span.trace_id = _hex_id(v, 16, ".traceId")
    v = obj.get("spanId")
    if v is not None:
        span.span_id = _hex_id(v, 8, ".spanId")
    v = obj.get("traceState")
    if v is not None:
        span.trace_state = _string(v, ".traceState")
    v = obj.get("parentSpanId")
    if v is not None:
        span.parent_span_id = _hex_id(v, 8, ".parentSpanId")
    v = obj.get("flags")
    if v is not None:
        span.flags = _uint32(v, ".flags")
    v = obj.get("name")
    if v is not None:
        if type(v) is not str:
            raise _Fail(_expected("a string", v), ".name")
        span.name = v
    v = obj.get("kind")
    if v is not None:
        span.kind = cast("Span.SpanKind.ValueType", _enum(v, ".kind", _SPAN_KINDS))
    v = obj.get("startTimeUnixNano")
    if v is not None:
        span.start_time_unix_nano = _uint64(v, ".startTimeUnixNano")
    v = obj.get("endTimeUnixNano")
    if v is not None:
        span.end_time_unix_nano = _uint64(v, ".endTimeUnixNano")
    v = obj.get("attributes")
    if v is not None:
        _key_values(v, span.attributes, 1, ".attributes")
    v = obj.get("droppedAttributesCount")
    if v is not None:
        span.dropped_attributes_count = _uint32(v, ".droppedAttributesCount")
    v = obj.get("events")
    if v is not None:
        _repeated(v, span.events, _event, ".events")
    v = obj.get("droppedEventsCount")
    if v is not None:
        span.dropped_events_count = _uint32(v, ".droppedEventsCount")
    v = obj.get("links")
    if v is not None:
        _repeated(v, span.links, _link, ".links")
    v = obj.get("droppedLinksCount")
    if v is not None:
        span.dropped_links_count = _uint32(v, ".droppedLinksCount")
    v = obj.get("status")
    if v is not None:
        _sub(_status, v, span.status, ".status")


def _scope_spans(obj: Any, scope_spans: ScopeSpans) -> None:
    obj = _object(obj, _SCOPE_SPANS)
    v = obj.get("scope")
    if v is not None:
        _sub(_scope, v, scope_spans.scope, ".scope")
    v = obj.get("spans")
    if v is not None:
        _repeated(v, scope_spans.spans, _span, ".spans")
    v = obj.get("schemaUrl")
    if v is not None:
        scope_spans.schema_url = _string(v, ".schemaUrl")


def _resource_spans(obj: Any, resource_spans: ResourceSpans) -> None:
    obj = _object(obj, _RESOURCE_SPANS)
    v = obj.get("resource")
    if v is not None:
        _sub(_resource, v, resource_spans.resource, ".resource")
    v = obj.get("scopeSpans")
    if v is not None:
        _repeated(v, resource_spans.scope_spans, _scope_spans, ".scopeSpans")
    v = obj.get("schemaUrl")
    if v is not None:
        resource_spans.schema_url = _string(v, ".schemaUrl")


def _export_traces(doc: Any, request: ExportTraceServiceRequest) -> None:
    if type(doc) is not dict:
        raise _Fail(_expected("a JSON object", doc))
    v = _object(doc, _EXPORT_TRACES).get("resourceSpans")
    if v is not None:
        _repeated(v, request.resource_spans, _resource_spans, ".resourceSpans")


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def logs_request_from_json(body: bytes) -> ExportLogsServiceRequest:
    """Decode an OTLP/HTTP JSON logs request body; raises InvalidArgument if malformed."""
    return _decode(_export_logs, _load(body), ExportLogsServiceRequest())


def traces_request_from_json(body: bytes) -> ExportTraceServiceRequest:
    """Decode an OTLP/HTTP JSON traces request body; raises InvalidArgument if malformed."""
    return _decode(_export_traces, _load(body), ExportTraceServiceRequest())


def _response_json(count_field: str, rejected: int, message: str) -> bytes:
    if type(rejected) is not int or not 0 <= rejected <= _I64_MAX:
        raise ValueError(f"rejected must be an int in [0, 2**63), got {rejected!r}")
    if not isinstance(message, str):
        raise TypeError(f"message must be a str, got {type(message).__name__}")
    partial: dict[str, str] = {}
    if rejected:
        partial[count_field] = str(rejected)  # int64: a string in protobuf JSON
    if message:
        partial["errorMessage"] = message
    if not partial:
        return b"{}"
    return json.dumps({"partialSuccess": partial}, separators=(",", ":")).encode("ascii")


def logs_response_json(rejected: int = 0, message: str = "") -> bytes:
    """An ExportLogsServiceResponse as OTLP/JSON (`{}` when everything was accepted)."""
    return _response_json("rejectedLogRecords", rejected, message)


def traces_response_json(rejected: int = 0, message: str = "") -> bytes:
    """An ExportTraceServiceResponse as OTLP/JSON (`{}` when everything was accepted)."""
    return _response_json("rejectedSpans", rejected, message)
