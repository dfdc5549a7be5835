"""OTLP/JSON request decoding and response encoding (otelog.receiver.otlp_json)."""

from __future__ import annotations

import base64
import copy
import json
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    EntityRef,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from otelog.errors import InvalidArgument
from otelog.receiver.otlp_json import (
    MAX_ANY_VALUE_DEPTH,
    logs_request_from_json,
    logs_response_json,
    traces_request_from_json,
    traces_response_json,
)

Decoder = Callable[[bytes], Message]
JSON = Any

TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")
PARENT_ID = bytes.fromhex("0102030405060708")
U64_MAX = 2**64 - 1
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1
SAFETY_NET = "invalid OTLP/JSON request"  # the decoder's catch-all; must never be reached


# --------------------------------------------------------------------------------------
# A small OTLP/JSON encoder, written from the spec (independent of the decoder):
# lowerCamelCase keys, hex trace/span ids, base64 bytes, 64-bit integers as strings,
# enums as integers, non-finite doubles as "NaN"/"Infinity"/"-Infinity".
# --------------------------------------------------------------------------------------

HEX_ID_FIELDS = {"trace_id", "span_id", "parent_span_id"}
INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_SINT64,
}


def encode(
    message: Message,
    *,
    int64_as_numbers: bool = False,
    enum_names: bool = False,
    snake_case: bool = False,
) -> dict[str, JSON]:
    def scalar(field: FieldDescriptor, value: Any) -> JSON:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            return encode(
                value,
                int64_as_numbers=int64_as_numbers,
                enum_names=enum_names,
                snake_case=snake_case,
            )
        if field.type == FieldDescriptor.TYPE_BYTES:
            if field.name in HEX_ID_FIELDS:
                return value.hex()
            return base64.b64encode(value).decode("ascii")
        if field.type in INT64_TYPES:
            return value if int64_as_numbers else str(value)
        if field.type == FieldDescriptor.TYPE_ENUM:
            return field.enum_type.values_by_number[value].name if enum_names else value
        if field.type == FieldDescriptor.TYPE_DOUBLE:
            if math.isnan(value):
                return "NaN"
            if math.isinf(value):
                return "Infinity" if value > 0 else "-Infinity"
        return value

    out: dict[str, JSON] = {}
    for field, value in message.ListFields():
        key = field.name if snake_case else field.json_name
        if field.is_repeated:
            out[key] = [scalar(field, item) for item in value]
        else:
            out[key] = scalar(field, value)
    return out


def dumps(doc: JSON) -> bytes:
    return json.dumps(doc).encode()


# --------------------------------------------------------------------------------------
# Fixtures: requests that set every field, with every AnyValue kind
# --------------------------------------------------------------------------------------


def kv(key: str, value: AnyValue | None = None) -> KeyValue:
    out = KeyValue(key=key)
    if value is not None:
        out.value.CopyFrom(value)
    return out


def array(*values: AnyValue) -> AnyValue:
    return AnyValue(array_value=ArrayValue(values=values))


def kvlist(*values: KeyValue) -> AnyValue:
    return AnyValue(kvlist_value=KeyValueList(values=values))


def any_values() -> list[AnyValue]:
    empty_array = AnyValue()
    empty_array.array_value.SetInParent()
    empty_kvlist = AnyValue()
    empty_kvlist.kvlist_value.SetInParent()
    return [
        AnyValue(string_value="plain"),
        AnyValue(string_value=""),
        AnyValue(string_value='quotes " \\ / \b\f\n\r\t \x00 \x1f \u2028 é 中文 😀 \U0010ffff'),
        AnyValue(bool_value=True),
        AnyValue(bool_value=False),
        AnyValue(int_value=0),
        AnyValue(int_value=-42),
        AnyValue(int_value=I64_MIN),
        AnyValue(int_value=I64_MAX),
        AnyValue(double_value=0.0),
        AnyValue(double_value=-0.0),
        AnyValue(double_value=1.5),
        AnyValue(double_value=-2.25e-300),
        AnyValue(double_value=5e-324),
        AnyValue(double_value=1.7976931348623157e308),
        AnyValue(double_value=0.1 + 0.2),
        AnyValue(double_value=float("nan")),
        AnyValue(double_value=float("inf")),
        AnyValue(double_value=float("-inf")),
        AnyValue(bytes_value=b""),
        AnyValue(bytes_value=bytes(range(256))),
        AnyValue(bytes_value=b"\xfb\xff\xfe"),  # "+/" in standard base64
        AnyValue(string_value_strindex=7),
        AnyValue(),
        empty_array,
        empty_kvlist,
        array(AnyValue(string_value="a"), AnyValue(int_value=1), AnyValue(), empty_array),
        kvlist(
            kv("s", AnyValue(string_value="v")),
            kv("no value"),
            kv("nested", array(kvlist(kv("deep", array(AnyValue(bytes_value=b"\x00\x01")))))),
            KeyValue(key_strindex=3, value=AnyValue(string_value_strindex=4)),
        ),
    ]


def attributes() -> list[KeyValue]:
    return [kv(f"attr.{i}", value) for i, value in enumerate(any_values())]


def resource() -> Resource:
    return Resource(
        attributes=[kv("service.name", AnyValue(string_value="checkout")), kv("n")],
        dropped_attributes_count=3,
        entity_refs=[
            EntityRef(
                schema_url="https://opentelemetry.io/schemas/1.30.0",
                type="service",
                id_keys=["service.name", "service.namespace"],
                description_keys=["service.version"],
            ),
            EntityRef(),
        ],
    )


def scope() -> InstrumentationScope:
    return InstrumentationScope(
        name="my.library",
        version="1.0.0",
        attributes=[kv("scope.attr", AnyValue(int_value=5))],
        dropped_attributes_count=1,
    )


