"""Our error types -> each transport's status, in one table per edge (OTLP spec, "Failures")."""

from __future__ import annotations

import math

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2

from otelog.errors import InvalidArgument, Overloaded, PayloadTooLarge


def grpc_status(err: Exception) -> tuple[grpc.StatusCode, str, list[tuple[str, bytes]]]:
    """(code, message, trailing metadata) for an error raised while exporting."""
    if isinstance(err, Overloaded):
        secs = max(1, math.ceil(err.retry_after_s))
        info = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=secs))
        st = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=str(err))
        st.details.add().Pack(info)
        # RetryInfo in the status details is where the spec puts it; the OTel Python SDK
        # only honours it in its own trailing key as well, so send both.
        md = [
            ("grpc-status-details-bin", st.SerializeToString()),
            ("google.rpc.retryinfo-bin", info.SerializeToString()),
        ]
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(err), md
    if isinstance(err, PayloadTooLarge):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(err), []
    if isinstance(err, InvalidArgument):
        return grpc.StatusCode.INVALID_ARGUMENT, str(err), []
    return grpc.StatusCode.INTERNAL, "internal error", []


def http_status(err: Exception) -> tuple[int, str, dict[str, str]]:
    if isinstance(err, Overloaded):
        secs = max(1, math.ceil(err.retry_after_s))
        return 503 if "shutting down" in str(err) else 429, str(err), {"Retry-After": str(secs)}
    if isinstance(err, PayloadTooLarge):
        return 413, str(err), {}
    if isinstance(err, InvalidArgument):
        return 400, str(err), {}
    return 500, "internal error", {}


def status_message(code: int, message: str) -> status_pb2.Status:
    grpc_code = {400: code_pb2.INVALID_ARGUMENT, 413: code_pb2.RESOURCE_EXHAUSTED}.get(
        code, code_pb2.UNAVAILABLE if code in (429, 503) else code_pb2.INTERNAL
    )
    if code == 404:
        grpc_code = code_pb2.UNIMPLEMENTED
    if code == 415:
        grpc_code = code_pb2.INVALID_ARGUMENT
    return status_pb2.Status(code=grpc_code, message=message)
