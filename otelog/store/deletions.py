"""GDPR deletion requests as the store keeps them (meta `del/` keys, JSON values).

A request hides, from the moment it is recorded, every record its query matches among
those committed before it (log id <= `max_log_id`); relative times in the query are
fixed at `now_ns`. The lifecycle erases the rows physically and fills in the receipt.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from otelog.store import format as fmt

PENDING = "PENDING"
ERASING = "ERASING"
ERASED = "ERASED"

DELETION_PREFIX = b"del/"


def deletion_prefix(tenant: str | None = None) -> bytes:
    return DELETION_PREFIX + (fmt.tenant_prefix(tenant) if tenant is not None else b"")


def deletion_key(tenant: str, request_id: str) -> bytes:
    return deletion_prefix(tenant) + request_id.encode()


@dataclass
class DeletionRequest:
    id: str
    tenant: str
    query: str
    now_ns: int
    max_log_id: int
    created_ns: int
    deadline_ns: int
    state: str = PENDING
    matched: int = 0
    erased: int = 0
    erased_ns: int = 0
    # the receipt: segments and objects rewritten or dropped, and the rows each lost
    rewritten: list[dict[str, Any]] = field(default_factory=list)
    # ids of old segments and objects whose bytes are still to go (grace, compaction)
    pending_gc: list[str] = field(default_factory=list)
    error: str = ""
    # once erased the query itself (it names the person) is dropped; its SHA-256 stays so
    # the requester can match the receipt to the request
    query_sha256: str = ""
    # with_traces: the spans of every trace a matched record belongs to go too (hex ids,
    # found when the request is made; emptied once erased)
    with_traces: bool = False
    traces: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @staticmethod
    def decode(data: bytes) -> DeletionRequest:
        return DeletionRequest(**json.loads(data))
