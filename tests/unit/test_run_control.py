"""Run control in the catalog: cancel requests and run events (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pathray.catalog import Catalog
from pathray.errors import ConfigError, ConflictError, NotFoundError


def _run(catalog: Catalog) -> str:
    if "set" not in {s.name for s in catalog.list_image_sets()}:
        catalog.create_image_set("set")
    return catalog.create_run(pipeline_name="p", pipeline_version="1", image_set="set")


def test_cancelling_a_pending_run_cancels_it_at_once(catalog: Catalog) -> None:
    run_id = _run(catalog)
    assert not catalog.cancel_requested(run_id)
    run = catalog.request_cancel(run_id, actor="alice")
    assert run.status == "cancelled" and run.finished_at is not None
    assert run.cancel_requested_by == "alice" and run.cancel_requested_at is not None
    assert catalog.cancel_requested(run_id)
    with pytest.raises(ConflictError, match="must be pending or running to be cancelled"):
        catalog.request_cancel(run_id, actor="bob")
    messages = [e.message for e in catalog.run_events(run_id)]
    assert messages == ["cancel requested by alice"]


def test_cancelling_a_running_run_is_a_request_the_driver_honours(catalog: Catalog) -> None:
    run_id = _run(catalog)
    catalog.update_run(run_id, status="running")
    run = catalog.request_cancel(run_id, actor="alice")
    assert run.status == "running" and catalog.cancel_requested(run_id)  # the driver decides
    catalog.update_run(run_id, status="cancelled")
    catalog.clear_cancel(run_id)  # a resume forgets the request
    assert not catalog.cancel_requested(run_id)
    with pytest.raises(NotFoundError):
        catalog.request_cancel("0" * 32)


def test_run_events_are_ordered_and_filterable(catalog: Catalog) -> None:
    run_id = _run(catalog)
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    added = catalog.add_run_events(
        run_id,
        [
            {"message": "planned 10 tiles"},
            {"unit": "nuclei", "level": "debug", "message": "batch of 32"},
            {"unit": "nuclei", "level": "warning", "message": "empty tile", "at": at},
            {"unit": "features", "level": "error", "message": "boom"},
        ],
    )
    assert added == 4
    events = catalog.run_events(run_id)
    assert [e.message for e in events] == ["planned 10 tiles", "batch of 32", "empty tile", "boom"]
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert events[2].at == at and events[0].unit is None
    assert [e.message for e in catalog.run_events(run_id, unit="nuclei")] == [
        "batch of 32",
        "empty tile",
    ]
    assert [e.level for e in catalog.run_events(run_id, min_level="warning")] == [
        "warning",
        "error",
    ]
    newer = catalog.run_events(run_id, after_id=events[1].id, limit=1)
    assert [e.message for e in newer] == ["empty tile"]
    with pytest.raises(ConfigError, match="Event level must be one of"):
        catalog.add_run_events(run_id, [{"level": "loud", "message": "x"}])
    with pytest.raises(ConfigError, match="Level must be one of"):
        catalog.run_events(run_id, min_level="loud")
    assert len(catalog.run_events(run_id)) == 4  # the refused batch added nothing


def test_progress_updates_are_not_audited_but_status_changes_are(catalog: Catalog) -> None:
    run_id = _run(catalog)
    before = len(catalog.audit_entries("run", run_id))
    for done in range(5):
        catalog.update_run(run_id, progress={"tiles_done": done})
    assert len(catalog.audit_entries("run", run_id)) == before
    assert catalog.get_run(run_id).progress == {"tiles_done": 4}
    catalog.update_run(run_id, status="running", progress={"tiles_done": 5})
    entries = catalog.audit_entries("run", run_id)
    assert len(entries) == before + 1
    assert entries[-1].details["progress"] == {"tiles_done": 5}


def test_a_run_records_its_owner_and_the_owner_activity_counts_it(catalog: Catalog) -> None:
    _run(catalog)  # an internal run: no owner, counted for nobody
    start = datetime.now(UTC)
    mine = catalog.create_run(
        pipeline_name="p", pipeline_version="1", image_set="set", owner="client-a"
    )
    catalog.create_run(pipeline_name="p", pipeline_version="1", image_set="set", owner="client-b")
    done = catalog.create_run(
        pipeline_name="p", pipeline_version="1", image_set="set", owner="client-a"
    )
    catalog.update_run(done, status="running")
    catalog.update_run(done, status="succeeded")
    assert catalog.get_run(mine).owner == "client-a"
    assert catalog.get_run(_run(catalog)).owner is None
    active, created = catalog.owner_activity("client-a", since=start)
    assert active == 1  # the succeeded run no longer counts against a quota
    assert len(created) == 2 and created == sorted(created) and created[0] >= start
    assert catalog.owner_activity("client-a", since=datetime.now(UTC))[1] == []
    assert catalog.owner_activity("nobody", since=start) == (0, [])
    (entry,) = catalog.audit_entries("run", mine)
    assert entry.action == "create" and entry.details["owner"] == "client-a"
