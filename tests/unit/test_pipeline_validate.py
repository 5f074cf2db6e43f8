"""Pipeline specs: every kind of invalid spec is refused with its own message; presets validate."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pathray.errors import ConfigError
from pathray.pipeline.spec import PipelineSpec
from pathray.units import registry
from pathray.units.base import Batch, Column, Unit, UnitConfig
from pipelines.presets import load_preset, preset_names


class _MppConfig(UnitConfig):
    mpp: float = 0.5


class FakeUNet(Unit):
    """A second nucleus segmenter: exclusive with nucleus_segmentation."""

    name = "fake_unet"
    role = "nucleus_segmentation"
    Config = _MppConfig
    inputs = (Column("image", "uint8", (None, None, 3)), Column("tissue", "bool", (None, None)))
    outputs = (Column("nucleus_labels", "int32", (None, None), stored=False),)

    def __call__(self, batch: Batch) -> Batch:
        return {"nucleus_labels": np.zeros(batch["image"].shape[:3], np.int32)}


class FakeObjectClassifier(Unit):
    """An object-level unit (reads nucleus objects)."""

    name = "fake_object_classifier"
    role = "nucleus_classification"
    inputs = (
        Column("polygon", "wkb", granularity="object"),
        Column("area_um2", "float32", granularity="object"),
    )
    outputs = (Column("class_label", "str", granularity="object"),)

    def __call__(self, batch: Batch) -> Batch:
        return {"class_label": np.full(len(batch["polygon"]), "a", dtype=object)}


FAKES: tuple[type[Unit], ...] = (FakeUNet, FakeObjectClassifier)


@pytest.fixture
def fakes() -> Iterator[None]:
    for cls in FAKES:
        registry.register(cls)
    yield
    for cls in FAKES:
        registry.unregister(cls.name)


def spec(*units: dict[str, Any], mpp: float = 0.5) -> PipelineSpec:
    return PipelineSpec.model_validate({"name": "t", "tiling": {"mpp": mpp}, "units": list(units)})


TISSUE = {"id": "tissue", "unit": "tissue_mask"}
SEGMENT = {"id": "segment", "unit": "nucleus_segmentation", "after": ["tissue"]}
FEATURES = {"id": "features", "unit": "nucleus_features", "after": ["segment"]}


def test_nuclei_spec_orders_and_exposes_its_edges() -> None:
    s = spec(FEATURES, SEGMENT, TISSUE)  # listed backwards on purpose
    assert [n.id for n in s.ordered()] == ["tissue", "segment", "features"]
    assert s.edges() == [("segment", "features"), ("tissue", "segment")]


def test_tile_level_branch_runs_before_the_unit_that_makes_objects() -> None:
    stats = {"id": "stats", "unit": "tile_stats", "after": ["tissue"]}
    s = spec(TISSUE, SEGMENT, FEATURES, stats)
    assert [n.id for n in s.ordered()] == ["tissue", "segment", "stats", "features"]


def test_yaml_round_trip() -> None:
    s = spec(TISSUE, SEGMENT, FEATURES | {"config": {"mpp": 0.5}})
    assert PipelineSpec.from_yaml(s.to_yaml()) == s
    assert s.spec_hash() == PipelineSpec.from_yaml(s.to_yaml()).spec_hash()


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_survives_a_yaml_round_trip(name: str) -> None:
    """Model references included: a saved copy of ``nuclei`` must still load its U-Net."""
    preset = load_preset(name)
    assert PipelineSpec.from_yaml(preset.to_yaml()) == preset


# Every invalid kind: (spec units, tiling mpp, a substring only its message holds).
INVALID: dict[str, tuple[list[dict[str, Any]], float, str]] = {
    "missing column": (
        [{"id": "segment", "unit": "nucleus_segmentation"}],
        0.5,
        "needs input columns ['tissue'] that no precursor produces",
    ),
    "tile unit after objects": (
        [TISSUE, {"id": "blobs", "unit": "dark_blobs"}, {**SEGMENT, "after": ["blobs", "tissue"]}],
        0.5,
        "its precursor 'blobs' (dark_blobs) turned the tiles into objects",
    ),
    "objects made twice": (
        [TISSUE, SEGMENT, FEATURES, {"id": "blobs", "unit": "dark_blobs", "after": ["tissue"]}],
        0.5,
        "rows turn into objects only once",
    ),
    "object unit fed by tiles": (
        [TISSUE, {"id": "classify", "unit": "fake_object_classifier", "after": ["tissue"]}],
        0.5,
        "reads objects, so one of its precursors must turn tiles into objects",
    ),
    "mpp differs from the tiling": (
        [TISSUE | {"config": {"mpp": 0.25}}, SEGMENT | {"config": {"mpp": 0.25}}],
        0.5,
        "mpp must be the tiling's mpp (0.5)",
    ),
    "mpp differs within a chain": (
        [TISSUE, SEGMENT | {"config": {"mpp": 0.25}}],
        0.5,
        "mpp must match its precursor 'tissue' (tissue_mask)",
    ),
    "cycle": (
        [
            {"id": "a", "unit": "noop", "after": ["b"]},
            {"id": "b", "unit": "noop", "after": ["a"]},
        ],
        0.5,
        "Got a cycle instead",
    ),
    "unknown unit": (
        [{"id": "x", "unit": "no_such_unit"}],
        0.5,
        "Got unknown unit 'no_such_unit' instead",
    ),
    "unknown version": (
        [TISSUE | {"version": "9"}],
        0.5,
        "version must be '1' (installed). Got '9' instead",
    ),
    "exclusive units": (
        [TISSUE, SEGMENT, {"id": "unet", "unit": "fake_unet", "after": ["tissue"]}],
        0.5,
        "are mutually exclusive: both fill role 'nucleus_segmentation'",
    ),
    "unknown precursor": (
        [{"id": "a", "unit": "noop", "after": ["ghost"]}],
        0.5,
        "Got unknown node 'ghost' instead",
    ),
    "duplicate id": ([TISSUE, TISSUE], 0.5, "Node ids must be unique"),
    "invalid config": (
        [TISSUE | {"config": {"mpp": 0.5, "bogus": 1}}],
        0.5,
        "Node 'tissue': Invalid config for unit 'tissue_mask'",
    ),
}


def _message(units: list[dict[str, Any]], mpp: float) -> str:
    with pytest.raises(ConfigError) as info:
        spec(*units, mpp=mpp).ordered()
    return str(info.value)


@pytest.mark.usefixtures("fakes")
@pytest.mark.parametrize("kind", list(INVALID))
def test_each_invalid_spec_is_refused_with_its_own_message(kind: str) -> None:
    units, mpp, expected = INVALID[kind]
    message = _message(units, mpp)
    assert expected in message
    others = [sub for k, (_, _, sub) in INVALID.items() if k != kind]
    assert not [sub for sub in others if sub in message], message


@pytest.mark.usefixtures("fakes")
def test_messages_name_the_node_and_what_was_expected() -> None:
    message = _message(*INVALID["mpp differs within a chain"][:2])
    assert message.startswith("Node 'segment' (nucleus_segmentation) mpp must match")
    assert message.endswith("Got 0.25 instead.")
    cycle = _message(
        [
            {"id": "a", "unit": "noop", "after": ["c"]},
            {"id": "b", "unit": "noop", "after": ["a"]},
            {"id": "c", "unit": "noop", "after": ["b"]},
        ],
        0.5,
    )
    assert "a -> b -> c -> a" in cycle
    assert "units that produce them: " in _message(*INVALID["missing column"][:2])


@pytest.mark.usefixtures("fakes")
def test_object_unit_after_features_is_valid() -> None:
    classify = {"id": "classify", "unit": "fake_object_classifier", "after": ["features"]}
    order = spec(TISSUE, SEGMENT, FEATURES, classify).ordered()
    assert [n.id for n in order] == ["tissue", "segment", "features", "classify"]


def test_unit_without_mpp_is_not_checked_for_resolution() -> None:
    stats = {"id": "stats", "unit": "tile_stats", "after": ["tissue"]}
    s = spec(TISSUE | {"config": {"mpp": 0.25}}, stats, mpp=0.25)
    assert len(s.ordered()) == 2


def test_yaml_errors_are_clear(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="must be a readable YAML file"):
        PipelineSpec.from_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        PipelineSpec.from_yaml("- just\n- a list\n")
    with pytest.raises(ConfigError, match="malformed"):
        PipelineSpec.from_yaml("name: [unclosed\n")
    with pytest.raises(ConfigError, match="Invalid pipeline spec"):
        PipelineSpec.from_yaml("name: x\nunits: 3\n")


def test_presets_validate_and_one_has_a_parallel_branch() -> None:
    from pathray.pipeline.dag import parallel_groups

    names = preset_names()
    assert {"nuclei", "tissue", "nuclei_stats"} <= set(names)
    groups = {name: parallel_groups(load_preset(name)) for name in names}
    assert groups["tissue"] == [["tissue"]]
    assert groups["nuclei"] == [["tissue"], ["segment"], ["features"]]
    assert groups["nuclei_stats"] == [["tissue"], ["segment", "stats"], ["features"]]
    for name in names:
        preset = load_preset(name)
        assert preset.name == name
        assert all(node.version for node in preset.units), "presets pin unit versions"
