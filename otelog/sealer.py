"""Building segments in a worker process, so sealing runs on the second core.

rocksdict and the decoder hold the GIL, so in one process decoding requests and building
segments (tokenizing bodies, grouping rows into postings) take turns on one core. The
worker receives the memtable's raw requests — one bytes object per request, cheap to
send — decodes them again exactly as the WAL replay would (same receipt time, same log
ids) and returns the finished columns and postings; the main process only writes them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from pyroaring import BitMap

from otelog.receiver.decode import DecodeLimits, decode_logs
from otelog.store.memtable import Memtable
from otelog.store.merge import merge_segments
from otelog.store.segment import (
    BuiltSegment,
    SegmentData,
    SegmentMeta,
    SegmentReader,
    build_segment,
)
from otelog.store.store import build_in_process

log = logging.getLogger(__name__)


def _build(
    tenant: str, seg_id: int, requests: list[tuple[int, int, bytes]], limits: DecodeLimits
) -> BuiltSegment:
    batches = []
    for seq, receipt_ns, raw in requests:
        batch, _ = decode_logs(raw, receipt_ns, limits)
        base = seq << 24
        batch.log_id = list(range(base, base + len(batch)))
        batches.append(batch)
    return build_segment(tenant, seg_id, batches)


def _merge(
    tenant: str,
    seg_id: int,
    inputs: list[tuple[SegmentMeta, SegmentData]],
    keep: list[bytes | None] | None,
) -> BuiltSegment:
    readers = [SegmentReader(data, meta) for meta, data in inputs]
    keeps = None if keep is None else [None if k is None else BitMap.deserialize(k) for k in keep]
    return merge_segments(tenant, seg_id, readers, keeps)


def _background() -> None:
    # merges are maintenance: on a busy machine the scheduler serves the seal worker and
    # the receivers first (measured: without it a 1 M-record burst shed 9% of its records)
    os.nice(10)


class ProcessSegmentBuilder:
    def __init__(self, limits: DecodeLimits) -> None:
        self.limits = limits
        self._pool: ProcessPoolExecutor | None = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn")
        )
        # merges and rewrites get their own worker: a seal must never queue behind a merge
        # of a million rows, or fresh records would wait seconds to become segments
        self._merge_pool: ProcessPoolExecutor | None = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_background
        )

    def __call__(self, tenant: str, seg_id: int, memtable: Memtable) -> BuiltSegment:
        if self._pool is not None:
            try:
                return self._pool.submit(
                    _build, tenant, seg_id, memtable.requests, self.limits
                ).result()
            except BrokenProcessPool:
                log.error("segment worker died; building segments in-process from now on")
                self._pool = None
        return build_in_process(tenant, seg_id, memtable)

    def merge(
        self,
        tenant: str,
        seg_id: int,
        inputs: list[SegmentReader],
        keep: list[BitMap | None] | None = None,
    ) -> BuiltSegment:
        """Merge in the worker: the main process only reads the inputs' bytes (RocksDB,
        in C) and writes the result; decompressing, re-sorting, re-compressing and
        remapping postings happen on the other core."""
        if self._merge_pool is not None:
            payload = [
                (s.meta, SegmentData.of(s.db, s.meta, s.terms()))  # type: ignore[arg-type]
                for s in inputs
            ]
            keep_b = None if keep is None else [None if k is None else k.serialize() for k in keep]
            try:
                return self._merge_pool.submit(_merge, tenant, seg_id, payload, keep_b).result()
            except BrokenProcessPool:
                log.error("merge worker died; merging in-process from now on")
                self._merge_pool = None
        return merge_segments(tenant, seg_id, inputs, keep)

    def close(self) -> None:
        for pool in (self._pool, self._merge_pool):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=False)
        self._pool = self._merge_pool = None
