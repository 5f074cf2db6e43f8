"""Metrics computed per slide in Ray tasks and merged equal one pass over all slides."""

from __future__ import annotations

from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import shapely

from pathray.catalog import Catalog
from pathray.engine.cluster import ensure_ray
from pathray.evaluate import SlideComparison, compare_objects, merge_parts, metrics_of, summarize
from pathray.evaluate.run_eval import evaluate_run
from pathray.results.store import ColdStore
from tests.unit.test_evaluate_runs import build_world

pytestmark = pytest.mark.ray

CLASSES = np.array(["epithelial", "immune", "stromal"])


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> None:
    ensure_ray(num_cpus=2)


def synthetic_slide(seed: int) -> dict[str, Any]:
    """Reference nuclei with classes; predictions: jittered, some missed, some extra, scored."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(80, 200))
    centres = rng.uniform(20, 980, (n, 2))
    ref = shapely.buffer(shapely.points(centres), rng.uniform(5, 9, n), quad_segs=6)
    kept = rng.random(n) > 0.1
    moved = centres[kept] + rng.normal(0, 1.5, (kept.sum(), 2))
    extra = rng.uniform(20, 980, (10, 2))
    pred = shapely.buffer(shapely.points(np.r_[moved, extra]), 7.0, quad_segs=6)
    ref_labels = CLASSES[rng.integers(0, 3, n)]
    true_of_pred = np.r_[ref_labels[kept], CLASSES[rng.integers(0, 3, 10)]]
    flip = rng.random(len(pred)) < 0.2
    pred_labels = np.where(flip, CLASSES[rng.integers(0, 3, len(pred))], true_of_pred)
    prob = rng.uniform(0.4, 1.0, len(pred))
    return {
        "pred": pred,
        "ref": ref,
        "pred_scores": prob,
        "pred_labels": pred_labels,
        "ref_labels": ref_labels,
        "class_scores": {c: np.where(pred_labels == c, prob, (1 - prob) / 2) for c in CLASSES},
    }


@ray.remote(num_cpus=1)
def score(slide: dict[str, Any]) -> SlideComparison:
    return compare_objects(**slide)


@ray.remote(num_cpus=1)
def merge(*parts: dict[str, Any]) -> dict[str, Any]:
    return merge_parts(list(parts))


def test_ray_tasks_per_slide_merge_to_the_single_pass() -> None:
    slides = {f"slide-{k}": synthetic_slide(k) for k in range(6)}
    per_slide = dict(zip(slides, ray.get([score.remote(s) for s in slides.values()]), strict=True))
    report = summarize(per_slide)
    # Merging inside Ray too, as a two-level tree of tasks.
    parts = [c.accumulators() for c in per_slide.values()]
    tree = ray.get(merge.remote(merge.remote(*parts[:3]), merge.remote(*parts[3:])))
    # One pass: all slides side by side (1000 px apart, so nothing crosses) in one call.
    cat: dict[str, Any] = {"pred": [], "ref": [], "pred_scores": [], "pred_labels": [],
                           "ref_labels": [], "class_scores": {c: [] for c in CLASSES}}  # fmt: skip
    for k, s in enumerate(slides.values()):
        offset = np.array([1000.0 * k, 0.0])
        cat["pred"].extend(shapely.transform(s["pred"], lambda xy, o=offset: xy + o))
        cat["ref"].extend(shapely.transform(s["ref"], lambda xy, o=offset: xy + o))
        for key in ("pred_scores", "pred_labels", "ref_labels"):
            cat[key].extend(s[key])
        for c in CLASSES:
            cat["class_scores"][c].extend(s["class_scores"][c])
    single = compare_objects(**cat).metrics()
    for overall in (report["overall"], metrics_of(tree)):
        assert set(overall) == set(single)
        for key, value in single.items():
            if isinstance(value, int):
                assert overall[key] == value, key
            else:
                assert overall[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert {"pq", "aji", "map", "auc", "accuracy", "sensitivity[immune]"} <= set(single)
    assert 0.5 < single["f1"] < 1.0 and 0.5 < single["auc"] < 1.0
    total = reduce(lambda a, b: a + b, (s.detection for s in per_slide.values()))
    assert total.tp + total.fn == sum(len(s["ref"]) for s in slides.values())


def test_evaluate_run_on_ray_equals_local(tmp_path: Path) -> None:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    store = ColdStore(tmp_path / "cold")
    run1, _ = build_world(catalog, store)["runs"]
    local = evaluate_run(catalog, store, run1, "ref", record=False)
    remote = evaluate_run(catalog, store, run1, "ref", on_ray=True)
    assert remote == local
    assert len(catalog.list_evaluations(run_id=run1)) == 3
