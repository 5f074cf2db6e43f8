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

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import cv2
import numpy as np
from pydantic import Field

from pathray.errors import ConfigError
from pathray.models.card import ModelCard
from pathray.models.runtime import Predictor, TorchScriptPredictor, load_predictor
from pathray.units.base import Batch, Column, Resources, Unit, UnitConfig

if TYPE_CHECKING:
    from pathray.catalog.records import ModelVersion

_FORMATS = ("torchscript", "onnx")
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


def check_tile_card(card: Mapping[str, Any], where: str) -> None:
    """Check that a card describes a tile classifier this unit can run.

    Args:
        card: The card as JSON data (empty for versions registered without one).
        where: The model version, for the message.

    Raises:
        ConfigError: No card, another task or format, or no input size, mpp or classes.
    """
    if not card:
        raise ConfigError(
            f"tile_classifier needs a model with a model card. {where} has none; register it "
            "with 'pathray models register'."
        )
    problems = []
    if card.get("task") != "tile_classification":
        problems.append(f"task must be 'tile_classification' (got {card.get('task')!r})")
    if card.get("format") not in _FORMATS:
        problems.append(f"format must be one of {list(_FORMATS)} (got {card.get('format')!r})")
    for key in ("input_size", "mpp", "class_names"):
        if not card.get(key):
            problems.append(f"{key} must be given")
    if problems:
        raise ConfigError(f"tile_classifier cannot run {where}: {'; '.join(problems)}.")


class TileClassifier(Unit):
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
    needs_model: ClassVar[bool] = True

    @classmethod
    def check_model(cls, version: ModelVersion) -> None:
        """Accept only tile classifiers with a card (task, format, input size, mpp, classes).

        Raises:
            ConfigError: The version does not fit, with the reason.
        """
        check_tile_card(version.card, version.ref)

    def setup(self) -> None:
        """Load the model (checked against its SHA-256) and keep it resident."""
        folder = self.artifacts.get("model")
        if folder is None:
            raise ConfigError(
                "tile_classifier needs a model: give the node 'model: name@version'. Got none."
            )
        self.predictor: Predictor = load_predictor(folder, precision=self.config.precision)
        if isinstance(self.predictor, TorchScriptPredictor):
            self.predictor.freeze()  # BatchNorm folded: 1.36x on a ResNet-18, one CPU thread
        card = self.predictor.card
        check_tile_card(card.to_json(), str(folder))
        self.card: ModelCard = card
        self.classes = np.array(card.class_names, dtype=object)
        norm = card.normalisation
        mean = np.asarray(norm.mean if norm else (0.0,), np.float32)
        std = np.asarray(norm.std if norm else (1.0,), np.float32)
        # (pixel / 255 - mean) / std as one multiply-add per value, over the whole batch
        self.gain = 1.0 / (255.0 * std)
        self.offset = -mean / std

    def _view(self, image: np.ndarray) -> np.ndarray:
        """One tile's field of view at the model's input size (uint8, HWC)."""
        height, width = self.card.input_size or (0, 0)
        assert self.card.mpp is not None  # checked in setup
        scale = self.card.mpp / self.config.mpp
        view_h, view_w = max(1, round(height * scale)), max(1, round(width * scale))
        if image.shape[:2] == (view_h, view_w):
            view = image[:, :, :3]  # the usual case: tiles cut at the card's field of view
        else:
            view = _centre(image, view_h, view_w)
        if view.shape[:2] != (height, width):
            shrink = view_h > height
            interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            view = cv2.resize(view, (width, height), interpolation=interpolation)
        return view

    def _model_input(self, images: Any) -> np.ndarray:
        """Tiles as the model reads them: scaled, normalised, ``(N, C, H, W)`` float32.

        The array is a view of NHWC memory (channels-last strides), which the TorchScript
        runtime hands to torch as it is and the ONNX runtime makes contiguous.
        """
        views = np.stack([self._view(np.asarray(image)) for image in images])
        pixels = views.astype(np.float32)
        pixels *= self.gain
        pixels += self.offset
        return pixels.transpose(0, 3, 1, 2)

    def __call__(self, batch: Batch) -> Batch:
        """Classify each tile."""
        images = batch["image"]
        k = len(self.classes)
        scores = [np.empty((0, k), np.float32)]
        for start in range(0, len(images), self.config.batch_size):
            x = self._model_input(images[start : start + self.config.batch_size])
            scores.append(np.asarray(self.predictor.predict(x), np.float32).reshape(len(x), -1))
        raw = np.concatenate(scores)
        probabilities = raw if self.card.outputs[:1] == ["probabilities"] else softmax(raw)
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


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 1 (the classes), in float64 so each sums to 1 within float32 rounding."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True, initial=-np.inf)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


__all__ = ["TileClassifier", "TileClassifierConfig", "check_tile_card", "softmax"]
