"""Shared pytest fixtures. Each area keeps its fixtures in its own marked block."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathray.catalog import Catalog


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the local Ray that engine tests started in this process, while pytest still runs.

    Left to Ray's ``atexit`` hook, the shutdown runs during interpreter finalisation, next to
    the teardown of every other native library's threads (Lance, torch, numba).
    :func:`pathray.engine.cluster.shutdown` also waits for (and ends) the local Ray's processes,
    as the CLI does. Whole-suite runs once segfaulted after the summary line; the likely cause
    was found in the engine (a cancelled run's Ray Data threads calling Ray again after its
    shutdown, once even starting a new local Ray while the process exited), and a run cut short
    now stops its stream (:mod:`pathray.engine.streaming`), so the suite finalises normally.
    """
    if "ray" in sys.modules:
        from pathray.engine import cluster

        cluster.shutdown()


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


# =============================================================================================
# app-core fixtures (owner: pathray/results/overlay.py, pathray/catalog/corrections.py)
#
#   objects_slide    a catalog (each backend) with one registered 4000 x 3000 slide in image
#                    set "cases" and a succeeded run of 1500 synthetic objects on it, committed
#                    to a cold store in tmp_path
# =============================================================================================


@pytest.fixture
def objects_slide(catalog: Catalog, tmp_path):
    """A slide with a run's synthetic objects in the cold store (see the block comment)."""
    import hashlib
    from types import SimpleNamespace

    from pathray.results.store import ColdStore
    from pathray.results.synthetic_objects import write_objects_run

    store = ColdStore(tmp_path / "cold")
    catalog.add_store("local", str(tmp_path / "slides"))
    slide = catalog.register_slide(
        name="case.tif",
        checksum=hashlib.sha256(b"objects_slide").hexdigest(),
        store="local",
        relative_path="case.tif",
        width=4000,
        height=3000,
    )
    catalog.create_image_set("cases")
    catalog.add_to_image_set("cases", [slide.id])
    run = write_objects_run(catalog, store, "cases", {slide.id: (4000, 3000)}, count=1500)
    return SimpleNamespace(
        catalog=catalog, store=store, slide_id=slide.id, image_set="cases", run=run
    )


# ========================================================================= end of app-core


# =============================================================================================
# object-store fixtures (owner: pathray/results/location.py)
#
#   s3_server    a moto S3 server (PyPI moto[server], in the dev extra) on a free loopback port,
#                started once per session in a subprocess; its endpoint URL
#   s3_cold      a new bucket on it and the environment pointed at it (PATHRAY_S3_ENDPOINT,
#                AWS_* test credentials, PATHRAY_CACHE in tmp_path); the cold root
#                "s3://<bucket>/cold"
#   s3_proxy     a TCP forwarder in front of s3_server (tests/tcp_proxy.py): kill() makes the
#                store vanish with its data kept, start() brings it back on the same port
# =============================================================================================

S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 90) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode} before it answered", pytrace=False)
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{what} did not answer at {url} within {timeout_s} s", pytrace=False)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Endpoint of a moto S3 server running for the session."""
    from pathlib import Path

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_http(endpoint, proc, "moto_server")
        yield endpoint
    finally:
        proc.kill()
        proc.wait()


def make_bucket(endpoint: str) -> str:
    """Create a new, empty bucket on an S3 server; its name."""
    import pyarrow.fs as pafs

    name = f"pathray-{uuid.uuid4().hex[:12]}"
    scheme, _, host = endpoint.partition("://")
    admin = pafs.S3FileSystem(
        endpoint_override=host,
        scheme=scheme,
        region="us-east-1",
        access_key=S3_KEYS["AWS_ACCESS_KEY_ID"],
        secret_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
        allow_bucket_creation=True,  # PathRay never creates buckets; the tests' admin does
    )
    admin.create_dir(name)
    return name


@pytest.fixture
def s3_cold(s3_server: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A cold root in a new bucket, with the environment pointed at the server."""
    monkeypatch.setenv("PATHRAY_S3_ENDPOINT", s3_server)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("PATHRAY_CACHE", str(tmp_path / "cache"))
    for key, value in S3_KEYS.items():
        monkeypatch.setenv(key, value)
    return f"s3://{make_bucket(s3_server)}/cold"


class S3Proxy:
    """A killable TCP forwarder to an S3 server (see the block comment).

    Args:
        target: Endpoint URL of the server.
    """

    def __init__(self, target: str) -> None:
        self.target_port = int(target.rsplit(":", 1)[1])
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start forwarding; returns once connections are accepted."""
        from pathlib import Path

        script = Path(__file__).with_name("tcp_proxy.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(self.port), str(self.target_port)],
            stdout=subprocess.DEVNULL,
        )
        _wait_http(self.endpoint, self.proc, "tcp_proxy")

    def kill(self) -> None:
        """Kill the forwarder at once: open connections reset, new ones refused."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def s3_proxy(s3_server: str) -> Iterator[S3Proxy]:
    """A started forwarder to s3_server, killed afterwards."""
    proxy = S3Proxy(s3_server)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.kill()


# ========================================================================= end of object-store


# fault fixtures (owner: tests/faults.py, the engine's fault tests)
#
#   fault_slide      the synthetic H&E slide of the fault tests (written once per session)
#   fault_reference  the committed rows of a clean run of tests.faults.SPEC on it (local Ray,
#                    SQLite; computed once per session)
#   private_pg       a private PostgreSQL server (tests/private_postgres.py) that the test may
#                    stop and start; never the shared one. Destroyed afterwards.
# =============================================================================================


@pytest.fixture(scope="session")
def fault_slide(tmp_path_factory: pytest.TempPathFactory):
    """Path of the fault tests' synthetic slide."""
    from tests.faults import make_slide

    return make_slide(tmp_path_factory.mktemp("fault-slide"))


@pytest.fixture(scope="session")
def fault_reference(fault_slide, tmp_path_factory: pytest.TempPathFactory):
    """Committed rows (per kind) of a clean run of the fault pipeline."""
    from pathray.catalog import Catalog
    from pathray.engine.cluster import ensure_ray
    from pathray.engine.runner import run_pipeline
    from pathray.pipeline.spec import PipelineSpec
    from pathray.results.store import ColdStore
    from tests.faults import IMAGE_SET, SPEC, committed_rows, register

    home = tmp_path_factory.mktemp("fault-reference")
    store = ColdStore(home / "cold")
    with Catalog.open(f"sqlite:///{home / 'catalog.db'}") as catalog:
        register(catalog, fault_slide)
        ensure_ray(num_cpus=2)
        result = run_pipeline(catalog, store, PipelineSpec.from_yaml(SPEC), IMAGE_SET)
        assert result.status == "succeeded"
    return committed_rows(store, result.run_id)


@pytest.fixture
def private_pg():
    """A running private PostgreSQL server, destroyed after the test."""
    from tests.private_postgres import PrivatePostgres

    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


# =========================================================================== end of faults
