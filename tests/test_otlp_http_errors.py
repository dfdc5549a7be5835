"""Bad input at every edge: OTLP/HTTP (httpx), OTLP/gRPC (a raw channel) and GraphQL.

The contract: a malformed request gets a 4xx (HTTP) or INVALID_ARGUMENT /
RESOURCE_EXHAUSTED / UNIMPLEMENTED (gRPC) with a message that says what is wrong, never
a 500 / INTERNAL, and the server keeps serving. HTTP errors carry a google.rpc.Status
body encoded like the request (protobuf or JSON).

Two servers are shared by the module: `server` with default limits and `small` with tiny
`--max-request-bytes` / `--max-decompressed-bytes`. Tests stay independent through
unique service names.
"""

from __future__ import annotations

import gzip
import json
import secrets
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import zstandard
from conftest import OtelogProcess
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, SeverityNumber

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TRACES_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS_EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"

SMALL_REQUEST_BYTES = 256 * 1024
SMALL_DECOMPRESSED_BYTES = 1024 * 1024
YEAR_NS = 365 * 86_400 * 10**9


# ---- servers


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtelogProcess]:
    proc = OtelogProcess(tmp_path_factory.mktemp("otlp-errors") / "data")
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtelogProcess]:
    proc = OtelogProcess(
        tmp_path_factory.mktemp("otlp-errors-small") / "data",
        extra_args=[
            "--max-request-bytes",
            str(SMALL_REQUEST_BYTES),
            "--max-decompressed-bytes",
            str(SMALL_DECOMPRESSED_BYTES),
        ],
    )
    try:
        yield proc.start()
    finally:
        proc.stop()


# ---- building requests


def unique_service(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def logs_request(
    service: str, bodies: list[str], ts_ns: int | None = None
) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
    sl = rl.scope_logs.add()
    now = time.time_ns() if ts_ns is None else ts_ns
    for n, body in enumerate(bodies):
        sl.log_records.add(
            time_unix_nano=now + n, severity_number=9, body=AnyValue(string_value=body)
        )
    return req


def json_logs(service: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                },
                "scopeLogs": [{"scope": {"name": "otelog.tests"}, "logRecords": records}],
            }
        ]
    }


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, hand-encoded (so any bytes can go inside)."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def raw_logs_request(service: str, log_record: bytes) -> bytes:
    """ExportLogsServiceRequest{resource_logs: [{resource, scope_logs: [{log_records: [rec]}]}]}."""
    resource = (
        logs_request(service, []).resource_logs[0].resource.SerializeToString()
    )  # Resource with service.name
    scope_logs = _ld(2, log_record)  # ScopeLogs.log_records = 2
    resource_logs = _ld(1, resource) + _ld(2, scope_logs)  # ResourceLogs.resource/scope_logs
    return _ld(1, resource_logs)  # ExportLogsServiceRequest.resource_logs = 1


def record_prefix(body: str) -> bytes:
    """A LogRecord's bytes (timestamp, severity, body) that raw fields can be appended to."""
    rec = LogRecord(time_unix_nano=time.time_ns(), body=AnyValue(string_value=body))
    rec.severity_number = SeverityNumber.SEVERITY_NUMBER_INFO
    return bytes(rec.SerializeToString())


def nested_kvlist_any_value(depth: int) -> bytes:
    """An AnyValue that is a kvlist nested `depth` levels deep (3 messages per level)."""
    av = _ld(1, b"leaf")  # AnyValue.string_value = 1
    for _ in range(depth):
        kv = _ld(1, b"k") + _ld(2, av)  # KeyValue.key = 1, KeyValue.value = 2
        kvlist = _ld(1, kv)  # KeyValueList.values = 1
        av = _ld(6, kvlist)  # AnyValue.kvlist_value = 6
    return av


