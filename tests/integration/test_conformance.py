"""Unit conformance: every registered unit, in-process and on Ray, on the same real inputs.

For each unit of :func:`pathray.units.registry.available` the suite builds a batch of real tiles
(``OS-1-detail.ome.tif`` at 0.5 um/px), adds the columns the unit reads by running its precursors
in-process (found from the declared inputs and outputs: ``tissue`` <- ``tissue_mask``,
``nucleus_labels`` <- ``nucleus_segmentation``, ...; trainable units get a tiny model from
:func:`pipelines.training_data.example_model`), then runs the unit through
:class:`~pathray.engine.stages.UnitStage` directly and as a Ray Data actor, and compares the two
outputs column by column. It also checks the declared output columns and dtypes, and that every
unit's config round-trips through JSON (and validates against its JSON Schema).

A newly registered unit joins the suite automatically and fails it unless it conforms; a new
trainable unit needs an entry in ``TINY_CONFIGS``, and a unit that runs a registered model
(``needs_model``) an entry in ``MODEL_SOURCES``: the model is registered in a catalog of its own
and the unit gets the stored version's folder, as in a run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

from pathray.engine.stages import MARKER, UnitStage
from pathray.results.artifacts import ArtifactStore
from pathray.testing import ConformanceError, check_config, check_outputs, check_same
from pathray.units.base import TILE_KEYS, Batch, Column, Unit
from pathray.units.registry import available, get_unit, producers, unit_path
from pathray.units.trainable import TrainableUnit
from pipelines.training_data import TINY_CONFIGS, example_model
from tests.helpers import SHARED

SLIDE = SHARED / "OS-1-detail.ome.tif"
SLIDE_MPP = 0.227  # about; the tiles are read at 0.5 um/px
MPP = 0.5
TILE = 128
OVERLAP = 16
#: Level-0 origins of the tiles of the batch: three full of tissue and nuclei, and one of glass
#: (past the slide's right edge, read as white) that yields no tissue and no objects.
ORIGINS = ((0, 0), (282, 282), (564, 282), (1200, 0))
#: Preferred producer of a column several units make (classical: no model to train).
PREFERRED = {"tissue": "tissue_mask", "nucleus_labels": "nucleus_segmentation"}
#: Columns every batch starts with.
BASE_COLUMNS = frozenset({*TILE_KEYS, "image"})
UNITS = sorted(available())


def _tile_classifier_source(folder: Path) -> Path:
    """A tiny WSInfer-style tile classifier: 64 px at 0.5 um/px resized to 32 (1 um/px)."""
    from pathray.models.examples import write_wsinfer_folder

    return write_wsinfer_folder(folder, patch=64, size=32, spacing=0.5)


def _object_classifier_source(folder: Path) -> Path:
    """A tiny XGBoost JSON nucleus classifier reading the ``nucleus_features`` columns."""
    from pipelines.training_data import write_object_classifier

    return write_object_classifier(folder, tiles=2)


def _segmenter_source(folder: Path) -> Path:
    """The example nucleus segmenter exported to ONNX, reading the suite's 128 px tiles."""
    from pathray.models.examples import nucleus_net, save_onnx, segmentation_card

    model = save_onnx(nucleus_net(), folder / "nuclei.onnx", TILE)
    card = segmentation_card("onnx", model.name, size=TILE, mpp=MPP)
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def _crop_classifier_source(folder: Path) -> Path:
    """A tiny TorchScript nucleus crop classifier reading 96 px crops (resized from 64 px)."""
    from pathray.models.examples import crop_card, crop_net, save_torchscript

    model = save_torchscript(crop_net(), folder / "cells.pt", 96)
    (folder / "card.json").write_text(json.dumps(crop_card("torchscript", model.name, size=96)))
    return folder


#: Units that run a registered model -> a builder of the source folder to register.
MODEL_SOURCES = {
    "crop_classifier": _crop_classifier_source,
    "tile_classifier": _tile_classifier_source,
    "object_classifier": _object_classifier_source,
    "segmenter": _segmenter_source,
}


