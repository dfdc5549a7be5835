"""The real OpenTelemetry Python SDK talking to a real `otelog serve` over the wire.

The tests share one server (module scope: starting one costs about a second) and stay
independent of each other through unique service names and trace ids. Every test builds
its own providers and shuts them down; only provider-local loggers and tracers are used,
the SDK's global providers are never set.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from conftest import OtelogProcess
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as GrpcLogExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler, LogRecordProcessor
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import format_span_id, format_trace_id

LOG_FIELDS = """
    logId timestamp service level body traceId spanId host attributes resource severityText
"""

# Python logging level -> the level otelog must derive from the SDK's severity_number
PY_LEVELS: list[tuple[int, str]] = [
    (logging.DEBUG, "DEBUG"),
    (logging.INFO, "INFO"),
    (logging.WARNING, "WARN"),
    (logging.ERROR, "ERROR"),
    (logging.CRITICAL, "FATAL"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtelogProcess]:
    proc = OtelogProcess(tmp_path_factory.mktemp("otlp-sdk") / "data")
    try:
        yield proc.start()
    finally:
        proc.stop()


def unique_service(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@contextmanager
def python_logger(provider: LoggerProvider, name: str) -> Iterator[logging.Logger]:
    """A stdlib logger whose records go only to `provider` (no propagation to root)."""
    handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)


def log_provider(service: str, host: str, processor: LogRecordProcessor) -> LoggerProvider:
    provider = LoggerProvider(
        resource=Resource.create({"service.name": service, "host.name": host})
    )
    provider.add_log_record_processor(processor)
    return provider


def emit_every_level(logger: logging.Logger, run: str) -> dict[str, dict[str, Any]]:
    """One record per level with typed `extra` attributes; returns body -> expectations."""
    expected: dict[str, dict[str, Any]] = {}
    for n, (py_level, level) in enumerate(PY_LEVELS):
        body = f"{run} checkout step {n} at {level.lower()}"
        attrs: dict[str, Any] = {
            "user.id": 40 + n,  # int
            "cart": f"cart-{n}",  # str
            "amount": 12.5 + n,  # float
            "vip": n % 2 == 0,  # bool
            "http": {"route": "/checkout", "status": 200 + n},  # nested map
        }
        logger.log(py_level, body, extra=attrs)
        expected[body] = {"level": level, "attributes": attrs}
    return expected


def fetch_service_logs(server: OtelogProcess, service: str) -> list[dict[str, Any]]:
    page = server.data(
        "query($q: String!) { logs(query: $q, limit: 1000) { total records {"
        + LOG_FIELDS
        + "} } }",
        {"q": f"service={service}"},
    )["logs"]
    assert page["total"] == len(page["records"]), page["total"]
    records: list[dict[str, Any]] = page["records"]
    return records


def assert_levels_stored(
    server: OtelogProcess, service: str, host: str, expected: dict[str, dict[str, Any]]
) -> None:
    records = fetch_service_logs(server, service)
    by_body = {r["body"]: r for r in records}
    assert sorted(by_body) == sorted(expected), records
    assert len(records) == len(expected), "a record was stored twice"
    for body, want in expected.items():
        got = by_body[body]
        assert got["service"] == service
        assert got["host"] == host
        assert got["level"] == want["level"], (body, got["level"])
        assert got["resource"]["service.name"] == service
        assert got["resource"]["host.name"] == host
        for key, value in want["attributes"].items():
            assert key in got["attributes"], (key, got["attributes"])
            assert got["attributes"][key] == value, (key, got["attributes"][key], value)
            assert type(got["attributes"][key]) is type(value), (key, got["attributes"][key])
        assert got["traceId"] is None and got["spanId"] is None, got
        assert len(got["logId"]) > 0


def test_sdk_logging_handler_over_grpc_stores_every_level_with_attributes_and_host(
    server: OtelogProcess,
) -> None:
    service = unique_service("sdk-grpc")
    exporter = GrpcLogExporter(endpoint=server.grpc_endpoint, insecure=True)
    provider = log_provider(service, "grpc-host-1", BatchLogRecordProcessor(exporter))
    try:
        with python_logger(provider, service) as logger:
            expected = emit_every_level(logger, "grpc")
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()
    assert_levels_stored(server, service, "grpc-host-1", expected)


@pytest.mark.parametrize(
    "compression",
    [Compression.NoCompression, Compression.Gzip],
    ids=["uncompressed", "gzip"],
)
def test_sdk_logging_handler_over_http_stores_every_level_with_attributes_and_host(
    server: OtelogProcess, compression: Compression
) -> None:
    service = unique_service(f"sdk-http-{compression.value}")
    exporter = HttpLogExporter(endpoint=server.http_url + "/v1/logs", compression=compression)
    provider = log_provider(service, "http-host-1", SimpleLogRecordProcessor(exporter))
    try:
        with python_logger(provider, service) as logger:
            expected = emit_every_level(logger, f"http-{compression.value}")
    finally:
        provider.shutdown()
    assert_levels_stored(server, service, "http-host-1", expected)


def test_sdk_logs_are_searchable_as_soon_as_the_export_returns(server: OtelogProcess) -> None:
    service = unique_service("sdk-fresh")
    exporter = GrpcLogExporter(endpoint=server.grpc_endpoint, insecure=True)
    provider = log_provider(service, "fresh-host", SimpleLogRecordProcessor(exporter))
    try:
        with python_logger(provider, service) as logger:
            for n in range(5):
                # SimpleLogRecordProcessor exports synchronously: the record is acknowledged
                # when this call returns, and must be visible to the very next query
                logger.warning("payment retry %d", n, extra={"attempt": n})
                records = fetch_service_logs(server, service)
                assert len(records) == n + 1, records
                assert records[0]["body"] == f"payment retry {n}"
    finally:
        provider.shutdown()


def test_trace_returns_the_span_tree_and_exactly_the_logs_emitted_inside_it(
    server: OtelogProcess,
) -> None:
    service = unique_service("sdk-trace")
    resource = Resource.create({"service.name": service, "host.name": "trace-host"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(GrpcSpanExporter(endpoint=server.grpc_endpoint, insecure=True))
    )
    log_exporter = GrpcLogExporter(endpoint=server.grpc_endpoint, insecure=True)
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    tracer = tracer_provider.get_tracer("otelog.tests")
    # body -> name of the span it was emitted in
    inside: dict[str, str] = {}
    try:
        with python_logger(logger_provider, service) as log:
            log.info("before any span")
            with tracer.start_as_current_span("checkout") as root:
                log.info("checkout started")
                inside["checkout started"] = "checkout"
                time.sleep(0.002)
                with tracer.start_as_current_span("charge"):
                    log.info("charging card")
                    inside["charging card"] = "charge"
                    try:
                        with tracer.start_as_current_span("db.query") as query:
                            query.add_event("cache.miss", {"cache.key": "cart:7"})
                            log.warning("slow query")
                            inside["slow query"] = "db.query"
                            time.sleep(0.002)
                            raise RuntimeError("card declined")
                    except RuntimeError:
                        log.exception("charge failed")
                        inside["charge failed"] = "charge"
                    time.sleep(0.002)
                with tracer.start_as_current_span("notify"):
                    log.info("email queued")
                    inside["email queued"] = "notify"
                    time.sleep(0.002)
            with tracer.start_as_current_span("another request"):
                log.info("a log of another trace")
            log.info("after every span")
            trace_id = format_trace_id(root.get_span_context().trace_id)
    finally:
        tracer_provider.shutdown()
        logger_provider.shutdown()

    trace = server.data(
        """query($t: String!) { trace(traceId: $t) {
            traceId services
            spans { spanId parentSpanId name service kind startTime durationMs status
                    attributes events }
            logs { logId body spanId traceId service level } } }""",
        {"t": trace_id},
    )["trace"]
    assert trace is not None, f"trace {trace_id} not found"
    assert trace["traceId"] == trace_id
    assert trace["services"] == [service]

    spans = {s["name"]: s for s in trace["spans"]}
    assert sorted(spans) == ["charge", "checkout", "db.query", "notify"], trace["spans"]
    assert len(trace["spans"]) == 4
    ids = {name: s["spanId"] for name, s in spans.items()}
    assert spans["checkout"]["parentSpanId"] is None
    assert spans["charge"]["parentSpanId"] == ids["checkout"]
    assert spans["db.query"]["parentSpanId"] == ids["charge"]
    assert spans["notify"]["parentSpanId"] == ids["checkout"]
    for s in trace["spans"]:
        assert s["service"] == service
        assert s["durationMs"] > 0, s
        assert s["kind"] == "INTERNAL", s
    assert spans["checkout"]["durationMs"] >= spans["charge"]["durationMs"]

    assert spans["db.query"]["status"] == "ERROR", spans["db.query"]
    assert spans["checkout"]["status"] != "ERROR"
    events = {e["name"]: e for e in spans["db.query"]["events"]}
    assert "cache.miss" in events, spans["db.query"]["events"]
    assert events["cache.miss"]["attributes"] == {"cache.key": "cart:7"}
    assert "exception" in events, spans["db.query"]["events"]
    assert events["exception"]["attributes"]["exception.type"] == "RuntimeError"
    assert events["exception"]["attributes"]["exception.message"] == "card declined"

    logs = trace["logs"]
    assert sorted(r["body"] for r in logs) == sorted(inside), logs
    assert len({r["logId"] for r in logs}) == len(logs)
    for r in logs:
        assert r["traceId"] == trace_id
        assert r["service"] == service
        assert r["spanId"] == ids[inside[r["body"]]], (r["body"], r["spanId"], ids)
    levels = {r["body"]: r["level"] for r in logs}
    assert levels["slow query"] == "WARN"
    assert levels["charge failed"] == "ERROR"


# ---- (d) the trace-id needle on old data, no time window


def _old_logs_request(
    service: str, trace_id: bytes, start_ns: int, bodies: list[str], others: int
) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
    sl = rl.scope_logs.add()
    for n, body in enumerate(bodies):
        sl.log_records.add(
            time_unix_nano=start_ns + n * 1_000_000,
            severity_number=9,
            body=AnyValue(string_value=body),
            trace_id=trace_id,
            span_id=secrets.token_bytes(8),
        )
    for n in range(others):
        sl.log_records.add(
            time_unix_nano=start_ns + n * 1_000_000,
            severity_number=9,
            body=AnyValue(string_value=f"unrelated {n}"),
            trace_id=secrets.token_bytes(16),
            span_id=secrets.token_bytes(8),
        )
    return req


def _send_old_trace_logs(server: OtelogProcess, service: str) -> tuple[str, list[str]]:
    """Logs of one trace stamped 3 days ago, half sealed into a segment, half still fresh."""
    trace_id = secrets.token_bytes(16)
    three_days_ago = time.time_ns() - 3 * 86_400 * 10**9
    first = [f"old step {n}" for n in range(3)]
    second = [f"older retry {n}" for n in range(2)]
    with grpc.insecure_channel(server.grpc_endpoint) as channel:
        stub = LogsServiceStub(channel)
        resp = stub.Export(
            _old_logs_request(service, trace_id, three_days_ago, first, 4), timeout=10
        )
        assert not resp.HasField("partial_success"), resp
        time.sleep(1.0)  # past the seal interval: the first request is in a sealed segment
        resp = stub.Export(
            _old_logs_request(service, trace_id, three_days_ago - 3600 * 10**9, second, 3),
            timeout=10,
        )
        assert not resp.HasField("partial_success"), resp
    return trace_id.hex(), first + second


def test_trace_finds_logs_stamped_days_ago_without_a_time_window(server: OtelogProcess) -> None:
    service = unique_service("old-trace")
    trace_id, bodies = _send_old_trace_logs(server, service)
    trace = server.data(
        "query($t: String!) { trace(traceId: $t) { traceId services logs { body traceId } } }",
        {"t": trace_id},
    )["trace"]
    assert trace is not None
    assert trace["traceId"] == trace_id
    assert trace["services"] == [service]
    assert sorted(r["body"] for r in trace["logs"]) == sorted(bodies)
    assert all(r["traceId"] == trace_id for r in trace["logs"])


def test_trace_id_query_finds_logs_stamped_days_ago_without_since(server: OtelogProcess) -> None:
    service = unique_service("old-needle")
    trace_id, bodies = _send_old_trace_logs(server, service)
    page = server.data(
        "query($q: String!) { logs(query: $q) { total records { body traceId service } } }",
        {"q": f"trace_id={trace_id}"},
    )["logs"]
    assert page["total"] == len(bodies), page
    assert sorted(r["body"] for r in page["records"]) == sorted(bodies)
    assert {r["traceId"] for r in page["records"]} == {trace_id}
    assert {r["service"] for r in page["records"]} == {service}


def test_trace_of_an_unknown_trace_id_is_null(server: OtelogProcess) -> None:
    body = server.data(
        "query($t: String!) { trace(traceId: $t) { traceId } }", {"t": secrets.token_hex(16)}
    )
    assert body["trace"] is None


# ---- (e) services


def test_services_lists_services_that_sent_logs_and_services_that_sent_only_spans(
    server: OtelogProcess,
) -> None:
    logs_service = unique_service("svc-logs")
    spans_service = unique_service("svc-spans")

    log_exporter = GrpcLogExporter(endpoint=server.grpc_endpoint, insecure=True)
    logger_provider = log_provider(logs_service, "h", SimpleLogRecordProcessor(log_exporter))
    tracer_provider = TracerProvider(resource=Resource.create({"service.name": spans_service}))
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(GrpcSpanExporter(endpoint=server.grpc_endpoint, insecure=True))
    )
    try:
        with python_logger(logger_provider, logs_service) as logger:
            logger.info("hello from the logs service")
        with tracer_provider.get_tracer("otelog.tests").start_as_current_span("only a span") as sp:
            span_id = format_span_id(sp.get_span_context().span_id)
    finally:
        logger_provider.shutdown()
        tracer_provider.shutdown()
    assert span_id
    services = server.data("{ services }")["services"]
    assert logs_service in services, services
    assert spans_service in services, services
    assert len(services) == len(set(services)), services