def logs_fixture() -> ExportLogsServiceRequest:
    records = [
        LogRecord(
            time_unix_nano=1544712660300000000 + i,
            observed_time_unix_nano=1544712660300000500 + i,
            severity_number=i % 25,  # type: ignore[arg-type]
            severity_text="INFO",
            body=value,
            attributes=attributes()[: 1 + i % 4],
            dropped_attributes_count=i,
            flags=0x01,
            trace_id=TRACE_ID,
            span_id=SPAN_ID,
            event_name="app.event",
        )
        for i, value in enumerate(any_values())
    ]
    records.append(LogRecord(body=AnyValue(string_value="everything"), attributes=attributes()))
    records.append(
        LogRecord(
            time_unix_nano=U64_MAX,
            observed_time_unix_nano=U64_MAX,
            severity_number=99,  # type: ignore[arg-type]  # proto3 enums are open
            dropped_attributes_count=2**32 - 1,
            flags=2**32 - 1,
        )
    )
    records.append(LogRecord())
    present_but_empty = ResourceLogs(resource=Resource(), schema_url="s")
    present_but_empty.scope_logs.add().scope.SetInParent()
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=resource(),
                scope_logs=[
                    ScopeLogs(scope=scope(), log_records=records, schema_url="scope-schema"),
                    ScopeLogs(),
                ],
                schema_url="https://opentelemetry.io/schemas/1.30.0",
            ),
            present_but_empty,
            ResourceLogs(),
        ]
    )


def traces_fixture() -> ExportTraceServiceRequest:
    spans = [
        Span(
            trace_id=TRACE_ID,
            span_id=SPAN_ID,
            trace_state="rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
            parent_span_id=PARENT_ID,
            flags=0x301,
            name="GET /api/items",
            kind=kind,  # type: ignore[arg-type]
            start_time_unix_nano=1544712660000000000,
            end_time_unix_nano=1544712661000000000 + kind,
            attributes=attributes(),
            dropped_attributes_count=2,
            events=[
                Span.Event(
                    time_unix_nano=1544712660500000000,
                    name="exception",
                    attributes=attributes()[:6],
                    dropped_attributes_count=1,
                ),
                Span.Event(),
            ],
            dropped_events_count=3,
            links=[
                Span.Link(
                    trace_id=TRACE_ID,
                    span_id=PARENT_ID,
                    trace_state="k=v",
                    attributes=attributes()[6:12],
                    dropped_attributes_count=4,
                    flags=0x100,
                ),
                Span.Link(),
            ],
            dropped_links_count=5,
            status=Status(message="boom" if kind else "", code=kind % 3),  # type: ignore[arg-type]
        )
        for kind in range(6)
    ]
    spans.append(Span(status=Status(), end_time_unix_nano=U64_MAX))
    spans.append(Span())
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=resource(),
                scope_spans=[
                    ScopeSpans(scope=scope(), spans=spans, schema_url="scope-schema"),
                    ScopeSpans(scope=InstrumentationScope()),
                ],
                schema_url="https://opentelemetry.io/schemas/1.30.0",
            ),
            ResourceSpans(resource=Resource()),
            ResourceSpans(),
        ]
    )


def fields_set(message: Message) -> set[str]:
    """Full names of every field set somewhere in `message` (recursively)."""
    out: set[str] = set()
    for field, value in message.ListFields():
        out.add(field.full_name)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value if field.is_repeated else [value]:
                out |= fields_set(item)
    return out


def all_fields(descriptor: Any, seen: set[str] | None = None) -> set[str]:
    """Full names of every field reachable from a message type."""
    seen = set() if seen is None else seen
    if descriptor.full_name in seen:
        return set()
    seen.add(descriptor.full_name)
    out: set[str] = set()
    for field in descriptor.fields:
        out.add(field.full_name)
        if field.message_type is not None:
            out |= all_fields(field.message_type, seen)
    return out


def log_doc(record: JSON) -> bytes:
    """A logs request whose only record is `record`, at resourceLogs[0].scopeLogs[0]."""
    return dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]})


def first_record(request: ExportLogsServiceRequest) -> LogRecord:
    return request.resource_logs[0].scope_logs[0].log_records[0]


def span_doc(span: JSON) -> bytes:
    return dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})


def first_span(request: ExportTraceServiceRequest) -> Span:
    return request.resource_spans[0].scope_spans[0].spans[0]


def body_of(value: JSON) -> AnyValue:
    return first_record(logs_request_from_json(log_doc({"body": value}))).body


def record_error(record: JSON) -> str:
    with pytest.raises(InvalidArgument) as info:
        logs_request_from_json(log_doc(record))
    return str(info.value)


def nested(depth: int, kind: str) -> JSON:
    """An AnyValue JSON object `depth` levels deep (the leaf string counts as a level)."""
    value: JSON = {"stringValue": "leaf"}
    for _ in range(depth - 1):
        if kind == "array":
            value = {"arrayValue": {"values": [value]}}
        else:
            value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    return value


# --------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------


def test_logs_fixture_sets_every_field() -> None:
    assert fields_set(logs_fixture()) == all_fields(ExportLogsServiceRequest.DESCRIPTOR)


def test_traces_fixture_sets_every_field() -> None:
    assert fields_set(traces_fixture()) == all_fields(ExportTraceServiceRequest.DESCRIPTOR)


def test_logs_round_trip_with_int64_as_strings() -> None:
    request = logs_fixture()
    assert logs_request_from_json(dumps(encode(request))) == request


def test_logs_round_trip_with_int64_as_numbers() -> None:
    request = logs_fixture()
    assert logs_request_from_json(dumps(encode(request, int64_as_numbers=True))) == request