def nested_kvlist_json(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(depth):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    return value


# ---- talking to the server


def post(
    server: OtelogProcess,
    path: str,
    content: bytes,
    content_type: str | None = PROTOBUF,
    encoding: str | None = None,
) -> httpx.Response:
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    return httpx.post(server.http_url + path, content=content, headers=headers, timeout=60)


def error_status(resp: httpx.Response, want_content_type: str) -> status_pb2.Status:
    """The google.rpc.Status of an error response, decoded per its Content-Type."""
    ct = resp.headers.get("content-type", "").split(";")[0].strip()
    assert ct == want_content_type, (ct, resp.content[:300])
    if want_content_type == PROTOBUF:
        st = status_pb2.Status.FromString(resp.content)
    else:
        body = resp.json()
        assert isinstance(body, dict), body
        st = status_pb2.Status(code=int(body.get("code", 0)), message=body.get("message", ""))
    assert st.message, f"error without a message: {resp.status_code} {resp.content[:300]!r}"
    return st


def count(server: OtelogProcess, query: str) -> int:
    page = server.data("query($q: String!) { logs(query: $q, limit: 0) { total } }", {"q": query})
    total: int = page["logs"]["total"]
    return total


def bodies_of(server: OtelogProcess, service: str) -> list[str]:
    page = server.data(
        "query($q: String!) { logs(query: $q, limit: 1000) { total records { body } } }",
        {"q": f"service={service}"},
    )["logs"]
    return sorted(r["body"] for r in page["records"])


def assert_still_serving(server: OtelogProcess) -> None:
    """Health answers, and a valid export is acknowledged and searchable right away."""
    assert server.proc is not None and server.proc.poll() is None, server.log()[-3000:]
    health = httpx.get(server.api_url + "/healthz", timeout=10)
    assert health.status_code == 200, health.text
    service = unique_service("after")
    ok = post(server, "/v1/logs", logs_request(service, ["still alive"]).SerializeToString())
    assert ok.status_code == 200, ok.content
    assert bodies_of(server, service) == ["still alive"]


def grpc_call(server: OtelogProcess, method: str, payload: bytes) -> grpc.RpcError | bytes:
    """A raw unary call: bytes in, bytes (or the RpcError) out."""
    with grpc.insecure_channel(server.grpc_endpoint) as channel:
        call = channel.unary_unary(method)
        try:
            out: bytes = call(payload, timeout=30)
            return out
        except grpc.RpcError as e:
            return e


def grpc_error(server: OtelogProcess, method: str, payload: bytes) -> grpc.Call:
    res = grpc_call(server, method, payload)
    assert isinstance(res, grpc.RpcError), f"expected an error, got OK {res!r}"
    assert isinstance(res, grpc.Call)
    return res


def vm_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{key} not in /proc/{pid}/status")


# ---- malformed bodies


@pytest.mark.parametrize(
    "body",
    [
        b"this is not protobuf",  # 't' = field 14, wire type 4 (end group without a start)
        b"\x0a\x05abc",  # resource_logs claims 5 bytes, 3 follow
        b"\x0a\x03\xff\xff\xff",  # resource_logs holding garbage
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # a varint tag that never ends
    ],
    ids=["text", "truncated", "garbage-submessage", "endless-varint"],
)
def test_malformed_protobuf_is_400_with_a_status_message_and_the_next_request_is_served(
    server: OtelogProcess, body: bytes
) -> None:
    resp = post(server, "/v1/logs", body)
    assert resp.status_code == 400, (resp.status_code, resp.content)
    st = error_status(resp, PROTOBUF)
    assert st.code == code_pb2.INVALID_ARGUMENT
    assert_still_serving(server)


def test_malformed_protobuf_traces_are_400(server: OtelogProcess) -> None:
    resp = post(server, "/v1/traces", b"\x0a\x05abc")
    assert resp.status_code == 400, (resp.status_code, resp.content)
    assert error_status(resp, PROTOBUF).code == code_pb2.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "body",
    [
        b'{"resourceLogs": [',
        b"not json",
        b"",
        b'{"resourceLogs": []} trailing',
        b"\xff\xfe{}",
        b"[]",
        b"null",
    ],
    ids=["truncated", "text", "empty", "trailing", "bad-utf8", "array", "null"],
)
def test_invalid_json_is_400_with_a_json_status(server: OtelogProcess, body: bytes) -> None:
    resp = post(server, "/v1/logs", body, JSON)
    assert resp.status_code == 400, (resp.status_code, resp.content)
    st = error_status(resp, JSON)
    assert st.code == code_pb2.INVALID_ARGUMENT
    assert_still_serving(server)


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"timeUnixNano": True}, "timeUnixNano"),
        ({"timeUnixNano": "soon"}, "timeUnixNano"),
        ({"severityNumber": "LOUD"}, "severityNumber"),
        ({"severityText": 7}, "severityText"),
        ({"body": "a plain string, not an AnyValue"}, "body"),
        ({"body": {"intValue": "forty-two"}}, "intValue"),
        ({"attributes": {"user.id": 42}}, "attributes"),
        ({"attributes": [{"key": 7, "value": {"stringValue": "x"}}]}, "key"),
        ({"traceId": "not-hex-at-all-not-hex-at-all-xx"}, "traceId"),
        ({"traceId": "abcd"}, "traceId"),
        ({"spanId": 12345}, "spanId"),
    ],
    ids=lambda v: json.dumps(v)[:40] if isinstance(v, dict) else v,
)
def test_json_with_a_wrongly_typed_field_is_400_naming_the_field(
    server: OtelogProcess, record: dict[str, Any], field: str
) -> None:
    doc = json_logs(unique_service("badtype"), [{"body": {"stringValue": "x"}, **record}])
    resp = post(server, "/v1/logs", json.dumps(doc).encode(), JSON)
    assert resp.status_code == 400, (resp.status_code, resp.content)
    st = error_status(resp, JSON)
    assert field in st.message, st.message
    # the path says which record: resourceLogs[0].scopeLogs[0].logRecords[0]...
    assert "logRecords[0]" in st.message, st.message


