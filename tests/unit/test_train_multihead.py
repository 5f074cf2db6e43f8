"""``pathray models train multihead``: one nucleus classifier, two differently labelled datasets.

Synthetic slides with exact ground truth: dataset A labels its nuclei with the generator's
classes (tumor, lymphocyte, stroma), dataset B, on other slides, with a coarser set (Tumour,
other). The classifier trains from the CLI, the name match merges ``A:tumor`` with
``B:Tumour``, it beats chance on each dataset's held-out slide, and its predictions come back per
dataset. Bad input exits 2 with one line and registers nothing, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from pathray.catalog import Catalog
from pathray.cli.models import models_app
from pathray.formats import read_geojson
from pathray.formats.base import AnnotationRecord
from pathray.formats.catalog_io import import_records
from pathray.iterate.data import labelled_tiles, split_slides
from pathray.pipeline.spec import TilingSpec
from pathray.results.artifacts import ArtifactStore
from pathray.slides.register import register_slides
from pathray.slides.synthetic import make_synthetic_slide
from pathray.units.registry import get_unit

runner = CliRunner()
COARSE = {"tumor": "Tumour", "lymphocyte": "other", "stroma": "other"}
#: Slide seed -> (image set, annotation set, relabelling).
SLIDES: dict[int, tuple[str, str, dict[str, str] | None]] = {
    1: ("syn_a", "gt_a", None),
    2: ("syn_a", "gt_a", None),
    3: ("syn_b", "gt_b", COARSE),
    4: ("syn_b", "gt_b", COARSE),
}
FAST = ["--tiles-per-slide", "4", "--max-iterations", "300"]


@pytest.fixture(scope="module")
def slide_files(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Path, Path]]:
    """Four small synthetic slides (1024 px at 0.5 um/px) and their nuclei GeoJSON."""
    folder = tmp_path_factory.mktemp("multihead-slides")
    out = {}
    for seed in SLIDES:
        made = make_synthetic_slide(
            folder / f"syn-{seed}.tif", width=1024, height=1024, mpp=0.5, seed=seed
        )
        assert made.nuclei_geojson is not None
        out[seed] = (made.path, Path(made.nuclei_geojson))
    return out


def _populate(
    catalog: Catalog, files: dict[int, tuple[Path, Path]], seeds: tuple[int, ...] = (1, 2, 3, 4)
) -> dict[int, int]:
    """Register the slides and their reference annotations; slide seed -> slide id."""
    ids = {}
    for seed in seeds:
        image_set, reference, rename = SLIDES[seed]
        path, geojson = files[seed]
        register_slides(
            catalog, path, store="synthetic", store_root=path.parent, image_set=image_set
        )
        slide = catalog.get_slide(path.name)
        records = read_geojson(geojson)
        if rename:
            records = [dataclasses.replace(r, label=rename[str(r.label)]) for r in records]
        import_records(
            catalog, records, annotation_set=reference, slide_id=slide.id, image_set=image_set
        )
        ids[seed] = slide.id
    return ids


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, catalog_url: str) -> dict[str, Any]:
    """PATHRAY_HOME with the catalog of the backend under test."""
    monkeypatch.setenv("PATHRAY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PATHRAY_CATALOG_URL", catalog_url)
    monkeypatch.delenv("PATHRAY_COLD", raising=False)
    return {"url": catalog_url, "cold": tmp_path / "home" / "cold"}


def _invoke(*args: str) -> Any:
    return runner.invoke(models_app, ["train", "multihead", *args])


def _fails(*args: str) -> str:
    result = _invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    # one error line, the last (progress lines may come before an error found while reading)
    lines = result.output.strip().splitlines()
    assert [n for n, line in enumerate(lines) if line.startswith("error:")] == [len(lines) - 1]
    return " ".join(lines[-1].split())


def _nothing_registered(home: dict[str, Any]) -> None:
    with Catalog.open(home["url"]) as catalog:
        assert catalog.list_models() == []
    blobs = home["cold"] / "artifacts" / "sha256"
    assert not blobs.exists() or not any(blobs.rglob("*"))


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_trains_from_the_cli_beats_chance_and_predicts_per_dataset(
    home: dict[str, Any], slide_files: dict[int, tuple[Path, Path]]
) -> None:
    with Catalog.open(home["url"]) as catalog:
        ids = _populate(catalog, slide_files)
    datasets = ["-d", "A=syn_a:gt_a", "-d", "B=syn_b:gt_b"]
    result = _invoke("nuclei-multi", *datasets, *FAST, "--alias", "candidate")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "merged A:tumor = B:Tumour (name similarity 0.91)" in out  # the merge is reported
    assert "step 25/300" in out and "registered nuclei-multi@1" in out  # progress

    with Catalog.open(home["url"]) as catalog:
        version = catalog.get_model_version("nuclei-multi", "candidate")
        run = version.training_run
        # the training data in the lineage: sets, slides, split by slide, label sets, merges
        assert run["annotation_sets"] == ["gt_a", "gt_b"]
        by_name = {d["name"]: d for d in run["datasets"]}
        assert by_name["A"]["labels"] == ["lymphocyte", "stroma", "tumor"]
        assert by_name["B"]["labels"] == ["Tumour", "other"]
        for name, seeds in (("A", {1, 2}), ("B", {3, 4})):
            train, held = by_name[name]["training_slides"], by_name[name]["heldout_slides"]
            assert len(train) == len(held) == 1 and {*train, *held} == {ids[s] for s in seeds}
        assert sorted(run["slides"]) == sorted(
            s for d in run["datasets"] for s in d["training_slides"]
        )
        assert [(m["a"], m["b"], m["source"]) for m in run["merges"]] == [
            ("A:tumor", "B:Tumour", "name")
        ]
        assert run["config"]["sampling"] == "random" and run["seed"] == 0
        assert run["training"]["cross_supervised"] > 0  # merged tumours train both slices
        # beats chance (the majority class's share) on each dataset's held-out slide
        metrics = version.metrics
        for name in ("A", "B"):
            chance = metrics[f"chance_{name}"]
            assert metrics[f"heldout_nuclei_{name}"] >= 50
            assert metrics[f"heldout_accuracy_{name}"] >= chance + 0.1, metrics

        # predictions per dataset, from the stored model, on held-out nuclei of A
        folder = ArtifactStore(home["cold"]).unpack(version.artifact_digest)
        cls = get_unit("nucleus_multihead_classifier")
        unit = cls.load(folder)
        held = by_name["A"]["heldout_slides"]
        tiles = labelled_tiles(
            catalog, dict.fromkeys(held, "gt_a"), TilingSpec(), tiles_per_slide=2
        )
    columns, pairs = unit.training_set(tiles.images, tiles.instance_labels, tiles.class_labels)
    out_cols = unit(columns)
    assert set(out_cols["class_label_A"]) <= {"lymphocyte", "stroma", "tumor"}
    assert set(out_cols["class_label_B"]) <= {"Tumour", "other"}
    assert np.array_equal(out_cols["class_label"], out_cols["class_label_A"])  # A is primary
    first = json.loads(out_cols["dataset_labels"][0])
    assert set(first) == {"A", "B"}
    accuracy = float((out_cols["class_label_A"] == pairs[:, 1]).mean())
    assert accuracy > 0.6
    # A's tumours are B's Tumour: the two heads agree on them
    tumours = pairs[:, 1] == "tumor"
    assert (out_cols["class_label_B"][tumours] == "Tumour").mean() > 0.8


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_merges_are_reported_and_overridable(
    home: dict[str, Any], slide_files: dict[int, tuple[Path, Path]], tmp_path: Path
) -> None:
    with Catalog.open(home["url"]) as catalog:
        _populate(catalog, slide_files)
    datasets = ["-d", "A=syn_a:gt_a", "-d", "B=syn_b:gt_b", "--dry-run"]
    out = _invoke("m", *datasets).output
    assert "merged A:tumor = B:Tumour (name, similarity 0.91)" in out
    out = _invoke("m", *datasets, "--distinct", "B:Tumour=A:tumor").output
    assert "merged no labels" in out
    mapping = tmp_path / "labels.yaml"
    mapping.write_text("same:\n  - [A:stroma, B:other]\n  - A:lymphocyte=B:other\n")
    result = _invoke("m", *datasets, "--mapping", str(mapping))
    assert result.exit_code == 0, result.output
    assert "merged A:stroma = B:other (user" in result.output
    assert "merged A:lymphocyte = B:other (user" in result.output
    assert "merged A:tumor = B:Tumour (name" in result.output
    _nothing_registered(home)


def _relabelled(
    catalog: Catalog,
    files: dict[int, tuple[Path, Path]],
    seed: int,
    slide_id: int,
    name: str,
    label: Any,
) -> None:
    """Import a slide's nuclei into set ``name`` with ``label(record index, record)``."""
    records = read_geojson(files[seed][1])
    records = [
        AnnotationRecord(r.geometry, label(i, r), r.color, r.properties)
        for i, r in enumerate(records)
    ]
    import_records(catalog, records, annotation_set=name, slide_id=slide_id, image_set="syn_a")


