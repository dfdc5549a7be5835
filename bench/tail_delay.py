"""Live-tail delivery delay: from an export's acknowledgement (and from its sending) to the
moment each GraphQL subscriber (graphql-transport-ws) receives the record, with 1, 10 and
100 concurrent subscribers, sharing one filter or each with its own, while an OTLP/gRPC
ingest load runs.

    python bench/tail_delay.py                                   # starts its own server
    python bench/tail_delay.py --subscribers 1,10 --duration 5 --ingest-rate 5000
    python bench/tail_delay.py --grpc 127.0.0.1:4317 --api http://127.0.0.1:8080

How it measures. A probe thread exports one record every 1/--probe-rate s (service
`tail-probe`, body `probe <n>`) and notes when it sent it and when the export returned
(acknowledged = durable). Every subscriber's filter matches the probes: the same text for
all (`service=tail-probe`: one shared evaluation), or one text each (`... AND NOT nx<i>`:
as many evaluations as subscribers). Subscribers run in this process's event loop and note
when each probe arrives; one clock (perf_counter) serves both sides. Meanwhile load threads
send pre-encoded workload requests (bench/workload.py) at --ingest-rate records/s; their
records never match a filter, so they cost the tail only its batch-level prefilter. A phase
with no subscriber first gives the ingest and probe acknowledgement latency to compare.

A probe can reach a subscriber before the prober's thread sees its acknowledgement (the
server acknowledges, then hands the batch to the tail); "ack→recv" is then negative.
Progress goes to stderr; the table and one JSON line to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

# bench/ is not a package: run as a script, this file's directory is on sys.path, and
# ingest_query and workload import as top-level modules.
from ingest_query import (
    LOGS_EXPORT,
    Server,
    default_server_command,
    export_callable,
    fmt,
    log,
    open_channel,
    percentile,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol
from workload import Workload

PROBE_SERVICE = "tail-probe"
TAIL = """subscription($q: String!) {
  tail(query: $q) { logId timestamp service level body attributes }
}"""


# -- senders ----------------------------------------------------------------------------------


def probe_request(n: int) -> bytes:
    now = time.time_ns()
    record = LogRecord(
        time_unix_nano=now,
        observed_time_unix_nano=now,
        severity_number=9,  # type: ignore[arg-type]
        severity_text="INFO",
        body=AnyValue(string_value=f"probe {n}"),
        attributes=[KeyValue(key="probe.sent_unix_nano", value=AnyValue(int_value=now))],
    )
    resource = Resource(
        attributes=[KeyValue(key="service.name", value=AnyValue(string_value=PROBE_SERVICE))]
    )
    req = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(resource=resource, scope_logs=[ScopeLogs(log_records=[record])])
        ]
    )
    body: bytes = req.SerializeToString()
    return body


@dataclass
class Prober:
    """Exports probe records at a fixed rate; notes send and acknowledgement times."""

    target: str
    rate: float
    sent: dict[int, float] = field(default_factory=dict)
    acked: dict[int, float] = field(default_factory=dict)
    ack_ms: list[float] = field(default_factory=list)
    errors: int = 0
    next_n: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        channel = open_channel(self.target)
        call = export_callable(channel, LOGS_EXPORT, ExportLogsServiceResponse)
        interval = 1 / self.rate
        t_next = time.perf_counter()
        while not self._stop.is_set():
            n = self.next_n
            self.next_n += 1
            body = probe_request(n)
            t0 = time.perf_counter()
            self.sent[n] = t0
            try:
                call(body, timeout=30)
            except grpc.RpcError:
                self.errors += 1
                continue
            t1 = time.perf_counter()
            self.acked[n] = t1
            self.ack_ms.append((t1 - t0) * 1000)
            t_next += interval
            delay = t_next - time.perf_counter()
            if delay > 0:
                self._stop.wait(delay)
            else:
                t_next = time.perf_counter()
        channel.close()


@dataclass
class Load:
    """Sends pre-encoded workload requests at a target rate of records per second."""

    target: str
    bodies: list[bytes]
    batch: int
    rate: float
    threads: int = 2
    records: int = 0
    errors: int = 0
    ack_ms: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._stop.clear()
        self.records = self.errors = 0
        self.ack_ms = []
        self._workers = [
            threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(self.threads)
        ]
        for t in self._workers:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join()

    def _run(self, k: int) -> None:
        if self.rate <= 0:
            return
        channel = open_channel(self.target)
        call = export_callable(channel, LOGS_EXPORT, ExportLogsServiceResponse)
        interval = self.threads * self.batch / self.rate
        t_next = time.perf_counter() + k * interval / self.threads
        i = k
        while not self._stop.is_set():
            delay = t_next - time.perf_counter()
            if delay > 0:
                self._stop.wait(delay)
                if self._stop.is_set():
                    break
            t_next = max(t_next + interval, time.perf_counter() - interval)
            body = self.bodies[i % len(self.bodies)]
            i += self.threads
            t0 = time.perf_counter()
            try:
                call(body, timeout=30)
            except grpc.RpcError:
                with self._lock:
                    self.errors += 1
                continue
            ms = (time.perf_counter() - t0) * 1000
            with self._lock:
                self.records += self.batch
                self.ack_ms.append(ms)
        channel.close()


# -- subscribers ------------------------------------------------------------------------------


@dataclass
class Subscriber:
    query: str
    received: dict[int, float] = field(default_factory=dict)
    duplicates: int = 0
    error: str = ""


async def open_subscription(api_url: str, sub: Subscriber) -> ClientConnection:
    url = api_url.replace("http://", "ws://").replace("https://", "wss://") + "/graphql"
    ws = await connect(url, subprotocols=[Subprotocol("graphql-transport-ws")], max_queue=None)
    await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    ack = json.loads(await asyncio.wait_for(ws.recv(), 30))
    if ack.get("type") != "connection_ack":
        raise RuntimeError(f"no connection_ack: {ack}")
    payload = {"query": TAIL, "variables": {"q": sub.query}}
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
    return ws


async def receive(ws: ClientConnection, sub: Subscriber) -> None:
    try:
        async for raw in ws:
            now = time.perf_counter()
            msg = json.loads(raw)
            if msg.get("type") == "ping":
                await ws.send(json.dumps({"type": "pong"}))
                continue
            if msg.get("type") != "next":
                continue
            payload = msg["payload"]
            if payload.get("errors"):
                sub.error = str(payload["errors"][0].get("message"))
                return
            n = int(payload["data"]["tail"]["body"].split()[1])
            if n in sub.received:
                sub.duplicates += 1
            else:
                sub.received[n] = now
    except ConnectionClosed:
        pass


# -- one phase --------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    subscribers: int
    filters: str
    probes: int = 0
    deliveries: int = 0
    missing: int = 0
    duplicates: int = 0
    dropped: int = 0
    first_error: str = ""
    ack_to_recv_ms: list[float] = field(default_factory=list)
    send_to_recv_ms: list[float] = field(default_factory=list)
    probe_ack_ms: list[float] = field(default_factory=list)
    load_records_per_s: float = 0.0
    load_ack_ms: list[float] = field(default_factory=list)
    load_errors: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "subscribers": self.subscribers,
            "filters": self.filters,
            "probes": self.probes,
            "deliveries": self.deliveries,
            "missing": self.missing,
            "duplicates": self.duplicates,
            "dropped": self.dropped,
            "first_error": self.first_error,
            "ack_to_recv_p50_ms": percentile(self.ack_to_recv_ms, 50),
            "ack_to_recv_p99_ms": percentile(self.ack_to_recv_ms, 99),
            "ack_to_recv_max_ms": max(self.ack_to_recv_ms, default=None),
            "send_to_recv_p50_ms": percentile(self.send_to_recv_ms, 50),
            "send_to_recv_p99_ms": percentile(self.send_to_recv_ms, 99),
            "probe_ack_p50_ms": percentile(self.probe_ack_ms, 50),
            "probe_ack_p99_ms": percentile(self.probe_ack_ms, 99),
            "load_records_per_s": self.load_records_per_s,
            "load_ack_p50_ms": percentile(self.load_ack_ms, 50),
            "load_ack_p99_ms": percentile(self.load_ack_ms, 99),
            "load_errors": self.load_errors,
        }


async def run_phase(
    server: Server, load: Load, n_subs: int, distinct: bool, args: argparse.Namespace
) -> PhaseResult:
    filters = "distinct" if distinct else "same"
    res = PhaseResult(n_subs, filters if n_subs else "-")
    subs = [
        Subscriber(
            f"service={PROBE_SERVICE} AND NOT nx{i}" if distinct else f"service={PROBE_SERVICE}"
        )
        for i in range(n_subs)
    ]
    conns = [await open_subscription(server.api_url, s) for s in subs]
    readers = [asyncio.create_task(receive(ws, s)) for ws, s in zip(conns, subs, strict=True)]
    prober = Prober(server.grpc_target, args.probe_rate)
    try:
        prober.start()
        # warm up: every subscription is registered once it has received some probe
        deadline = time.perf_counter() + 30
        while any(not s.received for s in subs) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        if any(not s.received for s in subs):
            raise RuntimeError("a subscriber received nothing within 30 s")
        first = prober.next_n
        load.start()
        t0 = time.perf_counter()
        await asyncio.sleep(args.duration)
        last = prober.next_n
        wall = time.perf_counter() - t0
        load.stop()
        prober.stop()
        await asyncio.sleep(args.grace)  # stragglers
    finally:
        prober.stop()
        load.stop()
        for ws in conns:
            await ws.close()
        for t in readers:
            t.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    window = [n for n in range(first, last) if n in prober.acked]
    res.probes = len(window)
    res.probe_ack_ms = [(prober.acked[n] - prober.sent[n]) * 1000 for n in window]
    for s in subs:
        res.duplicates += s.duplicates
        if s.error:
            res.dropped += 1
            res.first_error = res.first_error or s.error
        for n in window:
            t = s.received.get(n)
            if t is None:
                res.missing += 1
                continue
            res.deliveries += 1
            res.ack_to_recv_ms.append((t - prober.acked[n]) * 1000)
            res.send_to_recv_ms.append((t - prober.sent[n]) * 1000)
    res.load_records_per_s = load.records / wall if wall else 0.0
    res.load_ack_ms = list(load.ack_ms)
    res.load_errors = load.errors
    return res


# -- main -------------------------------------------------------------------------------------


def print_table(results: list[PhaseResult]) -> None:
    head = (
        f"{'subs':>5} {'filters':>8} {'probes':>6} {'delivered':>9} {'missing':>7} "
        f"{'dropped':>7} {'ack→recv p50':>13} {'p99':>9} {'max':>9} {'send→recv p50':>14} "
        f"{'p99':>9} {'probe ack p50':>13} {'load rec/s':>10} {'load ack p50':>12} {'p99':>8}"
    )
    print(head)
    for r in results:
        s = r.summary()
        print(
            f"{r.subscribers:>5} {r.filters:>8} {r.probes:>6} {r.deliveries:>9} {r.missing:>7} "
            f"{r.dropped:>7} {fmt(s['ack_to_recv_p50_ms'], ' ms'):>13} "
            f"{fmt(s['ack_to_recv_p99_ms'], ' ms'):>9} {fmt(s['ack_to_recv_max_ms'], ' ms'):>9} "
            f"{fmt(s['send_to_recv_p50_ms'], ' ms'):>14} {fmt(s['send_to_recv_p99_ms'], ' ms'):>9} "
            f"{fmt(s['probe_ack_p50_ms'], ' ms'):>13} {fmt(r.load_records_per_s, '', 0):>10} "
            f"{fmt(s['load_ack_p50_ms'], ' ms'):>12} {fmt(s['load_ack_p99_ms'], ' ms'):>8}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--subscribers", default="1,10,100", help="comma-separated subscriber counts")
    p.add_argument(
        "--filters",
        default="same,distinct",
        help="same (one shared filter), distinct (one per subscriber), or both",
    )
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase")
    p.add_argument("--grace", type=float, default=2.0, help="seconds to wait for stragglers")
    p.add_argument("--probe-rate", type=float, default=20.0, help="probe records per second")
    p.add_argument(
        "--ingest-rate", type=float, default=10_000, help="background load, records/s (0: none)"
    )
    p.add_argument("--batch", type=int, default=256, help="records per load request")
    p.add_argument("--load-records", type=int, default=100_000, help="pre-encoded, then cycled")
    p.add_argument("--grpc", metavar="HOST:PORT", help="OTLP/gRPC of a running server")
    p.add_argument("--api", metavar="URL", help="GraphQL base URL of a running server")
    p.add_argument(
        "--server-arg", action="append", default=[], help="extra `otelog serve` argument"
    )
    p.add_argument("--startup-timeout", type=float, default=60.0)
    p.add_argument("--json", action="store_true", help="print only one JSON line to stdout")
    args = p.parse_args(argv)
    if (args.grpc is None) != (args.api is None):
        p.error("--grpc and --api go together")
    args.counts = [int(x) for x in args.subscribers.split(",") if x.strip()]
    args.kinds = [k.strip() for k in args.filters.split(",") if k.strip()]
    if any(k not in ("same", "distinct") for k in args.kinds):
        p.error("--filters takes same, distinct or both")
    return args


async def run_all(server: Server, load: Load, args: argparse.Namespace) -> list[PhaseResult]:
    results = []
    log("phase: no subscriber (baseline acknowledgement latency)")
    results.append(await run_phase(server, load, 0, False, args))
    for n in args.counts:
        for kind in args.kinds:
            if n == 1 and kind == "distinct" and "same" in args.kinds:
                continue  # one subscriber: the two are the same thing
            log(f"phase: {n} subscriber(s), {kind} filter(s)")
            r = await run_phase(server, load, n, kind == "distinct", args)
            s = r.summary()
            log(
                f"  p50 {fmt(s['ack_to_recv_p50_ms'], ' ms')}, p99 "
                f"{fmt(s['ack_to_recv_p99_ms'], ' ms')}, missing {r.missing}, "
                f"dropped {r.dropped}, load {r.load_records_per_s:,.0f} rec/s"
            )
            results.append(r)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="otelog-tail-bench-"))
    server: Server | None = None
    try:
        log(f"pre-encoding {args.load_records:,} load records ...")
        wl = Workload(args.load_records, args.batch, seed=7)
        bodies = list(wl.log_requests())
        if args.grpc:
            server = Server(args.grpc, args.api.rstrip("/"), None, None)
            server.wait_ready(args.startup_timeout)
        else:
            server = Server.start(
                default_server_command(),
                work / "data",
                work / "otelog.log",
                args.server_arg,
                args.startup_timeout,
            )
        log(f"server ready: gRPC {server.grpc_target}, API {server.api_url}")
        load = Load(server.grpc_target, bodies, args.batch, args.ingest_rate)
        results = asyncio.run(run_all(server, load, args))
    finally:
        code = server.stop() if server is not None else None
        if code:
            log(f"server exited with {code}; kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report = {
        "args": {k: v for k, v in vars(args).items() if isinstance(v, int | float | str | list)},
        "phases": [r.summary() for r in results],
    }
    ok = all(r.missing == 0 and r.dropped == 0 and r.duplicates == 0 for r in results)
    report["ok"] = ok
    if not args.json:
        print(f"command: {shlex.join([sys.executable, *sys.argv])}")
        print_table(results)
    print(json.dumps(report, separators=(",", ":")))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