def test_json_where_resource_logs_is_not_a_list_is_400_naming_it(server: OtelogProcess) -> None:
    resp = post(server, "/v1/logs", b'{"resourceLogs": {"scopeLogs": []}}', JSON)
    assert resp.status_code == 400, (resp.status_code, resp.content)
    assert "resourceLogs" in error_status(resp, JSON).message


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/xml", "application/grpc", "multipart/form-data"],
)
def test_unsupported_content_type_is_415(server: OtelogProcess, content_type: str | None) -> None:
    body = logs_request(unique_service("ct"), ["x"]).SerializeToString()
    resp = post(server, "/v1/logs", body, content_type)
    assert resp.status_code == 415, (resp.status_code, resp.content)
    st = error_status(resp, JSON)
    assert "Content-Type" in st.message or "content type" in st.message.lower(), st.message


def test_content_type_parameters_and_case_are_ignored(server: OtelogProcess) -> None:
    service = unique_service("ct-params")
    body = json.dumps(json_logs(service, [{"body": {"stringValue": "with charset"}}])).encode()
    resp = post(server, "/v1/logs", body, "Application/JSON; charset=utf-8")
    assert resp.status_code == 200, (resp.status_code, resp.content)
    assert bodies_of(server, service) == ["with charset"]


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_empty_export_is_accepted(server: OtelogProcess, content_type: str) -> None:
    resp = post(server, "/v1/logs", b"" if content_type == PROTOBUF else b"{}", content_type)
    assert resp.status_code == 200, (resp.status_code, resp.content)


# ---- size limits and compression


def _big_request(service: str, size: int) -> bytes:
    return bytes(logs_request(service, ["x" * size]).SerializeToString())


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_max_request_bytes_is_413(small: OtelogProcess, chunked: bool) -> None:
    service = unique_service("too-big")
    body = _big_request(service, SMALL_REQUEST_BYTES + 1000)
    assert len(body) > SMALL_REQUEST_BYTES
    if chunked:

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(body), 16 * 1024):
                yield body[i : i + 16 * 1024]

        resp = httpx.post(
            small.http_url + "/v1/logs",
            content=chunks(),
            headers={"Content-Type": PROTOBUF},
            timeout=60,
        )
    else:
        resp = post(small, "/v1/logs", body)
    assert resp.status_code == 413, (resp.status_code, resp.content[:300])
    st = error_status(resp, PROTOBUF)
    assert st.code == code_pb2.RESOURCE_EXHAUSTED
    assert str(SMALL_REQUEST_BYTES) in st.message, st.message
    assert count(small, f"service={service}") == 0
    assert_still_serving(small)


def test_body_just_under_max_request_bytes_is_accepted(small: OtelogProcess) -> None:
    service = unique_service("fits")
    body = _big_request(service, SMALL_REQUEST_BYTES - 1000)
    assert len(body) <= SMALL_REQUEST_BYTES
    resp = post(small, "/v1/logs", body)
    assert resp.status_code == 200, (resp.status_code, resp.content[:300])
    assert count(small, f"service={service}") == 1


