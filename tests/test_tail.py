"""Live tail: GraphQL subscriptions (graphql-transport-ws, legacy graphql-ws) and the
`/logs/stream` WebSocket, against a real `otelog serve`, fed by the OpenTelemetry SDK and
by raw OTLP/gRPC; and the hub and the forward store read (resume) in-process.

Most tests share one server (module scope) and stay independent through unique service
names. A subscription has no "subscribed" acknowledgement in either protocol, so a test
first sends marker records matching its filter until one comes back (`wait_live`): from
then on the subscription is registered and nothing it should see can be missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from conftest import OtelogProcess
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourcePb
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from otelog.api.tail import SubscriberTooSlow, TailHub, parse_cursor, tail_rows
from otelog.errors import InvalidArgument
from otelog.ingest.writer import Writer
from otelog.model import DEFAULT_TENANT
from otelog.query.parser import parse
from otelog.query.resume import records_after
from otelog.receiver.decode import DecodeLimits, decode_logs
from otelog.store.store import Store

TAIL = """subscription($q: String!, $after: String) {
  tail(query: $q, after: $after) {
    logId timestamp service level body traceId spanId host attributes
  }
}"""
WAIT = 15.0  # seconds a test waits for something that normally takes milliseconds
MARKER = "tail-marker"
SEV = {"DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtelogProcess]:
    proc = OtelogProcess(tmp_path_factory.mktemp("tail") / "data")
    try:
        yield proc.start()
    finally:
        proc.stop()


def unique_service(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- sending ----------------------------------------------------------------------------------


def otlp_request(
    service: str,
    bodies: list[str],
    level: str = "WARN",
    ts_ns: int | None = None,
    attributes: dict[str, str | int] | None = None,
    trace_id: bytes = b"",
    span_id: bytes = b"",
) -> ExportLogsServiceRequest:
    now = time.time_ns() if ts_ns is None else ts_ns
    attrs = [
        KeyValue(
            key=k,
            value=AnyValue(int_value=v) if isinstance(v, int) else AnyValue(string_value=v),
        )
        for k, v in (attributes or {}).items()
    ]
    records = [
        LogRecord(
            time_unix_nano=now,
            severity_number=SEV[level],  # type: ignore[arg-type]
            severity_text=level,
            body=AnyValue(string_value=b),
            attributes=attrs,
            trace_id=trace_id,
            span_id=span_id,
        )
        for b in bodies
    ]
    resource = ResourcePb(
        attributes=[
            KeyValue(key="service.name", value=AnyValue(string_value=service)),
            KeyValue(key="host.name", value=AnyValue(string_value="tail-host")),
        ]
    )
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=resource, scope_logs=[ScopeLogs(log_records=records)])]
    )


class Sender:
    """Raw OTLP/gRPC exports; `export` returns once the server acknowledged (durable)."""

    def __init__(self, server: OtelogProcess) -> None:
        self.channel = grpc.insecure_channel(server.grpc_endpoint)
        self.stub = LogsServiceStub(self.channel)

    def export(self, req: ExportLogsServiceRequest) -> None:
        resp = self.stub.Export(req, timeout=30)
        assert resp.partial_success.rejected_log_records == 0, resp

    def send(self, service: str, bodies: list[str], level: str = "WARN", **kw: Any) -> None:
        self.export(otlp_request(service, bodies, level, **kw))

    def close(self) -> None:
        self.channel.close()


@pytest.fixture
def sender(server: OtelogProcess) -> Iterator[Sender]:
    s = Sender(server)
    yield s
    s.close()


# -- a graphql-transport-ws client --------------------------------------------------------------


class Gql:
    """The client side of graphql-transport-ws (or legacy graphql-ws) over `websockets`."""

    def __init__(self, ws: ClientConnection, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self._ids = 0

    async def subscribe(self, query: str, variables: dict[str, Any]) -> str:
        self._ids += 1
        op = str(self._ids)
        kind = "subscribe" if self.protocol == "graphql-transport-ws" else "start"
        payload = {"query": query, "variables": variables}
        await self.ws.send(json.dumps({"id": op, "type": kind, "payload": payload}))
        return op

    async def message(self, timeout: float = WAIT) -> dict[str, Any]:
        """The next message about an operation; keep-alives are answered and skipped."""
        while True:
            msg: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if msg["type"] == "ping":
                await self.ws.send(json.dumps({"type": "pong"}))
            elif msg["type"] not in ("pong", "ka"):
                return msg

    async def record(self, timeout: float = WAIT) -> dict[str, Any]:
        """The next record of any subscription; fails on anything else."""
        msg = await self.message(timeout)
        assert msg["type"] in ("next", "data"), msg
        assert not msg["payload"].get("errors"), msg
        rec: dict[str, Any] = msg["payload"]["data"]["tail"]
        return rec


@contextlib.asynccontextmanager
async def gql_client(
    server: OtelogProcess,
    protocol: str = "graphql-transport-ws",
    sock: socket.socket | None = None,
    max_queue: int | None = 16,
    compression: str | None = "deflate",
) -> AsyncIterator[Gql]:
    url = server.api_url.replace("http://", "ws://") + "/graphql"
    async with connect(
        url,
        subprotocols=[Subprotocol(protocol)],
        sock=sock,
        max_queue=max_queue,
        compression=compression,
    ) as ws:
        assert ws.subprotocol == protocol
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert ack["type"] == "connection_ack", ack
        yield Gql(ws, protocol)


async def wait_live(
    receive: Callable[[], Any], send_marker: Callable[[], None], body_of: Callable[[Any], str]
) -> None:
    """Send markers until one arrives: the subscription is registered from then on."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        await asyncio.to_thread(send_marker)
        try:
            rec = await asyncio.wait_for(receive(), 0.5)
        except TimeoutError:
            continue
        assert body_of(rec) == MARKER, rec
        # markers sent before the first one arrived may still be on their way
        while True:
            try:
                rec = await asyncio.wait_for(receive(), 0.3)
            except TimeoutError:
                return
            assert body_of(rec) == MARKER, rec
    raise AssertionError("the subscription never delivered a marker")


