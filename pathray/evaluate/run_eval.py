"""Evaluating a run against a reference annotation set, slide by slide, stored in the catalog.

Reference annotations whose ``role`` property is ``"region"`` are not objects: they outline the
part of the slide the reference covers (some datasets annotate only part of a tile), and scoring
is restricted to it.

A run's objects are read from the cold store with what the metrics can use: the polygon, the
predicted class (``class_label``, from a classifier unit; the matched pairs are then scored as
a classification against the reference labels) and a confidence for mean AP (``score``, else
``class_probability``). ROC and PR need a score per class; from ``class_probability`` alone the
predicted class gets that probability and the other classes share the rest equally (exact for
two classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import shapely
from numpy.typing import NDArray

from pathray.catalog import Catalog
from pathray.errors import NotFoundError
from pathray.evaluate.compare import SlideComparison, compare_objects, merge_parts, summarize
from pathray.formats.catalog_io import REGION_ROLE
from pathray.results.store import ColdStore

#: Object columns holding a predicted class, most specific first.
LABEL_COLUMNS = ("class_label",)
#: Object columns holding a confidence usable by mean AP, first found wins.
SCORE_COLUMNS = ("score", "class_probability")


@dataclass(frozen=True)
class RunObjects:
    """One slide's objects of a run, as the metrics use them.

    Attributes:
        polygons: Object outlines (shapely), level-0 pixels.
        labels: Predicted classes, or None when the run has no classifier output.
        scores: Confidences for mean AP, or None.
        probability: Probability of the predicted class, or None.
    """

    polygons: NDArray[np.object_]
    labels: NDArray[np.object_] | None = None
    scores: NDArray[np.float64] | None = None
    probability: NDArray[np.float64] | None = None

    def class_scores(self, classes: list[str]) -> dict[str, NDArray[np.float64]] | None:
        """Per-class scores built from the predicted class's probability (module docstring)."""
        if self.labels is None or self.probability is None or len(classes) < 2:
            return None
        rest = (1.0 - self.probability) / (len(classes) - 1)
        return {c: np.where(self.labels == c, self.probability, rest) for c in classes}


def read_run_objects(store: ColdStore, run_id: str, slide_id: int) -> RunObjects:
    """A slide's objects of a run, with labels and scores where the run stored them."""
    names = set(store.dataset(run_id, "objects").schema.names)
    label_col = next((c for c in LABEL_COLUMNS if c in names), None)
    score_col = next((c for c in SCORE_COLUMNS if c in names), None)
    prob_col = "class_probability" if "class_probability" in names else None
    wanted = ["polygon", *{c for c in (label_col, score_col, prob_col) if c}]
    table = store.read(run_id, "objects", slide_id, columns=wanted)
    polygons = shapely.from_wkb(np.asarray(table["polygon"].to_pylist(), dtype=object))

    def column(name: str | None, dtype: Any) -> Any:
        return None if name is None else np.asarray(table[name].to_pylist(), dtype=dtype)

    return RunObjects(
        polygons=np.asarray(polygons, dtype=object),
        labels=column(label_col, object),
        scores=column(score_col, np.float64),
        probability=column(prob_col, np.float64),
    )


def reference_of(catalog: Catalog, annotation_set: str, slide_id: int) -> tuple[list[Any], Any]:
    """A slide's reference objects and its scoring region (None: the whole slide)."""
    objects, _, region = reference_with_labels(catalog, annotation_set, slide_id)
    return objects, region


def reference_with_labels(
    catalog: Catalog, annotation_set: str, slide_id: int
) -> tuple[list[Any], list[str | None], Any]:
    """A slide's reference objects, their labels and its scoring region (None: everywhere)."""
    objects: list[Any] = []
    labels: list[str | None] = []
    regions: list[Any] = []
    for a in catalog.query_annotations(annotation_set, slide_id):
        if a.properties.get("role") == REGION_ROLE:
            regions.append(a.geometry)
        else:
            objects.append(a.geometry)
            labels.append(a.label)
    region = shapely.union_all(regions) if regions else None
    return objects, labels, region


