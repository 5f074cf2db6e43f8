"""``object_classifier``: runs any registered object-classification model on feature columns.

The model is a scikit-learn estimator (skops) or an XGBoost booster (JSON or UBJ). Its card
names the object columns it reads, in order (``features``; e.g. the ``area_um2``, ``solidity``
and stain columns that ``nucleus_features`` writes) and its ``class_names``. Each object gets the
model's class probabilities, the arg-max class and its name.

Example (pipeline nodes)::

    - {id: features, unit: nucleus_features, after: [nuclei]}
    - {id: classify, unit: object_classifier, after: [features], model: cells@1}
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from pathray.errors import ConfigError
from pathray.units.base import Batch, Column, Resources, UnitConfig
from pathray.units.model_unit import ModelUnit

#: What every generic object classifier writes on each object.
OBJECT_CLASS_OUTPUTS = (
    Column(
        "object_probabilities",
        "float32",
        (None,),
        granularity="object",
        description="class probabilities, in the card's class order",
    ),
    Column("object_class", "int32", granularity="object", description="most probable class"),
    Column("object_label", "str", granularity="object", description="its name"),
)


class ObjectClassifierConfig(UnitConfig):
    """Config of :class:`ObjectClassifier`.

    Attributes:
        batch_size: Objects per model call.
    """

    batch_size: int = Field(4096, ge=1)


def label_objects(probabilities: np.ndarray, classes: np.ndarray) -> Batch:
    """The object class columns from ``(n, k)`` probabilities and the ``k`` class names."""
    best = probabilities.argmax(axis=1).astype(np.int32)
    return {
        "object_probabilities": probabilities.astype(np.float32),
        "object_class": best,
        "object_label": classes[best].astype(object),
    }


class ObjectClassifier(ModelUnit):
    """Per-object class probabilities, class and label from a registered feature model."""

    name = "object_classifier"
    version = "1"
    role = "object_classification"
    Config = ObjectClassifierConfig
    # The card names the feature columns; every object row carries its centroid.
    inputs = (
        Column("centroid_x", "float64", granularity="object"),
        Column("centroid_y", "float64", granularity="object"),
    )
    outputs = OBJECT_CLASS_OUTPUTS
    resources = Resources(num_cpus=1.0)
    batch_size = 4096
    tasks: ClassVar[tuple[str, ...]] = ("object_classification",)
    formats: ClassVar[tuple[str, ...]] = ("skops", "xgboost_json", "xgboost_ubj")
    required: ClassVar[tuple[str, ...]] = ("features", "class_names")

    def setup_model(self) -> None:
        """The object columns the card names, in the model's column order."""
        self.features = list(self.card.features)

    def feature_matrix(self, batch: Batch) -> np.ndarray:
        """The ``(n, len(features))`` float32 matrix of the card's columns (NaN and inf -> 0).

        Raises:
            ConfigError: A column the card names is not on the objects.
        """
        missing = [name for name in self.features if name not in batch]
        if missing:
            raise ConfigError(
                f"object_classifier's model reads object columns {self.features}. Columns "
                f"{missing} are missing; add the unit that writes them (e.g. nucleus_features) "
                "before it."
            )
        n = len(batch["centroid_x"])
        matrix = np.column_stack(
            [np.asarray(batch[name], np.float32).reshape(n) for name in self.features]
        )
        out: np.ndarray = np.nan_to_num(matrix, nan=0.0, posinf=0.0, neginf=0.0)
        return out

    def __call__(self, batch: Batch) -> Batch:
        """Classify each object from its feature columns."""
        matrix = self.feature_matrix(batch)
        return label_objects(self.predict_rows(matrix, self.config.batch_size), self.classes)


__all__ = ["OBJECT_CLASS_OUTPUTS", "ObjectClassifier", "label_objects"]
