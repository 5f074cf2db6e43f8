"""pathray.testing.check_unit: the unit contract as a public check for unit authors."""

from __future__ import annotations

import numpy as np
import pytest

from pathray.testing import ConformanceError, check_unit, example_tiles
from pathray.units.base import Batch, Column, Unit, UnitConfig
from pathray.units.examples import DarkBlobs, NoOp, TileStats


@pytest.mark.parametrize("cls", [NoOp, TileStats, DarkBlobs], ids=lambda c: c.name)
def test_the_reference_units_pass(cls: type[Unit]) -> None:
    tiles = example_tiles(3)
    raw = check_unit(cls, tiles)
    rows = len(next(iter(raw.values())))
    if cls.emits_objects():
        assert rows > 3  # the synthetic tiles hold several dark blobs each
        assert set(np.asarray(raw["parent_index"])) == {0, 1, 2}
    else:
        assert rows == 3


class _Config(UnitConfig):
    gain: float = 1.0


class _Good(Unit):
    name = "good_for_check"
    Config = _Config
    inputs = (Column("image", "uint8", (None, None, 3)),)
    outputs = (Column("brightness", "float32"),)

    def __call__(self, batch: Batch) -> Batch:
        images = np.asarray(batch["image"], np.float32)
        return {"brightness": (images.mean(axis=(1, 2, 3)) * self.config.gain).astype(np.float32)}


class _WrongDtype(_Good):
    name = "wrong_dtype"

    def __call__(self, batch: Batch) -> Batch:
        return {"brightness": np.asarray(batch["image"], np.float64).mean(axis=(1, 2, 3))}


class _Undeclared(_Good):
    name = "undeclared"

    def __call__(self, batch: Batch) -> Batch:
        return {**super().__call__(batch), "extra": np.zeros(len(batch["image"]), np.float32)}


class _Random(_Good):
    name = "random"

    def __call__(self, batch: Batch) -> Batch:
        return {"brightness": np.random.default_rng().random(len(batch["image"]), np.float32)}


class _Dropper(_Good):
    name = "dropper"

    def __call__(self, batch: Batch) -> Batch:
        return {"brightness": super().__call__(batch)["brightness"][:-1]}


def test_a_unit_that_keeps_its_promises_passes_with_its_config() -> None:
    raw = check_unit(_Good, example_tiles(2), config={"gain": 2.0})
    assert raw["brightness"].dtype == np.float32 and raw["brightness"].shape == (2,)


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (_WrongDtype, r"wrong_dtype\.brightness: dtype float64 must be float32"),
        (_Undeclared, r"undeclared: undeclared or missing output columns .*extra"),
        (_Random, r"random \(second instance\): brightness values differ"),
        (_Dropper, r"dropper: one output row per input row expected \(2\)"),
    ],
    ids=["dtype", "undeclared", "nondeterministic", "rows"],
)
def test_each_broken_promise_is_named(cls: type[Unit], message: str) -> None:
    with pytest.raises(ConformanceError, match=message):
        check_unit(cls, example_tiles(2))


def test_a_batch_without_the_units_inputs_is_refused() -> None:
    with pytest.raises(ConformanceError, match="must hold the unit's inputs"):
        check_unit(_Good, {"tile_id": np.arange(2)})
