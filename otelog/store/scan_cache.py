"""A byte-bounded cache of lower-cased record blocks, for full-text scans.

Searching for an id or a number (tokens without postings) reads every block in the
time range; keeping recent blocks decompressed and lower-cased turns repeated scans
into `bytes.find` over memory. Bounded in bytes, least recently used goes first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

ScanBlock = tuple[np.ndarray, bytes]  # (record offsets, lower-cased concatenated records)


class ScanCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[int, int], ScanBlock] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, seg_id: int, blk: int) -> ScanBlock | None:
        with self._lock:
            item = self._items.get((seg_id, blk))
            if item is not None:
                self._items.move_to_end((seg_id, blk))
            return item

    def put(self, seg_id: int, blk: int, item: ScanBlock) -> None:
        size = len(item[1]) + item[0].nbytes
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop((seg_id, blk), None)
            if old is not None:
                self._bytes -= len(old[1]) + old[0].nbytes
            self._items[(seg_id, blk)] = item
            self._bytes += size
            while self._bytes > self.max_bytes and self._items:
                _, (offs, data) = self._items.popitem(last=False)
                self._bytes -= len(data) + offs.nbytes

    def forget(self, seg_id: int) -> None:
        """Drop a replaced segment's blocks (an erased record must not linger in memory)."""
        with self._lock:
            for key in [k for k in self._items if k[0] == seg_id]:
                offs, data = self._items.pop(key)
                self._bytes -= len(data) + offs.nbytes

    @property
    def size(self) -> int:
        return self._bytes