def test_bad_input_exits_2_and_registers_nothing(
    home: dict[str, Any], slide_files: dict[int, tuple[Path, Path]]
) -> None:
    with Catalog.open(home["url"]) as catalog:
        ids = _populate(catalog, slide_files, seeds=(1, 2))
        both = (ids[1], ids[2])
        for seed, slide_id in zip((1, 2), both, strict=True):
            _relabelled(catalog, slide_files, seed, slide_id, "unlabelled", lambda i, r: None)
            _relabelled(catalog, slide_files, seed, slide_id, "single", lambda i, r: "tumor")
        # a class found only on the slide the split holds out
        split = split_slides(both, validation=0.5, seed=0)
        for seed, slide_id in zip((1, 2), both, strict=True):
            held = slide_id in split.validation
            _relabelled(
                catalog,
                slide_files,
                seed,
                slide_id,
                "rare",
                lambda i, r, held=held: "mitosis" if held and i % 5 == 0 else r.label,
            )
    base = ["-d", "A=syn_a:gt_a", *FAST]
    out = _fails("m", *base, "-d", "U=syn_a:unlabelled")
    assert "Annotation set 'unlabelled' (dataset U) must give every nucleus a label" in out
    assert "Got " in out and "without one instead." in out
    out = _fails("m", *base, "-d", "S=syn_a:single")
    assert "The label set of dataset S" in out and "Got ['tumor'] instead." in out
    out = _fails("m", *base, "-d", "R=syn_a:rare", "--same", "A:tumor=R:fibroblast")
    assert "Labels of --same must be labels of their dataset (R: " in out
    assert "Got 'R:fibroblast' instead." in out
    out = _fails("m", *base, "-d", "R=syn_a:rare", "--distinct", "A:stroma=R:tumor")
    assert "--distinct must name labels that were matched" in out
    out = _fails("m", *base, "-d", "R=syn_a:rare")
    assert "Every class of dataset R must have training samples" in out
    assert "Got none of ['mitosis']" in out
    out = _fails("m", "-d", "A=syn_a:missing")
    assert "missing" in out
    out = _fails("m", "-d", "nocolon")
    assert "A dataset must be [NAME=]IMAGE_SET:ANNOTATION_SET. Got 'nocolon' instead." in out
    _nothing_registered(home)


