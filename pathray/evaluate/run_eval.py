"""Evaluating a run against a reference annotation set, slide by slide, stored in the catalog.

Reference annotations whose ``role`` property is ``"region"`` are not objects: they outline the
part of the slide the reference covers (some datasets annotate only part of a tile), and scoring
is restricted to it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely

from pathray.catalog import Catalog
from pathray.errors import NotFoundError
from pathray.evaluate.compare import SlideComparison, compare_objects, summarize
from pathray.formats.catalog_io import REGION_ROLE
from pathray.results.store import ColdStore


def reference_of(catalog: Catalog, annotation_set: str, slide_id: int) -> tuple[list[Any], Any]:
    """A slide's reference objects and its scoring region (None: the whole slide)."""
    objects: list[Any] = []
    regions: list[Any] = []
    for a in catalog.query_annotations(annotation_set, slide_id):
        (regions if a.properties.get("role") == REGION_ROLE else objects).append(a.geometry)
    region = shapely.union_all(regions) if regions else None
    return objects, region


def evaluate_run(
    catalog: Catalog,
    store: ColdStore,
    run_id: str,
    reference: str,
    *,
    iou_threshold: float = 0.5,
    actor: str = "system",
) -> dict[str, Any]:
    """Compare a run's objects with a reference annotation set and record the evaluation.

    Slides of the run's image set without reference annotations are left out.

    Args:
        catalog: The catalog.
        store: The cold store holding the run's results.
        run_id: The run.
        reference: Name of the reference annotation set.
        iou_threshold: IoU at which a predicted object matches a reference object.
        actor: Who asks (audit log).

    Returns:
        ``{"per_slide": {slide name: metrics}, "overall": metrics}``.

    Raises:
        NotFoundError: If no slide of the run has reference annotations.
    """
    run = catalog.get_run(run_id)
    catalog.get_annotation_set(reference)
    comparisons: dict[str, SlideComparison] = {}
    ids: dict[str, int] = {}
    for slide in catalog.slides_in_set(run.image_set):
        ref, region = reference_of(catalog, reference, slide.id)
        if not ref:
            continue
        table = store.read(run_id, "objects", slide.id, columns=["polygon"])
        pred = shapely.from_wkb(np.asarray(table["polygon"].to_pylist(), dtype=object))
        comparisons[slide.name] = compare_objects(
            pred, ref, iou_threshold=iou_threshold, region=region
        )
        ids[slide.name] = slide.id
    if not comparisons:
        raise NotFoundError(
            f"No slide of run {run_id}'s image set {run.image_set!r} has annotations in "
            f"{reference!r}."
        )
    report = summarize(comparisons)
    for name, metrics in report["per_slide"].items():
        catalog.record_evaluation(run_id, reference, ids[name], metrics, actor=actor)
    catalog.record_evaluation(run_id, reference, None, report["overall"], actor=actor)
    return report
