"""Automatic structure: selection with exclusion rules, inference of the DAG, parallel branches."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest

from pathray.errors import ConfigError
from pathray.pipeline.dag import levels, parallel_groups, sinks, sources
from pathray.pipeline.graph import find_cycle, topological_order, transitive_reduction
from pathray.pipeline.infer import infer_pipeline
from pathray.pipeline.selection import exclusive_groups, selectable
from pathray.pipeline.spec import PipelineSpec, TilingSpec
from pathray.units import registry
from pathray.units.base import Batch, Column, Unit, UnitConfig

IMAGE = Column("image", "uint8", (None, None, 3))
TISSUE = Column("tissue", "bool", (None, None))


class _MppConfig(UnitConfig):
    mpp: float = 0.5


class _Fake(Unit):
    def __call__(self, batch: Batch) -> Batch:
        return {c.name: np.zeros(len(batch["image"])) for c in self.outputs}


class FakeSegmenter(_Fake):
    name = "fake_segmenter"
    role = "nucleus_segmentation"
    Config = _MppConfig
    inputs = (IMAGE, TISSUE)
    outputs = (Column("nucleus_labels", "int32", (None, None)),)


class FakeClassifier(_Fake):
    name = "fake_classifier"
    role = "nucleus_classification"
    inputs = (Column("polygon", "wkb", granularity="object"),)
    outputs = (Column("class_label", "str", granularity="object"),)


class FakeSecondMask(_Fake):
    name = "fake_second_mask"  # no role: only the column it shares is ambiguous
    inputs = (IMAGE,)
    outputs = (Column("tissue", "bool", (None, None)),)


class FakeNeedsAll(_Fake):
    name = "fake_needs_all"
    inputs = (IMAGE, TISSUE, Column("nucleus_labels", "int32", (None, None)))
    outputs = (Column("flag", "bool"),)


class FakeOrphan(_Fake):
    name = "fake_orphan"
    inputs = (IMAGE, Column("unobtainium", "float32"))
    outputs = (Column("orphan", "float32"),)


FAKES: tuple[type[Unit], ...] = (
    FakeSegmenter,
    FakeClassifier,
    FakeSecondMask,
    FakeNeedsAll,
    FakeOrphan,
)


@pytest.fixture(autouse=True)
def fakes() -> Iterator[None]:
    for cls in FAKES:
        registry.register(cls)
    yield
    for cls in FAKES:
        registry.unregister(cls.name)


# -- selection -------------------------------------------------------------------------------


def test_nothing_chosen_everything_selectable() -> None:
    reasons = selectable([])
    assert set(reasons) == set(registry.available())
    assert all(reason is None for reason in reasons.values())


def test_choosing_a_segmenter_greys_out_the_other_segmenters() -> None:
    reasons = selectable(["nucleus_segmentation"])
    assert reasons["nucleus_segmentation"] == "already chosen"
    assert reasons["fake_segmenter"] == (
        "exclusive with nucleus_segmentation (same role 'nucleus_segmentation')"
    )
    assert reasons["tissue_mask"] is None
    assert reasons["nucleus_features"] is None
    assert reasons["fake_second_mask"] is None  # no role, no conflict


def test_two_units_that_make_objects_exclude_each_other() -> None:
    reasons = selectable(["tissue_mask", "nucleus_features"])
    assert "both turn tiles into objects" in str(reasons["dark_blobs"])
    assert reasons["fake_classifier"] is None


def test_exclusive_groups_and_unknown_choices() -> None:
    groups = exclusive_groups()
    assert {"fake_segmenter", "nucleus_segmentation"} <= set(groups["nucleus_segmentation"])
    with pytest.raises(ConfigError, match=r"Got \['nope'\] instead"):
        selectable(["nope"])


# -- inference -------------------------------------------------------------------------------


def test_inference_orders_units_and_finds_the_parallel_branch() -> None:
    spec = infer_pipeline(
        ["tile_stats", "nucleus_features", "tissue_mask", "nucleus_segmentation"], name="auto"
    )
    assert [n.id for n in spec.units] == [
        "tissue_mask",
        "tile_stats",
        "nucleus_segmentation",
        "nucleus_features",
    ]
    assert sorted(spec.edges()) == [
        ("nucleus_segmentation", "nucleus_features"),
        ("tissue_mask", "nucleus_segmentation"),
        ("tissue_mask", "tile_stats"),
    ]
    groups = parallel_groups(spec)
    assert groups[0] == ["tissue_mask"]
    assert sorted(groups[1]) == ["nucleus_segmentation", "tile_stats"]
    assert groups[2] == ["nucleus_features"]
    assert sources(spec) == ["tissue_mask"]
    assert sorted(sinks(spec)) == ["nucleus_features", "tile_stats"]
    assert all(n.version == "1" for n in spec.units)  # versions pinned
    assert PipelineSpec.from_yaml(spec.to_yaml()) == spec


def test_inference_says_what_is_missing() -> None:
    with pytest.raises(ConfigError) as info:
        infer_pipeline(["nucleus_features"])
    message = str(info.value)
    assert (
        "nucleus_features needs nucleus_labels, which none of the chosen units produces; "
        "units that produce it: " in message
    )
    assert "nucleus_segmentation" in message.split("units that produce it: ")[1]
    with pytest.raises(ConfigError, match="no registered unit produces it"):
        infer_pipeline(["fake_orphan"])


def test_inference_lists_every_missing_input() -> None:
    with pytest.raises(ConfigError) as info:
        infer_pipeline(["fake_needs_all"])
    lines = str(info.value).splitlines()
    assert lines[0] == "The chosen units are incomplete:"
    assert any(line.startswith("- fake_needs_all needs tissue") for line in lines)
    assert any(line.startswith("- fake_needs_all needs nucleus_labels") for line in lines)


def test_inference_refuses_to_guess_between_producers() -> None:
    with pytest.raises(ConfigError, match="several chosen units produce"):
        infer_pipeline(["tissue_mask", "fake_second_mask", "nucleus_segmentation"])


def test_inference_refuses_exclusive_units() -> None:
    with pytest.raises(ConfigError, match="cannot join the chosen units: exclusive with"):
        infer_pipeline(["tissue_mask", "nucleus_segmentation", "fake_segmenter"])
    with pytest.raises(ConfigError, match="must be distinct"):
        infer_pipeline(["tissue_mask", "tissue_mask"])
    with pytest.raises(ConfigError, match="at least one unit"):
        infer_pipeline([])


def test_inference_drops_implied_edges_and_reaches_object_units() -> None:
    spec = infer_pipeline(["fake_needs_all", "nucleus_segmentation", "tissue_mask"])
    assert spec.node("fake_needs_all").after == ("nucleus_segmentation",)
    spec = infer_pipeline(
        ["fake_classifier", "nucleus_features", "nucleus_segmentation", "tissue_mask"]
    )
    assert spec.node("fake_classifier").after == ("nucleus_features",)
    assert levels(spec)["fake_classifier"] == 3


def test_inference_takes_the_units_resolution_or_reports_a_mismatch() -> None:
    configs = {"tissue_mask": {"mpp": 0.25}, "nucleus_segmentation": {"mpp": 0.25}}
    spec = infer_pipeline(["tissue_mask", "nucleus_segmentation"], configs=configs)
    assert spec.tiling.mpp == 0.25
    with pytest.raises(ConfigError, match="mpp must be the tiling's mpp"):
        infer_pipeline(
            ["tissue_mask", "nucleus_segmentation"], configs=configs, tiling=TilingSpec(mpp=0.5)
        )
    with pytest.raises(ConfigError, match="Configs must be for chosen units"):
        infer_pipeline(["tissue_mask"], configs={"noop": {}})


# -- graph helpers ---------------------------------------------------------------------------


def test_graph_helpers() -> None:
    parents = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c", "a")}
    assert topological_order(parents) == ["a", "b", "c", "d"]
    assert topological_order(parents, key=lambda n: n != "c") == ["a", "c", "b", "d"]
    assert transitive_reduction(parents)["d"] == ("b", "c")
    assert find_cycle({"x": ("z",), "y": ("x",), "z": ("y",)}) == ["x", "y", "z", "x"]
    with pytest.raises(ConfigError, match="x -> x"):
        topological_order({"x": ("x",)})


def test_unit_descriptions_are_json_ready() -> None:
    for cls in registry.available().values():
        info = registry.describe(cls)
        json.dumps(info)
        assert info["config_schema"]["type"] == "object"
    assert "nucleus_segmentation" in registry.producers("nucleus_labels")
    assert registry.describe(registry.get_unit("tile_stats"))["role"] == "tile_statistics"
