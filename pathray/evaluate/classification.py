"""Classification metrics: confusion matrix, per-class sensitivity and specificity, ROC and PR.

:class:`ClassificationCounts` is a mergeable accumulator (see :mod:`.metrics`) of labelled
examples: matched objects (their reference label against the predicted one) or tiles. It keeps
the labels and, optionally, per-class scores, so merging is exact (concatenation) and ROC and
PR curves can be drawn from the merged result. Classes are the sorted union of every label seen.

Flat metric keys (:meth:`ClassificationCounts.result`): ``accuracy``, ``balanced_accuracy``
(mean sensitivity), ``macro_sensitivity``, ``macro_specificity``, ``macro_f1``; per class
``sensitivity[c]``, ``specificity[c]``, ``precision[c]``, ``f1[c]``; with scores also ``auc``
and ``ap`` (macro means, one-vs-rest, over classes that have both positives and negatives) and
``auc[c]``, ``ap[c]``.

Example:
    >>> acc = ClassificationCounts().update(["a", "a", "b"], ["a", "b", "b"])
    >>> m = acc.result()
    >>> m["accuracy"], m["sensitivity[a]"], m["specificity[a]"]
    (0.6666666666666666, 0.5, 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pathray.errors import ConfigError

Curve = tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]


def _labels(values: ArrayLike) -> NDArray[np.str_]:
    return np.asarray([str(v) for v in np.asarray(values, dtype=object).ravel()], dtype=np.str_)


@dataclass(eq=False)
class ClassificationCounts:
    """Labelled examples, with optional per-class scores; see the module docstring.

    Attributes:
        y_true: Reference label of each example.
        y_pred: Predicted label of each example.
        scores: Per-class score columns (class -> one score per example); a class a merged part
            did not score counts as score 0 there. Empty when no scores were given.
    """

    y_true: NDArray[np.str_] = field(default_factory=lambda: np.zeros(0, dtype=np.str_))
    y_pred: NDArray[np.str_] = field(default_factory=lambda: np.zeros(0, dtype=np.str_))
    scores: dict[str, NDArray[np.float64]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of examples."""
        return len(self.y_true)

    @property
    def classes(self) -> list[str]:
        """Sorted union of every reference and predicted label."""
        return sorted(set(self.y_true.tolist()) | set(self.y_pred.tolist()))

    def update(
        self,
        y_true: ArrayLike,
        y_pred: ArrayLike,
        scores: Mapping[str, ArrayLike] | None = None,
    ) -> Self:
        """Add examples.

        Args:
            y_true: Reference labels (anything; compared as strings).
            y_pred: Predicted labels, one per reference label.
            scores: Optional class -> score per example (e.g. predicted probabilities).

        Returns:
            ``self``, updated in place.

        Raises:
            ConfigError: If the lengths differ.
        """
        t, p = _labels(y_true), _labels(y_pred)
        if len(t) != len(p):
            raise ConfigError(f"y_pred must have one label per y_true ({len(t)}). Got {len(p)}.")
        new = {str(c): np.asarray(v, dtype=np.float64).ravel() for c, v in (scores or {}).items()}
        for c, v in new.items():
            if len(v) != len(t):
                raise ConfigError(f"scores[{c!r}] must have {len(t)} values. Got {len(v)}.")
        self.scores = _concat_scores(self.scores, self.n, new, len(t))
        self.y_true = np.r_[self.y_true, t]
        self.y_pred = np.r_[self.y_pred, p]
        return self

    def merge(self, other: Self) -> Self:
        """A new accumulator with the examples of both (neither input changes)."""
        if type(other) is not type(self):
            raise TypeError(f"Cannot merge {type(self).__name__} with {type(other).__name__}.")
        return type(self)(
            np.r_[self.y_true, other.y_true],
            np.r_[self.y_pred, other.y_pred],
            _concat_scores(self.scores, self.n, other.scores, other.n),
        )

    def __add__(self, other: Self) -> Self:
        return self.merge(other)

    def confusion_matrix(self, classes: Sequence[str] | None = None) -> NDArray[np.int64]:
        """Counts with rows = reference class and columns = predicted class.

        Args:
            classes: Class order; :attr:`classes` by default.
        """
        names = list(classes) if classes is not None else self.classes
        index = {c: i for i, c in enumerate(names)}
        k = len(names)
        ok = np.array(
            [t in index and p in index for t, p in zip(self.y_true, self.y_pred, strict=True)]
        )
        ti = np.array([index[t] for t in self.y_true[ok]] if ok.any() else [], dtype=np.int64)
        pi = np.array([index[p] for p in self.y_pred[ok]] if ok.any() else [], dtype=np.int64)
        return np.bincount(ti * k + pi, minlength=k * k).reshape(k, k).astype(np.int64)

    def roc(self, cls: str) -> Curve:
        """One-vs-rest ROC curve of ``cls``: ``(fpr, tpr, thresholds)``."""
        return roc_curve(self.y_true == cls, self._score(cls))

    def pr(self, cls: str) -> Curve:
        """One-vs-rest precision-recall curve of ``cls``: ``(precision, recall, thresholds)``."""
        return pr_curve(self.y_true == cls, self._score(cls))

    def curves(self, max_points: int = 500) -> dict[str, Any]:
        """JSON-ready confusion matrix, and ROC and PR curves of every scored class.

        Args:
            max_points: Longest curve kept; longer ones are thinned evenly (ends kept).

        Returns:
            ``{"classes", "confusion", "roc": {class: {"fpr", "tpr", "auc"}},
            "pr": {class: {"precision", "recall", "ap"}}}``.
        """
        out: dict[str, Any] = {
            "classes": self.classes,
            "confusion": self.confusion_matrix().tolist(),
            "roc": {},
            "pr": {},
        }
        for c in sorted(self.scores):
            y = self.y_true == c
            if y.all() or not y.any():
                continue
            fpr, tpr, _ = self.roc(c)
            prec, rec, _ = self.pr(c)
            keep, keep_pr = _thin(len(fpr), max_points), _thin(len(prec), max_points)
            out["roc"][c] = {
                "fpr": fpr[keep].tolist(),
                "tpr": tpr[keep].tolist(),
                "auc": float(np.trapezoid(tpr, fpr)),
            }
            out["pr"][c] = {
                "precision": prec[keep_pr].tolist(),
                "recall": rec[keep_pr].tolist(),
                "ap": average_precision_score(y, self.scores[c]),
            }
        return out

    def _score(self, cls: str) -> NDArray[np.float64]:
        if cls not in self.scores:
            raise ConfigError(
                f"Class {cls!r} must have scores. Got scores for {sorted(self.scores)}."
            )
        return self.scores[cls]

    def result(self) -> dict[str, float]:
        """The flat metrics (see the module docstring); empty when there are no examples."""
        if not self.n:
            return {}
        classes = self.classes
        cm = self.confusion_matrix(classes).astype(np.float64)
        tp = np.diag(cm)
        pos, predicted, total = cm.sum(axis=1), cm.sum(axis=0), cm.sum()
        fp, fn = predicted - tp, pos - tp
        tn = total - tp - fp - fn
        sens = _div(tp, pos)
        spec = _div(tn, tn + fp)
        prec = _div(tp, predicted)
        f1 = _div(2 * tp, 2 * tp + fp + fn)
        out = {"accuracy": float(tp.sum() / total)}
        present = pos > 0  # a class never in the reference has no sensitivity
        out["balanced_accuracy"] = out["macro_sensitivity"] = float(sens[present].mean())
        has_neg = (tn + fp) > 0
        out["macro_specificity"] = float(spec[has_neg].mean()) if has_neg.any() else 1.0
        out["macro_f1"] = float(f1.mean())
        # Undefined per-class values (no positives, no negatives, never predicted) are left
        # out rather than stored as NaN, so the dict round-trips through JSON unchanged.
        for i, c in enumerate(classes):
            if pos[i]:
                out[f"sensitivity[{c}]"] = float(sens[i])
            if tn[i] + fp[i]:
                out[f"specificity[{c}]"] = float(spec[i])
            if predicted[i]:
                out[f"precision[{c}]"] = float(prec[i])
            out[f"f1[{c}]"] = float(f1[i])
        aucs, aps = [], []
        for c in sorted(self.scores):
            y = self.y_true == c
            if y.all() or not y.any():
                continue  # one-vs-rest needs both positives and negatives
            fpr, tpr, _ = self.roc(c)
            out[f"auc[{c}]"] = float(np.trapezoid(tpr, fpr))
            out[f"ap[{c}]"] = average_precision_score(y, self.scores[c])
            aucs.append(out[f"auc[{c}]"])
            aps.append(out[f"ap[{c}]"])
        if aucs:
            out["auc"], out["ap"] = float(np.mean(aucs)), float(np.mean(aps))
        return out


