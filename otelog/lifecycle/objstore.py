"""Object storage (MinIO or any S3) through the `minio` client, with otelog's errors.

Every call fails fast with `ObjectStoreUnavailable` when the server cannot be reached:
the callers (tiering, cold queries, exports) retry later or report it; they never wait
minutes inside urllib3's default retries.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error

from otelog.errors import InvalidArgument, OtelogError
from otelog.store.cold import ColdUnavailable


class ObjectStoreUnavailable(ColdUnavailable):
    """The object store did not answer, or refused: retry later; nothing was lost."""


class ObjectMissing(OtelogError):
    """An object the catalog names is not in the bucket."""


@dataclass(frozen=True)
class Destination:
    """`s3://bucket/prefix`: where objects of a policy, or an export, go."""

    bucket: str
    prefix: str

    @staticmethod
    def parse(text: str) -> Destination:
        if not text.startswith("s3://"):
            raise InvalidArgument(f"expected s3://bucket/prefix, got {text!r}")
        bucket, _, prefix = text[5:].partition("/")
        if not bucket:
            raise InvalidArgument(f"no bucket in {text!r}")
        prefix = prefix.strip("/")
        return Destination(bucket, prefix + "/" if prefix else "")

    def key(self, name: str) -> str:
        return self.prefix + name

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


class _errors:  # noqa: N801 - used as `with _errors(op, what):`
    """Translates the client's exceptions into otelog's, naming the operation."""

    def __init__(self, op: str, what: str) -> None:
        self.op, self.what = op, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: object) -> bool:
        if e is None:
            return False
        if isinstance(e, S3Error) and e.code in ("NoSuchKey", "NoSuchObject"):
            raise ObjectMissing(f"{self.op} {self.what}: no such object") from e
        if isinstance(e, S3Error):
            raise ObjectStoreUnavailable(f"{self.op} {self.what}: {e.code}: {e.message}") from e
        if isinstance(e, MinioException | urllib3.exceptions.HTTPError | OSError):
            raise ObjectStoreUnavailable(f"{self.op} {self.what}: {e}") from e
        return False


class ObjectStore:
    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        secure: bool = False,
        region: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.endpoint = endpoint
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(timeout_s, 3.0), read=timeout_s),
            retries=urllib3.Retry(total=1, backoff_factor=0.1, status_forcelist=(502, 503, 504)),
            maxsize=16,
        )
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )
        self._buckets: set[str] = set()

    def ensure_bucket(self, bucket: str) -> None:
        if bucket in self._buckets:
            return
        with _errors("create bucket", bucket):
            if not self.client.bucket_exists(bucket):
                try:
                    self.client.make_bucket(bucket)
                except S3Error as e:
                    if e.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
        self._buckets.add(bucket)

    def put(self, bucket: str, key: str, data: bytes) -> str:
        """Store `data` and check what the server holds is it. Returns its md5 hex."""
        self.ensure_bucket(bucket)
        md5 = hashlib.md5(data).hexdigest()
        with _errors("put", f"s3://{bucket}/{key}"):
            res = self.client.put_object(bucket, key, io.BytesIO(data), len(data))
            etag = (res.etag or "").strip('"')
            st = self.client.stat_object(bucket, key)
        # a single-part upload's ETag is the md5 of the body: the server has exactly it
        if st.size != len(data) or (etag and "-" not in etag and etag != md5):
            raise ObjectStoreUnavailable(
                f"put s3://{bucket}/{key}: verification failed "
                f"(size {st.size} of {len(data)}, etag {etag} vs {md5})"
            )
        return md5

    def put_stream(self, bucket: str, key: str, stream: IO[bytes], part_size: int) -> int:
        """Multipart upload of a stream of unknown length. Returns the bytes stored."""
        self.ensure_bucket(bucket)
        with _errors("put", f"s3://{bucket}/{key}"):
            self.client.put_object(bucket, key, stream, -1, part_size=part_size)
            return int(self.client.stat_object(bucket, key).size or 0)

    def get(self, bucket: str, key: str, offset: int = 0, length: int = 0) -> bytes:
        with _errors("get", f"s3://{bucket}/{key}"):
            resp = self.client.get_object(bucket, key, offset=offset, length=length)
            try:
                data = resp.read()
            finally:
                resp.close()
                resp.release_conn()
        if length and len(data) != length:
            raise ObjectStoreUnavailable(
                f"get s3://{bucket}/{key}: {len(data)} bytes of {length} at {offset}"
            )
        return data

    def delete(self, bucket: str, keys: Iterable[str]) -> None:
        todo = [DeleteObject(k) for k in keys]
        if not todo:
            return
        with _errors("delete", f"s3://{bucket}"):
            errors = list(self.client.remove_objects(bucket, iter(todo)))
        if errors:
            raise ObjectStoreUnavailable(f"delete in s3://{bucket}: {errors[0]}")

    def delete_all_versions(self, bucket: str, key: str) -> None:
        """Remove an object and, in a versioned bucket, every older version of it: an
        erased record must not survive as a noncurrent version."""
        with _errors("delete", f"s3://{bucket}/{key}"):
            versions = [
                DeleteObject(str(o.object_name), o.version_id)
                for o in self.client.list_objects(bucket, prefix=key, include_version=True)
                if o.object_name == key
            ]
            if not versions:
                versions = [DeleteObject(key)]
            errors = list(self.client.remove_objects(bucket, iter(versions)))
        if errors:
            raise ObjectStoreUnavailable(f"delete s3://{bucket}/{key}: {errors[0]}")

    def list(self, bucket: str, prefix: str = "") -> Iterator[tuple[str, int]]:
        """(key, size) of every object under `prefix`."""
        for key, size, _ in self.list_dated(bucket, prefix):
            yield key, size

    def list_dated(self, bucket: str, prefix: str = "") -> Iterator[tuple[str, int, float]]:
        """(key, size, last modified as a unix time) of every object under `prefix`."""
        with _errors("list", f"s3://{bucket}/{prefix}"):
            if not self.client.bucket_exists(bucket):
                return
            for o in self.client.list_objects(bucket, prefix=prefix, recursive=True):
                modified = o.last_modified.timestamp() if o.last_modified else 0.0
                yield str(o.object_name), int(o.size or 0), modified
