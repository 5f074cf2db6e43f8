"""The trainable-unit contract, checked on every trainable unit with tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pathray.errors import ConfigError
from pathray.units.base import OBJECT_KEYS, PARENT_INDEX, TILE_KEYS
from pathray.units.registry import available, unit_path
from pathray.units.trainable import METADATA, TrainableUnit, read_metadata
from pipelines.classify.crop_cnn import NucleusCropCNN
from pipelines.classify.object_classifier import NucleusObjectClassifier
from pipelines.nuclei.pixel_classifier import NucleusPixelClassifier
from pipelines.nuclei.unet import NucleusUNet
from pipelines.training_data import TINY_CONFIGS, nucleus_table, synthetic_tiles

torch.set_num_threads(1)

UNITS: list[type[TrainableUnit]] = [
    NucleusPixelClassifier,
    NucleusUNet,
    NucleusObjectClassifier,
    NucleusCropCNN,
]


@pytest.fixture(scope="module")
def tiles():
    return synthetic_tiles(3, 96, mpp=0.5, seed=0)


@pytest.fixture(scope="module")
def fitted(tiles, tmp_path_factory) -> dict[str, tuple[TrainableUnit, Path]]:
    """Every unit fitted once on the tiles and saved to a folder."""
    out = {}
    for cls in UNITS:
        unit = cls(TINY_CONFIGS[cls.name])
        folder = tmp_path_factory.mktemp(cls.name)
        assert unit.fit(*unit.training_set(*tiles, mpp=0.5)) is unit
        unit.save(folder)
        out[cls.name] = (unit, folder)
    return out


def tile_batch(tiles, n: int = 2) -> dict[str, np.ndarray]:
    """A batch of tile rows with the key columns and the inputs of every unit."""
    size = tiles.images.shape[1]
    batch: dict[str, np.ndarray] = {
        "slide_id": np.array(["s1"] * n, dtype=object),
        "tile_id": np.arange(n, dtype=np.int64),
        "x": np.arange(n, dtype=np.int64) * 1000,
        "y": np.zeros(n, np.int64),
        "width": np.full(n, size, np.int64),
        "height": np.full(n, size, np.int64),
        "downsample": np.ones(n),
        "core_x0": np.arange(n, dtype=np.int64) * 1000,
        "core_y0": np.zeros(n, np.int64),
        "core_x1": np.arange(n, dtype=np.int64) * 1000 + size,
        "core_y1": np.full(n, size, np.int64),
        "image": tiles.images[:n],
        "tissue": np.ones((n, size, size), bool),
        "nucleus_labels": tiles.instance_labels[:n],
    }
    assert set(TILE_KEYS) <= set(batch)
    return batch


def object_batch(tiles) -> dict[str, np.ndarray]:
    columns, _ = nucleus_table(*tiles, mpp=0.5)
    n = len(columns["area_um2"])
    batch = {key: np.zeros(n, np.int64) for key in OBJECT_KEYS}
    batch["slide_id"] = np.array(["s1"] * n, dtype=object)
    batch["object_id"] = np.arange(n, dtype=np.int64)
    return {**batch, **columns}


def inputs_for(cls: type[TrainableUnit], tiles) -> dict[str, np.ndarray]:
    return object_batch(tiles) if cls.input_granularity() == "object" else tile_batch(tiles)


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(np.asarray(a[name]), np.asarray(b[name])), name


@pytest.mark.parametrize("cls", UNITS, ids=lambda c: c.name)
def test_learned_state_ends_in_underscore(cls, fitted):
    unit, _ = fitted[cls.name]
    assert unit.is_fitted
    assert all(name.endswith("_") and not name.startswith("_") for name in unit.learned)
    assert all(getattr(unit, name) is not None for name in unit.learned)
    assert not cls(TINY_CONFIGS[cls.name]).is_fitted


@pytest.mark.parametrize("cls", UNITS, ids=lambda c: c.name)
def test_unfitted_unit_says_so(cls, tiles, tmp_path):
    unit = cls(TINY_CONFIGS[cls.name])
    with pytest.raises(ConfigError, match=f"unit '{cls.name}' is not fitted"):
        unit(inputs_for(cls, tiles))
    with pytest.raises(ConfigError, match="not fitted"):
        unit.save(tmp_path)


@pytest.mark.parametrize("cls", UNITS, ids=lambda c: c.name)
def test_config_round_trips_and_clone_is_unfitted(cls, fitted):
    unit, _ = fitted[cls.name]
    assert cls.Config.model_validate(unit.config.model_dump()) == unit.config
    assert cls.Config.model_validate(unit.get_params()) == unit.config
    assert cls.Config.model_validate(json.loads(json.dumps(unit.get_params()))) == unit.config
    clone = unit.clone()
    assert clone.config == unit.config and not clone.is_fitted
    with pytest.raises(ConfigError, match="seed"):
        cls({"seed": -1})
    with pytest.raises(ConfigError, match="unknown_key"):
        cls({"unknown_key": 1})


@pytest.mark.parametrize("cls", UNITS, ids=lambda c: c.name)
def test_save_load_gives_identical_outputs(cls, fitted, tiles):
    unit, folder = fitted[cls.name]
    batch = inputs_for(cls, tiles)
    expected = unit(batch)
    assert_same(cls.load(folder)(batch), expected)
    assert_same(cls(unit.config, {"model": str(folder)})(batch), expected)
    assert_same(unit(batch), expected)  # no hidden state
    meta = read_metadata(folder)
    assert meta["unit"] == cls.name and meta["unit_version"] == cls.version
    assert meta["config"] == unit.get_params()
    assert {"numpy", "python"} <= set(meta["libraries"])
    assert meta["files"] and all(len(h) == 64 for h in meta["files"].values())
    if "classes_" in cls.learned:
        assert meta["classes"] == list(unit.classes_) == sorted(unit.classes_)


@pytest.mark.parametrize("cls", UNITS, ids=lambda c: c.name)
def test_outputs_match_declared_columns(cls, fitted, tiles):
    unit, _ = fitted[cls.name]
    out = unit(inputs_for(cls, tiles))
    declared = {c.name for c in cls.outputs}
    extra = {PARENT_INDEX} if cls.emits_objects() else set()
    assert set(out) == declared | extra
    lengths = {len(v) for v in out.values()}
    assert len(lengths) == 1
    for column in cls.outputs:
        values = out[column.name]
        if column.dtype in ("str", "wkb"):
            assert values.dtype == object
        else:
            assert values.dtype == np.dtype(column.dtype), column.name


@pytest.mark.parametrize("cls", UNITS, ids=lambda c: c.name)
def test_unit_stage_runs_the_saved_model_in_process(cls, fitted, tiles):
    from pathray.engine.stages import UnitStage

    unit, folder = fitted[cls.name]
    batch = inputs_for(cls, tiles)
    stage = UnitStage(unit_path(cls), unit.get_params(), {"model": str(folder)})
    out = stage(batch)
    direct = unit(batch)
    if cls.emits_objects():
        real = out["object_id"] >= 0
        assert len(direct[PARENT_INDEX]) > 0
        assert set(OBJECT_KEYS) <= set(out)
        assert np.array_equal(out["class_label"][real], direct["class_label"])
        assert np.array_equal(out["tile_id"][real], batch["tile_id"][direct[PARENT_INDEX]])
        assert (~real).sum() == len(batch["tile_id"])  # one marker per tile
    else:
        assert set(batch) <= set(out)
        for name, values in direct.items():
            assert np.array_equal(out[name], values)


def test_artifacts_are_checked(fitted, tmp_path):
    _, folder = fitted["nucleus_pixel_classifier"]
    with pytest.raises(ConfigError, match="must belong to unit 'nucleus_unet'"):
        NucleusUNet(TINY_CONFIGS["nucleus_unet"], {"model": str(folder)})
    with pytest.raises(ConfigError, match=r"'model' of unit .* must match"):
        NucleusPixelClassifier.load(folder, {"model": "xgboost"})
    with pytest.raises(ConfigError, match="Cannot read"):
        NucleusPixelClassifier({}, {"model": str(tmp_path)})
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in folder.iterdir():
        copy.joinpath(path.name).write_bytes(path.read_bytes())
    model_file = next(p for p in copy.iterdir() if p.name != METADATA)
    model_file.write_bytes(model_file.read_bytes() + b"x")
    with pytest.raises(ConfigError, match="altered"):
        NucleusPixelClassifier.load(copy)
    # inference-only settings may change on load
    config = {**TINY_CONFIGS["nucleus_pixel_classifier"], "threshold": 0.7}
    loaded = NucleusPixelClassifier.load(folder, config)
    assert loaded.is_fitted and loaded.config.threshold == 0.7


def test_units_are_registered():
    names = available()
    for cls in UNITS:
        assert names[cls.name] is cls
        assert cls.Config.model_json_schema()["properties"]["seed"]["default"] == 0


def test_roles_make_alternatives_exclusive():
    from pathray.pipeline.selection import selectable

    reasons = selectable(["nucleus_segmentation"])
    assert "same role 'nucleus_segmentation'" in reasons["nucleus_pixel_classifier"]
    assert "same role 'nucleus_segmentation'" in reasons["nucleus_unet"]
    assert reasons["nucleus_object_classifier"] is None
    reasons = selectable(["nucleus_segmentation", "nucleus_features"])
    assert reasons["nucleus_object_classifier"] is None
    assert reasons["nucleus_crop_cnn"] is not None  # it makes the nucleus objects itself
    reasons = selectable(["nucleus_unet", "nucleus_crop_cnn"])
    assert reasons["nucleus_object_classifier"] is not None and reasons["nucleus_features"]


def test_training_set_refuses_other_resolutions(tiles):
    with pytest.raises(ConfigError, match="resolution"):
        NucleusUNet().training_set(*tiles, mpp=0.25)
    with pytest.raises(ConfigError, match="does not learn"):
        TrainableUnit.training_set(NucleusUNet(), *tiles)  # the base refuses
