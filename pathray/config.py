"""Where PathRay keeps its state, read from the environment.

``PATHRAY_HOME`` (default ``./.pathray``) holds the embedded defaults: the SQLite catalog
(``catalog.db``) and the local cold store (``cold/``). ``PATHRAY_CATALOG_URL`` points the catalog
at any SQLAlchemy URL (PostgreSQL on a cluster), ``PATHRAY_COLD`` the cold store at a path every
node sees or at an object store (``s3://bucket/prefix``, reached as
:mod:`pathray.results.location` says), and ``RAY_ADDRESS`` the engine at a running cluster.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pathray.errors import ConfigError

#: An S3 bucket name (3-63 lowercase letters, digits, dots or hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/prefix`` into the bucket and the prefix (without slashes around).

    Raises:
        ConfigError: If the URI is not ``s3://`` or its bucket name is missing or invalid.
    """
    scheme, _, rest = uri.partition("://")
    if scheme != "s3":
        raise ConfigError(
            f"A cold store must be a local path or an s3://bucket/prefix URI. Got {uri!r} instead."
        )
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket):
        raise ConfigError(
            "An s3:// URI must name a bucket (3-63 lowercase letters, digits, dots or hyphens), "
            f"as in s3://bucket/prefix. Got {uri!r} instead."
        )
    return bucket, prefix.strip("/")


@dataclass(frozen=True)
class Settings:
    """Resolved locations of PathRay's state.

    Attributes:
        home: Root folder of the embedded defaults.
        catalog_url: SQLAlchemy URL of the hot catalog.
        cold_root: Root of the cold store (Lance tables, staged fragments, artifacts): an
            absolute path, or an ``s3://bucket/prefix`` URI.
        ray_address: Address of a Ray cluster, or None to start a local Ray on demand.
    """

    home: Path
    catalog_url: str
    cold_root: Path | str
    ray_address: str | None

    @classmethod
    def from_env(cls, home: str | Path | None = None) -> Settings:
        """Read the settings from the environment.

        Args:
            home: Overrides ``PATHRAY_HOME``.

        Returns:
            The settings, with folders not yet created.

        Raises:
            ConfigError: If ``PATHRAY_COLD`` is a malformed object-store URI.
        """
        root = Path(home or os.environ.get("PATHRAY_HOME", ".pathray")).expanduser().resolve()
        url = os.environ.get("PATHRAY_CATALOG_URL") or f"sqlite:///{root / 'catalog.db'}"
        cold_env = os.environ.get("PATHRAY_COLD") or str(root / "cold")
        cold: Path | str = cold_env
        if "://" in cold_env:
            parse_s3_uri(cold_env)  # refuses a malformed URI before anything uses it
        else:
            cold = Path(cold_env).expanduser().resolve()
        return cls(
            home=root,
            catalog_url=url,
            cold_root=cold,
            ray_address=os.environ.get("RAY_ADDRESS") or None,
        )