def test_traces_round_trip_with_int64_as_strings() -> None:
    request = traces_fixture()
    assert traces_request_from_json(dumps(encode(request))) == request


def test_traces_round_trip_with_int64_as_numbers() -> None:
    request = traces_fixture()
    assert traces_request_from_json(dumps(encode(request, int64_as_numbers=True))) == request


def test_logs_round_trip_with_enum_names() -> None:
    request = logs_fixture()
    del request.resource_logs[0].scope_logs[0].log_records[-2]  # severity 99 has no name
    assert logs_request_from_json(dumps(encode(request, enum_names=True))) == request


def test_traces_round_trip_with_enum_names() -> None:
    request = traces_fixture()
    assert traces_request_from_json(dumps(encode(request, enum_names=True))) == request


def test_logs_round_trip_with_snake_case_keys() -> None:
    request = logs_fixture()
    assert logs_request_from_json(dumps(encode(request, snake_case=True))) == request


def test_traces_round_trip_with_snake_case_keys() -> None:
    request = traces_fixture()
    assert traces_request_from_json(dumps(encode(request, snake_case=True))) == request


def test_round_trip_with_non_ascii_utf8_output() -> None:
    request = logs_fixture()
    body = json.dumps(encode(request), ensure_ascii=False).encode("utf-8")
    assert logs_request_from_json(body) == request


def test_agrees_with_json_format_where_the_mappings_coincide() -> None:
    # Protobuf's own JSON parser is the reference for everything but the hex ids.
    request = traces_fixture()
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                span.ClearField("trace_id")
                span.ClearField("span_id")
                span.ClearField("parent_span_id")
                for link in span.links:
                    link.ClearField("trace_id")
                    link.ClearField("span_id")
    body = dumps(encode(request))
    assert traces_request_from_json(body) == json_format.Parse(body, ExportTraceServiceRequest())


def test_decodes_the_spec_example() -> None:
    # opentelemetry-proto's examples/logs.json (note the uppercase hex ids).
    body = b"""{
      "resourceLogs": [{
        "resource": {"attributes": [
          {"key": "service.name", "value": {"stringValue": "my.service"}}]},
        "scopeLogs": [{
          "scope": {
            "name": "my.library", "version": "1.0.0",
            "attributes": [{"key": "my.scope.attribute", "value": {"stringValue": "some scope"}}]
          },
          "logRecords": [{
            "timeUnixNano": "1544712660300000000",
            "observedTimeUnixNano": "1544712660300000000",
            "severityNumber": 10,
            "severityText": "Information",
            "traceId": "5B8EFFF798038103D269B633813FC60C",
            "spanId": "EEE19B7EC3C1B174",
            "body": {"stringValue": "Example log record"},
            "attributes": [
              {"key": "string.attribute", "value": {"stringValue": "some string"}},
              {"key": "boolean.attribute", "value": {"boolValue": true}},
              {"key": "int.attribute", "value": {"intValue": "10"}},
              {"key": "double.attribute", "value": {"doubleValue": 637.704}},
              {"key": "array.attribute", "value": {"arrayValue": {"values": [
                {"stringValue": "many"}, {"stringValue": "values"}]}}},
              {"key": "map.attribute", "value": {"kvlistValue": {"values": [
                {"key": "some.map.key", "value": {"stringValue": "some value"}}]}}}
            ]
          }]
        }]
      }]
    }"""
    expected = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(
                    attributes=[kv("service.name", AnyValue(string_value="my.service"))]
                ),
                scope_logs=[
                    ScopeLogs(
                        scope=InstrumentationScope(
                            name="my.library",
                            version="1.0.0",
                            attributes=[
                                kv("my.scope.attribute", AnyValue(string_value="some scope"))
                            ],
                        ),
                        log_records=[
                            LogRecord(
                                time_unix_nano=1544712660300000000,
                                observed_time_unix_nano=1544712660300000000,
                                severity_number=10,  # type: ignore[arg-type]
                                severity_text="Information",
                                trace_id=TRACE_ID,
                                span_id=SPAN_ID,
                                body=AnyValue(string_value="Example log record"),
                                attributes=[
                                    kv("string.attribute", AnyValue(string_value="some string")),
                                    kv("boolean.attribute", AnyValue(bool_value=True)),
                                    kv("int.attribute", AnyValue(int_value=10)),
                                    kv("double.attribute", AnyValue(double_value=637.704)),
                                    kv(
                                        "array.attribute",
                                        array(
                                            AnyValue(string_value="many"),
                                            AnyValue(string_value="values"),
                                        ),
                                    ),
                                    kv(
                                        "map.attribute",
                                        kvlist(
                                            kv("some.map.key", AnyValue(string_value="some value"))
                                        ),
                                    ),
                                ],
                            )
                        ],
                    )
                ],
            )
        ]
    )
    assert logs_request_from_json(body) == expected


def test_decoded_request_survives_protobuf_serialization() -> None:
    request = logs_request_from_json(dumps(encode(logs_fixture())))
    assert ExportLogsServiceRequest.FromString(request.SerializeToString()) == request


# --------------------------------------------------------------------------------------
# What the decoder accepts
# --------------------------------------------------------------------------------------


def test_empty_object_is_an_empty_request() -> None:
    assert logs_request_from_json(b"{}") == ExportLogsServiceRequest()


def test_empty_resource_spans_is_an_empty_request() -> None:
    assert traces_request_from_json(b' {"resourceSpans": []} ') == ExportTraceServiceRequest()