async def subscribe_live(
    gql: Gql, query: str, sender: Sender, service: str, level: str = "WARN", **marker: Any
) -> str:
    op = await gql.subscribe(TAIL, {"q": query})
    await wait_live(
        gql.record, lambda: sender.send(service, [MARKER], level, **marker), lambda r: r["body"]
    )
    return op


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- GraphQL subscriptions ----------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*LoggingHandler.*:DeprecationWarning")
def test_sdk_records_matching_the_filter_arrive_and_others_do_not(
    server: OtelogProcess, sender: Sender
) -> None:
    service = unique_service("tail-sdk")
    provider = LoggerProvider(resource=Resource.create({"service.name": service}))
    provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=server.grpc_endpoint, insecure=True))
    )
    logger = logging.getLogger(service)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
    logger.addHandler(handler)

    async def scenario() -> tuple[list[dict[str, Any]], list[float]]:
        async with gql_client(server) as gql:
            await subscribe_live(gql, f"service={service} AND level>=WARN", sender, service)
            received: dict[str, float] = {}
            got: list[dict[str, Any]] = []

            async def collect() -> None:
                while len(got) < 5:
                    got.append(await gql.record())
                    received[got[-1]["body"]] = time.perf_counter()

            collector = asyncio.create_task(collect())
            acked: dict[str, float] = {}
            for n in range(10):
                level = (logging.INFO, logging.ERROR)[n % 2]
                body = f"sdk record {n}"
                # SimpleLogRecordProcessor exports synchronously: returning = acknowledged
                await asyncio.to_thread(logger.log, level, body, extra={"n": n})
                acked[body] = time.perf_counter()
                await asyncio.sleep(0.05)
            await asyncio.wait_for(collector, WAIT)
            delays = [(received[b] - acked[b]) * 1000 for b in received]
            # nothing else: the INFO records never come
            with pytest.raises(TimeoutError):
                await gql.record(timeout=0.5)
            return got, delays

    try:
        got, delays = run(scenario())
    finally:
        logger.removeHandler(handler)
        provider.shutdown()
    assert [r["body"] for r in got] == [f"sdk record {n}" for n in range(1, 10, 2)]
    for r in got:
        assert r["service"] == service
        assert r["level"] == "ERROR"
        assert r["attributes"]["n"] % 2 == 1
    ids = [int(r["logId"], 16) for r in got]
    assert ids == sorted(ids), "live records come in arrival order"
    # printed, not asserted (tests never assert timings; bench/tail_delay.py measures)
    shown = ", ".join(f"{d:.1f}" for d in delays)
    print(f"\ntail delay from the SDK export's return to receipt: {shown} ms")


