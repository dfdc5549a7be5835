"""The fresh, in-memory part of the store: committed batches not yet sealed into a segment.

Everything in a memtable is already durable (its requests sit in the WAL column
family); sealing turns it into a segment and drops those WAL entries atomically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from otelog.model import LogBatch


@dataclass
class Memtable:
    tenant: str
    batches: list[LogBatch] = field(default_factory=list)
    wal_seqs: list[int] = field(default_factory=list)
    # (wal_seq, receipt_ns, raw request) per batch: a segment builder in another process
    # re-decodes these instead of receiving the decoded batches (far cheaper to send)
    requests: list[tuple[int, int, bytes]] = field(default_factory=list)
    rows: int = 0
    created: float = field(default_factory=time.monotonic)

    def add(self, batch: LogBatch, wal_seq: int, receipt_ns: int, raw: bytes) -> None:
        if not self.batches:
            self.created = time.monotonic()
        self.batches.append(batch)
        self.wal_seqs.append(wal_seq)
        self.requests.append((wal_seq, receipt_ns, raw))
        self.rows += len(batch)

    def age(self) -> float:
        return time.monotonic() - self.created