def test_utf8_byte_order_mark_is_ignored() -> None:
    assert logs_request_from_json(b"\xef\xbb\xbf{}") == ExportLogsServiceRequest()


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("SEVERITY_NUMBER_UNSPECIFIED", 0),
        ("SEVERITY_NUMBER_INFO", 9),
        ("SEVERITY_NUMBER_ERROR", 17),
        ("SEVERITY_NUMBER_FATAL4", 24),
    ],
)
def test_severity_number_by_name(name: str, number: int) -> None:
    record = first_record(logs_request_from_json(log_doc({"severityNumber": name})))
    assert record.severity_number == number


@pytest.mark.parametrize(("name", "number"), [("SPAN_KIND_SERVER", 2), ("SPAN_KIND_CONSUMER", 5)])
def test_span_kind_by_name(name: str, number: int) -> None:
    assert first_span(traces_request_from_json(span_doc({"kind": name}))).kind == number


def test_status_code_by_name() -> None:
    span = first_span(traces_request_from_json(span_doc({"status": {"code": "STATUS_CODE_ERROR"}})))
    assert span.status.code == Status.STATUS_CODE_ERROR


def test_enum_number_as_decimal_string() -> None:
    assert first_span(traces_request_from_json(span_doc({"kind": "3"}))).kind == 3


def test_unknown_enum_number_is_kept() -> None:
    assert (
        first_record(logs_request_from_json(log_doc({"severityNumber": 99}))).severity_number == 99
    )


def test_unknown_fields_are_ignored_everywhere() -> None:
    junk: JSON = {"x": [{"deep": [[[{"y": None}]]]}], "n": 1.5, "s": "\\ud800"}
    doc = encode(logs_fixture())

    def salt(node: JSON) -> None:
        if isinstance(node, dict):
            for value in list(node.values()):
                salt(value)
            node["unknownField"] = copy.deepcopy(junk)
            node["deprecated_code"] = 7
        elif isinstance(node, list):
            for value in node:
                salt(value)

    salt(doc)
    assert logs_request_from_json(dumps(doc)) == logs_fixture()


def test_null_fields_are_absent() -> None:
    record = {
        "timeUnixNano": None,
        "severityNumber": None,
        "body": None,
        "attributes": None,
        "traceId": None,
        "event_name": None,
    }
    assert first_record(logs_request_from_json(log_doc(record))) == LogRecord()


def test_null_anyvalue_member_is_an_empty_value() -> None:
    value = body_of({"stringValue": None})
    assert value == AnyValue()
    assert value.WhichOneof("value") is None


def test_empty_anyvalue_object_is_present() -> None:
    record = first_record(logs_request_from_json(log_doc({"body": {}})))
    assert record.HasField("body")
    assert record.body.WhichOneof("value") is None


def test_empty_array_value_is_kept() -> None:
    assert body_of({"arrayValue": {}}).WhichOneof("value") == "array_value"


def test_empty_kvlist_value_is_kept() -> None:
    assert body_of({"kvlistValue": {"values": []}}).WhichOneof("value") == "kvlist_value"


def test_empty_string_ids_are_absent() -> None:
    record = first_record(logs_request_from_json(log_doc({"traceId": "", "spanId": ""})))
    assert record.trace_id == b""
    assert record.span_id == b""


def test_uppercase_hex_ids_are_accepted() -> None:
    span = first_span(
        traces_request_from_json(
            span_doc({"traceId": TRACE_ID.hex().upper(), "parentSpanId": "0102030405060A0B"})
        )
    )
    assert span.trace_id == TRACE_ID
    assert span.parent_span_id == bytes.fromhex("0102030405060a0b")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('"1700000000000000001"', 1700000000000000001),
        ("1700000000000000001", 1700000000000000001),
        ('"18446744073709551615"', U64_MAX),
        ("18446744073709551615", U64_MAX),
        ("1.7e18", 1700000000000000000),
        ('"1.7e18"', 1700000000000000000),
        ("1700000000000000001.0", 1700000000000000001),  # exact, not via float
        ("17000000000000000010e-1", 1700000000000000001),
        ('"0"', 0),
        ("0", 0),
        ('"-0"', 0),
        ('"00012"', 12),
        ("0e400", 0),
    ],
)
def test_uint64_forms(raw: str, expected: int) -> None:
    body = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":%s}]}]}]}' % raw.encode()
    assert first_record(logs_request_from_json(body)).time_unix_nano == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('"-9223372036854775808"', I64_MIN),
        ("-9223372036854775808", I64_MIN),
        ('"9223372036854775807"', I64_MAX),
        ("-5", -5),
        ('"-5"', -5),
        ("-1e3", -1000),
    ],
)
def test_int_value_forms(raw: str, expected: int) -> None:
    body = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"intValue":%s}}]}]}]}' % (
        raw.encode()
    )
    assert first_record(logs_request_from_json(body)).body.int_value == expected


@pytest.mark.parametrize(
    ("value", "check"),
    [
        ("NaN", math.isnan),
        ("Infinity", lambda x: x == math.inf),
        ("-Infinity", lambda x: x == -math.inf),
        ("2.5", lambda x: x == 2.5),
        ("-1e-5", lambda x: x == -1e-5),
        (3, lambda x: x == 3.0),
        (10**30, lambda x: x == 1e30),
    ],
)
def test_double_forms(value: JSON, check: Callable[[float], bool]) -> None:
    assert check(body_of({"doubleValue": value}).double_value)


def test_double_parses_like_float() -> None:
    body = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"doubleValue":%s}}]}]}]}'
    for text in ("0.1", "637.704", "2.2250738585072011e-308", "9007199254740993", "1e23"):
        value = first_record(logs_request_from_json(body % text.encode())).body.double_value
        assert value == float(text)


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        ("+/8=", b"\xfb\xff"),
        ("-_8=", b"\xfb\xff"),
        ("+/8", b"\xfb\xff"),
        ("-_8", b"\xfb\xff"),
        ("aGVsbG8=", b"hello"),
        ("aGVsbG8", b"hello"),
        ("", b""),
    ],
)
def test_bytes_value_base64_variants(encoded: str, expected: bytes) -> None:
    assert body_of({"bytesValue": encoded}).bytes_value == expected


