"""The multi-dataset nucleus classifier with the small CNN body on nucleus crops (tile -> object).

:class:`MultiHeadCropClassifier` is the estimator of :mod:`pipelines.classify.multihead_base`
with the network of :func:`pipelines.classify.crop_cnn.build_classifier` as its body (its last
layer has one output per label of every dataset). Crops are cut exactly as
:class:`~pipelines.classify.crop_cnn.NucleusCropCNN` cuts them (a window around each nucleus
centroid, with the nucleus mask as a fourth channel), and as a unit it emits the same nucleus
objects (centroid rule, outline, box) with the multi-dataset label columns.

Training: ``unit.training_set(images, instance_labels, class_labels)`` gives the crops of one
dataset's tiles with ``(primary dataset, label)`` pairs; for several datasets, cut each one's
crops with :meth:`MultiHeadCropClassifier.crops` and concatenate them, pairs alongside.

Example:
    >>> import numpy as np
    >>> crops = np.zeros((8, 16, 16, 4), np.uint8)
    >>> crops[4:, 4:12, 4:12] = 255
    >>> y = [("A", "dark"), ("B", "no")] * 2 + [("A", "pale"), ("B", "yes")] * 2
    >>> unit = MultiHeadCropClassifier({"input_size": 16, "widths": (4,), "max_iterations": 5})
    >>> sorted(unit.fit(crops, y).predict(crops))
    ['A', 'B']
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from pathray.errors import ConfigError
from pathray.units.base import Batch, Resources
from pipelines.classify.crop_cnn import NucleusCropCNN, build_classifier
from pipelines.classify.multihead_base import (
    DEFAULT_DATASET,
    LABEL_OUTPUTS,
    MultiHeadBase,
    MultiHeadConfig,
)
from pipelines.classify.object_classifier import CLASS_OUTPUTS
from pipelines.nuclei.pixel_classifier import check_mpp
from pipelines.training_data import random_dihedral, stain_jitter


class MultiHeadCropConfig(MultiHeadConfig):
    """Config of :class:`MultiHeadCropClassifier` (``hidden`` is not used).

    Attributes:
        mpp: Resolution the unit works at.
        crop_size: Window cut around each nucleus, in tile pixels.
        input_size: Edge the window is resized to before the network.
        widths: Channels per stage of the small CNN.
        mask_channel: Give the network the nucleus mask as a fourth channel.
        augment: Flip, rotate and stain-jitter the training crops.
    """

    mpp: float = Field(0.5, gt=0)
    crop_size: int = Field(32, ge=8)
    input_size: int = Field(32, ge=8)
    widths: tuple[int, ...] = Field((16, 32, 64), min_length=1, max_length=6)
    mask_channel: bool = True
    augment: bool = True
    batch: int = Field(32, ge=1)


class _CropObjects(NucleusCropCNN):
    """:class:`NucleusCropCNN`'s object making around a multi-head model.

    ``NucleusCropCNN.__call__`` cuts the crops of the nuclei each tile's core owns and classifies
    them with one :meth:`predict_proba` call per tile, in row order; here that call records the
    multi-head logits of the crops and answers with the primary dataset's probabilities.
    """

    def __init__(self, owner: MultiHeadCropClassifier) -> None:
        c = owner.config
        super().__init__(
            {
                "mpp": c.mpp,
                "crop_size": c.crop_size,
                "input_size": c.input_size,
                "mask_channel": c.mask_channel,
                "device": "cpu",
            }
        )
        self.owner = owner
        self.logits: list[np.ndarray] = []
        if owner.is_fitted:
            self.model_ = owner.model_
            self.classes_ = list(owner.label_space_.labels(owner.primary))

    def predict_proba(self, crops: np.ndarray) -> np.ndarray:
        """Record the crops' logits; the primary dataset's probabilities."""
        logits = self.owner.decision_function(crops)
        self.logits.append(logits)
        return self.owner.grouped_probabilities(logits)[self.owner.primary]


class MultiHeadCropClassifier(MultiHeadBase):
    """Classify each segmented nucleus for several datasets at once from a crop around it."""

    name = "nucleus_multihead_crop_cnn"
    version = "1"
    role = "nucleus_classification"
    Config = MultiHeadCropConfig
    inputs = NucleusCropCNN.inputs
    outputs = (*NucleusCropCNN.outputs[: -len(CLASS_OUTPUTS)], *LABEL_OUTPUTS)
    resources = Resources(num_cpus=1.0, num_gpus=0.25)
    batch_size = 8
    model_fields: ClassVar[tuple[str, ...]] = (
        "datasets",
        "head",
        "widths",
        "mask_channel",
        "input_size",
        "crop_size",
        "mpp",
    )

    @property
    def in_channels(self) -> int:
        """Input channels of the network (RGB, plus the mask when ``mask_channel``)."""
        return 4 if self.config.mask_channel else 3

    def crops(
        self, images: Any, instance_labels: Any, class_labels: Any, *, mpp: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Crops of every reference nucleus of some tiles and its class, cut as inference cuts.

        Returns:
            ``(crops, classes)``.
        """
        check_mpp(self.config.mpp, mpp)
        cutter = _CropObjects(self)
        crops, classes = cutter.training_set(images, instance_labels, class_labels, mpp=mpp)
        return crops, classes

    def training_set(
        self,
        images: Any,
        instance_labels: Any,
        class_labels: Any,
        *,
        mpp: float | None = None,
    ) -> tuple[Any, Any]:
        """Crops of every reference nucleus, labelled in the primary dataset.

        Returns:
            ``(crops, pairs)`` for :meth:`fit`.
        """
        crops, classes = self.crops(images, instance_labels, class_labels, mpp=mpp)
        dataset = self.config.primary or next(iter(self.config.datasets or {DEFAULT_DATASET: 0}))
        pairs = np.array([(dataset, str(c)) for c in classes], dtype=object).reshape(-1, 2)
        return crops, pairs

    def _inputs(self, X: Any, *, fitting: bool) -> np.ndarray:  # noqa: N803
        crops = np.asarray(X)
        if crops.ndim != 4 or crops.shape[-1] != self.in_channels or crops.dtype != np.uint8:
            raise ConfigError(
                f"Crops must be an (n, size, size, {self.in_channels}) uint8 array. "
                f"Got {crops.dtype} of shape {crops.shape} instead."
            )
        return crops

    def _training_rows(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self.config.augment:
            return rows
        out = np.empty_like(rows)
        for k, crop in enumerate(rows):
            (turned,) = random_dihedral([crop], rng)
            out[k] = turned
            out[k, ..., :3] = stain_jitter(turned[..., :3], rng)
        return out

    def _tensor(self, rows: np.ndarray) -> Any:
        import torch
        import torch.nn.functional as F  # noqa: N812

        x = torch.from_numpy(np.ascontiguousarray(rows)).permute(0, 3, 1, 2).float() / 255.0
        size = self.config.input_size
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x - 0.5

    def _new_body(self, n_outputs: int) -> Any:
        return build_classifier("small", tuple(self.config.widths), self.in_channels, n_outputs)

    def _body_meta(self) -> dict[str, Any]:
        return {"arch": "small", "in_channels": self.in_channels}

    def __call__(self, batch: Batch) -> Batch:
        """One row per nucleus each tile's core owns, with every dataset's label."""
        self.check_fitted()
        objects = _CropObjects(self)
        out = objects(batch)
        logits = (
            np.concatenate(objects.logits)
            if objects.logits
            else np.zeros((0, self.label_space_.size), np.float32)
        )
        return {**out, **self.label_columns(logits)}
