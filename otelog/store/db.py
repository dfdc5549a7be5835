"""The one module that talks to RocksDB (rocksdict, raw-bytes mode)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from rocksdict import (
    DBCompressionType,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from otelog.errors import StoreFormatError
from otelog.store import format as fmt
from otelog.store.format import prefix_end


class Database:
    def __init__(self, path: str) -> None:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise StoreFormatError(f"cannot use data dir {path!r}: {e.strerror}") from None
        if not os.access(path, os.W_OK):
            raise StoreFormatError(f"data dir {path!r} is not writable")
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.create_missing_column_families(True)
        opts.set_compression_type(DBCompressionType.lz4())
        opts.set_bottommost_compression_type(DBCompressionType.zstd())
        opts.increase_parallelism(2)
        # RocksDB keeps its log until every column family flushed what it covers; bound it
        # so the raw requests of the `wal` family do not linger on disk
        opts.set_max_total_wal_size(64 << 20)
        cfs = {}
        for name in fmt.COLUMN_FAMILIES:
            o = Options(raw_mode=True)
            if name == fmt.CF_COLS:
                # columns are zstd-compressed already; compressing again costs CPU for nothing
                o.set_compression_type(DBCompressionType.none())
                o.set_bottommost_compression_type(DBCompressionType.none())
            elif name in (fmt.CF_POST, fmt.CF_SPANS):
                o.set_compression_type(DBCompressionType.zstd())
                o.set_bottommost_compression_type(DBCompressionType.zstd())
            else:
                o.set_compression_type(DBCompressionType.lz4())
            if name in (fmt.CF_COLS, fmt.CF_POST, fmt.CF_SPANS):
                o.set_write_buffer_size(32 << 20)
            cfs[name] = o
        existing = set()
        if os.path.exists(os.path.join(path, "CURRENT")):
            try:
                existing = set(Rdict.list_cf(path, Options(raw_mode=True)))
            except Exception as e:
                raise StoreFormatError(f"data dir {path!r} is not an otelog store: {e}") from e
            if fmt.CF_META not in existing:
                raise StoreFormatError(
                    f"data dir {path!r} holds a RocksDB database that is not an otelog store"
                )
            unknown = existing - set(fmt.COLUMN_FAMILIES) - {"default"}
            if unknown:
                raise StoreFormatError(
                    f"data dir {path!r} holds unknown column families {sorted(unknown)}"
                )
        try:
            self.db = Rdict(path, options=opts, column_families=cfs)
        except Exception as e:
            raise StoreFormatError(f"cannot open data dir {path!r}: {e}") from e
        self.path = path
        self.cf = {name: self.db.get_column_family(name) for name in fmt.COLUMN_FAMILIES}
        self._handles = {
            name: self.db.get_column_family_handle(name) for name in fmt.COLUMN_FAMILIES
        }
        self._sync = WriteOptions()
        self._sync.sync = True
        self._nosync = WriteOptions()
        self._check_format(fresh=not existing)

    def _check_format(self, fresh: bool) -> None:
        meta = self.cf[fmt.CF_META]
        have = meta.get(fmt.FORMAT_KEY)
        if have is None:
            if not fresh:
                # a RocksDB database we did not create: never write into someone's data
                raise StoreFormatError(
                    f"data dir {self.path!r} holds a RocksDB database that is not an otelog "
                    "store (no format marker)"
                )
            meta.put(fmt.FORMAT_KEY, fmt.format_value(), self._sync)
            return
        if have != fmt.format_value():
            raise StoreFormatError(
                f"data dir {self.path!r} has format {have.decode(errors='replace')!r}; "
                f"this build reads {fmt.format_value().decode()!r}"
            )

    def batch(self) -> WriteBatch:
        return WriteBatch(raw_mode=True)

    def put(self, wb: WriteBatch, cf: str, key: bytes, value: bytes) -> None:
        wb.put(key, value, self._handles[cf])

    def delete(self, wb: WriteBatch, cf: str, key: bytes) -> None:
        wb.delete(key, self._handles[cf])

    def delete_range(self, wb: WriteBatch, cf: str, lo: bytes, hi: bytes) -> None:
        wb.delete_range(lo, hi, self._handles[cf])

    def write(self, wb: WriteBatch, sync: bool) -> None:
        self.db.write(wb, self._sync if sync else self._nosync)

    def write_one(self, cf: str, key: bytes, value: bytes | None, sync: bool = False) -> None:
        """Put (or, with None, delete) one key."""
        wb = self.batch()
        if value is None:
            self.delete(wb, cf, key)
        else:
            self.put(wb, cf, key, value)
        self.write(wb, sync)

    def get(self, cf: str, key: bytes) -> bytes | None:
        v = self.cf[cf].get(key)
        return v  # type: ignore[no-any-return]

    def get_many(self, cf: str, keys: list[bytes]) -> list[bytes | None]:
        return self.cf[cf].get(keys)  # type: ignore[return-value, arg-type]

    def scan_prefix(self, cf: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        ro = ReadOptions()
        ro.set_iterate_upper_bound(prefix_end(prefix))
        it = self.cf[cf].iter(ro)
        it.seek(prefix)
        while it.valid():
            yield it.key(), it.value()
            it.next()

    def scan_range(self, cf: str, lo: bytes, hi: bytes) -> Iterator[tuple[bytes, bytes]]:
        ro = ReadOptions()
        ro.set_iterate_upper_bound(hi)
        it = self.cf[cf].iter(ro)
        it.seek(lo)
        while it.valid():
            yield it.key(), it.value()
            it.next()

    def compact(self, cf: str, lo: bytes | None = None, hi: bytes | None = None) -> None:
        self.cf[cf].compact_range(lo, hi)

    def flush(self) -> None:
        for name in fmt.COLUMN_FAMILIES:
            self.cf[name].flush()

    def size_on_disk(self) -> dict[str, int]:
        out = {}
        for name in fmt.COLUMN_FAMILIES:
            try:
                out[name] = int(
                    self.cf[name].property_int_value("rocksdb.total-sst-files-size") or 0
                )
            except Exception:  # noqa: BLE001
                out[name] = 0
        return out

    def close(self) -> None:
        # column family objects hold the DB open; drop them before closing
        self.cf.clear()
        self._handles.clear()
        self.db.close()
