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

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import Field

from pathray.errors import ConfigError
from pathray.models.runtime import Predictor, load_predictor
from pathray.units.base import Batch, Column, Resources, Unit, UnitConfig

if TYPE_CHECKING:
    from pathray.catalog.records import ModelVersion

_FORMATS = ("skops", "xgboost_json", "xgboost_ubj")

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


def check_object_card(card: Mapping[str, Any], where: str) -> None:
    """Check that a card describes a feature object classifier this unit can run.

    Args:
        card: The card as JSON data (empty for versions registered without one).
        where: The model version, for the message.

    Raises:
        ConfigError: No card, another task or format, or no features or classes.
    """
    if not card:
        raise ConfigError(
            f"object_classifier needs a model with a model card. {where} has none; register it "
            "with 'pathray models register'."
        )
    problems = []
    if card.get("task") != "object_classification":
        problems.append(f"task must be 'object_classification' (got {card.get('task')!r})")
    if card.get("format") not in _FORMATS:
        problems.append(f"format must be one of {list(_FORMATS)} (got {card.get('format')!r})")
    for key in ("features", "class_names"):
        if not card.get(key):
            problems.append(f"{key} must be given")
    if problems:
        raise ConfigError(f"object_classifier cannot run {where}: {'; '.join(problems)}.")


def label_objects(probabilities: np.ndarray, classes: np.ndarray) -> Batch:
    """The object class columns from ``(n, k)`` probabilities and the ``k`` class names."""
    best = probabilities.argmax(axis=1).astype(np.int32)
    return {
        "object_probabilities": probabilities.astype(np.float32),
        "object_class": best,
        "object_label": classes[best].astype(object),
    }


class ObjectClassifier(Unit):
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
    needs_model: ClassVar[bool] = True

    @classmethod
    def check_model(cls, version: ModelVersion) -> None:
        """Accept only feature object classifiers with a card (task, format, features, classes).

        Raises:
            ConfigError: The version does not fit, with the reason.
        """
        check_object_card(version.card, version.ref)

    def setup(self) -> None:
        """Load the model (checked against its SHA-256) and keep it resident."""
        folder = self.artifacts.get("model")
        if folder is None:
            raise ConfigError(
                "object_classifier needs a model: give the node 'model: name@version'. Got none."
            )
        self.predictor: Predictor = load_predictor(folder)
        card = self.predictor.card
        check_object_card(card.to_json(), str(folder))
        self.features = list(card.features)
        self.classes = np.array(card.class_names, dtype=object)

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
        k = len(self.classes)
        scores = [np.empty((0, k), np.float32)]
        for start in range(0, len(matrix), self.config.batch_size):
            chunk = matrix[start : start + self.config.batch_size]
            scores.append(np.asarray(self.predictor.predict(chunk), np.float32).reshape(-1, k))
        return label_objects(np.concatenate(scores), self.classes)


__all__ = ["OBJECT_CLASS_OUTPUTS", "ObjectClassifier", "check_object_card", "label_objects"]