def gzip_zeros(n_mib: int) -> bytes:
    """A valid gzip member of `n_mib` MiB of zeros, built without compressing them all.

    Deflate after a full flush restarts from a clean state, so every flushed MiB of zeros
    compresses to the same bytes: compress one MiB, repeat it, add the gzip trailer.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(n_mib):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, (n_mib << 20) & 0xFFFFFFFF)
    return header + block * n_mib + tail + trailer


def zstd_zeros(n_mib: int) -> bytes:
    """`n_mib` MiB of zeros as zstd: identical 64 MiB frames one after the other."""
    frame = zstandard.ZstdCompressor(level=3).compress(bytes(64 << 20))
    assert n_mib % 64 == 0
    return frame * (n_mib // 64)


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_compression_bomb_is_413_and_never_inflated_in_memory(
    server: OtelogProcess, encoding: str
) -> None:
    """1 GiB of zeros in about a MiB: refused at --max-decompressed-bytes (64 MiB)."""
    bomb = gzip_zeros(1024) if encoding == "gzip" else zstd_zeros(1024)
    assert len(bomb) < 2 << 20
    assert server.proc is not None
    pid = server.proc.pid
    peak_before = vm_kib(pid, "VmHWM")
    resp = post(server, "/v1/logs", bomb, PROTOBUF, encoding)
    assert resp.status_code == 413, (resp.status_code, resp.content[:300])
    st = error_status(resp, PROTOBUF)
    assert st.code == code_pb2.RESOURCE_EXHAUSTED
    assert "decompress" in st.message, st.message
    grown_mib = (vm_kib(pid, "VmHWM") - peak_before) / 1024
    # the cap is 64 MiB (buffers may double it); inflating the bomb would take 1 GiB
    assert grown_mib < 512, f"peak RSS grew by {grown_mib:.0f} MiB on a compression bomb"
    assert_still_serving(server)


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_body_decompressing_past_max_decompressed_bytes_is_413(
    small: OtelogProcess, encoding: str
) -> None:
    service = unique_service("inflates")
    # a valid request, small on the wire, 2 MiB once decompressed (the cap is 1 MiB)
    raw = _big_request(service, 2 * SMALL_DECOMPRESSED_BYTES)
    body = gzip.compress(raw) if encoding == "gzip" else zstandard.compress(raw)
    assert len(body) < SMALL_REQUEST_BYTES
    resp = post(small, "/v1/logs", body, PROTOBUF, encoding)
    assert resp.status_code == 413, (resp.status_code, resp.content[:300])
    assert str(SMALL_DECOMPRESSED_BYTES) in error_status(resp, PROTOBUF).message
    assert count(small, f"service={service}") == 0
    assert_still_serving(small)


@pytest.mark.parametrize(
    ("encoding", "mangle"),
    [
        ("gzip", "not compressed"),
        ("gzip", "truncated"),
        ("gzip", "corrupt"),
        ("zstd", "not compressed"),
        ("zstd", "truncated"),
    ],
)
def test_invalid_compressed_body_is_400(server: OtelogProcess, encoding: str, mangle: str) -> None:
    raw = logs_request(unique_service("badzip"), ["x" * 5000, "y" * 5000]).SerializeToString()
    packed = gzip.compress(raw) if encoding == "gzip" else zstandard.compress(raw)
    if mangle == "not compressed":
        body = raw
    elif mangle == "truncated":
        body = packed[: len(packed) // 2]
    else:
        body = packed[:10] + bytes(b ^ 0x5A for b in packed[10:-8]) + packed[-8:]
    resp = post(server, "/v1/logs", body, PROTOBUF, encoding)
    assert resp.status_code == 400, (resp.status_code, resp.content[:300])
    st = error_status(resp, PROTOBUF)
    assert encoding in st.message, st.message
    assert_still_serving(server)


def _compress(encoding: str, raw: bytes) -> bytes:
    return gzip.compress(raw) if encoding == "gzip" else zstandard.compress(raw)


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_compressed_body_of_several_members_is_stored_whole_or_refused(
    server: OtelogProcess, encoding: str
) -> None:
    """Two gzip members (RFC 1952 §2.2) or zstd frames (RFC 8878 §3) make one body.

    Decompressed, they are two serialized requests back to back, which protobuf reads as
    one request with both records. Storing only the first member and answering 200 would
    drop acknowledged records.
    """
    service = unique_service(f"members-{encoding}")
    first = logs_request(service, ["from the first member"]).SerializeToString()
    second = logs_request(service, ["from the second member"]).SerializeToString()
    resp = post(
        server,
        "/v1/logs",
        _compress(encoding, first) + _compress(encoding, second),
        PROTOBUF,
        encoding,
    )
    assert resp.status_code in (200, 400), (resp.status_code, resp.content[:300])
    if resp.status_code == 200:
        assert bodies_of(server, service) == ["from the first member", "from the second member"]
    else:
        error_status(resp, PROTOBUF)
        assert bodies_of(server, service) == []


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_compressed_body_with_trailing_garbage_is_400(server: OtelogProcess, encoding: str) -> None:
    service = unique_service(f"trailing-{encoding}")
    raw = logs_request(service, ["before the garbage"]).SerializeToString()
    resp = post(
        server, "/v1/logs", _compress(encoding, raw) + b"trailing garbage!", PROTOBUF, encoding
    )
    assert resp.status_code == 400, (resp.status_code, resp.content[:300])
    assert encoding in error_status(resp, PROTOBUF).message
    assert bodies_of(server, service) == []


def test_unknown_content_encoding_is_refused_with_a_message(server: OtelogProcess) -> None:
    raw = logs_request(unique_service("br"), ["x"]).SerializeToString()
    resp = post(server, "/v1/logs", raw, PROTOBUF, "br")
    assert resp.status_code in (400, 415), (resp.status_code, resp.content[:300])
    assert "br" in error_status(resp, PROTOBUF).message


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_compressed_bodies_are_accepted(
    server: OtelogProcess, encoding: str, content_type: str
) -> None:
    service = unique_service(f"{encoding}-ok")
    bodies = [f"compressed record {n}" for n in range(3)]
    if content_type == PROTOBUF:
        raw = logs_request(service, bodies).SerializeToString()
    else:
        records = [
            {"timeUnixNano": str(time.time_ns()), "body": {"stringValue": b}} for b in bodies
        ]
        raw = json.dumps(json_logs(service, records)).encode()
    body = gzip.compress(raw) if encoding == "gzip" else zstandard.compress(raw)
    resp = post(server, "/v1/logs", body, content_type, encoding)
    assert resp.status_code == 200, (resp.status_code, resp.content[:300])
    assert bodies_of(server, service) == sorted(bodies)


# ---- JSON ids and values


def test_json_log_with_hex_ids_and_typed_attributes_round_trips_through_graphql(
    server: OtelogProcess,
) -> None:
    service = unique_service("json-ids")
    trace_id = secrets.token_hex(16)
    span_id = secrets.token_hex(8)
    record = {
        "timeUnixNano": str(time.time_ns()),
        "observedTimeUnixNano": str(time.time_ns()),
        "severityNumber": 17,
        "severityText": "Error",
        "traceId": trace_id,
        "spanId": span_id,
        "body": {"stringValue": "payment declined"},
        "attributes": [
            {"key": "user.id", "value": {"intValue": "42"}},
            {"key": "ratio", "value": {"doubleValue": 0.25}},
            {"key": "retry", "value": {"boolValue": True}},
            {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}},
            {
                "key": "http",
                "value": {
                    "kvlistValue": {"values": [{"key": "status", "value": {"intValue": 502}}]}
                },
            },
        ],
    }
    resp = post(server, "/v1/logs", json.dumps(json_logs(service, [record])).encode(), JSON)
    assert resp.status_code == 200, (resp.status_code, resp.content)
    assert resp.headers["content-type"].startswith(JSON)
    assert "partialSuccess" not in resp.json() or not resp.json()["partialSuccess"]

    page = server.data(
        """query($q: String!) { logs(query: $q) { total records {
            traceId spanId level severityText body attributes service } } }""",
        {"q": f"trace_id={trace_id}"},
    )["logs"]
    assert page["total"] == 1, page
    rec = page["records"][0]
    assert rec["traceId"] == trace_id
    assert rec["spanId"] == span_id
    assert rec["service"] == service
    assert rec["level"] == "ERROR"
    assert rec["severityText"] == "Error"
    assert rec["body"] == "payment declined"
    assert rec["attributes"] == {
        "user.id": 42,
        "ratio": 0.25,
        "retry": True,
        "tags": ["a"],
        "http": {"status": 502},
    }
    trace = server.data(
        "query($t: String!) { trace(traceId: $t) { traceId logs { spanId } } }",
        {"t": trace_id.upper()},
    )["trace"]
    assert trace is not None
    assert trace["traceId"] == trace_id
    assert [r["spanId"] for r in trace["logs"]] == [span_id]


def test_json_spans_with_hex_ids_round_trip_through_trace(server: OtelogProcess) -> None:
    service = unique_service("json-spans")
    trace_id = secrets.token_hex(16)
    root, child = secrets.token_hex(8), secrets.token_hex(8)
    now = time.time_ns()
    doc = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": root,
                                "name": "GET /cart",
                                "kind": 2,
                                "startTimeUnixNano": str(now),
                                "endTimeUnixNano": str(now + 5_000_000),
                            },
                            {
                                "traceId": trace_id,
                                "spanId": child,
                                "parentSpanId": root,
                                "name": "SELECT cart",
                                "kind": "SPAN_KIND_CLIENT",
                                "startTimeUnixNano": str(now + 1_000_000),
                                "endTimeUnixNano": str(now + 3_000_000),
                                "status": {"code": 2, "message": "timeout"},
                            },
                        ]
                    }
                ],
            }
        ]
    }
    resp = post(server, "/v1/traces", json.dumps(doc).encode(), JSON)
    assert resp.status_code == 200, (resp.status_code, resp.content)
    trace = server.data(
        """query($t: String!) { trace(traceId: $t) { traceId services
            spans { spanId parentSpanId name kind durationMs status } } }""",
        {"t": trace_id},
    )["trace"]
    assert trace is not None
    assert trace["traceId"] == trace_id
    assert trace["services"] == [service]
    spans = {s["spanId"]: s for s in trace["spans"]}
    assert set(spans) == {root, child}
    assert spans[root]["parentSpanId"] is None
    assert spans[root]["kind"] == "SERVER"
    assert spans[root]["durationMs"] == pytest.approx(5.0)
    assert spans[child]["parentSpanId"] == root
    assert spans[child]["kind"] == "CLIENT"
    assert spans[child]["status"] == "ERROR"
    assert spans[child]["durationMs"] == pytest.approx(2.0)


# ---- partial success: timestamps out of range


def _partial_success_request(service: str) -> tuple[ExportLogsServiceRequest, list[str]]:
    now = time.time_ns()
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
    sl = rl.scope_logs.add()
    stamps = [
        ("valid now", now),
        ("from the future", now + 10 * YEAR_NS),
        ("valid a minute ago", now - 60 * 10**9),
        ("from 1970", 86_400 * 10**9),  # 2 January 1970: set, but before 2000
        ("valid with only observed time", 0),
    ]
    for body, ts in stamps:
        lr = sl.log_records.add(
            time_unix_nano=ts, severity_number=13, body=AnyValue(string_value=body)
        )
        if ts == 0:
            lr.observed_time_unix_nano = now
    return req, ["valid a minute ago", "valid now", "valid with only observed time"]


def _to_json(req: ExportLogsServiceRequest) -> bytes:
    records = []
    for lr in req.resource_logs[0].scope_logs[0].log_records:
        rec: dict[str, Any] = {
            "severityNumber": lr.severity_number,
            "body": {"stringValue": lr.body.string_value},
        }
        if lr.time_unix_nano:
            rec["timeUnixNano"] = str(lr.time_unix_nano)
        if lr.observed_time_unix_nano:
            rec["observedTimeUnixNano"] = str(lr.observed_time_unix_nano)
        records.append(rec)
    service = req.resource_logs[0].resource.attributes[0].value.string_value
    return json.dumps(json_logs(service, records)).encode()


@pytest.mark.parametrize("transport", ["http-protobuf", "http-json", "grpc"])
def test_records_stamped_far_in_the_future_or_before_2000_are_rejected_as_partial_success(
    server: OtelogProcess, transport: str
) -> None:
    service = unique_service(f"partial-{transport}")
    req, valid = _partial_success_request(service)
    if transport == "http-protobuf":
        resp = post(server, "/v1/logs", req.SerializeToString())
        assert resp.status_code == 200, (resp.status_code, resp.content)
        ps = ExportLogsServiceResponse.FromString(resp.content).partial_success
        rejected, message = ps.rejected_log_records, ps.error_message
    elif transport == "http-json":
        resp = post(server, "/v1/logs", _to_json(req), JSON)
        assert resp.status_code == 200, (resp.status_code, resp.content)
        ps_json = resp.json()["partialSuccess"]
        rejected, message = int(ps_json["rejectedLogRecords"]), ps_json["errorMessage"]
    else:
        out = grpc_call(server, LOGS_EXPORT, req.SerializeToString())
        assert isinstance(out, bytes), out
        ps = ExportLogsServiceResponse.FromString(out).partial_success
        rejected, message = ps.rejected_log_records, ps.error_message
    assert rejected == 2
    assert "timestamp" in message, message
    assert bodies_of(server, service) == valid


def test_a_request_whose_records_are_all_rejected_stores_nothing(server: OtelogProcess) -> None:
    service = unique_service("all-rejected")
    req = logs_request(service, ["future a", "future b"], ts_ns=time.time_ns() + 10 * YEAR_NS)
    resp = post(server, "/v1/logs", req.SerializeToString())
    assert resp.status_code == 200, (resp.status_code, resp.content)
    ps = ExportLogsServiceResponse.FromString(resp.content).partial_success
    assert ps.rejected_log_records == 2
    assert ps.error_message
    assert count(server, f"service={service}") == 0


# ---- hostile structure


def _assert_stored_or_clean_400(
    server: OtelogProcess, resp: httpx.Response, service: str, content_type: str
) -> None:
    assert resp.status_code in (200, 400), (resp.status_code, resp.content[:300])
    if resp.status_code == 400:
        error_status(resp, content_type)
    else:
        # acknowledged: it must be there, and reading it back must not fail either
        page = server.data(
            "query($q: String!) { logs(query: $q) { total records { body attributes } } }",
            {"q": f"service={service}"},
        )["logs"]
        assert page["total"] == 1, page
    assert_still_serving(server)


def test_kvlist_nested_200_levels_in_protobuf_is_stored_or_a_clean_400(
    server: OtelogProcess,
) -> None:
    service = unique_service("deep-pb")
    rec = record_prefix("deep protobuf") + _ld(
        6, _ld(1, b"deep") + _ld(2, nested_kvlist_any_value(200))
    )
    resp = post(server, "/v1/logs", raw_logs_request(service, rec))
    _assert_stored_or_clean_400(server, resp, service, PROTOBUF)


def test_kvlist_nested_200_levels_in_json_is_stored_or_a_clean_400(server: OtelogProcess) -> None:
    service = unique_service("deep-json")
    record = {
        "body": {"stringValue": "deep json"},
        "attributes": [{"key": "deep", "value": nested_kvlist_json(200)}],
    }
    resp = post(server, "/v1/logs", json.dumps(json_logs(service, [record])).encode(), JSON)
    _assert_stored_or_clean_400(server, resp, service, JSON)


def test_json_nested_100000_levels_is_a_clean_400(server: OtelogProcess) -> None:
    depth = 100_000
    body = b'{"resourceLogs": ' + b"[" * depth + b"]" * depth + b"}"
    resp = post(server, "/v1/logs", body, JSON)
    assert resp.status_code == 400, (resp.status_code, resp.content[:300])
    error_status(resp, JSON)
    assert_still_serving(server)


def test_kvlist_nested_200_levels_over_grpc_is_ok_or_invalid_argument(
    server: OtelogProcess,
) -> None:
    service = unique_service("deep-grpc")
    rec = record_prefix("deep grpc") + _ld(
        6, _ld(1, b"deep") + _ld(2, nested_kvlist_any_value(200))
    )
    out = grpc_call(server, LOGS_EXPORT, raw_logs_request(service, rec))
    if isinstance(out, grpc.Call):
        assert out.code() == grpc.StatusCode.INVALID_ARGUMENT, (out.code(), out.details())
        assert out.details()
    else:
        assert count(server, f"service={service}") == 1
    assert_still_serving(server)


def _bad_utf8_records() -> dict[str, bytes]:
    bad = b"caf\xc3\x28 \xff"
    return {
        "body": LogRecord(time_unix_nano=time.time_ns()).SerializeToString()
        + _ld(5, _ld(1, bad)),  # LogRecord.body = 5, AnyValue.string_value = 1
        "severity_text": record_prefix("x") + _ld(3, bad),  # LogRecord.severity_text = 3
        "attribute_key": record_prefix("x") + _ld(6, _ld(1, bad) + _ld(2, _ld(1, b"v"))),
        "attribute_value": record_prefix("x") + _ld(6, _ld(1, b"k") + _ld(2, _ld(1, bad))),
    }


@pytest.mark.parametrize("where", sorted(_bad_utf8_records()))
def test_invalid_utf8_in_a_protobuf_string_is_400(server: OtelogProcess, where: str) -> None:
    service = unique_service("utf8")
    resp = post(server, "/v1/logs", raw_logs_request(service, _bad_utf8_records()[where]))
    assert resp.status_code == 400, (resp.status_code, resp.content[:300])
    st = error_status(resp, PROTOBUF)
    assert st.code == code_pb2.INVALID_ARGUMENT
    assert count(server, f"service={service}") == 0
    assert_still_serving(server)


def test_invalid_utf8_in_a_protobuf_string_over_grpc_is_invalid_argument(
    server: OtelogProcess,
) -> None:
    rec = _bad_utf8_records()["body"]
    err = grpc_error(server, LOGS_EXPORT, raw_logs_request(unique_service("utf8-grpc"), rec))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())


# ---- endpoints that do not exist


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_v1_metrics_is_404_with_a_message(server: OtelogProcess, content_type: str) -> None:
    resp = post(server, "/v1/metrics", b"" if content_type == PROTOBUF else b"{}", content_type)
    assert resp.status_code == 404, (resp.status_code, resp.content)
    assert "metrics" in error_status(resp, content_type).message


def test_unknown_path_is_404_with_a_message(server: OtelogProcess) -> None:
    resp = post(server, "/v1/profiles", b"")
    assert resp.status_code == 404, (resp.status_code, resp.content)
    assert error_status(resp, JSON).message


def test_get_on_v1_logs_is_405(server: OtelogProcess) -> None:
    resp = httpx.get(server.http_url + "/v1/logs", timeout=10)
    assert resp.status_code == 405, (resp.status_code, resp.content)
    assert "POST" in resp.headers.get("allow", "")


# ---- gRPC


@pytest.mark.parametrize("method", [LOGS_EXPORT, TRACES_EXPORT], ids=["logs", "traces"])
def test_grpc_malformed_bytes_are_invalid_argument(server: OtelogProcess, method: str) -> None:
    err = grpc_error(server, method, b"this is not protobuf")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    assert err.details()
    assert_still_serving(server)


def test_grpc_metrics_export_is_unimplemented(server: OtelogProcess) -> None:
    err = grpc_error(server, METRICS_EXPORT, b"")
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED, (err.code(), err.details())


def test_grpc_unknown_service_is_unimplemented(server: OtelogProcess) -> None:
    err = grpc_error(
        server, "/opentelemetry.proto.collector.profiles.v1.ProfilesService/Export", b""
    )
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED, (err.code(), err.details())


def test_grpc_message_over_max_request_bytes_is_resource_exhausted(small: OtelogProcess) -> None:
    service = unique_service("grpc-big")
    err = grpc_error(small, LOGS_EXPORT, _big_request(service, SMALL_REQUEST_BYTES + 1000))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (err.code(), err.details())
    assert count(small, f"service={service}") == 0
    assert_still_serving(small)


# ---- GraphQL: bad queries are GraphQL errors that say what is wrong, never a 500


@pytest.mark.parametrize(
    ("document", "variables", "expected"),
    [
        ("query($q: String!) { logs(query: $q) { total } }", {"q": "service="}, "position"),
        ("query($q: String!) { logs(query: $q) { total } }", {"q": "(level=ERROR"}, "position"),
        ("query($q: String!) { logs(query: $q) { total } }", {"q": 'body="open'}, "position"),
        ("query($q: String!) { logs(query: $q) { total } }", {"q": "AND AND"}, "position"),
        ("query($q: String!) { logs(query: $q) { total } }", {"q": "level=LOUD"}, "LOUD"),
        ("{ logs(limit: 100000) { total } }", None, "limit"),
        ("{ logs(limit: -1) { total } }", None, "limit"),
        ('{ trace(traceId: "xyz") { traceId } }', None, "traceId"),
        ('{ trace(traceId: "abcd") { traceId } }', None, "traceId"),
        ('{ logs(since: "2 fortnights") { total } }', None, "since"),
        ('{ logs(since: "-5m") { total } }', None, "since"),
        ('{ logs(pageToken: "garbage") { total } }', None, "pageToken"),
    ],
    ids=[
        "dangling-operator",
        "unclosed-paren",
        "unterminated-string",
        "double-and",
        "unknown-level",
        "huge-limit",
        "negative-limit",
        "trace-not-hex",
        "trace-too-short",
        "since-fortnights",
        "since-negative",
        "bad-page-token",
    ],
)
def test_bad_graphql_argument_is_a_graphql_error_naming_the_problem(
    server: OtelogProcess, document: str, variables: dict[str, Any] | None, expected: str
) -> None:
    body = server.graphql(document, variables)  # asserts HTTP 200
    assert body.get("errors"), body
    message = body["errors"][0]["message"]
    assert expected in message, message
    assert "internal" not in message.lower(), message
    # no partial answer: `data` is null, or null in the field that failed
    assert not any((body.get("data") or {}).values()), body


def test_query_syntax_error_reports_where_it_broke(server: OtelogProcess) -> None:
    body = server.graphql(
        "query($q: String!) { logs(query: $q) { total } }",
        {"q": "service=auth AND (level=ERROR OR"},
    )
    assert body.get("errors"), body
    err = body["errors"][0]
    assert "position" in err["message"], err
    position = err.get("extensions", {}).get("position")
    assert isinstance(position, int), err
    assert 25 <= position <= len("service=auth AND (level=ERROR OR"), err
