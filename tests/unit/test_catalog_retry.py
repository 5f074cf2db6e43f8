"""The catalog against a lost database: what counts as a loss, waiting, retrying, one commit."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from pathray.catalog import Catalog
from pathray.catalog.retry import WAIT_ENV, default_wait_s, is_connection_loss, retry_call
from pathray.errors import CatalogUnavailableError, ConfigError, NotFoundError
from tests.private_postgres import PrivatePostgres, free_port


def _error_of(url: str, statement: str = "SELECT 1") -> DBAPIError:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text(statement))
    except DBAPIError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError(f"{statement!r} on {url} raised nothing")


def test_a_refused_postgresql_connection_is_a_loss_and_a_bad_statement_is_not(tmp_path) -> None:
    refused = _error_of(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/postgres")
    assert is_connection_loss(refused)
    assert not is_connection_loss(_error_of(f"sqlite:///{tmp_path / 'x.db'}", "SELECT * FROM nope"))
    assert not is_connection_loss(ValueError("not a database error"))


@pytest.mark.parametrize("raw", ["-1", "soon", "nan"])
def test_a_bad_wait_setting_is_refused(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WAIT_ENV, raw)
    with pytest.raises(ConfigError, match=f"{WAIT_ENV} must be a number of seconds >= 0"):
        default_wait_s()
    monkeypatch.setenv(WAIT_ENV, "2.5")
    assert default_wait_s() == 2.5


def test_retry_call_retries_while_unavailable_and_gives_up_after_the_bound() -> None:
    attempts = []

    def flaky() -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise CatalogUnavailableError("down")
        return "done"

    assert retry_call(flaky, wait_s=10) == "done" and len(attempts) == 3
    start = time.monotonic()
    with pytest.raises(CatalogUnavailableError):
        retry_call(lambda: (_ for _ in ()).throw(CatalogUnavailableError("down")), wait_s=0.3)
    assert 0.3 <= time.monotonic() - start < 3


def test_complete_run_stores_every_location_and_the_status_or_nothing(catalog: Catalog) -> None:
    catalog.add_store("local", "/slides")
    slide = catalog.register_slide(
        name="a.tif", checksum="a" * 64, store="local", relative_path="a.tif", width=8, height=8
    )
    catalog.create_image_set("cases")
    catalog.add_to_image_set("cases", [slide.id])
    run_id = catalog.create_run(pipeline_name="p", pipeline_version="1", image_set="cases")
    catalog.update_run(run_id, status="running")
    good = {"slide_id": slide.id, "unit_name": "seg", "unit_version": "1", "kind": "objects"}
    good |= {"uri": "/cold/runs/x/objects.lance", "row_count": 5}
    missing = {**good, "slide_id": slide.id + 99, "unit_name": "other"}
    with pytest.raises(NotFoundError):
        catalog.complete_run(run_id, [good, missing], progress={"tiles_done": 1})
    assert catalog.result_locations(run_id=run_id) == []  # the good one rolled back too
    assert catalog.get_run(run_id).status == "running"
    for _ in range(2):  # completing again (a retried commit) changes nothing
        run = catalog.complete_run(run_id, [good], progress={"tiles_done": 1})
        assert run.status == "succeeded" and run.progress == {"tiles_done": 1}
        assert run.finished_at is not None
        (location,) = catalog.result_locations(run_id=run_id)
        assert (location.unit_name, location.row_count) == ("seg", 5)


@pytest.mark.postgres
def test_a_transaction_waits_for_a_restarted_server_then_gives_up_in_time(
    private_pg: PrivatePostgres,
) -> None:
    with Catalog.open(private_pg.url, wait_s=60) as catalog:
        catalog.add_store("local", "/slides")
        private_pg.stop()
        restart = threading.Timer(1.0, private_pg.start)
        restart.start()
        try:
            assert [s.name for s in catalog.list_stores()] == ["local"]  # waited, then read
        finally:
            restart.join()
        catalog.wait_s = 0.5
        private_pg.stop()
        start = time.monotonic()
        with pytest.raises(CatalogUnavailableError, match=r"must be reachable\. Got no connection"):
            catalog.add_store("other", "/other")
        assert time.monotonic() - start < 10
        private_pg.start()
        assert [s.name for s in catalog.list_stores()] == ["local"]  # nothing half-written