def test_surrogate_pair_escapes_decode_to_one_character() -> None:
    body = log_doc({"body": {"stringValue": "\U0001f600"}})  # json.dumps escapes it as a pair
    assert b"\\ud83d\\ude00" in body
    assert first_record(logs_request_from_json(body)).body.string_value == "\U0001f600"


def test_anyvalue_nesting_at_the_limit_is_accepted_and_serializable() -> None:
    # The deepest place: a span event attribute, nested through kvlists (3 messages a level).
    event = {"attributes": [{"key": "k", "value": nested(MAX_ANY_VALUE_DEPTH, "kvlist")}]}
    request = traces_request_from_json(span_doc({"events": [event]}))
    assert ExportTraceServiceRequest.FromString(request.SerializeToString()) == request


@pytest.mark.parametrize("kind", ["array", "kvlist"])
def test_anyvalue_nesting_at_the_limit_round_trips(kind: str) -> None:
    value = body_of(nested(MAX_ANY_VALUE_DEPTH, kind))
    assert encode(value) == nested(MAX_ANY_VALUE_DEPTH, kind)


# --------------------------------------------------------------------------------------
# Errors: always InvalidArgument, with the path to the problem
# --------------------------------------------------------------------------------------


def test_error_names_the_path() -> None:
    body = dumps(
        {
            "resourceLogs": [
                {"scopeLogs": [{}, {"logRecords": [{}, {}, {}, {"timeUnixNano": True}]}]}
            ]
        }
    )
    with pytest.raises(InvalidArgument) as info:
        logs_request_from_json(body)
    assert str(info.value) == (
        "resourceLogs[0].scopeLogs[1].logRecords[3].timeUnixNano: expected an integer, got boolean"
    )


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "expected a JSON object, got array"),
        ("x", "expected a JSON object, got string"),
        (1, "expected a JSON object, got number"),
        (None, "expected a JSON object, got null"),
        ({"resourceLogs": {}}, "resourceLogs: expected an array, got object"),
        ({"resourceLogs": "x"}, "resourceLogs: expected an array, got string"),
        ({"resourceLogs": [1]}, "resourceLogs[0]: expected an object, got number"),
        ({"resourceLogs": [{}, []]}, "resourceLogs[1]: expected an object, got array"),
        ({"resourceLogs": [None]}, "resourceLogs[0]: expected an object, got null"),
        ({"resourceLogs": [{"resource": []}]}, "resourceLogs[0].resource: expected an object"),
        ({"resourceLogs": [{"schemaUrl": 1}]}, "resourceLogs[0].schemaUrl: expected a string"),
        (
            {"resourceLogs": [{"scopeLogs": [[]]}]},
            "resourceLogs[0].scopeLogs[0]: expected an object",
        ),
        (
            {"resourceLogs": [{"resource": {"attributes": {}}}]},
            "resourceLogs[0].resource.attributes: expected an array",
        ),
        (
            {"resourceLogs": [{"resource": {"attributes": ["k"]}}]},
            "resourceLogs[0].resource.attributes[0]: expected an object, got string",
        ),
        (
            {"resourceLogs": [{"resource": {"attributes": [{"key": 1}]}}]},
            "resourceLogs[0].resource.attributes[0].key: expected a string, got number",
        ),
        (
            {"resourceLogs": [{"resource": {"attributes": [{"key": "k", "value": "v"}]}}]},
            "resourceLogs[0].resource.attributes[0].value: expected an object, got string",
        ),
        (
            {"resourceLogs": [{"resource": {"entityRefs": [{"idKeys": ["a", 1]}]}}]},
            "resourceLogs[0].resource.entityRefs[0].idKeys[1]: expected a string",
        ),
        (
            {"resourceLogs": [{"resource": {"droppedAttributesCount": "x"}}]},
            "resourceLogs[0].resource.droppedAttributesCount: expected an integer",
        ),
        (
            {"resourceLogs": [{"scopeLogs": [{"scope": {"name": False}}]}]},
            "resourceLogs[0].scopeLogs[0].scope.name: expected a string, got boolean",
        ),
        (
            {"resourceLogs": [{"scopeLogs": [{"logRecords": {}}]}]},
            "resourceLogs[0].scopeLogs[0].logRecords: expected an array",
        ),
    ],
)
def test_wrong_json_types_in_logs(doc: JSON, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        logs_request_from_json(dumps(doc))
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"severityText": 3}, ".severityText: expected a string, got number 3"),
        ({"severityNumber": True}, ".severityNumber: expected an integer, got boolean"),
        ({"severityNumber": 1.5}, ".severityNumber: expected an integer, got number 1.5"),
        ({"body": []}, ".body: expected an object, got array"),
        ({"body": {"stringValue": 1}}, ".body.stringValue: expected a string, got number"),
        ({"body": {"boolValue": "true"}}, ".body.boolValue: expected a boolean, got string"),
        ({"body": {"intValue": True}}, ".body.intValue: expected an integer, got boolean"),
        ({"body": {"doubleValue": True}}, ".body.doubleValue: expected a number"),
        ({"body": {"bytesValue": 5}}, ".body.bytesValue: expected a base64 string"),
        ({"body": {"arrayValue": []}}, ".body.arrayValue: expected an object, got array"),
        ({"body": {"arrayValue": {"values": {}}}}, ".body.arrayValue.values: expected an array"),
        (
            {"body": {"arrayValue": {"values": [{}, 5]}}},
            ".body.arrayValue.values[1]: expected an object, got number",
        ),
        (
            {"body": {"kvlistValue": {"values": [{"key": "a", "value": {"intValue": "x"}}]}}},
            ".body.kvlistValue.values[0].value.intValue: expected an integer, got string",
        ),
        ({"attributes": [{"key": "k", "keyStrindex": "a"}]}, ".attributes[0].keyStrindex"),
        ({"flags": "1.5"}, ".flags: expected an integer"),
        ({"eventName": []}, ".eventName: expected a string, got array"),
    ],
)
def test_wrong_json_types_in_log_records(record: JSON, message: str) -> None:
    prefix = "resourceLogs[0].scopeLogs[0].logRecords[0]"
    assert record_error(record).startswith(prefix + message)


