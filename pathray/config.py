"""Where PathRay keeps its state, read from the environment.

``PATHRAY_HOME`` (default ``./.pathray``) holds the embedded defaults: the SQLite catalog
(``catalog.db``) and the local cold store (``cold/``). ``PATHRAY_CATALOG_URL`` points the catalog
at any SQLAlchemy URL (PostgreSQL on a cluster), ``PATHRAY_COLD`` the cold store at a path every
node sees or at an object store (``s3://bucket/prefix``, reached as
:mod:`pathray.results.location` says), and ``RAY_ADDRESS`` the engine at a running cluster.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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
            from pathray.results.location import parse_s3_uri  # pyarrow: only when needed

            parse_s3_uri(cold_env)  # refuses a malformed URI before anything uses it
        else:
            cold = Path(cold_env).expanduser().resolve()
        return cls(
            home=root,
            catalog_url=url,
            cold_root=cold,
            ray_address=os.environ.get("RAY_ADDRESS") or None,
        )