def _thin(n: int, max_points: int) -> NDArray[np.int64]:
    """Evenly spaced indices into ``n`` points, at most ``max_points``, both ends kept."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max(2, max_points)).round().astype(np.int64))


def _div(num: NDArray[np.float64], den: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _concat_scores(
    a: Mapping[str, NDArray[np.float64]], n_a: int, b: Mapping[str, NDArray[np.float64]], n_b: int
) -> dict[str, NDArray[np.float64]]:
    """Score columns of two parts stacked; a class missing from a part scores 0 there."""
    return {c: np.r_[a.get(c, np.zeros(n_a)), b.get(c, np.zeros(n_b))] for c in sorted({*a, *b})}


def _ranked(y: ArrayLike, score: ArrayLike) -> tuple[NDArray[np.float64], ...]:
    """Cumulative true and false positives at each distinct score, highest first."""
    yy = np.asarray(y, dtype=bool)
    s = np.asarray(score, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    yy, s = yy[order], s[order]
    last = np.r_[s[1:] != s[:-1], True] if len(s) else np.zeros(0, dtype=bool)
    tps = np.cumsum(yy)[last].astype(np.float64)
    fps = (np.flatnonzero(last) + 1) - tps
    return tps, fps, s[last]


def roc_curve(y: ArrayLike, score: ArrayLike) -> Curve:
    """ROC curve ``(fpr, tpr, thresholds)``, starting at (0, 0) with threshold +inf.

    Example:
        >>> fpr, tpr, _ = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        >>> fpr.tolist(), tpr.tolist()
        ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    tps, fps, thr = _ranked(y, score)
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    p, n = tps[-1], fps[-1]
    return (
        fps / n if n else np.zeros_like(fps),
        tps / p if p else np.zeros_like(tps),
        np.r_[np.inf, thr],
    )