@pytest.mark.parametrize(
    ("span", "message"),
    [
        ({"name": 1}, ".name: expected a string"),
        ({"kind": "SERVER"}, '.kind: unknown enum value "SERVER"'),
        ({"kind": []}, ".kind: expected an integer, got array"),
        ({"status": "ok"}, ".status: expected an object, got string"),
        ({"status": {"code": "STATUS_CODE_BAD"}}, '.status.code: unknown enum value "STATUS_CODE'),
        ({"status": {"message": 1}}, ".status.message: expected a string"),
        ({"events": [{"name": 1}]}, ".events[0].name: expected a string"),
        ({"events": [{"timeUnixNano": -1}]}, ".events[0].timeUnixNano: number -1 is out of range"),
        ({"links": [{"traceId": "abc"}]}, ".links[0].traceId: expected 32 hex characters"),
        ({"links": [{"traceState": 1}]}, ".links[0].traceState: expected a string"),
        ({"links": {}}, ".links: expected an array"),
        ({"traceState": None, "parentSpanId": 5}, ".parentSpanId: expected a hex string"),
        ({"droppedLinksCount": -1}, ".droppedLinksCount: number -1 is out of range for uint32"),
    ],
)
def test_wrong_json_types_in_spans(span: JSON, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        traces_request_from_json(span_doc(span))
    assert str(info.value).startswith("resourceSpans[0].scopeSpans[0].spans[0]" + message)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"timeUnixNano": -1}, "timeUnixNano: number -1 is out of range for uint64"),
        ({"timeUnixNano": 2**64}, "timeUnixNano: number 18446744073709551616 is out of range"),
        ({"timeUnixNano": "18446744073709551616"}, "timeUnixNano: string"),
        ({"timeUnixNano": "-1"}, "timeUnixNano: string"),
        ({"observedTimeUnixNano": "1" + "0" * 100}, "observedTimeUnixNano: string"),
        ({"observedTimeUnixNano": "1" + "0" * 10_000}, "observedTimeUnixNano: string"),
        ({"observedTimeUnixNano": "1e30"}, "observedTimeUnixNano: string"),
        ({"observedTimeUnixNano": "1e999999999999999999999"}, "observedTimeUnixNano: string"),
        ({"droppedAttributesCount": 2**32}, "droppedAttributesCount: number 4294967296"),
        ({"flags": -1}, "flags: number -1 is out of range for uint32"),
        ({"severityNumber": 2**31}, "severityNumber: number 2147483648 is out of range"),
        ({"body": {"intValue": 2**63}}, "body.intValue: number 9223372036854775808 is out of"),
        ({"body": {"intValue": "-9223372036854775809"}}, "body.intValue: string"),
        ({"body": {"stringValueStrindex": 2**31}}, "body.stringValueStrindex: number"),
        ({"attributes": [{"keyStrindex": -(2**31) - 1}]}, "attributes[0].keyStrindex: number"),
    ],
)
def test_integers_out_of_range(record: JSON, message: str) -> None:
    error = record_error(record)
    assert error.startswith("resourceLogs[0].scopeLogs[0].logRecords[0]." + message)
    assert "out of range" in error


@pytest.mark.parametrize(
    "raw",
    ["1.5", '"1.5"', '"0x10"', '" 1"', '"1 "', '"1_000"', '"+1"', '""', '"\\u0661\\u0662"', '"1e"']
    + ['"\\u00b2"', '"NaN"', "true", "[]", "{}", '"-"', '"--1"', '"1.0.0"', "1e-400"],
)
def test_non_integers_are_rejected(raw: str) -> None:
    body = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":%s}]}]}]}' % raw.encode()
    with pytest.raises(
        InvalidArgument, match=r"logRecords\[0\]\.timeUnixNano: expected an integer"
    ):
        logs_request_from_json(body)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("traceId", "5b8efff798038103d269b633813fc6", "expected 32 hex characters (16 bytes)"),
        (
            "traceId",
            "5b8efff798038103d269b633813fc60c00",
            "expected 32 hex characters (16 bytes), got 34",
        ),
        ("traceId", "5b8efff798038103d269b633813fc60g", "expected 32 hex characters, got string"),
        ("traceId", "5b8efff798038103d269b633813fc6 c", "expected 32 hex characters, got string"),
        ("traceId", "W47/95gDgQPSabYzgT/GDA==", "expected 32 hex characters (16 bytes)"),
        ("traceId", "5b8efff798038103d269b633813fc6é0", "expected 32 hex characters, got string"),
        ("spanId", "eee19b7ec3c1b1", "expected 16 hex characters (8 bytes)"),
        ("spanId", "eee19b7ec3c1b17z", "expected 16 hex characters, got string"),
        ("spanId", 12, "expected a hex string, got number"),
        ("traceId", ["5b"], "expected a hex string, got array"),
    ],
)
def test_invalid_ids_are_rejected(field: str, value: JSON, message: str) -> None:
    assert f"logRecords[0].{field}: {message}" in record_error({field: value})