def _registered_model(name: str, folder: Path) -> dict[str, str]:
    """Register the unit's example model in a catalog of its own; the version's folder."""
    from pathray.catalog import Catalog
    from pathray.services.models import register_model

    if name not in MODEL_SOURCES:
        pytest.fail(f"unit {name!r} needs a model: add an entry to MODEL_SOURCES")
    source = MODEL_SOURCES[name](folder / "source")
    with Catalog.open(f"sqlite:///{folder / 'catalog.db'}") as catalog:
        version = register_model(catalog, folder / "cold", name, source)
        get_unit(name).check_model(version)
    return {"model": str(ArtifactStore(folder / "cold").unpack(version.artifact_digest))}


def _tiles() -> Batch:
    """Real tiles with their keys, as the tile source yields them."""
    from pathray.slides.readers import open_reader

    reader = open_reader(str(SLIDE))
    down = MPP / SLIDE_MPP
    span = TILE * down
    margin = OVERLAP / 2 * down
    images = np.stack([reader.read_region(x, y, TILE, TILE, downsample=down) for x, y in ORIGINS])
    xs = np.array([x for x, _ in ORIGINS], np.int64)
    ys = np.array([y for _, y in ORIGINS], np.int64)
    n = len(ORIGINS)
    return {
        "slide_id": np.full(n, 1, np.int64),
        "tile_id": np.arange(n, dtype=np.int64),
        "x": xs,
        "y": ys,
        "width": np.full(n, round(span), np.int64),
        "height": np.full(n, round(span), np.int64),
        "downsample": np.full(n, down, np.float64),
        "core_x0": xs + margin,
        "core_y0": ys + margin,
        "core_x1": xs + span - margin,
        "core_y1": ys + span - margin,
        "image": images,
    }


def _producer(column: str) -> str:
    """The unit that makes a column for the suite.

    Preferred: a unit that needs neither training nor a model (``nucleus_features`` rather than
    ``crop_classifier`` for the centroids), then a tiny trained one, then any.
    """
    names = producers(column)
    if not names:
        pytest.fail(f"no registered unit produces column {column!r}")
    if PREFERRED.get(column) in names:
        return PREFERRED[column]
    plain = [
        n
        for n in names
        if not issubclass(get_unit(n), TrainableUnit) and not get_unit(n).needs_model
    ]
    return (plain or [n for n in names if n in TINY_CONFIGS] or names)[0]


def _precursors(name: str) -> list[str]:
    """The units to run before ``name`` to make its inputs, in order (itself excluded)."""
    chain: list[str] = []

    def visit(unit: str, seen: tuple[str, ...]) -> None:
        if unit in seen:
            pytest.fail(f"precursor cycle: {' -> '.join((*seen, unit))}")
        for column in get_unit(unit).inputs:
            if column.name in BASE_COLUMNS:
                continue
            producer = _producer(column.name)
            if producer not in chain:
                visit(producer, (*seen, unit))
        if unit not in chain:
            chain.append(unit)

    visit(name, ())
    return chain[:-1]


def _tile_columns(names: list[str]) -> tuple[str, ...]:
    """Stored scalar tile columns of a chain: what the engine keeps on tile markers."""
    columns = ["tissue_fraction"]
    for name in names:
        for column in get_unit(name).outputs:
            if column.stored and not column.shape and column.granularity == "tile":
                columns.append(column.name)
    return tuple(dict.fromkeys(columns))


