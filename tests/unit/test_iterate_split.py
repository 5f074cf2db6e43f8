"""The slide split, tile scoring and candidate configs of the iteration loop (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from pathray.errors import ConfigError
from pathray.iterate.data import split_slides
from pathray.iterate.scoring import label_scores
from pathray.iterate.strategies import candidate_configs, objective, set_path


@pytest.mark.parametrize("n", [2, 3, 5, 10])
@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.8])
def test_split_is_by_slide_and_complete(n: int, fraction: float) -> None:
    ids = list(range(100, 100 + n))
    split = split_slides(ids, validation=fraction, seed=3)
    assert not set(split.training) & set(split.validation)  # no slide on both sides
    assert sorted(split.training + split.validation) == ids
    assert split.training and split.validation
    assert len(split.validation) == min(max(round(fraction * n), 1), n - 1)
    # the same slides (in any order, repeated) and seed give the same split
    assert split_slides(ids[::-1] + ids[:1], validation=fraction, seed=3) == split


def test_split_depends_on_the_seed_and_accepts_chosen_slides() -> None:
    ids = list(range(20))
    splits = {split_slides(ids, seed=s).validation for s in range(5)}
    assert len(splits) > 1
    chosen = split_slides(ids, validation_slides=[3, 7])
    assert chosen.validation == (3, 7) and 3 not in chosen.training and len(chosen.training) == 18


@pytest.mark.parametrize(
    ("ids", "kwargs", "fragment"),
    [
        ([1], {}, "at least two annotated slides"),
        ([1, 2], {"validation": 1.0}, "validation must be in (0, 1)"),
        ([1, 2], {"validation_slides": [1, 2]}, "some, not all"),
        ([1, 2], {"validation_slides": [9]}, "Got [9] instead"),
    ],
)
def test_split_errors(ids: list[int], kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        split_slides(ids, **kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def _disc(image: np.ndarray, cy: int, cx: int, r: int, label: int) -> None:
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = label


def test_label_scores_match_objects_by_iou() -> None:
    ref = np.zeros((2, 64, 64), np.int32)
    pred = np.zeros_like(ref)
    _disc(ref[0], 10, 10, 6, 1)
    _disc(ref[0], 40, 40, 6, 2)
    _disc(ref[0], 20, 50, 4, 3)
    _disc(pred[0], 11, 10, 6, 9)  # shifted by one pixel: matches
    _disc(pred[0], 40, 44, 6, 4)  # shifted by four: IoU below 0.5
    _disc(pred[1], 30, 30, 5, 1)  # nothing there in the reference
    s = label_scores(pred, ref)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 2, 2)
    assert s["precision"] == pytest.approx(1 / 3) and s["recall"] == pytest.approx(1 / 3)
    assert s["f1"] == pytest.approx(2 / 6)
    p, r = pred > 0, ref > 0
    assert s["dice"] == pytest.approx(2 * (p & r).sum() / (p.sum() + r.sum()))
    perfect = label_scores(ref, ref)
    assert perfect["f1"] == perfect["dice"] == 1.0 and perfect["tp"] == 3
    # ids need not agree, and a tile filled by one object is still one object
    full = np.ones((1, 8, 8), np.int32) * 5
    assert label_scores(full, full)["tp"] == 1
    assert label_scores(np.zeros((1, 4, 4), int), np.zeros((1, 4, 4), int))["f1"] == 1.0
    with pytest.raises(ConfigError, match=r"must be >= 0\.5"):
        label_scores(pred, ref, iou_threshold=0.3)


def test_candidate_configs_grid_and_random() -> None:
    base = {"mpp": 0.5, "params": {"min_area_um2": 4.0}}
    space = {"params.min_contrast_od": [0.1, 0.2], "params.relative_threshold": [0.3, 0.4, 0.5]}
    grid = candidate_configs(base, space)
    assert len(grid) == 6
    assert all(c["mpp"] == 0.5 and c["params"]["min_area_um2"] == 4.0 for c in grid)
    assert {(c["params"]["min_contrast_od"], c["params"]["relative_threshold"]) for c in grid} == {
        (a, b) for a in (0.1, 0.2) for b in (0.3, 0.4, 0.5)
    }
    sample = candidate_configs(base, space, search="random", samples=3, seed=1)
    assert len(sample) == 3 and all(c in grid for c in sample)
    assert sample == candidate_configs(base, space, search="random", samples=3, seed=1)
    assert base == {"mpp": 0.5, "params": {"min_area_um2": 4.0}}  # not modified
    assert set_path({}, "a.b.c", 1) == {"a": {"b": {"c": 1}}}


def test_objective_follows_the_requirement() -> None:
    scores = {"f1": 0.8, "dice": 0.6, "fp_rate": 0.2}
    assert objective(scores, [("f1", True)]) == pytest.approx(0.8)
    assert objective(scores, [("f1", True), ("fp_rate", False)]) == pytest.approx(0.3)
    assert objective(scores, [("pq", True)]) == pytest.approx(0.7)  # f1 and dice instead