def pr_curve(y: ArrayLike, score: ArrayLike) -> Curve:
    """Precision-recall curve ``(precision, recall, thresholds)``.

    As scikit-learn's: recall decreasing to the final point (precision 1, recall 0).
    """
    tps, fps, thr = _ranked(y, score)
    p = tps[-1] if len(tps) else 0.0
    precision = tps / np.maximum(tps + fps, 1)
    recall = tps / p if p else np.zeros_like(tps)
    return np.r_[1.0, precision][::-1], np.r_[0.0, recall][::-1], thr[::-1]


def average_precision_score(y: ArrayLike, score: ArrayLike, n_pos: int | None = None) -> float:
    """``sum (R_i - R_{i-1}) P_i`` over distinct scores (scikit-learn's definition).

    Args:
        y: Whether each example is positive (a true positive, for detections).
        score: Each example's score.
        n_pos: Recall's denominator; the positives in ``y`` by default. Detection AP passes
            the number of references, some of which no prediction found.

    Example:
        >>> average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.8333333333333333
    """
    tps, fps, _ = _ranked(y, score)
    total = (tps[-1] if len(tps) else 0.0) if n_pos is None else float(n_pos)
    if not len(tps) or total == 0:
        return 0.0
    precision, recall = tps / (tps + fps), tps / total
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


__all__ = [
    "ClassificationCounts",
    "average_precision_score",
    "pr_curve",
    "roc_curve",
]