class Inputs:
    """Builds (and caches) configs, models and input batches for the units under test."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.tiles = _tiles()
        self._configs: dict[str, tuple[dict[str, Any], dict[str, str]]] = {}
        self._outputs: dict[str, Batch] = {}

    def config(self, name: str) -> tuple[dict[str, Any], dict[str, str]]:
        """``(config, artifacts)`` of a unit: defaults, or a tiny trained model."""
        if name not in self._configs:
            cls = get_unit(name)
            if issubclass(cls, TrainableUnit):
                if name not in TINY_CONFIGS:
                    pytest.fail(f"trainable unit {name!r} needs an entry in TINY_CONFIGS")
                config, artifacts = example_model(name, self.folder / name)
                self._configs[name] = (dict(config), dict(artifacts))
            elif cls.needs_model:
                config = cls.validate_config({}).model_dump(mode="json")
                self._configs[name] = (config, _registered_model(name, self.folder / name))
            else:
                self._configs[name] = (cls.validate_config({}).model_dump(mode="json"), {})
        return self._configs[name]

    def stage_kwargs(self, name: str) -> dict[str, Any]:
        """The constructor arguments the engine gives ``UnitStage`` for this unit."""
        config, artifacts = self.config(name)
        return {
            "unit_path": unit_path(get_unit(name)),
            "config": config,
            "artifacts": artifacts,
            "tile_columns": _tile_columns([*_precursors(name), name]),
        }

    def output(self, name: str) -> Batch:
        """The batch after ``name`` and its precursors ran in-process (cached)."""
        if name not in self._outputs:
            self._outputs[name] = UnitStage(**self.stage_kwargs(name))(self.batch_for(name))
        return self._outputs[name]

    def batch_for(self, name: str) -> Batch:
        """The input batch of ``name``: the tiles after its precursors."""
        chain = _precursors(name)
        return self.output(chain[-1]) if chain else dict(self.tiles)


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """One small local Ray for the module, shut down afterwards."""
    from pathray.engine.cluster import ensure_ray

    with pytest.MonkeyPatch.context() as patch:
        # A busy machine starts Ray's agents slowly; the raylet waits about 15 s by default.
        patch.setenv("RAY_raylet_start_wait_time_s", "120")
        ensure_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    return Inputs(tmp_path_factory.mktemp("conformance"))


def _on_ray(batch: Batch, kwargs: dict[str, Any]) -> Batch:
    """Run ``UnitStage`` on a batch as a Ray Data actor (one block, one batch)."""
    from ray.data.block import BlockAccessor

    ds = ray.data.from_blocks([BlockAccessor.batch_to_block(batch)])
    ds = ds.map_batches(
        UnitStage,
        fn_constructor_kwargs=kwargs,
        batch_size=None,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=0.5,
    )
    parts = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    assert parts, "the Ray stage returned no rows"
    return {name: np.concatenate([np.asarray(p[name]) for p in parts]) for name in parts[0]}


@pytest.mark.ray
@pytest.mark.parametrize("name", UNITS)
def test_unit_gives_the_same_outputs_in_process_and_on_ray(
    name: str, inputs: Inputs, ray_session: None
) -> None:
    """The unit, its config and artifacts give the same rows directly and as a Ray actor."""
    cls = get_unit(name)
    batch = inputs.batch_for(name)
    real = np.asarray(batch.get("object_id", np.zeros(len(batch["tile_id"]))) != MARKER)
    assert real.any(), f"{name}: its precursors made no rows to feed it"
    config, artifacts = inputs.config(name)
    # the bare unit: declared columns, dtypes and shapes; a second instance agrees
    unit = cls(config, artifacts)
    real_rows = {k: np.asarray(v)[real] for k, v in batch.items()}
    raw = unit(dict(real_rows))
    check_outputs(cls, raw, int(real.sum()), config)
    check_same(raw, cls(config, artifacts)(dict(real_rows)), f"{name} (second instance)")
    # through the engine's stage: in-process and on Ray
    kwargs = inputs.stage_kwargs(name)
    local = UnitStage(**kwargs)(dict(batch))
    remote = _on_ray(batch, kwargs)
    check_same(local, remote, f"{name} (in-process vs Ray)")


@pytest.mark.parametrize("name", UNITS)
def test_unit_config_round_trips(name: str) -> None:
    """Defaults (and a trainable unit's tiny config) survive JSON and match the JSON Schema."""
    check_config(get_unit(name), [TINY_CONFIGS[name]] if name in TINY_CONFIGS else None)


def test_suite_rejects_units_that_break_the_contract() -> None:
    """The checks catch an undeclared dtype and outputs that change from call to call."""

    class Liar(Unit):
        name = "liar"
        inputs = (Column("image", "uint8", (None, None, 3)),)
        outputs = (Column("score", "float32"),)

        def __call__(self, batch: Batch) -> Batch:
            return {"score": np.random.default_rng().random(len(batch["image"]))}  # float64

    batch = {"image": np.zeros((2, 4, 4, 3), np.uint8)}
    with pytest.raises(ConformanceError, match="dtype float64"):
        check_outputs(Liar, Liar()(batch), 2)
    with pytest.raises(ConformanceError, match="values differ"):
        check_same(Liar()(batch), Liar()(batch), "liar")
