"""Shared pytest fixtures. Each area keeps its fixtures in its own marked block."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathray.catalog import Catalog

# =============================================================================================
# catalog fixtures (owner: pathray/catalog)
#
#   catalog_url      a fresh, empty catalog database URL; parametrised over SQLite (a file in
#                    tmp_path) and PostgreSQL (a schema of its own, dropped afterwards)
#   catalog          a Catalog opened (and migrated) on catalog_url, closed afterwards
#   sqlite_catalog   a Catalog on a SQLite file only, for tests that need no PostgreSQL
#
# PostgreSQL is at 127.0.0.1:5432, database `test` (override with PATHRAY_TEST_PG_URL); when
# it is down the PostgreSQL cases fail with a hint, they are never skipped.
# =============================================================================================

PG_URL = os.environ.get(
    "PATHRAY_TEST_PG_URL",
    "postgresql+psycopg://postgres@{host}:{port}/test".format(
        host=os.environ.get("PATHRAY_PG_HOST", "127.0.0.1"),
        port=os.environ.get("PATHRAY_PG_PORT", "5432"),
    ),
)


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """URL of a new, empty PostgreSQL schema (the connection's search_path), dropped after."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    schema = f"pytest_{uuid.uuid4().hex[:16]}"
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError as exc:
        admin.dispose()
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_URL} ({str(exc.orig).strip()}). "
            "Start it with scripts/ensure-postgres.sh.",
            pytrace=False,
        )
    sep = "&" if "?" in PG_URL else "?"
    options = f"-csearch_path%3D{schema}%20-csynchronous_commit%3Doff"  # no fsync wait: tests
    try:
        yield f"{PG_URL}{sep}options={options}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def catalog_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A fresh catalog database URL, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    return str(request.getfixturevalue("pg_schema_url"))


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    """A migrated catalog on each backend."""
    from pathray.catalog import Catalog

    cat = Catalog.open(catalog_url)
    try:
        yield cat
    finally:
        cat.close()


@pytest.fixture
def sqlite_catalog(tmp_path) -> Iterator[Catalog]:
    """A migrated catalog on a SQLite file (no PostgreSQL needed)."""
    from pathray.catalog import Catalog

    cat = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    try:
        yield cat
    finally:
        cat.close()


# ============================================================================ end of catalog