def test_raw_otlp_records_arrive_with_every_field(server: OtelogProcess, sender: Sender) -> None:
    service = unique_service("tail-raw")
    other = unique_service("tail-raw-other")
    trace_id, span_id = bytes(range(1, 17)), bytes(range(1, 9))

    async def scenario() -> list[dict[str, Any]]:
        async with gql_client(server) as gql:
            query = f"service={service} AND attributes.user.id=42"
            await subscribe_live(gql, query, sender, service, attributes={"user.id": 42})
            # one request, two resources: only the matching rows of the matching one come
            req = otlp_request(service, ["for user 42"], attributes={"user.id": 42})
            req.resource_logs.extend(
                otlp_request(other, ["other service"], attributes={"user.id": 42}).resource_logs
            )
            req.resource_logs.extend(
                otlp_request(service, ["other user"], attributes={"user.id": 7}).resource_logs
            )
            await asyncio.to_thread(sender.export, req)
            await asyncio.to_thread(
                sender.send,
                service,
                ["traced"],
                "ERROR",
                attributes={"user.id": 42},
                trace_id=trace_id,
                span_id=span_id,
            )
            got = [await gql.record(), await gql.record()]
            with pytest.raises(TimeoutError):
                await gql.record(timeout=0.5)
            return got

    first, traced = run(scenario())
    assert first["body"] == "for user 42"
    assert first["service"] == service
    assert first["host"] == "tail-host"
    assert first["level"] == "WARN"
    assert first["attributes"] == {"user.id": 42}
    assert first["traceId"] is None and first["spanId"] is None
    assert datetime.fromisoformat(first["timestamp"])
    assert traced["traceId"] == trace_id.hex() and traced["spanId"] == span_id.hex()
    assert traced["level"] == "ERROR"
    assert int(traced["logId"], 16) > int(first["logId"], 16)


def test_subscribers_with_the_same_filter_both_receive_every_record(
    server: OtelogProcess, sender: Sender
) -> None:
    service = unique_service("tail-fanout")
    query = f"service={service}"

    async def scenario() -> list[list[str]]:
        async with (
            gql_client(server) as a,
            gql_client(server) as b,
            gql_client(server) as c,
        ):
            await subscribe_live(a, query, sender, service)
            await subscribe_live(b, query, sender, service)
            # a different filter on the same records: its own evaluation, its own rows
            await subscribe_live(c, f"{query} AND level=ERROR", sender, service, "ERROR")
            # markers for c and b reached a (and for c, b) too; start clean
            for g in (a, b):
                with contextlib.suppress(TimeoutError):
                    while True:
                        await g.record(timeout=0.3)
            for n in range(20):
                level = "ERROR" if n % 4 == 0 else "WARN"
                await asyncio.to_thread(sender.send, service, [f"fan {n}"], level)
            got_a = [(await a.record())["body"] for _ in range(20)]
            got_b = [(await b.record())["body"] for _ in range(20)]
            got_c = [(await c.record())["body"] for _ in range(5)]
            return [got_a, got_b, got_c]

    got_a, got_b, got_c = run(scenario())
    assert got_a == [f"fan {n}" for n in range(20)]
    assert got_b == got_a
    assert got_c == [f"fan {n}" for n in range(0, 20, 4)]


