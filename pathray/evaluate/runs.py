"""Comparisons across runs: several runs on one set, successive versions, run against run.

- :func:`horizontal`: several runs (e.g. different pipelines) on one image set, each against
  the same reference; one row of overall metrics per run, plus the per-slide reports.
- :func:`vertical`: successive runs of one pipeline or unit (its versions, or the iterations of
  a loop), each against the reference, with the per-object change summary from the previous
  run (matched, missed, extra, relabelled).
- :func:`compare_runs`: one run against a base run, per slide and overall: how far the two
  agree (the base run plays the reference) and which objects changed. Stored as comparisons
  in the catalog.

Example:
    >>> report = compare_runs(catalog, store, base_run, new_run)  # doctest: +SKIP
    >>> report["overall"]["changes"]  # doctest: +SKIP
    {'matched': 812, 'missed': 20, 'extra': 31, 'relabelled': 4}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import reduce
from typing import Any

from pathray.catalog import Catalog
from pathray.errors import ConfigError, NotFoundError
from pathray.evaluate.compare import SlideComparison, summarize
from pathray.evaluate.run_eval import compare_slide, evaluate_run, read_run_objects
from pathray.results.store import ColdStore

#: Change keys of the per-object summary.
CHANGE_KEYS = ("matched", "missed", "extra", "relabelled")


def _sum_changes(changes: Sequence[dict[str, int]]) -> dict[str, int]:
    return reduce(
        lambda a, b: {k: a[k] + b[k] for k in CHANGE_KEYS}, changes, dict.fromkeys(CHANGE_KEYS, 0)
    )


def compare_runs(
    catalog: Catalog,
    store: ColdStore,
    base_run: str,
    run_id: str,
    *,
    iou_threshold: float = 0.5,
    record: bool = True,
    actor: str = "system",
) -> dict[str, Any]:
    """Compare a run with a base run, slide by slide, treating the base run as the reference.

    Slides are those of the base run's image set that both runs have results for. A
    ``missed`` object is in the base run but not in the new one, an ``extra`` one the reverse,
    and a ``relabelled`` one is matched with another predicted class.

    Args:
        catalog: The catalog.
        store: The cold store.
        base_run: The run compared against (e.g. the previous iteration).
        run_id: The run compared.
        iou_threshold: IoU at which two objects are the same object.
        record: Store per-slide and overall comparisons in the catalog.
        actor: Who asks (audit log).

    Returns:
        ``{"per_slide": {slide: {**metrics, "changes": {...}}}, "overall": {...},
        "macro": scores, "n_slides": int}``; metrics are the agreement of the new run with
        the base run (precision, recall, F1, Dice, PQ, ...).

    Raises:
        NotFoundError: If the runs share no slide with results.
        ConfigError: If both are the same run.
    """
    if base_run == run_id:
        raise ConfigError(f"A run must be compared with another run. Got {run_id} twice.")
    base, new = catalog.get_run(base_run), catalog.get_run(run_id)
    new_slides = {s.id for s in catalog.slides_in_set(new.image_set)}
    comparisons: dict[str, SlideComparison] = {}
    ids: dict[str, int] = {}
    for slide in catalog.slides_in_set(base.image_set):
        if slide.id not in new_slides:
            continue
        old_objects = read_run_objects(store, base_run, slide.id)
        labels = None if old_objects.labels is None else list(old_objects.labels)
        comparisons[slide.name] = compare_slide(
            read_run_objects(store, run_id, slide.id),
            list(old_objects.polygons),
            labels if labels is not None else [None] * len(old_objects.polygons),
            None,
            iou_threshold=iou_threshold,
        )
        ids[slide.name] = slide.id
    if not comparisons:
        raise NotFoundError(f"Runs {base_run} and {run_id} share no slide.")
    report = summarize(comparisons)
    for name, comp in comparisons.items():
        report["per_slide"][name]["changes"] = comp.changes()
    report["overall"]["changes"] = _sum_changes([c.changes() for c in comparisons.values()])
    if record:
        for name, metrics in report["per_slide"].items():
            catalog.record_comparison(
                base_run, run_id, ids[name], metrics, iou_threshold=iou_threshold, actor=actor
            )
        catalog.record_comparison(
            base_run, run_id, None, report["overall"], iou_threshold=iou_threshold, actor=actor
        )
    return report


def horizontal(
    catalog: Catalog,
    store: ColdStore,
    run_ids: Sequence[str],
    reference: str,
    *,
    iou_threshold: float = 0.5,
    record: bool = True,
    actor: str = "system",
) -> dict[str, Any]:
    """Several runs against one reference.

    Returns:
        ``{"reference": name, "runs": {run_id: report}, "overall": {run_id: metrics}}``, the
        reports as :func:`~pathray.evaluate.run_eval.evaluate_run` returns them.

    Raises:
        ConfigError: If no run is given, or one is given twice.
    """
    if not run_ids or len(set(run_ids)) != len(run_ids):
        raise ConfigError(f"run_ids must be distinct runs, at least one. Got {list(run_ids)}.")
    reports = {
        run: evaluate_run(
            catalog, store, run, reference, iou_threshold=iou_threshold, record=record, actor=actor
        )
        for run in run_ids
    }
    return {
        "reference": reference,
        "runs": reports,
        "overall": {run: report["overall"] for run, report in reports.items()},
    }


def vertical(
    catalog: Catalog,
    store: ColdStore,
    run_ids: Sequence[str],
    reference: str,
    *,
    iou_threshold: float = 0.5,
    record: bool = True,
    actor: str = "system",
    overall: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Successive runs (versions or iterations, oldest first), each against the reference.

    Args:
        catalog: The catalog.
        store: The cold store.
        run_ids: The runs, oldest first.
        reference: Reference annotation set.
        iou_threshold: IoU of a match (against the reference and between runs).
        record: Store evaluations and comparisons in the catalog.
        actor: Who asks (audit log).
        overall: Each run's overall metrics against the reference when already computed
            (e.g. by :func:`horizontal`); they are not computed again.

    Returns:
        One entry per run: ``{"step": i, "run_id", "overall": metrics vs the reference,
        "changes_vs_reference": {...}, "changes_from_previous": {...} or None}``.
    """
    steps = (
        overall
        if overall is not None
        else horizontal(
            catalog,
            store,
            run_ids,
            reference,
            iou_threshold=iou_threshold,
            record=record,
            actor=actor,
        )["overall"]
    )
    out: list[dict[str, Any]] = []
    for i, run in enumerate(run_ids):
        m = steps[run]
        previous = None
        if i:
            previous = compare_runs(
                catalog,
                store,
                run_ids[i - 1],
                run,
                iou_threshold=iou_threshold,
                record=record,
                actor=actor,
            )["overall"]["changes"]
        out.append(
            {
                "step": i,
                "run_id": run,
                "overall": m,
                "changes_vs_reference": {
                    "matched": m["tp"],
                    "missed": m["fn"],
                    "extra": m["fp"],
                    "relabelled": m.get("relabelled", 0),
                },
                "changes_from_previous": previous,
            }
        )
    return out
