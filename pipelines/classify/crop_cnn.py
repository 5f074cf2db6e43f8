"""Nucleus classification by a CNN on image crops centred on each nucleus (tile -> object).

Object rows do not carry pixels, so :class:`NucleusCropCNN` works like
:class:`~pipelines.nuclei.units.NucleusFeatures`: it reads a tile's ``image`` and the
``nucleus_labels`` of an upstream segmenter (detect), cuts a ``crop_size`` px window around each
nucleus centroid (reflected at the tile edge; with the nucleus mask as a fourth channel when
``mask_channel``, so the network knows which nucleus is meant), resizes it to ``input_size`` and
classifies it with a small CNN or a ResNet-18 (``weights=None``: never a download). It emits one
object row per nucleus owned by the tile's core (centroid rule), with ``parent_index``, outline,
box, centroid, ``class_label`` and ``class_probability``. The crops and the objects are made by
:mod:`pipelines.classify.crops`, as for ``crop_classifier`` (any registered image classifier).

Training: ``unit.training_set(images, instance_labels, class_labels)`` cuts the crops of the
reference nuclei exactly as inference does, and ``unit.fit(crops, classes)`` trains with Adam,
class-balanced sampling, flips, 90-degree rotations and H&E stain jitter.

Example:
    >>> import numpy as np
    >>> unit = NucleusCropCNN({"input_size": 16, "crop_size": 16, "widths": (4, 8),
    ...                        "iterations": 2, "batch": 4})
    >>> crops = np.zeros((4, 16, 16, 4), np.uint8)
    >>> unit.fit(crops, ["a", "b", "a", "b"]).classes_
    ['a', 'b']
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from pathray.errors import ConfigError
from pathray.units.base import PARENT_INDEX, Batch, Column, Resources
from pathray.units.trainable import (
    TorchConfig,
    TrainableUnit,
    inference_context,
    resolve_device,
    seeded_torch,
    to_device,
    train_torch,
)
from pipelines.classify.crops import (
    GEOMETRY_OUTPUTS,
    empty_geometry,
    extract_crops,
    nucleus_centroids,
    owned_nuclei,
    resize_crops,
)
from pipelines.classify.object_classifier import CLASS_OUTPUTS
from pipelines.nuclei.pixel_classifier import check_mpp
from pipelines.training_data import random_dihedral, stain_jitter


def build_classifier(arch: str, widths: tuple[int, ...], in_channels: int, n_classes: int) -> Any:
    """A ``torch.nn.Module`` mapping ``(N, C, S, S)`` crops to class logits.

    Args:
        arch: ``"small"`` (conv, group norm, ReLU, max-pool stages of ``widths``, global
            average pool, linear: the same in training and inference mode) or
            ``"resnet18"`` (torchvision's, random weights, first layer adapted to
            ``in_channels``).
        widths: Channels per stage of the small network.
        in_channels: Input channels.
        n_classes: Classes.

    Returns:
        The module.
    """
    from torch import nn

    if arch == "resnet18":
        from torchvision.models import resnet18

        net = resnet18(weights=None, num_classes=n_classes)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        return net
    layers: list[nn.Module] = []
    previous = in_channels
    for width in widths:
        layers += [
            nn.Conv2d(previous, width, 3, padding=1, bias=False),
            nn.GroupNorm(min(8, width), width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]
        previous = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(previous, n_classes)]
    return nn.Sequential(*layers)


class CropCNNConfig(TorchConfig):
    """Config of :class:`NucleusCropCNN`.

    Attributes:
        mpp: Resolution the unit works at.
        crop_size: Window cut around each nucleus, in tile pixels.
        input_size: Edge the window is resized to before the network.
        arch: ``"small"`` or ``"resnet18"``.
        widths: Channels per stage of the small network.
        mask_channel: Give the network the nucleus mask as a fourth channel.
        iterations: Training steps.
        batch: Crops per training step.
        lr: Adam learning rate.
        augment: Flip, rotate and stain-jitter the training crops.
    """

    mpp: float = Field(0.5, gt=0)
    crop_size: int = Field(64, ge=8)
    input_size: int = Field(224, ge=8)
    arch: Literal["small", "resnet18"] = "small"
    widths: tuple[int, ...] = Field((16, 32, 64, 128), min_length=1, max_length=6)
    mask_channel: bool = True
    iterations: int = Field(300, ge=1)
    batch: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    augment: bool = True


class NucleusCropCNN(TrainableUnit):
    """Classify each segmented nucleus from an image crop around it."""

    name = "nucleus_crop_cnn"
    version = "1"
    role = "nucleus_classification"
    Config = CropCNNConfig
    inputs = (
        Column("image", "uint8", (None, None, 3)),
        Column("nucleus_labels", "int32", (None, None)),
    )
    outputs = (*GEOMETRY_OUTPUTS, *CLASS_OUTPUTS)
    resources = Resources(num_cpus=1.0, num_gpus=0.25)
    batch_size = 8
    learned = ("model_", "classes_")
    model_fields = ("arch", "widths", "mask_channel", "input_size", "crop_size", "mpp")

    def setup(self) -> None:
        """Resolve the device; load the model artifact if given."""
        self._device = resolve_device(self.config.device)
        super().setup()

    @property
    def in_channels(self) -> int:
        """Input channels of the network (RGB, plus the mask when ``mask_channel``)."""
        return 4 if self.config.mask_channel else 3

    def crops_of(
        self, image: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Instance ids, centroids and crops of one tile, as inference cuts them.

        Returns:
            ``(ids, centres, crops)``.
        """
        ids, centres = nucleus_centroids(np.asarray(labels))
        crops = extract_crops(
            image,
            labels,
            ids,
            centres,
            size=self.config.crop_size,
            mask_channel=self.config.mask_channel,
        )
        return ids, centres, crops

    def training_set(
        self,
        images: Any,
        instance_labels: Any,
        class_labels: Any,
        *,
        mpp: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Crops of every reference nucleus and its class, cut as inference cuts them.

        Args:
            images: RGB tiles.
            instance_labels: Their instance label images.
            class_labels: Per tile, the class of instance ``k`` at index ``k - 1``.
            mpp: Microns per pixel of the tiles (must be the unit's).

        Returns:
            ``(crops, classes)`` for :meth:`fit`.
        """
        check_mpp(self.config.mpp, mpp)
        crops, classes = [], []
        for image, labels, names in zip(images, instance_labels, class_labels, strict=True):
            ids, _, tile_crops = self.crops_of(np.asarray(image), np.asarray(labels))
            crops.append(tile_crops)
            classes.append(np.asarray(names, object)[ids - 1])
        return np.concatenate(crops), np.concatenate(classes).astype(str)

    def _to_tensor(self, crops: np.ndarray) -> Any:
        import torch

        size = self.config.input_size
        crops = resize_crops(crops, (size, size))
        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
        return x / 255.0 - 0.5

    def _new_model(self, n_classes: int) -> Any:
        c = self.config
        with seeded_torch(c.seed):
            net = build_classifier(c.arch, tuple(c.widths), self.in_channels, n_classes)
            return net.to(self._device)

    def _fit(self, X: Any, y: Any = None, **kwargs: Any) -> None:  # noqa: N803
        import torch
        import torch.nn.functional as F  # noqa: N812

        crops = np.asarray(X)
        names = np.asarray(y if y is not None else [], dtype=object).astype(str)
        if crops.ndim != 4 or crops.shape[-1] != self.in_channels or len(names) != len(crops):
            raise ConfigError(
                f"fit needs (n, size, size, {self.in_channels}) uint8 crops and one class per "
                f"crop. Got {crops.shape} and {len(names)} classes instead."
            )
        classes, codes = np.unique(names, return_inverse=True)
        if len(classes) < 2:
            raise ConfigError(f"fit needs at least two classes. Got {classes.tolist()} instead.")
        c = self.config
        rng = np.random.default_rng(c.seed)
        weights = 1.0 / np.bincount(codes)[codes]
        weights /= weights.sum()

        def next_batch(step: int) -> tuple[Any, ...]:
            picked = rng.choice(len(crops), size=c.batch, p=weights)
            batch = []
            for k in picked:
                crop = crops[k]
                if c.augment:
                    (crop,) = random_dihedral([crop], rng)
                    crop = crop.copy()
                    crop[..., :3] = stain_jitter(crop[..., :3], rng)
                batch.append(crop)
            return self._to_tensor(np.stack(batch)), torch.from_numpy(codes[picked])

        start = time.perf_counter()
        model = self._new_model(len(classes))
        with seeded_torch(c.seed):
            history = train_torch(
                model,
                next_batch,
                F.cross_entropy,
                iterations=c.iterations,
                lr=c.lr,
                device=self._device,
            )
        self.model_ = model
        self.classes_ = classes.tolist()
        self.loss_history_ = history
        self.training_ = {
            "crops": len(crops),
            "iterations": c.iterations,
            "final_loss": history[-1],
            "loss_history": [round(v, 6) for v in history],
            "seconds": round(time.perf_counter() - start, 3),
            "device": self._device,
        }

    def predict_proba(self, crops: np.ndarray) -> np.ndarray:
        """Class probabilities of crops, ``(n, len(classes_))`` float32."""
        import torch

        self.check_fitted()
        out = np.zeros((len(crops), len(self.classes_)), np.float32)
        with inference_context(self) as model:
            for i in range(0, len(crops), 64):
                logits = model(to_device(self._to_tensor(crops[i : i + 64]), self._device))
                out[i : i + 64] = torch.softmax(logits.float(), dim=1).cpu().numpy()
        return out

    def __call__(self, batch: Batch) -> Batch:
        """Classify the nuclei each tile's core owns; one row per nucleus."""
        self.check_fitted()
        parts: dict[str, list[np.ndarray]] = {}
        for i in range(len(batch["nucleus_labels"])):
            nuclei = owned_nuclei(batch, i)
            if nuclei is None:
                continue
            crops = extract_crops(
                batch["image"][i],
                nuclei.labels,
                nuclei.ids,
                nuclei.centres,
                size=self.config.crop_size,
                mask_channel=self.config.mask_channel,
            )
            proba = self.predict_proba(crops)
            best = proba.argmax(axis=1)
            columns = {
                PARENT_INDEX: np.full(len(best), i, np.int64),
                **nuclei.columns,
                "class_label": np.asarray(self.classes_, dtype=object)[best],
                "class_probability": proba[np.arange(len(best)), best],
            }
            for name, values in columns.items():
                parts.setdefault(name, []).append(values)
        return self._assemble(parts)

    @staticmethod
    def _assemble(parts: dict[str, list[np.ndarray]]) -> Batch:
        empty: Batch = {
            PARENT_INDEX: np.zeros(0, np.int64),
            **empty_geometry(),
            "class_label": np.zeros(0, dtype=object),
            "class_probability": np.zeros(0, np.float32),
        }
        return {
            name: np.concatenate(parts[name]) if parts.get(name) else default
            for name, default in empty.items()
        }

    def _save_model(self, folder: Path) -> dict[str, Any]:
        import torch

        state = {k: v.detach().cpu() for k, v in self.model_.state_dict().items()}
        torch.save(state, folder / "model.pt")
        return {"arch": self.config.arch, "in_channels": self.in_channels}

    def _load_model(self, folder: Path, meta: dict[str, Any]) -> None:
        import torch

        model = self._new_model(len(self.classes_))
        state = torch.load(folder / "model.pt", map_location=self._device, weights_only=True)
        model.load_state_dict(state)
        model.eval()
        self.model_ = model
        self.loss_history_ = list(self.training_.get("loss_history", []))