def test_python_api_round_robin(
    sqlite_catalog: Catalog, slide_files: dict[int, tuple[Path, Path]], tmp_path: Path
) -> None:
    from pathray.services.training import parse_dataset, train_multihead

    _populate(sqlite_catalog, slide_files)
    lines: list[str] = []
    trained = train_multihead(
        sqlite_catalog,
        tmp_path / "cold",
        "multi-rr",
        [parse_dataset("syn_a:gt_a"), parse_dataset("B=syn_b:gt_b")],
        sampling="round_robin",
        max_iterations=40,
        tiles_per_slide=2,
        same=[("gt_a:stroma", "B:other")],
        progress=lines.append,
    )
    assert trained.plan.label_sets["gt_a"] == ["lymphocyte", "stroma", "tumor"]
    run = trained.version.training_run
    assert run["config"]["sampling"] == "round_robin"
    assert run["config"]["max_iterations"] == 40 and run["training"]["iterations"] <= 40
    assert ["gt_a:stroma", "B:other"] in run["config"]["merges"]
    assert any(line.startswith("stopped after") for line in lines)


def test_the_multihead_units_are_registered() -> None:
    from pathray.cli import app

    for name in ("nucleus_multihead_classifier", "nucleus_multihead_crop_cnn"):
        result = runner.invoke(app, ["units", "show", name])
        assert result.exit_code == 0, result.output
        assert "dataset_labels" in result.output