@pytest.mark.parametrize("value", ["a", "a===", "ab=c", "a b=", "YQ==\n", "!!!!", "é"])
def test_invalid_base64_is_rejected(value: str) -> None:
    assert "body.bytesValue: expected base64" in record_error({"body": {"bytesValue": value}})


@pytest.mark.parametrize("value", ["1e400", "-1e400", str(10**400)])
def test_double_number_out_of_range_is_rejected(value: str) -> None:
    body = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"doubleValue":%s}}]}]}]}' % (
        value.encode()
    )
    with pytest.raises(InvalidArgument, match=r"body\.doubleValue: number .* out of range"):
        logs_request_from_json(body)


@pytest.mark.parametrize("value", ["nan", "inf", "-NaN", "Infinity ", "1,5", "", "0x1p3", "1e400"])
def test_invalid_double_strings_are_rejected(value: str) -> None:
    assert "body.doubleValue: " in record_error({"body": {"doubleValue": value}})


def test_anyvalue_with_two_members_is_rejected() -> None:
    error = record_error({"body": {"stringValue": "a", "intValue": "1"}})
    assert error == (
        "resourceLogs[0].scopeLogs[0].logRecords[0].body: "
        "AnyValue has more than one value (stringValue and intValue)"
    )


def test_unknown_enum_name_is_rejected() -> None:
    assert record_error({"severityNumber": "ERROR"}).endswith(
        'severityNumber: unknown enum value "ERROR"'
    )


def test_field_given_in_both_spellings_is_rejected() -> None:
    error = record_error({"timeUnixNano": "1", "time_unix_nano": "2"})
    assert error == (
        "resourceLogs[0].scopeLogs[0].logRecords[0]: "
        'field "timeUnixNano" is given twice (as timeUnixNano and time_unix_nano)'
    )


@pytest.mark.parametrize("kind", ["array", "kvlist"])
def test_anyvalue_nesting_past_the_limit_is_rejected(kind: str) -> None:
    error = record_error({"body": nested(MAX_ANY_VALUE_DEPTH + 1, kind)})
    assert error.startswith("resourceLogs[0].scopeLogs[0].logRecords[0].body.")
    assert error.endswith(f"AnyValue nesting is deeper than {MAX_ANY_VALUE_DEPTH} levels")


def test_anyvalue_nesting_past_the_limit_in_attributes_is_rejected() -> None:
    attribute = {"key": "k", "value": nested(MAX_ANY_VALUE_DEPTH + 1, "kvlist")}
    with pytest.raises(InvalidArgument, match="nesting is deeper than"):
        traces_request_from_json(span_doc({"attributes": [attribute]}))


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"stringValue": "a\\ud800"}, "body.stringValue"),
        ({"arrayValue": {"values": [{"stringValue": "\\udfff"}]}}, "body.arrayValue.values[0]"),
        (
            {"kvlistValue": {"values": [{"key": "\\udc00", "value": {}}]}},
            "body.kvlistValue.values[0].key",
        ),
    ],
)
def test_unpaired_surrogate_is_rejected(value: JSON, path: str) -> None:
    body = log_doc({"body": value}).replace(b"\\\\u", b"\\u")  # a real JSON escape
    with pytest.raises(InvalidArgument) as info:
        logs_request_from_json(body)
    assert str(info.value).startswith("resourceLogs[0].scopeLogs[0].logRecords[0]." + path)
    assert "unpaired UTF-16 surrogate" in str(info.value)


def test_unpaired_surrogate_in_span_name_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match=r"spans\[0\]\.name: string contains an unpaired"):
        traces_request_from_json(
            b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"\\ud800"}]}]}]}'
        )


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b" ",
        b"{",
        b'{"resourceLogs": [}',
        b'{"resourceLogs": []} x',
        b"{'resourceLogs': []}",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b'{"a": "\x01"}',
        b'{"a": "\\x"}',
        b"\xff\xfe{\x00}\x00",  # UTF-16
        b'{"a": "\xc3\x28"}',  # invalid UTF-8
        b'{"a": "\xed\xa0\x80"}',  # a UTF-8-encoded surrogate
        b'{"a": 1' + b"0" * 5000 + b"}",  # past Python's int digit limit
        b"[" * 100_000,
        b'{"a":' * 100_000,
        b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": ' + b"[" * 100_000,
    ],
    ids=lambda body: repr(body[:24]),
)
def test_invalid_json_is_rejected(body: bytes) -> None:
    with pytest.raises(InvalidArgument, match="^invalid JSON: "):
        logs_request_from_json(body)


def test_deeply_nested_json_in_traces_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="^invalid JSON: "):
        traces_request_from_json(b'{"resourceSpans": ' + b"[" * 100_000)


# --------------------------------------------------------------------------------------
# Hostile input: nothing but InvalidArgument, ever
# --------------------------------------------------------------------------------------

DECODERS: list[Decoder] = [logs_request_from_json, traces_request_from_json]


def decode_or_reject(decoder: Decoder, body: bytes) -> None:
    """Decoding succeeds or raises InvalidArgument from a specific check (not the net)."""
    try:
        decoder(body)
    except InvalidArgument as e:
        assert not str(e).startswith(SAFETY_NET), (body[:200], str(e))


