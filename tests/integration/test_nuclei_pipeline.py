"""The nuclei preset end to end on Ray, scored against exact (synthetic) and real ground truth."""

from __future__ import annotations

from pathlib import Path

import pytest

from pathray.catalog import Catalog
from pathray.engine.cluster import ensure_ray
from pathray.engine.runner import run_pipeline
from pathray.evaluate.run_eval import evaluate_run
from pathray.results.store import ColdStore
from pipelines.demo import nucleus_tile_sets, prepare_nucleus_tiles, prepare_synthetic
from pipelines.presets import load_preset

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ensure_ray(num_cpus=2)
    return tmp_path_factory.mktemp("nuclei")


def test_nuclei_preset_on_synthetic_slides_beats_f1_0_7(home: Path) -> None:
    catalog = Catalog.open(f"sqlite:///{home / 'synthetic.db'}")
    store = ColdStore(home / "cold")
    image_set = prepare_synthetic(catalog, home / "data", quick=True)
    run = run_pipeline(catalog, store, load_preset("nuclei"), image_set)
    report = evaluate_run(catalog, store, run.run_id, "synthetic-gt")
    overall = report["overall"]
    assert overall["f1"] > 0.7, overall
    assert overall["dice"] > 0.7, overall
    assert len(report["per_slide"]) == 2
    # per slide and overall evaluations are recorded in the catalog
    evaluations = catalog.list_evaluations(run_id=run.run_id)
    assert len(evaluations) == 3
    assert {e.slide_id is None for e in evaluations} == {True, False}
    # objects carry polygons and features
    objects = store.read(run.run_id)
    assert {"polygon", "area_um2", "hematoxylin_mean", "eccentricity"} <= set(objects.column_names)
    assert objects.num_rows == sum(c["objects"] for c in run.counts.values())


def test_nuclei_preset_on_real_he_tiles_is_reported(home: Path) -> None:
    catalog = Catalog.open(f"sqlite:///{home / 'real.db'}")
    store = ColdStore(home / "cold")
    tiles = next(t for t in nucleus_tile_sets() if t.name == "dsb-he")
    image_set = prepare_nucleus_tiles(catalog, home / "data", tiles)
    run = run_pipeline(catalog, store, load_preset("nuclei"), image_set)
    report = evaluate_run(catalog, store, run.run_id, f"{tiles.name}-gt")
    assert report["overall"]["n_ref"] == 195  # every ground-truth nucleus of the 4 tiles
    assert report["overall"]["f1"] > 0.5, report["overall"]  # 0.64 with the first model
