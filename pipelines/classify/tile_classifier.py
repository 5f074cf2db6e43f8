"""``tile_classifier``: runs any registered tile-classification model (TorchScript or ONNX).

Everything model-specific comes from the model's card: the resolution (``mpp``) and size
(``input_size``) it reads, its normalisation and its class names. Each tile (cut at the unit's
``mpp``, the tiling's) gives the model the field of view the card asks for: the centred square of
``input_size * card.mpp / mpp`` tile pixels (padded with white past the tile's edge), resized to
``input_size``. The output is the class probabilities of the tile (a softmax of the logits,
unless the card's first output is ``probabilities``), the arg-max class and its name.

Example (a pipeline node)::

    - {id: tumour, unit: tile_classifier, after: [tissue], model: tils@champion}
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import cv2
import numpy as np
from pydantic import Field

from pathray.units.base import Batch, Column, Resources, UnitConfig
from pathray.units.model_unit import ModelUnit, softmax

_WHITE = 255


class TileClassifierConfig(UnitConfig):
    """Config of :class:`TileClassifier`.

    Attributes:
        mpp: Resolution of the tiles the unit receives (the tiling's), in um/px.
        batch_size: Tiles per forward pass.
        precision: Arithmetic of TorchScript models; must be one the card allows.
    """

    mpp: float = Field(0.5, gt=0)
    batch_size: int = Field(16, ge=1, le=4096)
    precision: Literal["float32", "float16", "bfloat16"] = "float32"


class TileClassifier(ModelUnit):
    """Per-tile class probabilities, class and label from a registered tile classifier."""

    name = "tile_classifier"
    version = "1"
    role = "tile_classification"
    Config = TileClassifierConfig
    inputs = (Column("image", "uint8", (None, None, 3)),)
    outputs = (
        Column(
            "tile_probabilities",
            "float32",
            (None,),
            description="class probabilities, in the card's class order (sum to 1)",
        ),
        Column("tile_class", "int32", description="index of the most probable class"),
        Column("tile_label", "str", description="name of the most probable class"),
    )
    resources = Resources(num_cpus=1.0)
    batch_size = 16
    tasks: ClassVar[tuple[str, ...]] = ("tile_classification",)
    required: ClassVar[tuple[str, ...]] = ("input_size", "mpp", "class_names")

    def _view(self, image: np.ndarray) -> np.ndarray:
        """One tile's field of view at the model's input size (uint8, HWC)."""
        image = np.asarray(image)
        height, width = self.card.input_size or (0, 0)
        assert self.card.mpp is not None  # checked in setup
        scale = self.card.mpp / self.config.mpp
        view_h, view_w = max(1, round(height * scale)), max(1, round(width * scale))
        view = _centre(image, view_h, view_w)
        if view.shape[:2] != (height, width):
            shrink = view_h > height
            interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            view = cv2.resize(view, (width, height), interpolation=interpolation)
        return view

    def _model_input(self, images: Any) -> np.ndarray:
        """Tiles as the model reads them: scaled, normalised, ``(N, C, H, W)`` float32."""
        return self.normalise_batch(np.stack([self._view(image) for image in images]))

    def __call__(self, batch: Batch) -> Batch:
        """Classify each tile."""
        raw = self.predict_rows(
            batch["image"], self.config.batch_size, prepare_chunk=self._model_input
        )
        probabilities = self.probabilities(raw)
        best = probabilities.argmax(axis=1).astype(np.int32)
        return {
            "tile_probabilities": probabilities.astype(np.float32),
            "tile_class": best,
            "tile_label": self.classes[best],
        }


def _centre(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The centred ``height`` x ``width`` window of an image, white past its edges."""
    out = np.full((height, width, 3), _WHITE, np.uint8)
    src_h, src_w = image.shape[:2]
    top, left = (src_h - height) // 2, (src_w - width) // 2
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + height, src_h), min(left + width, src_w)
    out[y0 - top : y1 - top, x0 - left : x1 - left] = image[y0:y1, x0:x1, :3]
    return out


__all__ = ["TileClassifier", "TileClassifierConfig", "softmax"]
