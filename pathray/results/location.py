"""Where cold data lives: a local folder or a prefix in an S3-compatible bucket, used alike.

A :class:`Location` is a folder addressed by a path (``/data/cold``) or an object-store URI
(``s3://bucket/prefix``). It reads and writes files through :mod:`pyarrow.fs` and hands Lance
the URI and the storage options it needs, so the cold store and the artifact store are written
once for both. A location pickles (with its endpoint and credentials), so a Ray worker writes to
the same store as the driver without reading the driver's environment.

The object store is configured from the environment:

``PATHRAY_S3_ENDPOINT`` (else ``AWS_ENDPOINT_URL``)
    Endpoint of an S3-compatible server, e.g. ``http://10.0.0.5:9000`` (unset: AWS itself).
``AWS_REGION`` (else ``AWS_DEFAULT_REGION``, else ``us-east-1``)
    The bucket's region.
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``
    Credentials (unset: the SDKs' default chain, e.g. an instance role).

Example:
    >>> cold = Location("s3://results/cold")  # doctest: +SKIP
    >>> (cold / "runs" / "r1").uri  # doctest: +SKIP
    's3://results/cold/runs/r1'
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pathray.config import parse_s3_uri
from pathray.errors import ConfigError, StorageError

#: Seconds to wait for a connection / a whole request to the object store, and the attempts
#: per request: a store that went away fails a run within seconds, not minutes.
CONNECT_TIMEOUT_S = 3
REQUEST_TIMEOUT_S = 30
ATTEMPTS = 3


@dataclass(frozen=True)
class S3Options:
    """How to reach an S3-compatible object store.

    Attributes:
        endpoint: ``http(s)://host:port`` of the server, or None for AWS itself.
        region: The bucket's region.
        access_key: Access key id, or None for the default credential chain.
        secret_key: Secret access key.
        session_token: Session token of temporary credentials.
    """

    endpoint: str | None = None
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None

    @classmethod
    def from_env(cls) -> S3Options:
        """Read the options from ``PATHRAY_S3_ENDPOINT`` and the ``AWS_*`` variables.

        Raises:
            ConfigError: If the endpoint is not an ``http://`` or ``https://`` URL.
        """
        endpoint = os.environ.get("PATHRAY_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and not re.match(r"^https?://[^/]+", endpoint):
            raise ConfigError(
                "PATHRAY_S3_ENDPOINT must be an http:// or https:// URL (host and port). "
                f"Got {endpoint!r} instead."
            )
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return cls(
            endpoint=endpoint.rstrip("/") if endpoint else None,
            region=region or "us-east-1",
            access_key=os.environ.get("AWS_ACCESS_KEY_ID") or None,
            secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
        )

    @property
    def where(self) -> str:
        """The endpoint in words, for messages."""
        return self.endpoint or "AWS S3"

    def lance(self) -> dict[str, str]:
        """The options as Lance ``storage_options``."""
        opts = {
            "aws_region": self.region,
            "connect_timeout": f"{CONNECT_TIMEOUT_S}s",
            "timeout": f"{REQUEST_TIMEOUT_S}s",
            "client_max_retries": str(ATTEMPTS - 1),
            "client_retry_timeout": str(REQUEST_TIMEOUT_S),
        }
        if self.endpoint:
            opts["aws_endpoint"] = self.endpoint
            opts["allow_http"] = str(self.endpoint.startswith("http://")).lower()
        if self.access_key and self.secret_key:
            opts["aws_access_key_id"] = self.access_key
            opts["aws_secret_access_key"] = self.secret_key
        if self.session_token:
            opts["aws_session_token"] = self.session_token
        return opts


@functools.lru_cache(maxsize=8)
def s3_filesystem(options: S3Options) -> pafs.S3FileSystem:
    """The pyarrow filesystem of an object store; one per options and process (it pools)."""
    kwargs: dict[str, Any] = {
        "region": options.region,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "request_timeout": REQUEST_TIMEOUT_S,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=ATTEMPTS),
    }
    if options.endpoint:
        scheme, _, host = options.endpoint.partition("://")
        kwargs.update(endpoint_override=host, scheme=scheme)
    if options.access_key and options.secret_key:
        kwargs.update(
            access_key=options.access_key,
            secret_key=options.secret_key,
            session_token=options.session_token,
        )
    return pafs.S3FileSystem(**kwargs)


def is_object_store(uri: str | Path) -> bool:
    """Whether a location names an object store (``scheme://``) rather than a local path."""
    return "://" in str(uri)


class Location:
    """A folder on a local disk or under an object-store prefix.

    Args:
        uri: A local path, or ``s3://bucket/prefix``.
        s3: How to reach the object store (default: read from the environment); ignored for a
            local path.

    Raises:
        ConfigError: If the URI is malformed or the object-store settings are invalid.
    """

    def __init__(self, uri: str | Path, s3: S3Options | None = None) -> None:
        if is_object_store(uri):
            bucket, prefix = parse_s3_uri(str(uri))
            self.s3: S3Options | None = s3 or S3Options.from_env()
            self.path = f"{bucket}/{prefix}".rstrip("/")
        else:
            self.s3 = None
            self.path = str(Path(uri).expanduser().resolve())

    @property
    def remote(self) -> bool:
        """Whether the location is on an object store."""
        return self.s3 is not None

    @property
    def uri(self) -> str:
        """The location as a string: the local path, or ``s3://bucket/key``."""
        return f"s3://{self.path}" if self.remote else self.path

    @property
    def name(self) -> str:
        """The last component of the location."""
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        """The folder holding this location."""
        return self._at(self.path.rsplit("/", 1)[0])

    def __truediv__(self, part: str) -> Location:
        return self._at(f"{self.path}/{part.strip('/')}")

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and (self.uri, self.s3) == (other.uri, other.s3)

    def __hash__(self) -> int:
        return hash(self.uri)

    def _at(self, path: str) -> Location:
        loc = object.__new__(Location)
        loc.s3, loc.path = self.s3, path
        return loc

    @property
    def filesystem(self) -> pafs.FileSystem:
        """The :mod:`pyarrow.fs` filesystem that holds the location (path: :attr:`path`)."""
        return s3_filesystem(self.s3) if self.s3 is not None else pafs.LocalFileSystem()

    @property
    def storage_options(self) -> dict[str, str] | None:
        """Lance ``storage_options`` for datasets under this location (None when local)."""
        return self.s3.lance() if self.s3 is not None else None

    @property
    def local_path(self) -> Path:
        """The location as a local path.

        Raises:
            ConfigError: If the location is on an object store.
        """
        if self.remote:
            raise ConfigError(f"This needs a local path. Got the object-store URI {self.uri}.")
        return Path(self.path)

    def error(self, action: str, exc: Exception) -> StorageError:
        """A :class:`StorageError` saying that ``action`` failed here, and what to check."""
        where = f" at {self.s3.where}" if self.s3 is not None else ""
        hint = (
            " Check that the object store is reachable (PATHRAY_S3_ENDPOINT, AWS_* credentials)."
            if self.remote
            else ""
        )
        return StorageError(f"Could not {action} {self.uri}{where}: {exc}.{hint}")

    def _info(self) -> pafs.FileInfo:
        try:
            return self.filesystem.get_file_info(self.path)
        except OSError as exc:
            raise self.error("look up", exc) from exc

    def exists(self) -> bool:
        """Whether a file or a folder (a key prefix on an object store) is there."""
        return self._info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        """Whether a file (an object) is there."""
        return self._info().type == pafs.FileType.File

    def size(self) -> int:
        """The size of the file in bytes."""
        return int(self._info().size)

    def files(self, suffix: str = "") -> list[Location]:
        """The files directly in this folder whose names end with ``suffix``, sorted by name."""
        try:
            selector = pafs.FileSelector(self.path, allow_not_found=True)
            infos = self.filesystem.get_file_info(selector)
        except OSError as exc:
            raise self.error("list", exc) from exc
        names = sorted(
            i.base_name
            for i in infos
            if i.type == pafs.FileType.File
            and i.base_name.endswith(suffix)
            and not i.base_name.startswith(".")
        )
        return [self / name for name in names]

    def makedirs(self) -> None:
        """Create the folder (a no-op on an object store, which has no folders)."""
        if not self.remote:
            Path(self.path).mkdir(parents=True, exist_ok=True)

    def remove_tree(self) -> None:
        """Delete the folder and everything under it; a missing folder is fine."""
        if not self.exists():
            return
        try:
            self.filesystem.delete_dir(self.path)
        except OSError as exc:
            raise self.error("delete", exc) from exc

    def write_parquet(self, table: pa.Table) -> None:
        """Write a Parquet file so that a reader sees all of it or nothing.

        A local file is written beside its place and renamed; an object is complete once its
        upload finishes, so it is written in place.
        """
        try:
            if self.remote:
                pq.write_table(table, self.path, filesystem=self.filesystem, compression="zstd")
                return
            target = Path(self.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, target)
        except OSError as exc:
            raise self.error("write", exc) from exc

    def read_parquet(self, columns: list[str] | None = None) -> pa.Table:
        """Read a Parquet file."""
        try:
            return pq.read_table(self.path, columns=columns, filesystem=self.filesystem)
        except OSError as exc:
            raise self.error("read", exc) from exc

    def read_schema(self) -> pa.Schema:
        """Read a Parquet file's schema."""
        try:
            return pq.read_schema(self.path, filesystem=self.filesystem)
        except OSError as exc:
            raise self.error("read", exc) from exc

    def open_input(self) -> IO[bytes]:
        """Open the file for reading (a binary stream)."""
        try:
            return self.filesystem.open_input_stream(self.path)
        except OSError as exc:
            raise self.error("read", exc) from exc

    def upload(self, source: Path) -> None:
        """Copy a local file here (complete or not at all, as :meth:`write_parquet`)."""
        try:
            pafs.copy_files(
                str(source),
                self.path,
                source_filesystem=pafs.LocalFileSystem(),
                destination_filesystem=self.filesystem,
            )
        except OSError as exc:
            raise self.error("write", exc) from exc

    def check_reachable(self) -> None:
        """Raise a :class:`StorageError` naming what to set unless the location can be read.

        Raises:
            StorageError: The object store cannot be reached or its bucket does not exist.
        """
        if not self.remote:
            return
        bucket = self.path.split("/", 1)[0]
        try:
            info = self.filesystem.get_file_info(bucket)
        except OSError as exc:
            raise self.error("reach", exc) from exc
        if info.type == pafs.FileType.NotFound:
            raise StorageError(
                f"The bucket {bucket!r} of the cold store {self.uri} does not exist at "
                f"{self.s3.where if self.s3 else ''}. Create it, or set PATHRAY_COLD to a bucket "
                "that exists."
            )


__all__ = [
    "Location",
    "S3Options",
    "is_object_store",
    "parse_s3_uri",
    "s3_filesystem",
]
