"""Scoring a tile segmenter on labelled tiles: what the config search and training compare.

The pipeline's metrics come from :func:`pathray.evaluate.run_eval.evaluate_run` on whole
slides; choosing among many candidate configs needs something cheaper, so candidates are scored
on labelled training tiles directly, label image against label image: objects match when their
IoU exceeds 0.5 (which makes matches one-to-one), Dice is the pixel overlap of the foregrounds.

Example:
    >>> import numpy as np
    >>> ref = np.zeros((1, 8, 8), np.int32); ref[0, 1:4, 1:4] = 1; ref[0, 5:7, 5:7] = 2
    >>> pred = np.zeros_like(ref); pred[0, 1:4, 1:4] = 7
    >>> s = label_scores(pred, ref)
    >>> s["tp"], s["fn"], round(s["f1"], 3)
    (1, 1, 0.667)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pathray.errors import ConfigError
from pathray.pipeline.spec import PipelineSpec
from pathray.units.base import Batch, Unit


def label_scores(
    pred: Sequence[np.ndarray] | np.ndarray,
    ref: Sequence[np.ndarray] | np.ndarray,
    iou_threshold: float = 0.5,
) -> dict[str, Any]:
    """Object and pixel scores of predicted label images against reference label images.

    Args:
        pred: Predicted instance label images (0 background).
        ref: Reference instance label images, aligned with ``pred``.
        iou_threshold: IoU above which two instances match; at least 0.5.

    Returns:
        ``precision``, ``recall``, ``f1``, ``dice`` and the counts ``tp``, ``fp``, ``fn``,
        pooled over the tiles (1.0 where a ratio has nothing to count).

    Raises:
        ConfigError: A threshold below 0.5 or images of different shapes.
    """
    if iou_threshold < 0.5:
        raise ConfigError(f"iou_threshold must be >= 0.5. Got {iou_threshold!r} instead.")
    tp = n_pred = n_ref = inter_px = sum_px = 0
    for p_img, r_img in zip(pred, ref, strict=True):
        p, r = np.asarray(p_img).ravel(), np.asarray(r_img).ravel()
        if p.shape != r.shape:
            raise ConfigError(f"Label images must match in shape. Got {p.shape} and {r.shape}.")
        p = np.searchsorted(np.union1d(0, p), p)  # compact ids 1..K, background stays 0
        r = np.searchsorted(np.union1d(0, r), r)
        p_area = np.bincount(p, minlength=1)
        r_area = np.bincount(r, minlength=1)
        n_pred += len(p_area) - 1
        n_ref += len(r_area) - 1
        both = (p > 0) & (r > 0)
        inter_px += int(both.sum())
        sum_px += int((p > 0).sum() + (r > 0).sum())
        if not both.any():
            continue
        pairs, inter = np.unique(
            p[both].astype(np.int64) * len(r_area) + r[both], return_counts=True
        )
        pi, ri = pairs // len(r_area), pairs % len(r_area)
        iou = inter / (p_area[pi] + r_area[ri] - inter)
        tp += int((iou > iou_threshold).sum())
    fp, fn = n_pred - tp, n_ref - tp
    precision = tp / n_pred if n_pred else 1.0
    recall = tp / n_ref if n_ref else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0
    dice = 2 * inter_px / sum_px if sum_px else 1.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "dice": dice,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def label_output(cls: type[Unit]) -> str:
    """The unit's output column holding instance label images (2-D integer per row).

    Raises:
        ConfigError: The unit outputs no label image (it cannot be scored on tiles).
    """
    for column in cls.outputs:
        if len(column.shape) == 2 and np.issubdtype(np.dtype(column.dtype), np.integer):
            return column.name
    raise ConfigError(
        f"The iterated unit must output instance label images (a 2-D integer column). "
        f"Unit {cls.name!r} outputs {[c.name for c in cls.outputs]} instead."
    )


def ancestors(spec: PipelineSpec, node_id: str) -> list[str]:
    """Ids of the nodes a node depends on, in the pipeline's run order."""
    parents = {node.id: set(node.after) for node in spec.units}
    needed: set[str] = set()
    todo = list(parents.get(node_id, ()))
    while todo:
        current = todo.pop()
        if current not in needed:
            needed.add(current)
            todo.extend(parents.get(current, ()))
    return [node.id for node in spec.ordered() if node.id in needed]


def run_prefix(
    spec: PipelineSpec, node_id: str, batch: Batch, artifacts: Mapping[str, str] | None = None
) -> Batch:
    """Run the nodes a node depends on over a tile batch, in process; add their outputs.

    Args:
        spec: The pipeline.
        node_id: The node about to be scored.
        batch: A tile batch (key columns and ``image``).
        artifacts: Node id -> model folder, for precursors that load a model.

    Returns:
        A new batch holding the precursors' outputs too.
    """
    out = dict(batch)
    for nid in ancestors(spec, node_id):
        node = spec.node(nid)
        cls = spec.unit_class(node)
        if cls.emits_objects():  # tile -> object precursors do not feed a tile segmenter
            continue
        folder = (artifacts or {}).get(nid)
        unit = cls(node.config, {"model": folder} if folder else None)
        out.update(unit(out))
    return out


def predict_labels(
    cls: type[Unit], config: Mapping[str, Any], batch: Batch, artifacts: Mapping[str, str] | None
) -> np.ndarray:
    """The instance label images a unit predicts for a prepared tile batch."""
    unit = cls(dict(config), dict(artifacts) if artifacts else None)
    result: np.ndarray = unit(batch)[label_output(cls)]
    return result
