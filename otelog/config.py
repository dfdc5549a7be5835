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
    grpc_max_concurrent_streams: int = 256
    # writer
    max_pending_bytes: int = 256 << 20
    seal_interval_seconds: float = 0.5
    seal_rows: int = 100_000
    seal_in_worker: bool = True
    # queries
    query_max_limit: int = 1000
    query_timeout_seconds: float = 30.0
    scan_cache_bytes: int = 256 << 20
    # live tail
    tail_queue_size: int = 10_000
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
    "max_pending_bytes": "bytes of requests waiting for commit before clients are refused",
    "seal_interval_seconds": "seconds before fresh records are sealed into a segment",
    "seal_rows": "rows that seal a segment early",
    "seal_in_worker": "build segments in a worker process (uses a second core)",
    "query_max_limit": "largest page a query may ask for",
    "query_timeout_seconds": "queries running longer are stopped with an error",
    "scan_cache_bytes": "memory for decompressed blocks that full-text scans reuse",
    "tail_queue_size": "records a live-tail subscriber may lag behind before it is dropped",
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