def random_bodies(seed: int, count: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    tokens = [
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b'"',
        b"\\",
        b"\\u",
        b"d800",
        b"0",
        b"-",
        b"1",
        b"e",
        b".",
        b"9" * 30,
        b"true",
        b"null",
        b"NaN",
        b" ",
        b'"resourceLogs"',
        b'"resourceSpans"',
        b'"scopeLogs"',
        b'"scopeSpans"',
        b'"logRecords"',
        b'"spans"',
        b'"body"',
        b'"value"',
        b'"stringValue"',
        b'"intValue"',
        b'"arrayValue"',
        b'"values"',
        b'"kvlistValue"',
        b'"attributes"',
        b'"traceId"',
        b'"timeUnixNano"',
        b"\xff",
        b"\xc3",
    ]
    for _ in range(count):
        if rng.random() < 0.3:
            yield rng.randbytes(rng.randrange(64))
        else:
            yield b"".join(rng.choice(tokens) for _ in range(rng.randrange(1, 80)))


@pytest.mark.parametrize("decoder", DECODERS, ids=["logs", "traces"])
def test_random_bytes_only_raise_invalid_argument(decoder: Decoder) -> None:
    for body in random_bodies(seed=1234, count=3000):
        decode_or_reject(decoder, body)


@pytest.mark.parametrize(
    ("decoder", "fixture"),
    [(logs_request_from_json, logs_fixture), (traces_request_from_json, traces_fixture)],
    ids=["logs", "traces"],
)
def test_every_truncation_of_a_valid_document_is_rejected(
    decoder: Decoder, fixture: Callable[[], Message]
) -> None:
    body = json.dumps(encode(fixture()), separators=(",", ":")).encode()
    # Every cut in the first and last KiB, and ~2000 spread over the rest (all would be
    # quadratic: each attempt scans its whole prefix).
    step = max(1, len(body) // 2000)
    cuts = {*range(1024), *range(len(body) - 1024, len(body)), *range(0, len(body), step)}
    for end in sorted(cut for cut in cuts if 0 <= cut < len(body)):
        with pytest.raises(InvalidArgument, match="^invalid JSON: "):
            decoder(body[:end])


WEIRD_VALUES: list[JSON] = [
    None,
    True,
    False,
    0,
    -1,
    2**31,
    2**63,
    2**64,
    -(2**64),
    1.5,
    -0.0,
    1e300,
    "",
    "x",
    "1e3",
    "NaN",
    "-Infinity",
    "SEVERITY_NUMBER_ERROR",
    "SPAN_KIND_SERVER",
    "0" * 16,
    "0" * 32,
    "zz" * 8,
    "\ud800",
    "a\udc00b",
    [],
    [None],
    [1, "a"],
    [{}],
    {},
    {"stringValue": 1},
    {"arrayValue": 5},
    {"arrayValue": {"values": [5]}},
    {"kvlistValue": {"values": [{"key": None, "value": []}]}},
    {"key": "k", "value": {"intValue": "x"}},
    {"timeUnixNano": True},
]


def mutate(doc: JSON, rng: random.Random) -> JSON:
    """Replace, drop or wrap one random node of a decoded JSON document."""
    if not isinstance(doc, dict | list):
        return rng.choice(WEIRD_VALUES)
    doc = copy.deepcopy(doc)
    slots: list[tuple[Any, Any]] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        pairs = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in pairs:
            slots.append((node, key))
            if isinstance(value, dict | list):
                stack.append(value)
    if not slots:
        return rng.choice(WEIRD_VALUES)
    node, key = rng.choice(slots)
    roll = rng.random()
    if roll < 0.7:
        node[key] = copy.deepcopy(rng.choice(WEIRD_VALUES))
    elif roll < 0.85:
        node[key] = [node[key]]
    elif isinstance(node, dict):
        del node[key]
    else:
        node[key] = {"stringValue": node[key]}
    return doc


@pytest.mark.parametrize(
    ("decoder", "fixture"),
    [(logs_request_from_json, logs_fixture), (traces_request_from_json, traces_fixture)],
    ids=["logs", "traces"],
)
def test_mutated_documents_only_raise_specific_invalid_argument(
    decoder: Decoder, fixture: Callable[[], Message]
) -> None:
    rng = random.Random(99)
    original = encode(fixture())
    for _ in range(400):
        doc = original
        for _ in range(rng.randrange(1, 4)):
            doc = mutate(doc, rng)
        decode_or_reject(decoder, json.dumps(doc).encode())


# --------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------


def test_logs_response_when_all_accepted_is_empty_object() -> None:
    assert logs_response_json() == b"{}"


def test_traces_response_when_all_accepted_is_empty_object() -> None:
    assert traces_response_json() == b"{}"


def test_logs_response_with_partial_success() -> None:
    body = logs_response_json(3, "3 records too old")
    assert json.loads(body) == {
        "partialSuccess": {"rejectedLogRecords": "3", "errorMessage": "3 records too old"}
    }


def test_traces_response_with_partial_success() -> None:
    body = traces_response_json(2, "bad spans")
    assert json.loads(body) == {
        "partialSuccess": {"rejectedSpans": "2", "errorMessage": "bad spans"}
    }


def test_response_with_only_a_message_omits_the_zero_count() -> None:
    assert json.loads(logs_response_json(0, "warning")) == {
        "partialSuccess": {"errorMessage": "warning"}
    }


def test_response_with_only_a_count_omits_the_empty_message() -> None:
    assert json.loads(traces_response_json(5)) == {"partialSuccess": {"rejectedSpans": "5"}}


def test_responses_parse_as_the_protobuf_response_messages() -> None:
    logs = json_format.Parse(logs_response_json(2**63 - 1, 'é "q"\n'), ExportLogsServiceResponse())
    assert logs.partial_success.rejected_log_records == 2**63 - 1
    assert logs.partial_success.error_message == 'é "q"\n'
    traces = json_format.Parse(traces_response_json(7), ExportTraceServiceResponse())
    assert traces.partial_success.rejected_spans == 7


@pytest.mark.parametrize("rejected", [-1, 2**63, True])
def test_response_rejects_an_impossible_count(rejected: int) -> None:
    with pytest.raises(ValueError, match="rejected"):
        logs_response_json(rejected)
