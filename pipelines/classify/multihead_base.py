"""The estimator behind the multi-dataset nucleus classifiers: config, training, prediction.

:class:`MultiHeadBase` is a :class:`~pathray.units.trainable.TrainableUnit` whose network has one
shared body and one output slice per dataset of its :class:`~pipelines.classify.label_space.
LabelSpace`. A training sample carries its dataset and a label of that dataset's set; its loss
is the cross-entropy over its own slice only (:func:`~pipelines.classify.multihead_train.
masked_loss`). Steps draw mixed batches or visit the datasets in turn (``sampling``); training
stops when the loss plateaus (``window``, ``patience``, ``tol``) or at ``max_iterations``.
Prediction is grouped per dataset: probabilities within each slice, the arg-max label of each
slice, or (``threshold``) every label of a slice whose probability reaches it.

Subclasses give the body and its inputs: :class:`~pipelines.classify.multihead.
MultiHeadClassifier` (an MLP on nucleus features) and :class:`~pipelines.classify.
multihead_crops.MultiHeadCropClassifier` (the small CNN of :mod:`pipelines.classify.crop_cnn`
on nucleus crops). Both write the columns of :data:`LABEL_OUTPUTS` plus one label and one
probability column per dataset (:meth:`MultiHeadBase.dataset_columns`).
"""

from __future__ import annotations

import json
import time
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from pydantic import Field, field_validator, model_validator

from pathray.errors import ConfigError
from pathray.units.base import Batch, Column
from pathray.units.label_matching import cross_targets
from pathray.units.trainable import (
    TorchConfig,
    TrainableUnit,
    inference_context,
    resolve_device,
    seeded_torch,
    to_device,
)
from pipelines.classify.label_space import LabelSpace
from pipelines.classify.multihead_train import (
    DatasetSampler,
    Head,
    Plateau,
    Sampling,
    masked_loss,
    slice_probabilities,
    train_until_plateau,
)
from pipelines.classify.object_classifier import CLASS_OUTPUTS

#: Outputs of every multi-dataset classifier: the primary dataset's label (``class_label``,
#: ``class_probability``, as the single-dataset classifiers write them) and every dataset's
#: label and probabilities as JSON text.
LABEL_OUTPUTS = (
    *CLASS_OUTPUTS,
    Column("dataset_labels", "str", granularity="object", description="JSON label per dataset"),
    Column(
        "dataset_probabilities",
        "str",
        granularity="object",
        description="JSON probabilities per dataset and label",
    ),
)

#: Dataset of the samples of ``training_set`` when the config names none.
DEFAULT_DATASET = "default"
#: Rows scored per forward pass at prediction.
_CHUNK = 4096


