"""Alerting against real things: a real `otelog serve` (1 s evaluation interval), real
OpenTelemetry SDK clients over OTLP/gRPC, a real webhook receiver (a small HTTP server in
a thread), and the engine on a real RocksDB store with the real writer.

Tests on the shared server stay independent through unique service and rule names.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from conftest import OtelogProcess
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourcePb
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from otelog.alerting.engine import AlertEngine
from otelog.alerting.evaluate import Alert, AlertState
from otelog.alerting.notify import FIRING, Notification, Notifier
from otelog.alerting.rules import RuleSpec, Target, validate_rule
from otelog.alerting.selfmetrics import SelfSample
from otelog.ingest.writer import Writer
from otelog.receiver.decode import decode_logs
from otelog.store.store import Store

INTERVAL = 1.0
S = 1_000_000_000
_T = TypeVar("_T")

ALERT_FIELDS = """
    id ruleId ruleName pattern kind severity state group value count message
    affectedServices triggeredAt resolvedAt acknowledgedBy acknowledgedAt
"""
CREATE = "mutation($r: AlertRuleInput!) { createAlertRule(rule: $r) { id kind } }"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtelogProcess]:
    proc = OtelogProcess(
        tmp_path_factory.mktemp("alerting") / "data",
        extra_args=["--alert-interval-seconds", str(INTERVAL), "--alert-resend-seconds", "600"],
    )
    try:
        yield proc.start()
    finally:
        proc.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(fn: Callable[[], _T], timeout: float, what: str) -> _T:
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ---- a webhook receiver


class Receiver:
    """Collects the JSON bodies POSTed to it; the first `fail_first` get `fail_status`."""

    def __init__(self, fail_first: int = 0, fail_status: int = 503) -> None:
        self.posts: list[tuple[float, str, Any]] = []
        self.attempts = 0
        self.fail_left = fail_first
        self.fail_status = fail_status
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.attempts += 1
                    fail = receiver.fail_left > 0
                    if fail:
                        receiver.fail_left -= 1
                    else:
                        receiver.posts.append((time.time(), self.path, json.loads(body)))
                self.send_response(receiver.fail_status if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/api/v2/alerts") -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}{path}"

    def bodies(self) -> list[Any]:
        with self.lock:
            return [b for _, _, b in self.posts]

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def am_alerts(r: Receiver, alertname: str) -> list[dict[str, Any]]:
    """Every alert of every Alertmanager-shaped body for `alertname`, in arrival order."""
    out = []
    for body in r.bodies():
        assert isinstance(body, list), body  # POST /api/v2/alerts takes a list
        out += [a for a in body if a["labels"]["alertname"] == alertname]
    return out


# ---- traffic


class SdkClient:
    """A service logging through the OpenTelemetry SDK to otelog over OTLP/gRPC."""

    def __init__(self, server: OtelogProcess, service: str) -> None:
        self.provider = LoggerProvider(resource=Resource.create({"service.name": service}))
        exporter = OTLPLogExporter(endpoint=server.grpc_endpoint, insecure=True)
        self.provider.add_log_record_processor(
            BatchLogRecordProcessor(exporter, schedule_delay_millis=50)
        )
        self.logger = logging.getLogger(f"test.alerting.{service}")
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False
        self.handler = LoggingHandler(level=logging.DEBUG, logger_provider=self.provider)
        self.logger.addHandler(self.handler)

    def errors(self, n: int, message: str = "payment failed") -> None:
        for i in range(n):
            self.logger.error("%s (%d)", message, i)

    def flush(self) -> None:
        assert self.provider.force_flush(10_000)

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.provider.shutdown()


def send_json(
    server: OtelogProcess,
    service: str,
    n: int,
    level: int = 17,
    ts_ns: list[int] | None = None,
    body: str = "boom",
) -> None:
    """Scripted traffic: `n` records in one OTLP/HTTP JSON request."""
    now = time.time_ns()
    stamps = ts_ns or [now] * n
    req = {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                },
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": str(t),
                                "severityNumber": level,
                                "body": {"stringValue": f"{body} {i}"},
                            }
                            for i, t in enumerate(stamps)
                        ]
                    }
                ],
            }
        ]
    }
    r = httpx.post(server.http_url + "/v1/logs", json=req, timeout=10)
    assert r.status_code == 200, r.text


def create_rule(server: OtelogProcess, **rule: Any) -> str:
    rid: str = server.data(CREATE, {"r": rule})["createAlertRule"]["id"]
    return rid


def alerts_of(server: OtelogProcess, rule_id: str) -> list[dict[str, Any]]:
    data = server.data(f"{{ alerts {{ {ALERT_FIELDS} }} }}")
    return [a for a in data["alerts"] if a["ruleId"] == rule_id]


def in_state(server: OtelogProcess, rule_id: str, state: str) -> list[dict[str, Any]]:
    return [a for a in alerts_of(server, rule_id) if a["state"] == state]


# ---- the spike scenario, end to end


def test_a_spike_from_sdk_clients_fires_notifies_alertmanager_and_resolves(
    server: OtelogProcess, receiver: Receiver
) -> None:
    checkout, quiet = unique("checkout"), unique("quiet")
    name = unique("error_rate_spike")
    rule_id = create_rule(
        server,
        name=name,
        query=f"level=ERROR AND (service={checkout} OR service={quiet})",
        groupBy="service",
        window="2s",
        baseline="20s",
        condition="ratio > 3",
        minCount=25,
        severity="critical",
        labels={"team": "payments"},
        targets=[{"url": receiver.url(), "kind": "alertmanager"}],
    )
    busy, calm = SdkClient(server, checkout), SdkClient(server, quiet)
    stop = threading.Event()

    def baseline() -> None:
        # checkout: 4 errors/s; quiet: one every 1.5 s (an infinite ratio against nothing)
        tick = 0
        while not stop.wait(0.25):
            busy.errors(1)
            if tick % 6 == 0:
                calm.errors(1, "disk almost full")
            tick += 1

    t = threading.Thread(target=baseline, daemon=True)
    t.start()
    try:
        time.sleep(5)
        assert alerts_of(server, rule_id) == [], "the baseline alone must not fire"

        busy.errors(200)
        busy.flush()
        acked = time.time()
        fired = wait_until(
            lambda: in_state(server, rule_id, "FIRING"), 2 * INTERVAL + 0.5, "the spike to fire"
        )
        assert [a["group"] for a in fired] == [checkout]
        alert = fired[0]
        assert parse_time(alert["triggeredAt"]) - acked <= 2 * INTERVAL
        assert alert["affectedServices"] == [checkout] and alert["count"] >= 200
        assert alert["severity"] == "critical" and alert["kind"] == "spike"

        sent = wait_until(lambda: am_alerts(receiver, name), 5, "the firing notification")
        first = sent[0]
        assert first["labels"] == {
            "alertname": name,
            "severity": "critical",
            "otelog_rule_id": rule_id,
            "otelog_kind": "spike",
            "service": checkout,
            "team": "payments",
        }
        assert "endsAt" not in first and first["startsAt"].endswith("Z")
        assert "ratio > 3" in first["annotations"]["description"]
        assert first["generatorURL"].startswith("http://")

        resolved = wait_until(
            lambda: in_state(server, rule_id, "RESOLVED"), 10, "the alert to resolve"
        )
        assert resolved[0]["id"] == alert["id"]
        ends = wait_until(
            lambda: [a for a in am_alerts(receiver, name) if "endsAt" in a],
            5,
            "the resolved notification",
        )
        assert ends[0]["labels"] == first["labels"]  # Alertmanager matches by labels
        assert parse_time(ends[0]["endsAt"]) >= parse_time(first["startsAt"])
    finally:
        stop.set()
        t.join()
        busy.close()
        calm.close()

    # the quiet service never even went pending, and nobody heard of it
    assert [a["group"] for a in alerts_of(server, rule_id)] == [checkout]
    assert all(a["labels"]["service"] == checkout for a in am_alerts(receiver, name))
    rest = httpx.get(server.api_url + "/alerts", params={"pattern": name}).json()
    assert rest["alerts"] == [
        {
            **rest["alerts"][0],
            "alert_id": alert["id"],
            "pattern": name,
            "severity": "critical",
            "state": "resolved",
            "affected_services": [checkout],
        }
    ]
    assert {"triggered_at", "message"} <= rest["alerts"][0].keys()


# ---- scripted traffic: absence and thresholds


def test_an_absence_rule_fires_when_heartbeats_stop_and_resolves_when_they_return(
    server: OtelogProcess,
) -> None:
    hb = unique("heartbeat")
    beating = threading.Event()
    beating.set()
    stop = threading.Event()

    def heartbeats() -> None:
        while not stop.wait(0.3):
            if beating.is_set():
                send_json(server, hb, 1, level=9, body="alive")

    t = threading.Thread(target=heartbeats, daemon=True)
    t.start()
    try:
        time.sleep(1)
        rule_id = create_rule(
            server, name=unique("heartbeat_missing"), query=f"service={hb}", window="3s",
            condition="absent", baseline="10s",
        )  # fmt: skip
        time.sleep(3 * INTERVAL)
        assert alerts_of(server, rule_id) == []
        beating.clear()
        stopped = time.time()
        fired = wait_until(lambda: in_state(server, rule_id, "FIRING"), 8, "absence to fire")
        # the last heartbeat must leave the (2-3 s) window first
        assert parse_time(fired[0]["triggeredAt"]) - stopped >= 1.5
        assert fired[0]["message"] == "no matching record in the last 3s"
        assert fired[0]["affectedServices"] == [hb]  # the service that went quiet
        beating.set()
        wait_until(lambda: in_state(server, rule_id, "RESOLVED"), 5, "absence to resolve")
    finally:
        stop.set()
        t.join()


def test_a_threshold_rule_fires_above_its_count_and_resolves_after_the_window(
    server: OtelogProcess, receiver: Receiver
) -> None:
    svc = unique("api")
    rule_id = create_rule(
        server,
        name=unique("too_many_errors"),
        query=f"service={svc} AND level>=ERROR",
        window="4s",
        condition="count > 20",
        targets=[{"url": receiver.url("/hook"), "kind": "json"}],
    )
    send_json(server, svc, 15)
    send_json(server, svc, 30, level=9)  # INFO: not counted
    time.sleep(2 * INTERVAL + 0.2)
    assert alerts_of(server, rule_id) == []
    send_json(server, svc, 10, level=21)  # FATAL counts (level>=ERROR): 25 > 20
    fired = wait_until(lambda: in_state(server, rule_id, "FIRING"), 3, "the threshold to fire")
    assert fired[0]["count"] == 25 and fired[0]["value"] == 25.0
    wait_until(lambda: in_state(server, rule_id, "RESOLVED"), 8, "the window to pass")
    statuses = wait_until(
        lambda: [b["status"] for b in receiver.bodies() if len(receiver.bodies()) >= 2],
        5,
        "both notifications",
    )
    assert statuses == ["firing", "resolved"]
    body = receiver.bodies()[1]
    assert body["rule"]["id"] == rule_id and body["alerts"][0]["state"] == "resolved"
    assert receiver.posts[0][1] == "/hook"


def test_a_rule_created_after_the_records_counts_them_from_the_store(
    server: OtelogProcess,
) -> None:
    svc = unique("seeded")
    now = time.time_ns()
    send_json(server, svc, 30, ts_ns=[now - i * 250_000_000 for i in range(30)])
    created = time.time()
    rule_id = create_rule(
        server, name=unique("seeded"), query=f"service={svc}", window="20s",
        condition="count >= 30",
    )  # fmt: skip
    fired = wait_until(lambda: in_state(server, rule_id, "FIRING"), 2 * INTERVAL + 0.5, "firing")
    assert fired[0]["count"] == 30
    assert parse_time(fired[0]["triggeredAt"]) - created <= 2 * INTERVAL


def test_test_alert_rule_says_when_a_rule_would_have_fired(server: OtelogProcess) -> None:
    svc = unique("history")
    end = (time.time_ns() // S - 5) * S
    stamps = [end - 60 * S + i * S // 2 for i in range(120)]  # 2/s for a minute
    stamps += [end - 30 * S + i * S // 100 for i in range(150)]  # +100/s for 1.5 s
    send_json(server, svc, len(stamps), ts_ns=sorted(stamps))
    q = """query($r: AlertRuleInput!, $from: DateTime!, $to: DateTime!) {
        testAlertRule(rule: $r, from: $from, to: $to, step: "1s") {
            evaluations wouldHaveFired
            firings { group firedAt resolvedAt peakCount message }
        } }"""
    iso = lambda ns: datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat()  # noqa: E731
    res = server.data(
        q,
        {
            "r": {
                "name": "t",
                "query": f"service={svc}",
                "window": "2s",
                "baseline": "20s",
                "condition": "ratio > 3",
                "minCount": 20,
            },
            "from": iso(end - 40 * S),
            "to": iso(end),
        },
    )["testAlertRule"]
    assert res["evaluations"] == 41 and res["wouldHaveFired"]
    [f] = res["firings"]
    fired = parse_time(f["firedAt"])
    assert end / S - 30 <= fired <= end / S - 27
    assert f["resolvedAt"] is not None and parse_time(f["resolvedAt"]) > fired
    assert f["peakCount"] >= 150


def test_bad_rules_are_refused_with_a_message(server: OtelogProcess) -> None:
    before = server.data("{ alertRules { id } }")["alertRules"]
    cases = [
        ({"query": "service=auth AND (level=ERROR"}, "query: query syntax error at position"),
        ({"window": "-5m"}, "window: invalid duration '-5m': a duration must be positive"),
        ({"condition": "errors > 3"}, "condition: unknown condition 'errors'"),
    ]
    for bad, says in cases:
        rule = {"name": "bad", "condition": "count > 1", **bad}
        body = server.graphql(CREATE, {"r": rule})
        assert body["data"] is None
        [err] = body["errors"]
        assert says in err["message"] and err["extensions"]["code"] == "BAD_ARGUMENT"
        r = httpx.post(server.api_url + "/alerts/rules", json=rule)
        assert r.status_code == 400 and says in r.json()["error"]
    r = httpx.post(server.api_url + "/alerts/rules", content=b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = httpx.get(server.api_url + "/alerts", params={"state": "on fire"})
    assert r.status_code == 400 and "state: use one of" in r.json()["error"]
    assert server.data("{ alertRules { id } }")["alertRules"] == before


def test_rules_are_managed_over_rest_and_graphql_alike(server: OtelogProcess) -> None:
    rule = {"name": unique("rest"), "condition": "rate > 5", "window": "1m", "for": "30s"}
    r = httpx.post(server.api_url + "/alerts/rules", json=rule)
    assert r.status_code == 201
    made = r.json()["rule"]
    assert (made["kind"], made["window"], made["for"], made["condition"]) == (
        "rate",
        "1m",
        "30s",
        "rate > 5",
    )
    q = "{ alertRules { id name kind window for condition } }"
    listed = [x for x in server.data(q)["alertRules"] if x["id"] == made["id"]]
    assert listed == [
        {"id": made["id"], "name": rule["name"], "kind": "rate", "window": "1m", "for": "30s"}
        | {"condition": "rate > 5"}
    ]
    upd = (
        "mutation($id: ID!, $r: AlertRuleInput!) { updateAlertRule(id: $id, rule: $r) { window } }"
    )
    assert server.data(upd, {"id": made["id"], "r": {**rule, "window": "2m"}}) == {
        "updateAlertRule": {"window": "2m"}
    }
    gone = "mutation($id: ID!) { deleteAlertRule(id: $id) }"
    assert server.data(gone, {"id": made["id"]}) == {"deleteAlertRule": True}
    assert server.data(gone, {"id": made["id"]}) == {"deleteAlertRule": False}
    assert httpx.delete(server.api_url + f"/alerts/rules/{made['id']}").status_code == 404


def test_the_alerts_subscription_streams_transitions(server: OtelogProcess) -> None:
    svc, name = unique("sub"), unique("sub_rule")
    ws_url = server.api_url.replace("http", "ws") + "/graphql"
    sub = "subscription { alerts { kind at alert { id ruleName state group } } }"

    async def run() -> list[dict[str, Any]]:
        async with connect(ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": sub}}))
            await asyncio.sleep(0.3)  # the subscription is registered
            await asyncio.to_thread(
                create_rule, server, name=name, query=f"service={svc}", window="3s",
                condition="count > 2",
            )  # fmt: skip
            await asyncio.to_thread(send_json, server, svc, 5)
            events: list[dict[str, Any]] = []
            while not any(e["kind"] == "resolved" for e in events):
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if msg["type"] == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
                    continue
                assert msg["type"] == "next", msg
                e = msg["payload"]["data"]["alerts"]
                if e["alert"]["ruleName"] == name:
                    events.append(e)
            return events

    events = asyncio.run(run())
    assert [(e["kind"], e["alert"]["state"]) for e in events] == [
        ("firing", "FIRING"),
        ("resolved", "RESOLVED"),
    ]


def test_acknowledging_and_silencing_record_who_and_until_when(server: OtelogProcess) -> None:
    svc = unique("ack")
    rule_id = create_rule(
        server, name=unique("ack"), query=f"service={svc}", window="30s", condition="count > 1"
    )
    send_json(server, svc, 3)
    [alert] = wait_until(lambda: in_state(server, rule_id, "FIRING"), 5, "firing")
    ack = 'mutation($id: ID!) { acknowledgeAlert(id: $id, by: "ana") { state acknowledgedBy } }'
    assert server.data(ack, {"id": alert["id"]})["acknowledgeAlert"] == {
        "state": "ACKNOWLEDGED",
        "acknowledgedBy": "ana",
    }
    silence = """mutation($id: ID!) { silenceAlert(id: $id, by: "bo", duration: "1h") {
        state silencedBy silencedUntil } }"""
    got = server.data(silence, {"id": alert["id"]})["silenceAlert"]
    assert got["state"] == "SILENCED" and got["silencedBy"] == "bo"
    assert parse_time(got["silencedUntil"]) > time.time() + 3500
    missing = server.graphql(ack, {"id": "0000000000000000"})
    assert missing["errors"][0]["extensions"]["code"] == "NOT_FOUND"


# ---- restarts and built-in rules (servers of their own)


def test_rules_and_alert_states_survive_a_restart(otelog_factory: Any, tmp_path: Path) -> None:
    args = ["--alert-interval-seconds", str(INTERVAL)]
    srv: OtelogProcess = otelog_factory(tmp_path / "d", args)
    svc = unique("restart")
    rule_id = create_rule(
        srv, name="restart_errors", query=f"service={svc}", window="1m", condition="count > 5",
        groupBy="service", labels={"team": "core"},
    )  # fmt: skip
    other = create_rule(srv, name="other", condition="absent", window="1h", query="service=nope")
    send_json(srv, svc, 10)
    [alert] = wait_until(lambda: in_state(srv, rule_id, "FIRING"), 5, "firing")
    ack = 'mutation($id: ID!) { acknowledgeAlert(id: $id, by: "ana") { state } }'
    srv.data(ack, {"id": alert["id"]})
    rules_q = "{ alertRules { id name query window condition groupBy labels createdAt } }"
    rules_before = srv.data(rules_q)["alertRules"]
    assert srv.stop() == 0

    again: OtelogProcess = otelog_factory(tmp_path / "d", args)
    assert again.data(rules_q)["alertRules"] == rules_before
    assert {r["id"] for r in rules_before} >= {rule_id, other}
    time.sleep(2 * INTERVAL)  # evaluations on counts seeded from the store
    [after] = alerts_of(again, rule_id)
    assert after["id"] == alert["id"] and after["triggeredAt"] == alert["triggeredAt"]
    assert (after["state"], after["acknowledgedBy"]) == ("ACKNOWLEDGED", "ana")
    assert after["count"] == 10


def test_built_in_rules_are_listed_and_cannot_be_deleted(otelog_factory: Any) -> None:
    srv: OtelogProcess = otelog_factory(
        None, ["--alert-builtin-rules", "true", "--alert-interval-seconds", "1"]
    )
    rules = srv.data("{ alertRules { id name kind condition builtin } }")["alertRules"]
    assert sorted((r["name"], r["kind"], r["builtin"]) for r in rules) == [
        ("otelog_deletion_overdue", "self", True),
        ("otelog_ingestion_lag", "self", True),
        ("otelog_records_dropped", "self", True),
    ]
    body = srv.graphql('mutation { deleteAlertRule(id: "otelog-ingest-lag") }')
    assert "built in" in body["errors"][0]["message"]


# ---- the engine on a real store, with the real writer


def request(service: str, n: int, ts_ns: int) -> bytes:
    res = ResourcePb(
        attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))]
    )
    recs = [
        LogRecord(time_unix_nano=ts_ns, severity_number=17, body=AnyValue(string_value="x"))
        for _ in range(n)
    ]
    req = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=res, scope_logs=[ScopeLogs(log_records=recs)])]
    )
    return req.SerializeToString()


@pytest.mark.parametrize("max_queue_rows", [1_000_000, 7])
def test_every_record_is_counted_once_whether_seeded_queued_or_re_seeded(
    tmp_path: Path, max_queue_rows: int
) -> None:
    """Writes race the rule's creation (the seed), and with a tiny queue the engine drops
    batches and re-seeds: the count must come out exact either way."""
    store = Store(str(tmp_path / "db"))
    writer = Writer(store, seal_interval_s=0.05)
    engine = AlertEngine(store, interval_s=3600, max_queue_rows=max_queue_rows)
    engine.start()
    writer.listeners.append(engine.on_commit)
    writer.start()
    try:
        now = time.time_ns()
        sent = 0
        pending = []
        for i in range(60):
            raw = request("svc", 5, now)
            batch, _ = decode_logs(raw, now)
            # not waited for: commits run on the writer thread while the rule is created
            pending.append(writer.submit_logs("default", batch, raw, now))
            sent += 5
            if i == 20:
                engine.create_rule(
                    RuleSpec(name="all", condition="count > 0", window="1m", query="service=svc")
                )
            if i % 10 == 0:
                time.sleep(0.01)
        for f in pending:
            f.result(10)
        engine.drain()
        engine.run_round()
        [(alert, _rule)] = engine.alerts()
        assert alert.count == sent
    finally:
        writer.stop()
        engine.stop()
        store.close()


def test_a_self_rule_fires_on_records_dropped_during_its_window(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"))
    figures = {"dropped": 0.0}
    engine = AlertEngine(
        store,
        interval_s=3600,
        self_source=lambda: SelfSample(figures["dropped"], 0.0, 0.0),
        builtin_rules=True,
    )
    engine.start()
    try:
        t0 = time.time_ns()
        engine.run_round(t0)
        assert engine.alerts() == []
        figures["dropped"] = 12
        engine.run_round(t0 + S)
        [(alert, rule)] = engine.alerts()
        assert rule.name == "otelog_records_dropped" and alert.state == AlertState.FIRING
        assert alert.value == 12 and "12 records dropped" in alert.message
        engine.run_round(t0 + 400 * S)  # five minutes on, nothing new dropped
        [(alert, _)] = engine.alerts()
        assert alert.state == AlertState.RESOLVED
    finally:
        engine.stop()
        store.close()


# ---- webhook delivery


def test_a_failing_webhook_is_retried_with_backoff_until_it_answers() -> None:
    r = Receiver(fail_first=2, fail_status=503)
    try:
        notifier = Notifier(max_attempts=4, base_delay_s=0.05)
        n = one_notification(r.url())
        t0 = time.monotonic()
        assert asyncio.run(notifier.deliver(n))
        assert r.attempts == 3 and len(r.posts) == 1 and notifier.stats.retries == 2
        assert time.monotonic() - t0 >= 0.05 + 0.1  # waited 0.05 s, then 0.1 s
        assert [notifier.delay(a) for a in (1, 2, 3, 12)] == [0.05, 0.1, 0.2, 30.0]
    finally:
        r.close()


def test_a_webhook_refusing_the_body_is_not_retried_and_attempts_are_bounded() -> None:
    for status, attempts in ((400, 1), (503, 3)):
        r = Receiver(fail_first=100, fail_status=status)
        try:
            notifier = Notifier(max_attempts=3, base_delay_s=0.01)
            assert not asyncio.run(notifier.deliver(one_notification(r.url())))
            assert r.attempts == attempts and notifier.stats.failed == 1
        finally:
            r.close()


def one_notification(url: str) -> Notification:
    rule = validate_rule(
        RuleSpec(name="n", condition="count > 1", window="1m"), "rid", "default", time.time_ns()
    )
    alert = Alert(
        alert_id="0123456789abcdef",
        rule_id="rid",
        tenant="default",
        group=None,
        state=AlertState.FIRING,
        value=3.0,
        count=3,
        message="3 matching records in the last 1m (count > 1)",
        affected_services=["svc"],
        created_at=time.time_ns(),
        updated_at=time.time_ns(),
        triggered_at=time.time_ns(),
    )
    return Notification(Target(url, "alertmanager"), rule, FIRING, [alert])