def test_resume_after_a_disconnect_delivers_exactly_the_missed_records(
    server: OtelogProcess, sender: Sender
) -> None:
    """Records keep coming while the subscriber is away and while it resubscribes; some are
    stamped an hour in the past (late arrivals). Across the two subscriptions every record
    arrives once, in the order it was sent."""
    service = unique_service("tail-resume")
    total = 150
    stop = threading.Event()
    sent: list[str] = []

    def send_all() -> None:
        for n in range(total):
            if stop.is_set():
                return
            late = n % 10 == 5
            ts = time.time_ns() - 3600 * 10**9 if late else None
            sender.send(service, [f"rec {n}"], ts_ns=ts)
            sent.append(f"rec {n}")
            time.sleep(0.004)

    async def scenario() -> tuple[list[str], list[str]]:
        first: list[str] = []
        second: list[str] = []
        async with gql_client(server) as gql:
            await subscribe_live(gql, f"service={service}", sender, service)
            feeder = threading.Thread(target=send_all, daemon=True)
            feeder.start()
            last_id = ""
            while len(first) < 30:
                rec = await gql.record()
                first.append(rec["body"])
                last_id = rec["logId"]
        # away for a while; the feeder goes on
        await asyncio.sleep(0.3)
        async with gql_client(server) as gql:
            await gql.subscribe(TAIL, {"q": f"service={service}", "after": last_id})
            try:
                while len(first) + len(second) < total:
                    second.append((await gql.record())["body"])
                # and nothing more, not even a duplicate
                with pytest.raises(TimeoutError):
                    await gql.record(timeout=0.5)
            finally:
                stop.set()
                feeder.join()
        return first, second

    first, second = run(scenario())
    assert len(sent) == total
    assert first + second == sent, "a gap, a duplicate or a reordering across the resume"
    assert len(second) > 0


def test_resume_from_zero_replays_the_stored_records_then_goes_live(
    server: OtelogProcess, sender: Sender
) -> None:
    service = unique_service("tail-replay")
    for n in range(5):
        sender.send(service, [f"old {n}"])

    async def scenario() -> list[str]:
        async with gql_client(server) as gql:
            await gql.subscribe(TAIL, {"q": f"service={service}", "after": "0"})
            got = [(await gql.record())["body"] for _ in range(5)]
            await asyncio.to_thread(sender.send, service, ["new"])
            got.append((await gql.record())["body"])
            return got

    assert run(scenario()) == [f"old {n}" for n in range(5)] + ["new"]


@pytest.mark.parametrize(
    ("variables", "code"),
    [
        ({"q": "service="}, "QUERY_SYNTAX"),
        ({"q": "level=LOUD"}, "QUERY_SYNTAX"),
        ({"q": "", "after": "not-a-log-id"}, "BAD_ARGUMENT"),
    ],
    ids=["syntax", "unknown-level", "bad-cursor"],
)
def test_a_bad_tail_argument_is_a_graphql_error_and_the_connection_stays_usable(
    server: OtelogProcess, sender: Sender, variables: dict[str, str], code: str
) -> None:
    service = unique_service("tail-bad")

    async def scenario() -> list[dict[str, Any]]:
        async with gql_client(server) as gql:
            op = await gql.subscribe(TAIL, variables)
            msgs = [await gql.message(), await gql.message()]
            assert [m["id"] for m in msgs] == [op, op]
            # the same connection still serves a good subscription
            await subscribe_live(gql, f"service={service}", sender, service)
            return msgs

    err, done = run(scenario())
    assert err["type"] in ("next", "error"), err
    errors = err["payload"]["errors"] if err["type"] == "next" else err["payload"]
    assert errors[0]["extensions"]["code"] == code, errors
    if code == "QUERY_SYNTAX":
        assert "position" in errors[0]["message"]
    assert done["type"] == "complete"


def test_legacy_graphql_ws_protocol_still_works(server: OtelogProcess, sender: Sender) -> None:
    service = unique_service("tail-legacy")

    async def scenario() -> dict[str, Any]:
        async with gql_client(server, protocol="graphql-ws") as gql:
            await subscribe_live(gql, f"service={service}", sender, service)
            await asyncio.to_thread(sender.send, service, ["legacy"])
            return await gql.record()

    assert run(scenario())["body"] == "legacy"


