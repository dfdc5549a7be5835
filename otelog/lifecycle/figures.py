"""The lifecycle's figures for /metrics (read at scrape time)."""

from __future__ import annotations

from collections.abc import Callable

from otelog.lifecycle.manager import LifecycleManager
from otelog.store.deletions import ERASED

Figure = tuple[str, str, str, float]


def lifecycle_figures(lm: LifecycleManager) -> Callable[[], list[Figure]]:
    def figures() -> list[Figure]:
        s = lm.stats
        segs, rows, size = lm.cold_totals()
        deletions = lm.store.deletions()
        access = lm.store.cold
        cache = access.cache
        open_ = [d for d in deletions if d.state != ERASED]
        return [
            ("otelog_cold_segments", "gauge", "Segments in object storage", segs),
            ("otelog_cold_records", "gauge", "Log records in object storage", rows),
            ("otelog_cold_bytes", "gauge", "Bytes of segment objects in object storage", size),
            ("otelog_tiered_segments", "counter", "Segments moved to object storage",
             s.tiered_segments),
            ("otelog_tiered_records", "counter", "Log records moved to object storage",
             s.tiered_rows),
            ("otelog_expired_records", "counter", "Log records removed by retention",
             s.expired_rows),
            ("otelog_expired_spans", "counter", "Spans removed by retention", s.expired_spans),
            ("otelog_cold_fetches", "counter", "Range GETs of cold segment objects",
             access.fetches),
            ("otelog_cold_fetched_bytes", "counter", "Bytes read from cold segment objects",
             access.fetched_bytes),
            ("otelog_cold_cache_bytes", "gauge", "Bytes in the local cache of cold parts",
             cache.bytes if cache else 0),
            ("otelog_cold_cache_hits", "counter", "Cold parts read from the local cache",
             cache.hits if cache else 0),
            ("otelog_lifecycle_errors", "counter",
             "Lifecycle passes that failed (object storage down...); retried", s.errors),
            ("otelog_deletion_requests_open", "gauge",
             "GDPR deletion requests not yet erased", len(open_)),
        ]  # fmt: skip

    return figures