class MultiHeadConfig(TorchConfig):
    """Config of the multi-dataset classifiers.

    Attributes:
        datasets: The label space ``{dataset: [label, ...]}`` (order kept); None: learned from
            the training labels (datasets and labels sorted).
        primary: Dataset whose label fills ``class_label`` (default: the first).
        head: ``"softmax"`` (one label per slice) or ``"sigmoid"`` (independent labels).
        hidden: Widths of the MLP's hidden layers.
        sampling: ``"random"`` (mixed batches, datasets equally likely) or ``"round_robin"``.
        class_balanced: Make every label of a dataset equally likely in the batches.
        batch: Samples per step.
        lr: Adam learning rate.
        max_iterations: Iteration cap.
        window: Steps whose mean loss is compared (rounded up to whole rounds of datasets).
        patience: Windows without improvement before stopping.
        tol: Decrease of the window's mean loss that counts as an improvement.
        threshold: None: one label per dataset (arg-max); else every label of a slice whose
            probability reaches it (inference only).
        merges: Labels of different datasets that are one class, as ``("A:tumor",
            "B:tumour")`` pairs (see :func:`pathray.units.label_matching.match_labels`): a
            sample whose label is merged with exactly one label of another dataset also trains
            that dataset's slice with it (:func:`~pathray.units.label_matching.cross_targets`).
    """

    datasets: dict[str, tuple[str, ...]] | None = None
    primary: str | None = None
    head: Head = "softmax"
    hidden: tuple[int, ...] = Field((64, 64), max_length=6)
    sampling: Sampling = "random"
    class_balanced: bool = True
    batch: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    max_iterations: int = Field(3000, ge=1)
    window: int = Field(25, ge=1)
    patience: int = Field(4, ge=1)
    tol: float = Field(1e-3, ge=0)
    threshold: float | None = Field(None, gt=0, lt=1)
    merges: tuple[tuple[str, str], ...] = ()

    @field_validator("merges")
    @classmethod
    def _qualified(cls, value: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        for pair in value:
            for name in pair:
                if ":" not in name:
                    raise ValueError(
                        f"merged labels must be named DATASET:LABEL. Got {name!r} instead."
                    )
        return value

    @field_validator("datasets")
    @classmethod
    def _valid_space(
        cls, value: dict[str, tuple[str, ...]] | None
    ) -> dict[str, tuple[str, ...]] | None:
        if value is not None:
            try:
                LabelSpace.from_mapping(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _known_primary(self) -> MultiHeadConfig:
        if self.datasets is not None and self.primary not in (None, *self.datasets):
            raise ValueError(
                f"primary must be one of {list(self.datasets)}. Got {self.primary!r} instead."
            )
        return self


def split_targets(y: Any, datasets: Any) -> tuple[Any, np.ndarray]:
    """The dataset and the label of every sample, from either form ``fit`` accepts.

    Args:
        y: ``(dataset, label)`` pairs, or labels when ``datasets`` is given.
        datasets: The dataset of each sample (or one name for all); None when ``y`` has pairs.

    Returns:
        ``(datasets, labels)``.

    Raises:
        ConfigError: If neither form fits.
    """
    values = np.asarray(y if y is not None else [], dtype=object)
    if datasets is not None:
        return datasets, values.ravel()
    if values.ndim == 2 and values.shape[1] == 2:
        return values[:, 0], values[:, 1]
    raise ConfigError(
        "fit needs (dataset, label) pairs as y, or labels as y with datasets=. "
        f"Got y of shape {values.shape} and no datasets instead."
    )


class MultiHeadBase(TrainableUnit):
    """The estimator behind the multi-dataset units; subclasses give the body and its inputs.

    ``fit(X, y, datasets=None)``: ``y`` holds ``(dataset, label)`` pairs, or labels with
    ``datasets`` naming each sample's dataset (or one name for all).
    """

    Config = MultiHeadConfig
    learned: ClassVar[tuple[str, ...]] = ("model_", "label_space_", "loss_history_")
    model_fields: ClassVar[tuple[str, ...]] = ("datasets", "head", "hidden")

    def setup(self) -> None:
        """Resolve the device; load the model artifact if given."""
        self._device = resolve_device(self.config.device)
        super().setup()

    # -- hooks of the bodies --------------------------------------------------------------------

    @abstractmethod
    def _inputs(self, X: Any, *, fitting: bool) -> np.ndarray:  # noqa: N803
        """The array of network inputs, one row per sample (learning any scaling when fitting)."""

    @abstractmethod
    def _tensor(self, rows: np.ndarray) -> Any:
        """A float tensor (CPU) of some rows of :meth:`_inputs`."""

    @abstractmethod
    def _new_body(self, n_outputs: int) -> Any:
        """A fresh ``torch.nn.Module`` with ``n_outputs`` logits (seeded by the caller)."""

    def _training_rows(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The rows of one training step, augmented if the body wants (default: as they are)."""
        return rows

    def _body_meta(self) -> dict[str, Any]:
        """Extra JSON the body needs to be rebuilt."""
        return {}

    def _load_body_meta(self, meta: dict[str, Any]) -> None:
        """Restore what :meth:`_body_meta` wrote."""

    def set_params(self, **params: Any) -> Self:
        """Change hyper-parameters (``sklearn``'s ``set_params``); returns ``self``.

        Changing a field that shapes the model (``model_fields``) drops the learned state: the
        unit must be fitted again.

        Raises:
            ConfigError: If the new config is invalid.
        """
        config = self.validate_config({**self.get_params(), **params})
        reshaped = any(getattr(config, f) != getattr(self.config, f) for f in self.model_fields)
        self.config = config
        self._device = resolve_device(config.device)
        if reshaped:
            for name in self.learned:
                setattr(self, name, None)
        elif self.is_fitted:
            self.model_.to(self._device)
        return self

    # -- training -------------------------------------------------------------------------------

    def label_space(self, datasets: Any = None, labels: Any = None) -> LabelSpace:
        """The configured label space, or the one of the training labels."""
        if self.config.datasets is not None:
            return LabelSpace.from_mapping(self.config.datasets)
        if datasets is None:
            raise ConfigError(
                f"unit {self.name!r} has no label space: set datasets in its config or fit it."
            )
        if isinstance(datasets, str):
            datasets = [datasets] * len(labels)
        return LabelSpace.infer(datasets, labels)

    def _fit(
        self,
        X: Any,  # noqa: N803
        y: Any = None,
        datasets: Any = None,
        progress: Callable[[int, float], None] | None = None,
        **kwargs: Any,
    ) -> None:
        import torch

        owners, labels = split_targets(y, datasets)
        owners = np.full(len(labels), owners, object) if isinstance(owners, str) else owners
        owners = np.asarray(owners, dtype=object).astype(str)
        labels = np.asarray(labels, dtype=object).astype(str)
        space = self.label_space(owners, labels)
        space.encode(owners, labels)  # validates the samples before the merges add any
        inputs = self._inputs(X, fitting=True)
        if len(inputs) != len(labels):
            raise ConfigError(
                f"fit needs one label per sample. Got {len(inputs)} samples and "
                f"{len(labels)} labels instead."
            )
        n_samples = len(labels)
        rows, owners, labels = self._cross_supervised(space, owners, labels)
        targets, which = space.encode(owners, labels)
        if len(rows) > n_samples:
            inputs = inputs[rows]
        c = self.config
        sampler = DatasetSampler(
            which,
            targets,
            mode=c.sampling,
            batch=c.batch,
            class_balanced=c.class_balanced,
            seed=c.seed,
        )
        bounds = space.bounds[which]
        all_targets = torch.from_numpy(targets)
        all_bounds = torch.from_numpy(bounds)

        augment = np.random.default_rng([c.seed, 1])  # its own stream: sampling stays the same

        def next_batch(step: int) -> tuple[Any, Any, Any]:
            picked = sampler(step)
            index = torch.from_numpy(picked)
            rows = self._training_rows(inputs[picked], augment)
            return self._tensor(rows), all_targets[index], all_bounds[index]

        cycle = sampler.cycle
        plateau = Plateau(-(-c.window // cycle) * cycle, c.patience, c.tol)
        start = time.perf_counter()
        with seeded_torch(c.seed):
            model = self._new_body(space.size).to(self._device)
            result = train_until_plateau(
                model,
                next_batch,
                lambda logits, t, b: masked_loss(logits, t, b, c.head),
                max_iterations=c.max_iterations,
                plateau=plateau,
                lr=c.lr,
                device=self._device,
                progress=progress,
            )
        self.model_ = model
        self.label_space_ = space
        self.loss_history_ = result.history
        self.n_iter_ = len(result.history)
        self.converged_ = result.converged
        counts = {
            name: dict(
                zip(*np.unique(labels[which == k].astype(str), return_counts=True), strict=True)
            )
            for k, name in enumerate(space.names)
        }
        self.training_ = {
            "samples": len(targets),
            "cross_supervised": len(rows) - n_samples,
            "label_counts": {n: {k: int(v) for k, v in d.items()} for n, d in counts.items()},
            "iterations": self.n_iter_,
            "converged": self.converged_,
            "final_loss": result.history[-1],
            "loss_history": [round(v, 6) for v in result.history],
            "seconds": round(time.perf_counter() - start, 3),
            "device": self._device,
        }

    def _cross_supervised(
        self, space: LabelSpace, owners: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The samples again, each sample of a merged label once more per dataset it trains.

        Returns:
            ``(rows, datasets, labels)``: ``rows`` indexes the original samples (the first
            ``len(labels)`` are ``0..n-1``).

        Raises:
            ConfigError: If a merge names a dataset or label outside the label space.
        """
        n = len(labels)
        if not self.config.merges:
            return np.arange(n), owners, labels
        known = space.to_dict()
        for pair in self.config.merges:
            for name in pair:
                dataset, _, label = name.partition(":")
                if label not in known.get(dataset, ()):
                    raise ConfigError(
                        f"Merged labels must be labels of the label space {known}. "
                        f"Got {name!r} instead."
                    )
        rows, extra_owners, extra_labels = [np.arange(n)], [owners], [labels]
        for (dataset, label), others in cross_targets(self.config.merges).items():
            mine = np.flatnonzero((owners == dataset) & (labels == label))
            for other, other_label in others:
                rows.append(mine)
                extra_owners.append(np.full(len(mine), other, object))
                extra_labels.append(np.full(len(mine), other_label, object))
        return (
            np.concatenate(rows),
            np.concatenate(extra_owners).astype(str),
            np.concatenate(extra_labels).astype(str),
        )

    # -- prediction -----------------------------------------------------------------------------

    def decision_function(self, X: Any) -> np.ndarray:  # noqa: N803
        """Raw logits of every output, ``(n, label_space_.size)`` float32."""
        self.check_fitted()
        inputs = self._inputs(X, fitting=False)
        out = np.zeros((len(inputs), self.label_space_.size), np.float32)
        with inference_context(self) as model:
            for i in range(0, len(inputs), _CHUNK):
                logits = model(to_device(self._tensor(inputs[i : i + _CHUNK]), self._device))
                out[i : i + _CHUNK] = logits.float().cpu().numpy()
        return out

    def predict_proba(self, X: Any) -> dict[str, np.ndarray]:  # noqa: N803
        """Per dataset, ``(n, len(labels))`` float32 probabilities (within its slice)."""
        return self.grouped_probabilities(self.decision_function(X))

    def grouped_probabilities(self, logits: np.ndarray) -> dict[str, np.ndarray]:
        """Per dataset, the probabilities within its slice of some logits."""
        self.check_fitted()
        space = self.label_space_
        proba = slice_probabilities(logits, space.bounds, self.config.head)
        return {name: proba[:, part] for name, part in space}

    def predict(self, X: Any) -> dict[str, np.ndarray]:  # noqa: N803
        """Per dataset, the arg-max label of every sample (object array)."""
        return {
            name: np.asarray(self.label_space_.labels(name), dtype=object)[p.argmax(axis=1)]
            for name, p in self.predict_proba(X).items()
        }

    def predict_labels(self, X: Any, threshold: float) -> dict[str, list[tuple[str, ...]]]:  # noqa: N803
        """Per dataset, every label of each sample whose probability reaches ``threshold``."""
        out: dict[str, list[tuple[str, ...]]] = {}
        for name, proba in self.predict_proba(X).items():
            labels = self.label_space_.labels(name)
            out[name] = [
                tuple(labels[j] for j in np.flatnonzero(row >= threshold)) for row in proba
            ]
        return out

    def accuracy(self, X: Any, y: Any, datasets: Any = None) -> dict[str, float]:  # noqa: N803
        """Per dataset, the accuracy on that dataset's own samples (datasets without any: NaN)."""
        owners, labels = split_targets(y, datasets)
        owners = np.full(len(labels), owners, object) if isinstance(owners, str) else owners
        owners = np.asarray(owners, dtype=object).astype(str)
        self.label_space_.encode(owners, labels)  # validates
        predicted = self.predict(X)
        labels = np.asarray(labels, dtype=object).astype(str)
        return {
            name: float((predicted[name][mine] == labels[mine]).mean()) if mine.any() else np.nan
            for name in self.label_space_.names
            for mine in [owners == name]
        }

    @property
    def primary(self) -> str:
        """Dataset whose label fills ``class_label``."""
        self.check_fitted()
        primary = self.config.primary or self.label_space_.names[0]
        self.label_space_.position(primary)  # a learned space may lack it
        return str(primary)

    # -- unit outputs ---------------------------------------------------------------------------

    @staticmethod
    def dataset_columns(dataset: str) -> tuple[Column, Column]:
        """The label and probability columns a dataset adds to every nucleus."""
        return (
            Column(f"class_label_{dataset}", "str", granularity="object"),
            Column(f"class_probability_{dataset}", "float32", granularity="object"),
        )

    @classmethod
    def declared_outputs(cls, config: Any = None) -> tuple[Column, ...]:
        """All output columns for a config.

        The class-level ones, plus the per-dataset columns when the config fixes the label
        space (an engine that stores config-dependent columns would ask for these).
        """
        datasets = cls.validate_config(config).datasets or {}
        return cls.outputs + tuple(c for name in datasets for c in cls.dataset_columns(name))

    def label_columns(self, logits: np.ndarray) -> Batch:
        """The label columns of every nucleus from its logits.

        Args:
            logits: ``(n, label_space_.size)``, from :meth:`decision_function`.

        Returns:
            The columns of :data:`LABEL_OUTPUTS` and every dataset's :meth:`dataset_columns`.
            With ``threshold`` set, a dataset's label column joins its labels over the
            threshold with ``|`` (and the JSON holds lists); its probability column is the
            highest probability of its slice either way.
        """
        threshold = self.config.threshold
        n = len(logits)
        out: Batch = {}
        chosen_rows: list[dict[str, Any]] = [{} for _ in range(n)]
        proba_rows: list[dict[str, Any]] = [{} for _ in range(n)]
        for name, proba in self.grouped_probabilities(logits).items():
            labels = np.asarray(self.label_space_.labels(name), dtype=object)
            best = proba.argmax(axis=1) if n else np.zeros(0, np.int64)
            hits: list[Any] = (
                labels[best].tolist()
                if threshold is None
                else [labels[row >= threshold].tolist() for row in proba]
            )
            label_column, proba_column = self.dataset_columns(name)
            out[label_column.name] = np.array(
                [h if threshold is None else "|".join(h) for h in hits], dtype=object
            )
            out[proba_column.name] = proba[np.arange(n), best].astype(np.float32)
            for i in range(n):
                chosen_rows[i][name] = hits[i]
                proba_rows[i][name] = dict(zip(labels, proba[i].round(6).tolist(), strict=True))
        primary = self.primary
        out["class_label"] = out[f"class_label_{primary}"]
        out["class_probability"] = out[f"class_probability_{primary}"]
        out["dataset_labels"] = np.array([json.dumps(r) for r in chosen_rows], dtype=object)
        out["dataset_probabilities"] = np.array([json.dumps(r) for r in proba_rows], dtype=object)
        return out

    # -- persistence ----------------------------------------------------------------------------

    def _save_model(self, folder: Path) -> dict[str, Any]:
        import torch

        state = {k: v.detach().cpu() for k, v in self.model_.state_dict().items()}
        torch.save(state, folder / "model.pt")
        return {
            "label_space": self.label_space_.to_dict(),
            "iterations": self.n_iter_,
            "converged": self.converged_,
            **self._body_meta(),
        }

    def _load_model(self, folder: Path, meta: dict[str, Any]) -> None:
        import torch

        model_meta = meta.get("model", {})
        self.label_space_ = LabelSpace.from_mapping(model_meta.get("label_space", {}))
        self._load_body_meta(model_meta)
        with seeded_torch(self.config.seed):
            model = self._new_body(self.label_space_.size).to(self._device)
        state = torch.load(folder / "model.pt", map_location=self._device, weights_only=True)
        model.load_state_dict(state)
        model.eval()
        self.model_ = model
        self.n_iter_ = int(model_meta.get("iterations", 0))
        self.converged_ = bool(model_meta.get("converged", False))
        self.loss_history_ = list(self.training_.get("loss_history", []))
