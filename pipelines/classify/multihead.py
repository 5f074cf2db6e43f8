"""One nucleus classifier trained on several differently labelled datasets at once (features).

:class:`MultiHeadClassifier` is the object-level unit of the multi-dataset estimator
(:mod:`pipelines.classify.multihead_base`): an MLP on the nucleus feature columns of
:class:`~pipelines.nuclei.units.NucleusFeatures`, with one output slice per dataset (NuCLS 12 +
BreCaHAD 7 + CoNSeP 7 + MoNuSAC 4 + PanNuke 5 = 35 outputs, say). It writes, per nucleus:

- ``class_label`` / ``class_probability``: the label of the ``primary`` dataset (default the
  first), so the unit can stand in for the single-dataset classifiers;
- ``dataset_labels`` / ``dataset_probabilities``: every dataset's label and probabilities, as
  JSON text (stored with the run);
- ``class_label_<dataset>`` / ``class_probability_<dataset>``: one column pair per dataset
  (:meth:`~pipelines.classify.multihead_base.MultiHeadBase.dataset_columns`), in the batch for
  downstream units; the engine stores the class-level columns only.

Train it on several datasets' feature tables joined by :func:`stack_datasets`, with
``(dataset, label)`` pairs as targets.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(80, 6)).astype(np.float32)
    >>> X[40:, 0] += 4.0
    >>> y = [("A", "small"), ("B", "round")] * 20 + [("A", "large"), ("B", "oval")] * 20
    >>> unit = MultiHeadClassifier({"hidden": (16,), "max_iterations": 200}).fit(X, y)
    >>> unit.label_space_.to_dict()
    {'A': ['large', 'small'], 'B': ['oval', 'round']}
    >>> {name: labels[[0, -1]].tolist() for name, labels in unit.predict(X).items()}
    {'A': ['small', 'large'], 'B': ['round', 'oval']}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from pathray.units.base import Batch, Column, Resources
from pipelines.classify.multihead_base import (
    DEFAULT_DATASET,
    LABEL_OUTPUTS,
    MultiHeadBase,
    MultiHeadConfig,
)
from pipelines.classify.object_classifier import feature_matrix
from pipelines.training_data import FEATURE_COLUMNS

__all__ = ["MultiHeadClassifier", "MultiHeadConfig", "stack_datasets"]


def stack_datasets(
    parts: Mapping[str, tuple[Mapping[str, Any], Any]],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Join several datasets' feature tables into one training set.

    Args:
        parts: ``{dataset: (columns, labels)}``, e.g. from
            :func:`~pipelines.training_data.nucleus_table`.

    Returns:
        ``(columns, pairs)`` for :meth:`MultiHeadClassifier.fit`.
    """
    names = list(parts)
    columns = {
        c: np.concatenate([np.asarray(parts[n][0][c], np.float32) for n in names])
        for c in FEATURE_COLUMNS
    }
    pairs = np.array(
        [(n, str(label)) for n in names for label in parts[n][1]], dtype=object
    ).reshape(-1, 2)
    return columns, pairs


class MultiHeadClassifier(MultiHeadBase):
    """Classify nuclei for several datasets at once from their shape and stain features."""

    name = "nucleus_multihead_classifier"
    version = "1"
    role = "nucleus_classification"
    inputs = tuple(Column(name, "float32", granularity="object") for name in FEATURE_COLUMNS)
    outputs = LABEL_OUTPUTS
    resources = Resources(num_cpus=1.0, num_gpus=0.25)
    batch_size = 4096
    learned: ClassVar[tuple[str, ...]] = (*MultiHeadBase.learned, "feature_mean_", "feature_scale_")

    def training_set(
        self,
        images: Any,
        instance_labels: Any,
        class_labels: Any,
        *,
        mpp: float | None = None,
    ) -> tuple[Any, Any]:
        """Features of every reference nucleus, labelled in the primary dataset.

        For several datasets, build each one's table with
        :func:`~pipelines.training_data.nucleus_table` and join them with
        :func:`stack_datasets`.

        Returns:
            ``(columns, pairs)`` for :meth:`fit`.
        """
        from pipelines.training_data import nucleus_table

        columns, classes = nucleus_table(images, instance_labels, class_labels, mpp=mpp or 0.5)
        dataset = self.config.primary or next(iter(self.config.datasets or {DEFAULT_DATASET: 0}))
        return stack_datasets({dataset: (columns, classes)})

    def _inputs(self, X: Any, *, fitting: bool) -> np.ndarray:  # noqa: N803
        matrix = feature_matrix(X)
        if fitting:
            # standardise with the training set's statistics (learned state, saved)
            self.feature_mean_ = matrix.mean(axis=0) if len(matrix) else np.zeros(matrix.shape[1])
            scale = matrix.std(axis=0) if len(matrix) else np.ones(matrix.shape[1])
            self.feature_scale_ = np.where(scale > 1e-6, scale, 1.0)
        out: np.ndarray = ((matrix - self.feature_mean_) / self.feature_scale_).astype(np.float32)
        return out

    def _tensor(self, rows: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(np.ascontiguousarray(rows, np.float32))

    def _new_body(self, n_outputs: int) -> Any:
        from torch import nn

        layers: list[nn.Module] = []
        previous = len(FEATURE_COLUMNS)
        for width in self.config.hidden:
            layers += [nn.Linear(previous, width), nn.ReLU()]
            previous = width
        layers.append(nn.Linear(previous, n_outputs))
        return nn.Sequential(*layers)

    def _body_meta(self) -> dict[str, Any]:
        return {
            "features": list(FEATURE_COLUMNS),
            "feature_mean": self.feature_mean_.tolist(),
            "feature_scale": self.feature_scale_.tolist(),
        }

    def _load_body_meta(self, meta: dict[str, Any]) -> None:
        self.feature_mean_ = np.asarray(meta["feature_mean"], np.float32)
        self.feature_scale_ = np.asarray(meta["feature_scale"], np.float32)

    def __call__(self, batch: Batch) -> Batch:
        """Add every dataset's label and probability to every nucleus."""
        return self.label_columns(self.decision_function(batch))
