"""One Config: every setting with its default, its flag and its OTELOG_* variable."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any


@dataclass
class Config:
    data_dir: str = "./otelog-data"
    grpc_listen: str = "0.0.0.0:4317"
    http_listen: str = "0.0.0.0:4318"
    api_listen: str = "0.0.0.0:8080"
    # OTLP limits
    max_request_bytes: int = 16 << 20  # compressed body / gRPC message
    max_decompressed_bytes: int = 64 << 20  # a gzip bomb stops here
    max_future_seconds: int = 24 * 3600  # records further in the future are rejected
    grpc_max_concurrent_streams: int = 100
    grpc_max_concurrent_rpcs: int = 256
    # writer, and the bound on what the ingest path holds (otelog/ingest/limits.py)
    max_pending_bytes: int = 256 << 20
    max_unsealed_bytes: int = 256 << 20
    # load shedding by severity (otelog/ingest/shedding.py); thresholds are fractions of
    # max_pending_bytes, or of a service's rate-limit burst drawn down
    shed_debug_at: float = 0.5
    shed_info_at: float = 0.75
    shed_refuse_at: float = 0.9
    shed_debug_keep: float = 0.1
    shed_info_keep: float = 0.5
    # per-service token buckets in log records per second (0 = unlimited)
    rate_limit_records_per_second: float = 0.0
    rate_limit_burst: float = 0.0
    rate_limit_overrides: str = ""
    seal_interval_seconds: float = 0.5
    seal_rows: int = 100_000
    seal_in_worker: bool = True
    # queries
    query_max_limit: int = 1000
    query_timeout_seconds: float = 30.0
    scan_cache_bytes: int = 256 << 20
    # live tail
    tail_queue_size: int = 10_000
    # alerting
    alert_interval_seconds: float = 15.0
    alert_resend_seconds: float = 60.0
    alert_webhook_timeout_seconds: float = 5.0
    alert_webhook_attempts: int = 5
    alert_external_url: str = ""
    alert_builtin_rules: bool = False
    alert_builtin_webhooks: str = ""
    # object storage (MinIO or any S3): the cold tier and s3:// exports
    s3_endpoint: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_secure: bool = False
    s3_region: str = ""
    s3_timeout_seconds: float = 10.0
    # data lifecycle (otelog/lifecycle): the default retention policy, tiering, deletes
    hot_days: float = 7.0
    cold_days: float = 365.0
    cold_destination: str = "s3://otelog/cold"
    retention_file: str = ""
    cold_cache_dir: str = ""
    cold_cache_bytes: int = 1 << 30
    lifecycle_interval_seconds: float = 60.0
    erase_deadline_hours: float = 24.0
    gc_grace_seconds: float = 60.0
    export_dir: str = ""
    log_level: str = "info"


_HELP = {
    "data_dir": "directory of the RocksDB store",
    "grpc_listen": "OTLP/gRPC host:port",
    "http_listen": "OTLP/HTTP host:port",
    "api_listen": "GraphQL, REST, /metrics host:port",
    "max_request_bytes": "largest accepted OTLP request body (bytes, as sent)",
    "max_decompressed_bytes": "largest OTLP request body after decompression (bytes)",
    "max_future_seconds": "records stamped further in the future are rejected",
    "grpc_max_concurrent_streams": "gRPC max concurrent streams per connection",
    "grpc_max_concurrent_rpcs": "gRPC calls in progress before new ones are refused "
    "(RESOURCE_EXHAUSTED); bounds the messages gRPC holds before otelog sees them",
    "max_pending_bytes": "bytes of requests queued for commit plus bodies being read and "
    "decoded; past it requests are refused before decoding",
    "max_unsealed_bytes": "request bytes committed but not yet sealed into segments (held "
    "in memory) at which ingest sheds and refuses as if the queue were full",
    "shed_debug_at": "pressure (fraction of max_pending_bytes, or of a service's burst used) "
    "at which TRACE/DEBUG records are sampled",
    "shed_info_at": "pressure at which INFO records are sampled too",
    "shed_refuse_at": "pressure above which requests without ERROR/FATAL records are refused",
    "shed_debug_keep": "fraction of TRACE/DEBUG records kept while sampling",
    "shed_info_keep": "fraction of INFO records kept while sampling",
    "rate_limit_records_per_second": "default log records/s per service (0 = unlimited)",
    "rate_limit_burst": "records a service may send at once (0 = two seconds' worth)",
    "rate_limit_overrides": "per-service records/s[:burst], e.g. auth=5000,checkout=20000",
    "seal_interval_seconds": "seconds before fresh records are sealed into a segment",
    "seal_rows": "rows that seal a segment early",
    "seal_in_worker": "build segments in a worker process (uses a second core)",
    "query_max_limit": "largest page a query may ask for",
    "query_timeout_seconds": "queries running longer are stopped with an error",
    "scan_cache_bytes": "memory for decompressed blocks that full-text scans reuse",
    "tail_queue_size": "records a live-tail subscriber may lag behind before it is dropped",
    "alert_interval_seconds": "seconds between evaluations of the alert rules",
    "alert_resend_seconds": "seconds between repeats of an open alert to Alertmanager",
    "alert_webhook_timeout_seconds": "timeout of one webhook POST",
    "alert_webhook_attempts": "POSTs of one notification before giving up (backoff doubles)",
    "alert_external_url": "base URL of this server in notifications (default: from api-listen)",
    "alert_builtin_rules": "alert on otelog's own ingestion lag and dropped records",
    "alert_builtin_webhooks": "comma-separated Alertmanager URLs for the built-in rules",
    "s3_endpoint": "host:port of the S3/MinIO server for the cold tier and exports "
    "(empty: no object storage; data stays hot until it expires)",
    "s3_access_key": "S3 access key",
    "s3_secret_key": "S3 secret key",
    "s3_secure": "use HTTPS to reach S3",
    "s3_region": "S3 region (empty: the server's)",
    "s3_timeout_seconds": "timeout of one S3 request; past it tiering retries later and cold "
    "queries fail with a clear error",
    "hot_days": "default policy: days records stay in RocksDB",
    "cold_days": "default policy: days records stay in object storage after their hot days",
    "cold_destination": "default policy: where cold segments go (s3://bucket/prefix)",
    "retention_file": "TOML file of retention policies, applied at start "
    "([[policy]] name, query, hot_days, cold_days, destination, priority)",
    "cold_cache_dir": "local cache of cold-segment parts (default: DATA_DIR/cold-cache)",
    "cold_cache_bytes": "size bound of the cold cache",
    "lifecycle_interval_seconds": "seconds between retention, tiering and erase passes",
    "erase_deadline_hours": "a deletion request not erased within this is overdue "
    "(metric otelog_deletion_requests_overdue)",
    "gc_grace_seconds": "seconds the bytes of a merged, moved or rewritten segment stay for "
    "queries already reading it; an erasure completes after this",
    "export_dir": "local export destinations must lie inside this directory; a relative "
    "destination is taken from it (default: DATA_DIR/exports)",
    "log_level": "debug, info, warning, error",
}


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _converter(default: object) -> Callable[[str], Any]:
    return _parse_bool if isinstance(default, bool) else type(default)


def env_name(field_name: str) -> str:
    return "OTELOG_" + field_name.upper()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for f in fields(Config):
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            type=_converter(f.default),
            help=f"{_HELP.get(f.name, '')} (env {env_name(f.name)}, default {f.default})",
        )


def from_sources(args: argparse.Namespace | None, env: dict[str, str] | None = None) -> Config:
    """Flags win over OTELOG_* variables, which win over defaults."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in fields(Config):
        v = getattr(args, f.name, None) if args is not None else None
        if v is None and env_name(f.name) in env:
            try:
                v = _converter(f.default)(env[env_name(f.name)])
            except ValueError as e:
                raise SystemExit(f"otelog: {env_name(f.name)}: {e}") from None
        if v is not None:
            values[f.name] = v
    return Config(**values)


def split_host_port(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {addr!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
