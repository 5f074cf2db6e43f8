"""Nucleus classification from per-nucleus features (XGBoost, random forest or SVM).

:class:`NucleusObjectClassifier` reads the feature columns that
:class:`~pipelines.nuclei.units.NucleusFeatures` writes (area, perimeter, eccentricity,
solidity, mean haematoxylin and eosin density) and adds ``class_label`` and
``class_probability`` to every nucleus row. The three models are interchangeable: they share
the scikit-learn estimator API (XGBoost through its ``XGBClassifier``; the SVM is an ``SVC``
with probabilities behind a ``StandardScaler``).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = {name: rng.random(40).astype(np.float32) for name in FEATURE_COLUMNS}
    >>> X["area_um2"] = np.r_[np.full(20, 20.0), np.full(20, 80.0)].astype(np.float32)
    >>> y = np.array(["lymphocyte"] * 20 + ["tumor"] * 20)
    >>> unit = NucleusObjectClassifier({"model": "random_forest", "n_estimators": 10}).fit(X, y)
    >>> unit(X)["class_label"][[0, -1]].tolist()
    ['lymphocyte', 'tumor']
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from pathray.errors import ConfigError
from pathray.units.base import Batch, Column, Resources
from pathray.units.trainable import TrainableConfig, TrainableUnit
from pipelines.training_data import FEATURE_COLUMNS, nucleus_table

#: Outputs of every nucleus classifier.
CLASS_OUTPUTS = (
    Column("class_label", "str", granularity="object", description="predicted class"),
    Column("class_probability", "float32", granularity="object", description="its probability"),
)


class ObjectClassifierConfig(TrainableConfig):
    """Config of :class:`NucleusObjectClassifier`.

    Attributes:
        model: ``"xgboost"``, ``"random_forest"`` or ``"svm"``.
        n_estimators: Trees (XGBoost, random forest).
        max_depth: Tree depth limit (XGBoost, random forest).
        svm_c: Regularisation of the SVM.
        n_jobs: Threads of the model.
    """

    model: Literal["xgboost", "random_forest", "svm"] = "xgboost"
    n_estimators: int = Field(100, ge=1)
    max_depth: int = Field(4, ge=1)
    svm_c: float = Field(1.0, gt=0)
    n_jobs: int = Field(1, ge=1)


def feature_matrix(X: Mapping[str, Any] | np.ndarray) -> np.ndarray:  # noqa: N803
    """The ``(n, 6)`` float32 matrix of :data:`FEATURE_COLUMNS` from columns or an array.

    Args:
        X: A batch (column name -> values) holding the feature columns, or an ``(n, 6)`` array
            whose columns are in :data:`FEATURE_COLUMNS` order.

    Returns:
        The matrix (non-finite values replaced by 0).

    Raises:
        ConfigError: If columns are missing or the array has the wrong width.
    """
    if isinstance(X, Mapping):
        missing = [name for name in FEATURE_COLUMNS if name not in X]
        if missing:
            raise ConfigError(f"Nucleus feature columns are missing: {missing}.")
        matrix = np.column_stack([np.asarray(X[name], np.float32) for name in FEATURE_COLUMNS])
    else:
        matrix = np.asarray(X, np.float32).reshape(len(X), -1)
        if matrix.shape[1] != len(FEATURE_COLUMNS):
            raise ConfigError(
                f"X must have {len(FEATURE_COLUMNS)} columns {list(FEATURE_COLUMNS)}. "
                f"Got {matrix.shape[1]} instead."
            )
    out: np.ndarray = np.nan_to_num(matrix, nan=0.0, posinf=0.0, neginf=0.0)
    return out


class NucleusObjectClassifier(TrainableUnit):
    """Classify nuclei from their shape and stain features.

    ``fit(X, y)`` takes the feature columns (a batch or an ``(n, 6)`` array) and one class name
    per nucleus; the classes are kept, sorted, in ``classes_``.
    """

    name = "nucleus_object_classifier"
    version = "1"
    role = "nucleus_classification"
    Config = ObjectClassifierConfig
    inputs = tuple(Column(name, "float32", granularity="object") for name in FEATURE_COLUMNS)
    outputs = CLASS_OUTPUTS
    resources = Resources(num_cpus=1.0)
    batch_size = 4096
    learned = ("model_", "classes_")
    model_fields = ("model",)

    def training_set(
        self,
        images: Any,
        instance_labels: Any,
        class_labels: Any,
        *,
        mpp: float | None = None,
    ) -> tuple[Any, Any]:
        """The features of every reference nucleus (measured as ``NucleusFeatures`` does).

        Args:
            images: RGB tiles.
            instance_labels: Their instance label images.
            class_labels: Per tile, the class of instance ``k`` at index ``k - 1``.
            mpp: Microns per pixel of the tiles (default 0.5).

        Returns:
            ``(columns, classes)`` for :meth:`fit`.
        """
        return nucleus_table(images, instance_labels, class_labels, mpp=mpp or 0.5)

    def _new_model(self) -> Any:
        c = self.config
        if c.model == "xgboost":
            from xgboost import XGBClassifier

            return XGBClassifier(
                n_estimators=c.n_estimators,
                max_depth=c.max_depth,
                learning_rate=0.1,
                tree_method="hist",
                random_state=c.seed,
                n_jobs=c.n_jobs,
            )
        if c.model == "random_forest":
            from sklearn.ensemble import RandomForestClassifier

            return RandomForestClassifier(
                n_estimators=c.n_estimators,
                max_depth=c.max_depth * 3,
                random_state=c.seed,
                n_jobs=c.n_jobs,
            )
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        return make_pipeline(
            StandardScaler(), SVC(C=c.svm_c, probability=True, random_state=c.seed)
        )

    def _fit(self, X: Any, y: Any = None, **kwargs: Any) -> None:  # noqa: N803
        matrix = feature_matrix(X)
        names = np.asarray(y if y is not None else [], dtype=object).astype(str)
        if len(names) != len(matrix):
            raise ConfigError(
                f"fit needs one class per nucleus. Got {len(matrix)} nuclei and "
                f"{len(names)} classes instead."
            )
        classes, codes = np.unique(names, return_inverse=True)
        if len(classes) < 2:
            raise ConfigError(f"fit needs at least two classes. Got {classes.tolist()} instead.")
        start = time.perf_counter()
        self.model_ = self._new_model().fit(matrix, codes)
        self.classes_ = classes.tolist()
        self.training_ = {
            "objects": len(codes),
            "class_counts": dict(zip(self.classes_, np.bincount(codes).tolist(), strict=True)),
            "seconds": round(time.perf_counter() - start, 3),
        }

    def predict_proba(self, X: Mapping[str, Any] | np.ndarray) -> np.ndarray:  # noqa: N803
        """Class probabilities, ``(n, len(classes_))`` float32."""
        self.check_fitted()
        matrix = feature_matrix(X)
        if not len(matrix):
            return np.zeros((0, len(self.classes_)), np.float32)
        proba: np.ndarray = self.model_.predict_proba(matrix).astype(np.float32)
        return proba

    def __call__(self, batch: Batch) -> Batch:
        """Add the predicted class and its probability to every nucleus."""
        proba = self.predict_proba(batch)
        best = proba.argmax(axis=1) if len(proba) else np.zeros(0, np.int64)
        labels = np.asarray(self.classes_, dtype=object)[best]
        return {
            "class_label": labels.astype(object),
            "class_probability": proba[np.arange(len(best)), best].astype(np.float32),
        }

    def _save_model(self, folder: Path) -> dict[str, Any]:
        if self.config.model == "xgboost":
            self.model_.save_model(folder / "model.ubj")
        else:
            import joblib

            joblib.dump(self.model_, folder / "model.joblib", compress=3)
        return {"features": list(FEATURE_COLUMNS)}

    def _load_model(self, folder: Path, meta: dict[str, Any]) -> None:
        if self.config.model == "xgboost":
            from xgboost import XGBClassifier

            model = XGBClassifier(n_jobs=self.config.n_jobs)
            model.load_model(folder / "model.ubj")
            self.model_ = model
        else:
            import joblib

            self.model_ = joblib.load(folder / "model.joblib")