def small_receive_buffer_socket(server: OtelogProcess) -> socket.socket:
    """A client socket that accepts little before TCP pushes back on the server."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.api_port))
    return sock


def test_a_subscriber_that_never_reads_is_dropped_while_ingestion_goes_on(
    otelog_factory: Callable[..., OtelogProcess],
) -> None:
    server = otelog_factory(extra_args=["--tail-queue-size", "50"])
    service = unique_service("tail-slow")
    senders = [Sender(server) for _ in range(2)]
    # a request's records fit in the queue: it overflows only once the socket buffers are
    # full and the subscription's sends wait on the client, which never reads
    requests, per_request = 500, 10
    pad = "x" * 1000  # big messages fill the socket buffers sooner

    def send_share(k: int) -> None:
        for r in range(k, requests, len(senders)):
            bodies = [f"slow {r}.{i} {pad}" for i in range(per_request)]
            senders[k].send(service, bodies)

    async def scenario() -> tuple[int, dict[str, Any]]:
        sock = small_receive_buffer_socket(server)
        # no permessage-deflate: it would shrink these repetitive messages a hundredfold
        async with gql_client(server, sock=sock, max_queue=1, compression=None) as gql:
            await subscribe_live(gql, f"service={service}", senders[0], service)
            # it stops reading; ingestion must not notice
            t0 = time.perf_counter()
            await asyncio.gather(*(asyncio.to_thread(send_share, k) for k in range(len(senders))))
            took = time.perf_counter() - t0
            print(f"\n{requests * per_request} records acknowledged in {took:.2f} s")
            received = 0
            while True:
                msg = await gql.message()
                if msg["type"] == "next" and not msg["payload"].get("errors"):
                    received += 1
                    continue
                assert (await gql.message())["type"] == "complete"
                return received, msg

    try:
        received, err = run(scenario())
    finally:
        for s in senders:
            s.close()
    total = requests * per_request
    print(f"slow subscriber: {received} records delivered, then {err['payload']}")
    assert received < total
    errors = err["payload"]["errors"]
    assert re.fullmatch(r"subscriber too slow: \d+ records dropped.*", errors[0]["message"]), err
    ext = errors[0]["extensions"]
    assert ext["code"] == "TAIL_TOO_SLOW" and ext["dropped"] > 0
    # every record was acknowledged (Sender asserts no rejection) and is searchable
    page = server.data(
        "query($q: String!) { logs(query: $q, limit: 1) { total } }",
        {"q": f"service={service} AND slow"},
    )
    assert page["logs"]["total"] == total


def test_shutdown_ends_open_subscriptions_with_a_message(
    otelog_factory: Callable[..., OtelogProcess],
) -> None:
    server = otelog_factory()
    service = unique_service("tail-stop")
    sender = Sender(server)

    async def scenario() -> tuple[dict[str, Any] | None, int | None]:
        async with gql_client(server) as gql:
            await subscribe_live(gql, f"service={service}", sender, service)
            code = await asyncio.to_thread(server.stop)
            with contextlib.suppress(ConnectionClosed):
                return await gql.message(), code
            return None, code

    try:
        msg, code = run(scenario())
    finally:
        sender.close()
    assert code == 0
    if msg is not None:  # the message can lose the race with the close
        assert msg["payload"]["errors"][0]["extensions"]["code"] == "SHUTTING_DOWN", msg


# -- REST /logs/stream --------------------------------------------------------------------------


def stream_url(server: OtelogProcess, params: str) -> str:
    return server.api_url.replace("http://", "ws://") + "/logs/stream?" + params


def test_rest_stream_delivers_matching_records_as_json(
    server: OtelogProcess, sender: Sender
) -> None:
    service = unique_service("tail-rest")

    async def scenario() -> list[dict[str, Any]]:
        async with connect(stream_url(server, f"service={service}&level=WARN")) as ws:

            async def receive() -> dict[str, Any]:
                doc: dict[str, Any] = json.loads(await ws.recv())
                return doc

            await wait_live(receive, lambda: sender.send(service, [MARKER]), lambda d: d["message"])
            for level in ("INFO", "ERROR", "DEBUG", "WARN"):
                await asyncio.to_thread(
                    sender.send, service, [f"rest {level}"], level, attributes={"k": level}
                )
            got = [await asyncio.wait_for(receive(), WAIT) for _ in range(2)]
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(receive(), 0.5)
            return got

    got = run(scenario())
    assert [d["message"] for d in got] == ["rest ERROR", "rest WARN"]
    d = got[0]
    assert set(d) == {
        "log_id",
        "timestamp",
        "service",
        "level",
        "message",
        "trace_id",
        "span_id",
        "host",
        "attributes",
    }
    assert d["service"] == service and d["level"] == "ERROR" and d["host"] == "tail-host"
    assert d["attributes"] == {"k": "ERROR"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", d["timestamp"]), d
    assert re.fullmatch(r"[0-9a-f]{16}", d["log_id"])


def test_rest_stream_refuses_a_bad_query_with_a_message_and_close_code(
    server: OtelogProcess,
) -> None:
    async def scenario() -> tuple[dict[str, Any], int | None]:
        async with connect(stream_url(server, "query=service%3D")) as ws:
            doc = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), WAIT)
            return doc, ws.close_code

    doc, code = run(scenario())
    assert doc["code"] == "QUERY_SYNTAX" and "position" in doc["error"]
    assert code == 1008


def test_rest_stream_resumes_after_a_log_id(server: OtelogProcess, sender: Sender) -> None:
    service = unique_service("tail-rest-resume")
    for n in range(3):
        sender.send(service, [f"r {n}"])
    first = server.data(
        "query($q: String!) { logs(query: $q, limit: 10) { records { logId body } } }",
        {"q": f"service={service}"},
    )["logs"]["records"]
    oldest = min(first, key=lambda r: int(r["logId"], 16))
    assert oldest["body"] == "r 0"

    async def scenario() -> list[str]:
        async with connect(stream_url(server, f"service={service}&after={oldest['logId']}")) as ws:
            return [json.loads(await asyncio.wait_for(ws.recv(), WAIT))["message"] for _ in (1, 2)]

    assert run(scenario()) == ["r 1", "r 2"]


# -- in-process: the hub and the forward read -------------------------------------------------


def logs_raw(service: str, bodies: list[str], ts_ns: int, level: str = "INFO") -> bytes:
    data: bytes = otlp_request(service, bodies, level, ts_ns=ts_ns).SerializeToString()
    return data


def commit(writer: Writer, service: str, bodies: list[str], ts_ns: int) -> None:
    raw = logs_raw(service, bodies, ts_ns)
    batch, _ = decode_logs(raw, time.time_ns(), DecodeLimits())
    writer.submit_logs(DEFAULT_TENANT, batch, raw, time.time_ns()).result(30)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "db"))
    yield s
    s.close()


def test_records_after_reads_sealed_and_fresh_records_past_the_cursor_in_commit_order(
    store: Store,
) -> None:
    writer = Writer(store, seal_interval_s=3600)
    writer.start()
    try:
        now = time.time_ns()
        commit(writer, "a", ["a0", "a1"], now)
        commit(writer, "b", ["b0"], now)
        store.seal()
        # stamped an hour earlier but committed later: after the cursor all the same
        commit(writer, "a", ["a2-late"], now - 3600 * 10**9)
        store.seal()
        commit(writer, "a", ["a3", "a4"], now + 1)  # fresh: still in the memtable
        commit(writer, "a", ["a5"], now)
        every = records_after(store, DEFAULT_TENANT, parse("service=a"), 0, 100, now)
        assert [r.body for r in every] == ["a0", "a1", "a2-late", "a3", "a4", "a5"]
        ids = [r.log_id for r in every]
        assert ids == sorted(ids)
        past = records_after(store, DEFAULT_TENANT, parse("service=a"), ids[1], 100, now)
        assert [r.body for r in past] == ["a2-late", "a3", "a4", "a5"]
        # paging by the last id returned walks the same sequence
        pages: list[str] = []
        cursor = 0
        while rows := records_after(store, DEFAULT_TENANT, parse("service=a"), cursor, 2, now):
            pages += [r.body for r in rows]
            cursor = rows[-1].log_id
        assert pages == [r.body for r in every]
        words = records_after(store, DEFAULT_TENANT, parse("a3 OR late"), 0, 100, now)
        assert [r.body for r in words] == ["a2-late", "a3"]
    finally:
        writer.stop()


def test_subscribers_of_one_filter_share_one_evaluation_and_a_full_queue_ends_one(
    store: Store,
) -> None:
    async def scenario() -> None:
        hub = TailHub(store, queue_size=3)
        hub.start(asyncio.get_running_loop())
        writer = Writer(store)
        writer.listeners.append(hub.on_commit)
        writer.start()
        try:
            fast = hub.subscribe(parse("service=a AND level>=INFO"))
            slow = hub.subscribe(parse("service = a and level >= info"))
            other = hub.subscribe(parse("service=b"))
            assert hub.topic_count() == 2 and hub.subscriber_count() == 3
            now = time.time_ns()
            await asyncio.to_thread(commit, writer, "a", ["1", "2"], now)
            await asyncio.to_thread(commit, writer, "b", ["x"], now)
            assert [r.body for r in await asyncio.wait_for(fast.get(), WAIT)] == ["1", "2"]
            assert [r.body for r in await asyncio.wait_for(other.get(), WAIT)] == ["x"]
            # `slow` still holds 2 of 3; two more do not fit, and it is ended, not waited for
            await asyncio.to_thread(commit, writer, "a", ["3", "4"], now)
            assert [r.body for r in await asyncio.wait_for(fast.get(), WAIT)] == ["3", "4"]
            assert await slow.get() == []
            err = slow.error(None)
            assert isinstance(err, SubscriberTooSlow) and err.dropped == 4
            assert str(err).startswith("subscriber too slow: 4 records dropped")
            assert hub.subscriber_count() == 2
            hub.close()
            assert await fast.get() == []
        finally:
            await asyncio.to_thread(writer.stop)

    run(scenario())


def test_a_hub_that_falls_behind_ingestion_ends_its_subscriptions_instead_of_hoarding(
    store: Store,
) -> None:
    async def scenario() -> None:
        hub = TailHub(store, max_backlog_rows=3)
        hub.start(asyncio.get_running_loop())
        sub = hub.subscribe(parse("service=a"))
        raw = logs_raw("a", ["1", "2"], time.time_ns())
        batch, _ = decode_logs(raw, time.time_ns(), DecodeLimits())
        batch.log_id = [1, 2]
        # the writer thread hands over two batches before the loop gets to either: the
        # second is not held, and the subscription ends with both counted as dropped
        hub.on_commit(DEFAULT_TENANT, batch)
        hub.on_commit(DEFAULT_TENANT, batch)
        assert await asyncio.wait_for(sub.get(), WAIT) == []
        err = sub.error(7)
        assert isinstance(err, SubscriberTooSlow) and err.dropped == 4
        assert str(err).startswith("subscriber too slow: 4 records dropped")
        assert "fell behind ingestion" in str(err) and "0000000000000007" in str(err)
        assert hub.subscriber_count() == 0

    run(scenario())


def test_tail_rows_skips_live_records_already_sent_from_the_store(store: Store) -> None:
    async def scenario() -> list[str]:
        hub = TailHub(store)
        hub.start(asyncio.get_running_loop())
        writer = Writer(store)
        writer.listeners.append(hub.on_commit)
        writer.start()
        try:
            now = time.time_ns()
            await asyncio.to_thread(commit, writer, "a", ["0"], now)
            first = records_after(store, DEFAULT_TENANT, parse(""), 0, 1, now)[0]
            rows = tail_rows(hub, parse("service=a"), first.log_id, page=1)
            got: list[str] = []
            # commits race with the store pages: live and stored copies of one record meet
            feeder = asyncio.create_task(
                asyncio.to_thread(
                    lambda: [commit(writer, "a", [str(n)], now) for n in range(1, 40)]
                )
            )
            async with contextlib.aclosing(rows):
                async for row in rows:
                    got.append(row.body)
                    if len(got) == 39:
                        break
            await feeder
            return got
        finally:
            await asyncio.to_thread(writer.stop)

    assert run(scenario()) == [str(n) for n in range(1, 40)]


def test_a_cursor_is_a_log_id() -> None:
    assert parse_cursor(None) is None and parse_cursor("") is None
    assert parse_cursor("0000000001000002") == (1 << 24) + 2
    assert parse_cursor("0") == 0
    for bad in ("xyz", "1" * 17, "-1"):
        with pytest.raises(InvalidArgument, match="after must be a logId"):
            parse_cursor(bad)


def test_graphql_schema_has_the_tail_subscription(server: OtelogProcess) -> None:
    r = httpx.post(
        server.api_url + "/graphql",
        json={"query": "{ __schema { subscriptionType { fields { name args { name } } } } }"},
        timeout=30,
    )
    fields = r.json()["data"]["__schema"]["subscriptionType"]["fields"]
    tail = next(f for f in fields if f["name"] == "tail")
    assert {a["name"] for a in tail["args"]} == {"query", "after"}
