"""Runs against a reference, against each other, side by side and in succession; stored in the
catalog, drawn as plots and driven from the CLI (pathray.evaluate.run_eval, .runs, .plots)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import shapely
from shapely.geometry import box
from typer.testing import CliRunner

from pathray.catalog import Catalog
from pathray.cli import app
from pathray.errors import ConfigError, NotFoundError
from pathray.evaluate.plots import confusion_plot, metric_history, report_plots, to_html
from pathray.evaluate.run_eval import evaluate_run
from pathray.evaluate.runs import compare_runs, horizontal, vertical
from pathray.results.store import ColdStore

#: One object of a run: outline, class, probability of that class.
Obj = tuple[Any, str, float]

REFERENCE = {
    "a": [(box(x, 0, x + 10, 10), lbl) for x, lbl in
          ((0, "tumour"), (20, "tumour"), (40, "immune"), (60, "immune"))],
    "b": [(box(0, 0, 10, 10), "immune"), (box(20, 0, 30, 10), "tumour")],
}  # fmt: skip
#: Run 1: slide a has a relabelled object (x=20), a shifted one (IoU 90/110), an extra one and
#: misses x=60; slide b is perfect.
RUN_1 = {
    "a": [(box(0, 0, 10, 10), "tumour", 0.9), (box(20, 0, 30, 10), "immune", 0.6),
          (box(41, 0, 51, 10), "immune", 0.8), (box(200, 0, 210, 10), "tumour", 0.3)],
    "b": [(box(0, 0, 10, 10), "immune", 0.7), (box(20, 0, 30, 10), "tumour", 0.95)],
}  # fmt: skip
#: Run 2: everything right.
RUN_2 = {name: [(geom, lbl, 0.9) for geom, lbl in objects] for name, objects in REFERENCE.items()}


def build_world(catalog: Catalog, store: ColdStore) -> dict[str, Any]:
    """Two slides in set 'set', a labelled reference 'ref', and the two runs committed."""
    catalog.add_store("local", "/data/local")
    ids = {}
    for name in REFERENCE:
        checksum = hashlib.sha256(name.encode()).hexdigest()
        ids[name] = catalog.register_slide(
            name=name, checksum=checksum, store="local", relative_path=f"{name}.svs",
            width=1000, height=800,
        ).id  # fmt: skip
    catalog.create_image_set("set")
    catalog.add_to_image_set("set", ids.values())
    catalog.create_annotation_set("ref", image_set="set", labels=["tumour", "immune"])
    for name, items in REFERENCE.items():
        catalog.add_annotations("ref", ids[name], [(g, lbl, None) for g, lbl in items], "ann")
    runs = [
        make_run(catalog, store, {ids[k]: v for k, v in objs.items()}) for objs in (RUN_1, RUN_2)
    ]
    return {"slides": ids, "runs": runs}


def make_run(catalog: Catalog, store: ColdStore, per_slide: dict[int, list[Obj]]) -> str:
    """A run of set 'set' whose objects are staged and committed through the real cold store."""
    run_id = catalog.create_run(pipeline_name="nuclei", pipeline_version="1", image_set="set")
    rows = [(s, g, lbl, p) for s, objs in per_slide.items() for g, lbl, p in objs]
    objects = pa.table({
        "slide_id": pa.array([r[0] for r in rows], pa.int64()),
        "tile_id": pa.array([0] * len(rows), pa.int64()),
        "polygon": pa.array([shapely.to_wkb(r[1]) for r in rows], pa.binary()),
        "class_label": pa.array([r[2] for r in rows], pa.string()),
        "class_probability": pa.array([r[3] for r in rows], pa.float32()),
    })  # fmt: skip
    tiles = pa.table({
        "slide_id": pa.array(list(per_slide), pa.int64()),
        "tile_id": pa.array([0] * len(per_slide), pa.int64()),
    })  # fmt: skip
    store.stage(run_id, "b0", tiles, objects)
    store.finalize(run_id)
    return run_id


@pytest.fixture
def world(catalog: Catalog, tmp_path: Path) -> tuple[Catalog, ColdStore, dict[str, Any]]:
    store = ColdStore(tmp_path / "cold")
    return catalog, store, build_world(catalog, store)


@pytest.fixture
def sqlite_world(
    sqlite_catalog: Catalog, tmp_path: Path
) -> tuple[Catalog, ColdStore, dict[str, Any]]:
    store = ColdStore(tmp_path / "cold")
    return sqlite_catalog, store, build_world(sqlite_catalog, store)


def test_run_against_reference_with_labels(world: tuple[Catalog, ColdStore, dict]) -> None:
    catalog, store, w = world
    run1, _ = w["runs"]
    report = evaluate_run(catalog, store, run1, "ref")
    o = report["overall"]
    assert (o["tp"], o["fp"], o["fn"], o["relabelled"]) == (5, 1, 1, 1)
    assert o["f1"] == pytest.approx(10 / 12)
    assert o["pq"] == pytest.approx((4 + 90 / 110) / 6)
    assert o["accuracy"] == pytest.approx(4 / 5)
    assert report["per_slide"]["b"]["f1"] == 1.0 and report["per_slide"]["b"]["accuracy"] == 1.0
    # Every requirement-style name is there, flat.
    assert {"dice", "iou", "precision", "recall", "f1", "pq", "sq", "rq", "aji", "map"} <= set(o)
    curves = report["classification"]
    assert curves["classes"] == ["immune", "tumour"]
    assert curves["confusion"] == [[2, 0], [1, 2]]
    assert set(curves["roc"]) == {"immune", "tumour"}
    stored = catalog.list_evaluations(run_id=run1)
    assert len(stored) == 3
    overall = next(e for e in stored if e.slide_id is None)
    assert overall.metrics["f1"] == pytest.approx(o["f1"])
    assert json.loads(json.dumps(overall.metrics)) == overall.metrics


def test_run_against_run_change_summary(world: tuple[Catalog, ColdStore, dict]) -> None:
    catalog, store, w = world
    run1, run2 = w["runs"]
    report = compare_runs(catalog, store, run1, run2)
    assert report["per_slide"]["a"]["changes"] == {
        "matched": 3, "missed": 1, "extra": 1, "relabelled": 1,
    }  # fmt: skip
    assert report["per_slide"]["b"]["changes"]["matched"] == 2
    assert report["overall"]["changes"] == {"matched": 5, "missed": 1, "extra": 1, "relabelled": 1}
    stored = catalog.list_comparisons(run_id=run2)
    assert len(stored) == 3 and {c.base_run_id for c in stored} == {run1}
    assert next(c for c in stored if c.slide_id is None).metrics["changes"]["extra"] == 1
    assert catalog.list_comparisons(run_id="0" * 32) == []
    with pytest.raises(ConfigError):
        compare_runs(catalog, store, run1, run1)
    with pytest.raises(ConfigError):
        catalog.record_comparison(run1, run1, None, {})
    with pytest.raises(NotFoundError):
        compare_runs(catalog, store, run1, "f" * 32)


def test_horizontal_and_vertical(world: tuple[Catalog, ColdStore, dict]) -> None:
    catalog, store, w = world
    run1, run2 = w["runs"]
    side = horizontal(catalog, store, [run1, run2], "ref", record=False)
    assert side["overall"][run2]["f1"] == 1.0 and side["overall"][run1]["f1"] < 1.0
    steps = vertical(catalog, store, [run1, run2], "ref")
    assert [s["step"] for s in steps] == [0, 1] and steps[0]["changes_from_previous"] is None
    assert steps[1]["changes_from_previous"]["relabelled"] == 1
    assert steps[0]["changes_vs_reference"] == {
        "matched": 5, "missed": 1, "extra": 1, "relabelled": 1,
    }  # fmt: skip
    assert steps[1]["overall"]["pq"] == 1.0
    with pytest.raises(ConfigError):
        horizontal(catalog, store, [run1, run1], "ref")


def test_plots_png_and_self_contained_html(
    sqlite_world: tuple[Catalog, ColdStore, dict], tmp_path: Path
) -> None:
    catalog, store, w = sqlite_world
    reports = [evaluate_run(catalog, store, r, "ref", record=False) for r in w["runs"]]
    written = report_plots(
        tmp_path / "plots", [r["overall"] for r in reports], labels=["v1", "v2"],
        classification={"v1": reports[0]["classification"]},
    )  # fmt: skip
    names = sorted(p.name for p in written)
    assert names == sorted(
        f"{stem}.{ext}" for stem in ("metrics", "roc_v1", "pr_v1", "confusion_v1")
        for ext in ("png", "html")
    )  # fmt: skip
    for path in written:
        data = path.read_bytes()
        if path.suffix == ".png":
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        else:
            text = data.decode()
            # plotly.js is embedded (megabytes), not fetched from a CDN.
            assert len(data) > 1_000_000 and 'src="https://cdn.plot.ly' not in text
    history = metric_history([r["overall"] for r in reports])
    assert [s.name for s in history.series][:2] == ["dice", "f1"]
    assert history.series[1].y == [reports[0]["overall"]["f1"], 1.0]
    html = to_html(confusion_plot(reports[0]["classification"]), tmp_path / "c.html").read_text()
    assert '"z":[[2,0],[1,2]]' in html.replace(" ", "")
    with pytest.raises(ConfigError):
        metric_history([{"f1": 1.0}], labels=["a", "b"])


def test_cli_compare_several_runs_with_plots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("PATHRAY_HOME", str(home))
    monkeypatch.delenv("PATHRAY_CATALOG_URL", raising=False)
    monkeypatch.delenv("PATHRAY_COLD", raising=False)
    home.mkdir()
    with Catalog.open(f"sqlite:///{home / 'catalog.db'}") as catalog:
        run1, run2 = build_world(catalog, ColdStore(home / "cold"))["runs"]
    runner = CliRunner()
    single = runner.invoke(app, ["compare", run1, "--reference", "ref"])
    assert single.exit_code == 0, single.output
    assert "overall" in single.output and "0.833" in single.output  # F1 10/12
    out = runner.invoke(
        app, ["compare", run1, run2, "--reference", "ref", "--successive", "--plots",
              str(tmp_path / "plots")],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "2 runs vs ref" in out.output and "changes from the previous run" in out.output
    assert (tmp_path / "plots" / "metrics.html").exists()
    assert (tmp_path / "plots" / f"roc_{run1[:8]}.png").exists()
    bad = runner.invoke(app, ["compare", run1, "--reference", "nope"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
