"""Every Prometheus metric otelog exports, in one registry served at `/metrics` (API port).

This module imports nothing of otelog, so any layer (receiver, ingest, store, query, api)
can record into it without breaking the one-way dependencies. Values that live in other
objects (queue depth, bytes on disk) are read at scrape time: the server wires them with
`Gauge.set_function` or registers a collector; nothing here holds a reference to a
component.

Names start with `otelog_`; counters end in `_total` (prometheus-client adds it to the
sample names). `deploy/prometheus/otelog-rules.yml` alerts on these names, and
tests/test_metrics.py checks that every name it uses is in a real scrape.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# `*_created` series double the exposition and nothing here alerts on them
disable_created_metrics()
# Our own registry rather than the global default: the server wires each collector once
# and a test importing otelog never registers anything behind its back.
REGISTRY = CollectorRegistry(auto_describe=True)
# process_resident_memory_bytes, process_cpu_seconds_total, ... of the server process
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

SIGNAL_LOGS = "logs"
SIGNAL_TRACES = "traces"


class HotCounter(Collector):
    """A labelled counter for the ingest hot path: one dict update per call.

    prometheus-client's `Counter.labels(...).inc()` costs ~7 us (a lock and a label
    check per call); a request from a Collector carries dozens of services, so counting
    per service and level that way cost a third as much as decoding the request. Only the
    event loop (the receivers) increments these; a scrape copies the dict, which CPython
    does without releasing the GIL.
    """

    def __init__(
        self, name: str, documentation: str, labelnames: list[str], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.values: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def inc(self, labels: tuple[str, ...], n: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + n

    def value(self, labels: tuple[str, ...]) -> float:
        return self.values.get(labels, 0.0)

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for labels, v in dict(self.values).items():
            family.add_metric(list(labels), v)
        yield family


# ---- what came in (counted once a request is decoded, whatever happens to it next)

RECEIVED_REQUESTS = Counter(
    "otelog_received_requests",
    "OTLP export requests that reached the handler, per signal",
    ["signal"],
    registry=REGISTRY,
)
RECEIVED_REQUEST_BYTES = Counter(
    "otelog_received_request_bytes",
    "Bytes of OTLP export requests (after decompression), per signal",
    ["signal"],
    registry=REGISTRY,
)
RECEIVED_RECORDS = HotCounter(
    "otelog_received_records",
    "Log records or spans decoded from requests, per signal and service",
    ["signal", "service"],
    REGISTRY,
)
RECEIVED_BYTES = HotCounter(
    "otelog_received_bytes",
    "Serialized bytes of the records or spans decoded, per signal and service",
    ["signal", "service"],
    REGISTRY,
)

# ---- what became of it

LOG_RECORDS_ACCEPTED = HotCounter(
    "otelog_log_records_accepted",
    "Log records stored durably and acknowledged, per service and level",
    ["service", "level"],
    REGISTRY,
)
SPANS_ACCEPTED = HotCounter(
    "otelog_spans_accepted",
    "Spans stored durably and acknowledged, per service",
    ["service"],
    REGISTRY,
)
LOG_RECORDS_SAMPLED = HotCounter(
    "otelog_log_records_sampled",
    "Log records dropped by load shedding (reported to the client as rejected), "
    "per service and level",
    ["service", "level"],
    REGISTRY,
)
RECORDS_REJECTED = Counter(
    "otelog_records_rejected",
    "Records refused for good (partial success, not to be retried), per signal and reason",
    ["signal", "reason"],
    registry=REGISTRY,
)
RECORDS_REFUSED = Counter(
    "otelog_records_refused",
    "Records of decoded requests refused with a retryable status "
    "(RESOURCE_EXHAUSTED/429/503), per signal, reason and level",
    ["signal", "reason", "level"],
    registry=REGISTRY,
)
REQUESTS_REFUSED = Counter(
    "otelog_requests_refused",
    "Export requests refused, decoded or not, per signal and reason",
    ["signal", "reason"],
    registry=REGISTRY,
)

# ---- the ingest queue (gauges wired by the server with set_function)

QUEUE_BYTES = Gauge(
    "otelog_ingest_queue_bytes", "Bytes of requests waiting for the group commit", registry=REGISTRY
)
QUEUE_REQUESTS = Gauge(
    "otelog_ingest_queue_requests",
    "Requests waiting for the group commit (queue depth)",
    registry=REGISTRY,
)
INFLIGHT_BYTES = Gauge(
    "otelog_ingest_inflight_bytes",
    "Bytes of request bodies being read or decoded at the edge",
    registry=REGISTRY,
)
LIMIT_BYTES = Gauge(
    "otelog_ingest_limit_bytes",
    "The bound on queued plus in-flight bytes (max_pending_bytes)",
    registry=REGISTRY,
)
PRESSURE = Gauge(
    "otelog_ingest_pressure",
    "(queued + in-flight bytes) / bound: shedding starts at shed_debug_at",
    registry=REGISTRY,
)

UNSEALED_RECORDS = Gauge(
    "otelog_unsealed_records",
    "Records committed and searchable in memory, not yet sealed into a segment",
    registry=REGISTRY,
)
UNSEALED_BYTES = Gauge(
    "otelog_unsealed_bytes",
    "Request bytes of the records not yet sealed (they are held in memory until then)",
    registry=REGISTRY,
)

# ---- latencies

COMMIT_SECONDS = Histogram(
    "otelog_commit_duration_seconds",
    "Time of one group commit (synced WriteBatch and memtable insert)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
TIME_TO_SEARCHABLE = Histogram(
    "otelog_time_to_searchable_seconds",
    "From receipt of a log export request to its records being visible to queries",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
QUERY_SECONDS = Histogram(
    "otelog_query_duration_seconds",
    "Time to answer a query, per kind (logs, trace)",
    ["query"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
for _kind in ("logs", "trace"):
    QUERY_SECONDS.labels(_kind)  # present in every scrape, before the first query

# ---- live tail
# Set by whoever runs the tail hub (otelog/api/tail.py owns the subscriptions): e.g.
# `TAIL_SUBSCRIBERS.set_function(hub.subscriber_count)` once the hub exposes a count.
DELETIONS_OVERDUE = Gauge(
    "otelog_deletion_requests_overdue",
    "GDPR deletion requests past their erase deadline and not yet erased",
    registry=REGISTRY,
)
TAIL_SUBSCRIBERS = Gauge(
    "otelog_tail_subscribers", "Live-tail subscriptions currently open", registry=REGISTRY
)


class StorageCollector(Collector):
    """Bytes on disk per RocksDB column family and the data directory's filesystem, read
    at scrape time (`size_on_disk` is a RocksDB property per family: cheap)."""

    def __init__(self, size_on_disk: Callable[[], dict[str, int]], data_dir: str) -> None:
        self.size_on_disk = size_on_disk
        self.data_dir = data_dir

    def describe(self) -> Iterable[Metric]:
        return []  # sampled at collect time only; nothing to describe up front

    def collect(self) -> Iterable[Metric]:
        sizes = GaugeMetricFamily(
            "otelog_storage_bytes",
            "Bytes of SST files per RocksDB column family",
            labels=["column_family"],
        )
        try:
            for cf, n in sorted(self.size_on_disk().items()):
                sizes.add_metric([cf], float(n))
        except Exception:  # noqa: BLE001 - a closing store must not fail the whole scrape
            pass
        yield sizes
        try:
            usage = shutil.disk_usage(self.data_dir)
        except OSError:
            return
        yield GaugeMetricFamily(
            "otelog_data_dir_capacity_bytes",
            "Size of the filesystem holding the data directory",
            value=float(usage.total),
        )
        yield GaugeMetricFamily(
            "otelog_data_dir_free_bytes",
            "Free bytes on the filesystem holding the data directory",
            value=float(usage.free),
        )


# ---- label values

MAX_SERVICE_LABELS = 1000
OTHER_SERVICE = "__other__"
_services: set[str] = set()


def service_label(service: str) -> str:
    """`service` as a label value; past MAX_SERVICE_LABELS distinct names, OTHER_SERVICE.

    service.name comes from clients: without a cap, a client inventing names would grow
    the registry (and every scrape) without bound.
    """
    if service in _services:
        return service
    if len(_services) >= MAX_SERVICE_LABELS:
        return OTHER_SERVICE
    _services.add(service)
    return service


class FiguresCollector(Collector):
    """Figures a component computes at scrape time: (name, "gauge"|"counter", help, value).

    The lifecycle's counts (tiered segments, overdue deletions...) live in its own stats;
    reading them here at scrape time keeps this module free of otelog imports."""

    def __init__(self, source: Callable[[], list[tuple[str, str, str, float]]]) -> None:
        self.source = source

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        try:
            figures = self.source()
        except Exception:  # noqa: BLE001 - a closing component must not fail the whole scrape
            return
        for name, kind, help_text, value in figures:
            if kind == "counter":
                yield CounterMetricFamily(name, help_text, value=value)
            else:
                yield GaugeMetricFamily(name, help_text, value=value)
