"""Iteration loops and iterations in the catalog (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib

import pytest

from pathray.catalog import Catalog
from pathray.errors import ConfigError, ConflictError, NotFoundError
from pathray.iterate.lineage import trace


def _setup(cat: Catalog) -> None:
    cat.add_store("local", "/data")
    slide = cat.register_slide(
        name="s1.svs",
        checksum=hashlib.sha256(b"s1").hexdigest(),
        store="local",
        relative_path="s1.svs",
        width=100,
        height=100,
    )
    cat.create_image_set("set")
    cat.add_to_image_set("set", [slide.id])
    cat.create_annotation_set("gt", image_set="set")


def _loop(cat: Catalog) -> str:
    loop = cat.create_iteration_loop(
        pipeline_name="nuclei",
        node_id="segment",
        image_set="set",
        reference="gt",
        requirement="f1 >= 0.8",
        budget={"iterations": 3, "seconds": None},
        strategy="auto",
        settings={"seed": 0},
        requester="alice",
    )
    assert loop.status == "running" and loop.image_set == "set" and loop.reference == "gt"
    return loop.id


def test_loop_and_iterations_are_recorded(catalog: Catalog) -> None:
    _setup(catalog)
    loop_id = _loop(catalog)
    first = catalog.add_iteration(
        loop_id, 0, strategy="start", unit_name="nucleus_segmentation", config={"mpp": 0.5}
    )
    second = catalog.add_iteration(
        loop_id,
        1,
        strategy="config_search",
        unit_name="nucleus_segmentation",
        config={"mpp": 0.5, "params": {"min_contrast_od": 0.1}},
        parent_id=first.id,
        details={"searched": 12},
    )
    assert second.parent_id == first.id and second.status == "running"
    uv = catalog.register_unit_version("nucleus_segmentation", "1", {"mpp": 0.5}, "h1")
    done = catalog.update_iteration(
        second.id,
        status="not_met",
        unit_version_id=uv.id,
        evaluation={"f1": 0.7},
        verdict={"met": False, "reasons": ["f1 = 0.7, needs >= 0.8"]},
    )
    assert done.status == "not_met" and done.finished_at is not None
    assert done.evaluation == {"f1": 0.7} and done.unit_version_id == uv.id
    assert done.details == {"searched": 12}
    assert [i.number for i in catalog.list_iterations(loop_id)] == [0, 1]
    assert catalog.get_iteration(second.id) == done
    finished = catalog.finish_iteration_loop(loop_id, "exhausted", best_number=1)
    assert finished.status == "exhausted" and finished.best_number == 1
    assert finished.finished_at is not None
    assert [loop.id for loop in catalog.list_iteration_loops(status="exhausted")] == [loop_id]
    assert catalog.list_iteration_loops(status="met") == []
    # every change is audited
    actions = [(e.entity, e.action) for e in catalog.audit_entries("iteration")]
    assert actions.count(("iteration", "create")) == 2 and ("iteration", "update") in actions
    assert [e.action for e in catalog.audit_entries("iteration_loop")] == ["create", "finish"]
    # the iteration's lineage names its loop and its parent chain
    tree = trace(catalog, f"iteration:{second.id}")
    assert tree["kind"] == "iteration" and tree["loop"]["requirement"] == "f1 >= 0.8"
    assert tree["parents"] == [{"id": first.id, "number": 0, "strategy": "start"}]
    assert tree["run"] is None


def test_iteration_errors(catalog: Catalog) -> None:
    _setup(catalog)
    loop_id = _loop(catalog)
    catalog.add_iteration(loop_id, 0, strategy="start", unit_name="u", config={})
    with pytest.raises(ConflictError):
        catalog.add_iteration(loop_id, 0, strategy="start", unit_name="u", config={})
    with pytest.raises(NotFoundError, match="Iteration 999 does not exist"):
        catalog.add_iteration(loop_id, 1, strategy="swap", unit_name="u", config={}, parent_id=999)
    with pytest.raises(NotFoundError, match="Iteration loop"):
        catalog.add_iteration("f" * 32, 0, strategy="start", unit_name="u", config={})
    first = catalog.list_iterations(loop_id)[0]
    with pytest.raises(ConfigError, match="Got colour instead"):
        catalog.update_iteration(first.id, colour="red")
    with pytest.raises(ConfigError):
        catalog.update_iteration(first.id, status="great")
    with pytest.raises(ConfigError, match="final status"):
        catalog.finish_iteration_loop(loop_id, "running")
    with pytest.raises(ConfigError, match="32 lowercase hex"):
        catalog.create_iteration_loop(
            pipeline_name="p",
            node_id="n",
            image_set="set",
            reference="gt",
            requirement="f1 >= 0",
            budget={},
            strategy="auto",
            loop_id="nope",
        )
    with pytest.raises(NotFoundError):
        catalog.get_iteration_loop("0" * 32)
    with pytest.raises(NotFoundError):
        catalog.model_version_by_id(12345)
    with pytest.raises(ConfigError, match="lineage reference"):
        trace(catalog, "what?")


def test_cli_lineage_and_iterate_errors(
    catalog: Catalog, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from pathray.cli import app

    _setup(catalog)
    loop_id = _loop(catalog)
    first = catalog.add_iteration(loop_id, 0, strategy="start", unit_name="u", config={})
    monkeypatch.setenv("PATHRAY_HOME", str(tmp_path))
    monkeypatch.setenv("PATHRAY_CATALOG_URL", catalog.url)
    runner = CliRunner()
    shown = runner.invoke(app, ["lineage", f"iteration:{first.id}"])
    assert shown.exit_code == 0, shown.output
    assert "f1 >= 0.8" in shown.output and loop_id in shown.output
    as_json = runner.invoke(app, ["lineage", str(first.id), "--json"])
    assert as_json.exit_code == 0 and '"kind": "iteration"' in as_json.output
    missing = runner.invoke(app, ["lineage", "iteration:999999"])
    assert missing.exit_code == 2 and "Iteration 999999 does not exist" in missing.output
    bad = runner.invoke(app, ["iterate", "--set", "set", "--reference", "gt", "--require", "f1"])
    assert bad.exit_code == 2 and "Requirement must be" in bad.output
    space = runner.invoke(
        app,
        [
            "iterate",
            "--set",
            "s",
            "--reference",
            "gt",
            "--require",
            "f1 > 0",
            "--search-space",
            "x",
        ],
    )
    assert space.exit_code == 2 and "--search-space must look like" in space.output


def test_lineage_tree_names_records_and_never_prints_a_whole_list() -> None:
    from rich.console import Console

    from pathray.cli.iterate import lineage_tree

    trace_ = {
        "kind": "run",
        "slides": [{"id": 3, "name": "a.tif"}, {"id": 4, "name": "b.tif"}],
        "edges": [["tissue", "segment"]],
        "units": [{"node": "segment", "config": {"channels": [16, 32]}, "model": None}],
    }
    console = Console(width=200, record=True)
    console.print(lineage_tree(trace_))
    text = console.export_text()
    assert "slides (2)" in text and "0 a.tif" in text and "1 b.tif" in text
    assert "tissue -> segment" in text and "channels: 16, 32" in text
    assert "0 segment" in text and "model" not in text  # empty fields are left out
    assert "[{" not in text and "['" not in text  # no list drawn as its repr