def compare_slide(
    objects: RunObjects,
    ref: list[Any],
    ref_labels: list[str | None],
    region: Any,
    *,
    iou_threshold: float = 0.5,
    match: Literal["iou", "centroid"] = "iou",
    max_distance: float | None = None,
) -> SlideComparison:
    """Compare a slide's run objects with reference objects (labels used when both have them)."""
    labelled = objects.labels is not None and any(lbl is not None for lbl in ref_labels)
    classes = sorted(
        {str(v) for v in ref_labels if v is not None}
        | (set(map(str, objects.labels)) if objects.labels is not None else set())
    )
    return compare_objects(
        objects.polygons,
        ref,
        iou_threshold=iou_threshold,
        region=region,
        match=match,
        max_distance=max_distance,
        pred_scores=objects.scores,
        pred_labels=objects.labels if labelled else None,
        ref_labels=np.asarray(ref_labels, dtype=object) if labelled else None,
        class_scores=objects.class_scores(classes) if labelled else None,
    )


def score_slide(
    store: ColdStore,
    run_id: str,
    slide_id: int,
    ref: list[Any],
    ref_labels: list[str | None],
    region: Any,
    options: dict[str, Any],
) -> SlideComparison:
    """Read one slide's run objects and compare them with its reference (a Ray task's work)."""
    return compare_slide(
        read_run_objects(store, run_id, slide_id), ref, ref_labels, region, **options
    )


def _score_task() -> Any:
    import ray

    # One CPU per slide: the intersections inside use the task's share (OMP_NUM_THREADS).
    return ray.remote(num_cpus=1)(score_slide)


def evaluate_run(
    catalog: Catalog,
    store: ColdStore,
    run_id: str,
    reference: str,
    *,
    iou_threshold: float = 0.5,
    actor: str = "system",
    match: Literal["iou", "centroid"] = "iou",
    max_distance: float | None = None,
    record: bool = True,
    on_ray: bool = False,
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
        match: ``"iou"`` or ``"centroid"`` (with ``max_distance``); see
            :func:`~pathray.evaluate.compare.compare_objects`.
        max_distance: Largest centroid distance of a pair, for centroid matching.
        record: Store the evaluations in the catalog (per slide and overall).
        on_ray: Score each slide in its own Ray task (reading its objects from the cold
            store there); the per-slide accumulators come back and merge on the driver into
            the same numbers as scoring here. Ray must be initialised.

    Returns:
        ``{"per_slide": {slide name: metrics}, "overall": metrics, "macro": scores,
        "n_slides": int}``; ``overall`` is the flat metrics dict a requirement is checked on.
        With labels on both sides, also ``"classification"``: the confusion matrix and the
        ROC and PR curves (see :meth:`~.classification.ClassificationCounts.curves`).

    Raises:
        NotFoundError: If no slide of the run has reference annotations.
    """
    run = catalog.get_run(run_id)
    catalog.get_annotation_set(reference)
    options: dict[str, Any] = {
        "iou_threshold": iou_threshold,
        "match": match,
        "max_distance": max_distance,
    }
    jobs: dict[str, Any] = {}
    ids: dict[str, int] = {}
    for slide in catalog.slides_in_set(run.image_set):
        ref, labels, region = reference_with_labels(catalog, reference, slide.id)
        if not ref:
            continue
        args = (store, run_id, slide.id, ref, labels, region, options)
        jobs[slide.name] = _score_task().remote(*args) if on_ray else score_slide(*args)
        ids[slide.name] = slide.id
    if on_ray:
        import ray

        jobs = dict(zip(jobs, ray.get(list(jobs.values())), strict=True))
    comparisons: dict[str, SlideComparison] = jobs
    if not comparisons:
        raise NotFoundError(
            f"No slide of run {run_id}'s image set {run.image_set!r} has annotations in "
            f"{reference!r}."
        )
    report = summarize(comparisons)
    if record:
        for name, metrics in report["per_slide"].items():
            catalog.record_evaluation(run_id, reference, ids[name], metrics, actor=actor)
        catalog.record_evaluation(run_id, reference, None, report["overall"], actor=actor)
    merged = merge_parts([c.accumulators() for c in comparisons.values()])
    if "classes" in merged:
        # Curves for plots; not stored with the evaluation (they can be long).
        report["classification"] = merged["classes"].curves()
    return report
