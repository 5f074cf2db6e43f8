"""The iteration loop on a local Ray: synthetic slides with exact ground truth, held-out slides.

Starting from a badly configured classical segmenter, the loop must raise F1 and Dice on the
held-out slides and stop once the requirement holds; a retraining loop must register its model
versions with their lineage (parents, training slides, reference and correction sets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pathray.catalog import Catalog
from pathray.engine.cluster import ensure_ray
from pathray.formats import read_geojson
from pathray.formats.catalog_io import import_records
from pathray.iterate import Budget, Settings, iterate, trace
from pathray.pipeline.spec import PipelineSpec
from pathray.results.store import ColdStore
from pathray.slides.register import register_slides
from pathray.slides.synthetic import make_synthetic_slide
from pipelines.presets import load_preset
from pipelines.training_data import TINY_CONFIGS

pytestmark = pytest.mark.ray
SEEDS = (1, 2, 3, 4)
#: A classical segmenter that asks for far too much contrast: it misses the pale nuclei.
BAD = {"mpp": 0.5, "params": {"min_contrast_od": 0.35}}
SEARCH = {"nucleus_segmentation": {"params.min_contrast_od": [0.08, 0.12, 0.2, 0.35]}}
TINY_RF = {**TINY_CONFIGS["nucleus_pixel_classifier"], "model": "random_forest"}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("iterate")
    catalog = Catalog.open(f"sqlite:///{home / 'catalog.db'}")
    for seed in SEEDS:
        path = home / f"syn-{seed}.tif"
        made = make_synthetic_slide(path, width=2048, height=2048, mpp=0.25, seed=seed)
        register_slides(catalog, path, store="synthetic", store_root=home, image_set="syn")
        slide = catalog.get_slide(path.name)
        assert made.nuclei_geojson is not None
        import_records(
            catalog,
            read_geojson(made.nuclei_geojson),
            annotation_set="gt",
            slide_id=slide.id,
            image_set="syn",
        )
    ensure_ray(num_cpus=2)
    return {"catalog": catalog, "store": ColdStore(home / "cold")}


def _spec(config: dict[str, Any], unit: str = "nucleus_segmentation", model: str | None = None):
    spec = load_preset("nuclei")
    units = tuple(
        u.model_copy(update={"unit": unit, "config": config, "model": model})
        if u.id == "segment"
        else u
        for u in spec.units
    )
    return PipelineSpec.model_validate({**spec.model_dump(mode="json"), "units": units})


def test_loop_raises_held_out_metrics_and_stops_when_met(env: dict[str, Any]) -> None:
    catalog, store = env["catalog"], env["store"]
    events: list[str] = []
    result = iterate(
        catalog,
        store,
        _spec(BAD),
        "syn",
        "gt",
        "f1 >= 0.85 and dice >= 0.85 and no regression",
        budget=Budget(iterations=3),
        settings=Settings(search_space=SEARCH, tiles_per_slide=4),
        progress=lambda e: events.append(e.stage),
    )
    its = result.iterations
    # the requirement was met by the second version, so the third was never made
    assert result.met and result.loop.status == "met" and len(its) == 2
    assert [it.strategy for it in its] == ["start", "config_search"]
    assert [it.status for it in its] == ["not_met", "met"]
    assert its[1].evaluation["f1"] > its[0].evaluation["f1"] + 0.1
    assert its[1].evaluation["dice"] > its[0].evaluation["dice"] + 0.1
    assert its[0].verdict["reasons"] and its[1].verdict["met"]
    assert result.loop.best_number == 1 and result.best == its[1]
    assert "search" in events and events[-1] == "done"
    # judged on held-out slides only: the runs cover the validation set, which shares no slide
    # with the training slides the search scored on
    settings = result.loop.settings
    training, validation = set(settings["training_slides"]), set(settings["validation_slides"])
    assert training and validation and not training & validation
    assert training | validation == {s.id for s in catalog.slides_in_set("syn")}
    assert {s.id for s in catalog.slides_in_set(result.validation_set)} == validation
    for it in its:
        assert it.run_id is not None
        assert catalog.get_run(it.run_id).image_set == result.validation_set
        names = {catalog.get_slide(s).name for s in validation}
        assert set(it.details["per_slide"]) == names
    assert its[1].details["training_slides"] == sorted(training)
    # the new unit version's parent is the old one; the iterations chain the same way
    first, second = (catalog.get_unit_version(it.unit_version_id) for it in its)
    assert second.parent_id == first.id and second.config["params"]["min_contrast_od"] != 0.35
    assert its[1].parent_id == its[0].id
    assert [uv.id for uv in catalog.unit_lineage(second.id)] == [second.id, first.id]
    assert its[1].run_id is not None
    tree = trace(catalog, its[1].run_id)
    segment = next(u for u in tree["units"] if u["node"] == "segment")
    assert segment["parents"][0]["id"] == first.id and segment["model"] is None
    assert tree["iterations"][0]["number"] == 1


def test_retraining_records_model_lineage_with_corrections(env: dict[str, Any]) -> None:
    catalog, store = env["catalog"], env["store"]
    settings = Settings(ladder=[("nucleus_pixel_classifier", TINY_RF)], tiles_per_slide=3)
    # Out of reach on purpose (the retrained classifier finds every synthetic nucleus, F1 1.0,
    # but its outlines are pixel-coarse): the loop spends its budget, so both versions exist.
    unreachable = "f1 >= 0.99 and aji >= 0.99"
    first = iterate(
        catalog,
        store,
        _spec(BAD),
        "syn",
        "gt",
        unreachable,
        strategy="retrain",
        budget=Budget(iterations=2),
        settings=settings,
    )
    seen = [(it.strategy, it.status, it.evaluation) for it in first.iterations]
    assert first.loop.status == "exhausted" and len(first.iterations) == 2, repr(seen)
    trained = first.iterations[1]
    assert trained.strategy == "retrain" and trained.unit_name == "nucleus_pixel_classifier"
    v1 = catalog.model_version_by_id(trained.model_version_id)
    assert v1.parent_version is None and v1.training_run["annotation_sets"] == ["gt"]
    training = first.loop.settings["training_slides"]
    assert v1.training_run["slides"] == training and v1.training_run["seed"] == 0
    assert v1.training_run["image_set"] == first.training_set
    # a clinician corrects the results on one training slide; the correction is accepted
    slide = training[0]
    kept = catalog.query_annotations("gt", slide)[5:]
    catalog.create_annotation_set(
        "fix-1",
        image_set="syn",
        kind="correction",
        parent_run_id=trained.run_id,
        parent_unit="segment",
    )
    catalog.add_annotations(
        "fix-1", slide, [(a.geometry, a.label, None) for a in kept], "dr-a", "correction"
    )
    second = iterate(
        catalog,
        store,
        _spec(trained.config, "nucleus_pixel_classifier", v1.ref),
        "syn",
        "gt",
        unreachable,
        strategy="retrain",
        budget=Budget(iterations=2),
        settings=settings,
    )
    start, retrained = second.iterations
    v2 = catalog.model_version_by_id(retrained.model_version_id)
    assert start.model_version_id == v1.id and v2.model == v1.model
    assert v2.parent_version == v1.version
    assert v2.training_run["label_sources"][str(slide)] == "fix-1"
    assert sorted(v2.training_run["annotation_sets"]) == ["fix-1", "gt"]
    # the retrained unit version descends from the one that loaded v1
    uv = catalog.get_unit_version(retrained.unit_version_id)
    assert uv.parent_id == start.unit_version_id and uv.model_version_id == v2.id
    # lineage: run -> unit version -> model v2 -> parent v1, training set with the correction
    assert retrained.run_id is not None
    tree = trace(catalog, retrained.run_id)
    model = next(u for u in tree["units"] if u["node"] == "segment")["model"]
    assert model["ref"] == v2.ref and model["parents"] == [v1.ref]
    sets = {s["name"]: s for s in model["training_set"]["annotation_sets"]}
    assert sets["fix-1"]["kind"] == "correction"
    assert sets["fix-1"]["parent_run_id"] == trained.run_id
    assert {s["id"] for s in model["training_set"]["slides"]} == set(training)
    assert trace(catalog, v2.ref)["model"] == model
    again = trace(catalog, f"iteration:{retrained.id}")
    assert again["run"]["run"]["id"] == retrained.run_id and again["parents"][0]["id"] == start.id
    # a second retrain on unchanged data has nothing new to offer: the loop ends early
    third = iterate(
        catalog,
        store,
        _spec(retrained.config, "nucleus_pixel_classifier", v2.ref),
        "syn",
        "gt",
        unreachable,
        strategy="retrain",
        budget=Budget(iterations=3),
        settings=settings,
    )
    assert len(third.iterations) == 1 and third.loop.status == "exhausted"


def test_cli_lineage_prints_the_trace(env: dict[str, Any], tmp_path: Path) -> None:
    from pathray.cli.iterate import lineage_tree

    catalog = env["catalog"]
    run = next(r for r in catalog.list_runs() if catalog.list_iterations(run_id=r.id))
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(lineage_tree(trace(catalog, run.id)))
    text = console.export_text()
    assert run.id in text and "segment" in text and "iterations" in text
