"""Wires the parts together and owns start-up and shutdown order.

Start: open the store (format check) -> replay the WAL -> start the writer -> bind
every port -> serve. Stop (SIGTERM/SIGINT): stop taking requests -> let in-flight
exports finish and be acknowledged -> commit and seal -> close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Iterator

import uvicorn

from otelog import metrics
from otelog.alerting.engine import AlertEngine
from otelog.alerting.notify import Notifier
from otelog.alerting.rules import Target
from otelog.alerting.selfmetrics import SelfSample, SelfSource, registry_source
from otelog.api.app import build_app as build_api_app
from otelog.api.tail import TailHub
from otelog.config import Config, split_host_port
from otelog.errors import OtelogError
from otelog.ingest.limits import ByteBudget, ServiceRateLimits, parse_overrides
from otelog.ingest.shedding import IngestControl, ShedPolicy
from otelog.ingest.writer import Writer
from otelog.lifecycle.export import ExportManager
from otelog.lifecycle.figures import lifecycle_figures
from otelog.lifecycle.manager import LifecycleManager
from otelog.lifecycle.objstore import Destination, ObjectStore
from otelog.lifecycle.retention import DEFAULT, RetentionPolicy, load_file
from otelog.query.service import QueryService
from otelog.receiver import otlp_grpc, otlp_http
from otelog.receiver.decode import DecodeLimits, decode_logs
from otelog.receiver.handler import OtlpHandler
from otelog.sealer import ProcessSegmentBuilder
from otelog.store import format as fmt
from otelog.store.cold import DiskCache
from otelog.store.store import Store

log = logging.getLogger("otelog")


class StartupError(OtelogError):
    pass


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # one process serves three ports; signals are handled once, by the server below
        yield


def _bind(addr: str, what: str) -> socket.socket:
    try:
        host, port = split_host_port(addr)
    except ValueError as e:
        raise StartupError(f"{what}: {e}") from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it: a response is never held back waiting for an ACK
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise StartupError(f"cannot listen on {addr} ({what}): {e.strerror}") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.store: Store | None = None
        self.writer: Writer | None = None
        self.builder: ProcessSegmentBuilder | None = None
        self._objects: ObjectStore | None = None
        self._ready = False
        self._stop = asyncio.Event()

    def open_store(self) -> None:
        c = self.config
        self.store = Store(c.data_dir, scan_cache_bytes=c.scan_cache_bytes)
        if c.seal_in_worker:
            self.builder = ProcessSegmentBuilder(self.limits())
            self.store.segment_builder = self.builder
            self.store.segment_merger = self.builder.merge
        self.writer = Writer(
            self.store,
            max_pending_bytes=c.max_pending_bytes,
            seal_interval_s=c.seal_interval_seconds,
            seal_rows=c.seal_rows,
        )
        limits = self.limits()
        entries = []
        for e in self.store.wal_entries():
            if e.kind != fmt.WAL_LOGS:
                continue
            batch, _ = decode_logs(e.raw, e.receipt_ns, limits)
            entries.append((e, batch))
        n = self.writer.replay(entries)
        if n:
            log.info("replayed %d acknowledged records from the WAL", n)

    def limits(self) -> DecodeLimits:
        return DecodeLimits(max_future_ns=self.config.max_future_seconds * 10**9)

    def ingest_control(self, writer: Writer) -> IngestControl:
        """The byte budget, rate limits and shedding policy, from the config (checked)."""
        c = self.config
        try:
            policy = ShedPolicy(
                c.shed_debug_at, c.shed_info_at, c.shed_refuse_at, c.shed_debug_keep,
                c.shed_info_keep,
            )  # fmt: skip
            overrides = parse_overrides(c.rate_limit_overrides)
        except ValueError as e:
            raise StartupError(str(e)) from None
        if c.max_request_bytes > c.max_pending_bytes:
            log.warning(
                "max_request_bytes (%d) > max_pending_bytes (%d): larger requests get 413",
                c.max_request_bytes,
                c.max_pending_bytes,
            )
        store = writer.store
        max_unsealed = max(1, c.max_unsealed_bytes)
        budget = ByteBudget(
            c.max_pending_bytes,
            lambda: writer.pending_bytes,
            lambda: store.unsealed()[1] / max_unsealed,
        )
        rates = ServiceRateLimits(c.rate_limit_records_per_second, c.rate_limit_burst, overrides)
        return IngestControl(budget, rates, policy)

    def object_store(self) -> ObjectStore | None:
        """One S3 client for the cold tier and exports; None when none is configured."""
        c = self.config
        if not c.s3_endpoint:
            return None
        if self._objects is None:
            self._objects = ObjectStore(
                c.s3_endpoint,
                c.s3_access_key,
                c.s3_secret_key,
                secure=c.s3_secure,
                region=c.s3_region or None,
                timeout_s=c.s3_timeout_seconds,
            )
        return self._objects

    def lifecycle(self) -> LifecycleManager:
        """Retention, tiering and erasure, with the policies of the retention file."""
        c = self.config
        assert self.store is not None
        try:
            default = RetentionPolicy(
                DEFAULT, "", c.hot_days, c.cold_days, c.cold_destination
            ).validate()
            Destination.parse(c.cold_destination)
            policies = load_file(c.retention_file) if c.retention_file else []
        except OtelogError as e:
            raise StartupError(str(e)) from None
        self.store.gc_grace_s = c.gc_grace_seconds
        cache = DiskCache(
            c.cold_cache_dir or os.path.join(c.data_dir, "cold-cache"), c.cold_cache_bytes
        )
        lm = LifecycleManager(
            self.store,
            self.object_store(),
            default,
            cache,
            erase_deadline_s=c.erase_deadline_hours * 3600,
        )
        for p in policies:
            lm.set_policy(p)
        if not c.s3_endpoint:
            log.warning("no --s3-endpoint: data stays in RocksDB until its retention ends")
        return lm

    def alert_engine(self) -> AlertEngine:
        """The alert engine, its webhooks and the figures of the built-in rules."""
        c = self.config
        assert self.store is not None and self.writer is not None
        host, port = split_host_port(c.api_listen)
        external = c.alert_external_url or (
            f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        )
        notifier = Notifier(
            timeout_s=c.alert_webhook_timeout_seconds,
            max_attempts=c.alert_webhook_attempts,
            external_url=external,
        )
        source: SelfSource | None = registry_source()
        if source is None:
            # no metrics module in this build: the writer's commit times stand in for lag
            stats = self.writer.stats

            def source() -> SelfSample:
                secs = list(stats.commit_seconds)
                return SelfSample(0.0, sum(secs), float(len(secs)))

        urls = [u.strip() for u in c.alert_builtin_webhooks.split(",")]
        targets = [Target(u, "alertmanager") for u in urls if u]
        return AlertEngine(
            self.store,
            interval_s=c.alert_interval_seconds,
            notifier=notifier,
            self_source=source,
            builtin_rules=c.alert_builtin_rules,
            builtin_targets=targets,
            resend_s=c.alert_resend_seconds,
        )

    def wire_metrics(self, control: IngestControl) -> metrics.StorageCollector:
        """Point the scrape-time gauges at the live components."""
        assert self.store is not None and self.writer is not None
        writer, budget = self.writer, control.budget
        metrics.QUEUE_BYTES.set_function(lambda: writer.pending_bytes)
        metrics.QUEUE_REQUESTS.set_function(lambda: writer.pending_requests)
        metrics.INFLIGHT_BYTES.set_function(lambda: budget.in_flight)
        metrics.LIMIT_BYTES.set(budget.limit)
        metrics.PRESSURE.set_function(budget.pressure)
        store = self.store
        metrics.UNSEALED_RECORDS.set_function(lambda: store.unsealed()[0])
        metrics.UNSEALED_BYTES.set_function(lambda: store.unsealed()[1])
        collector = metrics.StorageCollector(self.store.size_on_disk, self.config.data_dir)
        metrics.REGISTRY.register(collector)
        return collector

    async def run(self) -> None:
        c = self.config
        self.open_store()
        assert self.store is not None and self.writer is not None
        grpc_host, grpc_port = split_host_port(c.grpc_listen)
        # bind the HTTP ports first so a taken port fails before anything starts
        http_sock = _bind(c.http_listen, "OTLP/HTTP")
        api_sock = _bind(c.api_listen, "API")
        probe = _bind(c.grpc_listen, "OTLP/gRPC")
        probe.close()
        # the live tail hears of every batch once it is durable, before any request can come
        tail_hub = TailHub(self.store, c.tail_queue_size)
        tail_hub.start(asyncio.get_running_loop())
        self.writer.listeners.append(tail_hub.on_commit)
        control = self.ingest_control(self.writer)
        lifecycle = self.lifecycle()
        storage_metrics = self.wire_metrics(control)
        lifecycle_metrics = metrics.FiguresCollector(lifecycle_figures(lifecycle))
        metrics.REGISTRY.register(lifecycle_metrics)
        metrics.DELETIONS_OVERDUE.set_function(lambda: len(lifecycle.overdue()))
        # alerting too: its listener must be there before the first commit (engine.py)
        alerts = self.alert_engine()
        alerts.start(asyncio.get_running_loop())
        self.writer.listeners.append(alerts.on_commit)
        self.writer.start()
        budget = control.budget
        lifecycle.start(
            pass_interval_s=c.lifecycle_interval_seconds,
            # merging and moving wait while ingestion nears the point where it sheds
            busy=lambda: budget.pressure() > c.shed_debug_at / 2,
        )
        handler = OtlpHandler(self.writer, self.limits(), control)
        grpc_server = otlp_grpc.build_server(
            handler, c.max_request_bytes, c.grpc_max_concurrent_streams, c.grpc_max_concurrent_rpcs
        )
        try:
            bound = grpc_server.add_insecure_port(c.grpc_listen)
        except RuntimeError as e:
            raise StartupError(f"cannot listen on {c.grpc_listen} (OTLP/gRPC): {e}") from None
        if bound == 0:
            raise StartupError(f"cannot listen on {c.grpc_listen} (OTLP/gRPC)")
        await grpc_server.start()
        qs = QueryService(self.store, c.query_max_limit)
        export_dir = c.export_dir or os.path.join(c.data_dir, "exports")
        try:
            os.makedirs(export_dir, exist_ok=True)
        except OSError as e:
            raise StartupError(f"cannot use export dir {export_dir!r}: {e.strerror}") from None
        exports = ExportManager(self.store, qs, self.object_store(), export_root=export_dir)
        http_app = otlp_http.build_app(handler, c.max_request_bytes, c.max_decompressed_bytes)
        api_app = build_api_app(
            qs,
            c.query_timeout_seconds,
            lambda: self._ready,
            handler,
            c.max_request_bytes,
            tail_hub=tail_hub,
            alert_engine=alerts,
            lifecycle=lifecycle,
            export_manager=exports,
        )
        servers = [
            _Uvicorn(
                uvicorn.Config(
                    http_app,
                    log_level="warning",
                    lifespan="off",
                    timeout_graceful_shutdown=10,
                    http="httptools",
                )
            ),
            _Uvicorn(
                uvicorn.Config(
                    api_app,
                    log_level="warning",
                    lifespan="off",
                    timeout_graceful_shutdown=5,
                    ws="websockets-sansio",
                    http="httptools",
                )
            ),
        ]
        tasks = [
            asyncio.create_task(servers[0].serve(sockets=[http_sock])),
            asyncio.create_task(servers[1].serve(sockets=[api_sock])),
        ]
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        self._ready = True
        log.info(
            "otelog serving: OTLP/gRPC %s, OTLP/HTTP %s, API %s, data %s",
            c.grpc_listen,
            c.http_listen,
            c.api_listen,
            c.data_dir,
        )
        print(
            f"otelog ready grpc={c.grpc_listen} http={c.http_listen} api={c.api_listen}", flush=True
        )
        stop_wait = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait([stop_wait, *tasks], return_when=asyncio.FIRST_COMPLETED)
        log.info("otelog stopping")
        self._ready = False
        # exports arriving from now on get 503 + Retry-After (OTLP/HTTP "Failures")
        control.budget.closing = True
        # stop accepting, let in-flight exports finish (they are acknowledged only once durable)
        await grpc_server.stop(grace=10)
        # end live tails with a message first: their sockets would hold uvicorn's shutdown
        tail_hub.close()
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        # running exports end FAILED and remove their partial output before the store closes
        await asyncio.to_thread(exports.close)
        await asyncio.to_thread(self.writer.stop)
        await asyncio.to_thread(lifecycle.stop)
        await asyncio.to_thread(alerts.stop)
        if alerts.notifier is not None:
            await alerts.notifier.aclose()
        if self.builder is not None:
            self.builder.close()
        metrics.REGISTRY.unregister(storage_metrics)
        metrics.REGISTRY.unregister(lifecycle_metrics)
        self.store.close()
        log.info("otelog stopped")
        _ = grpc_host, grpc_port, done
