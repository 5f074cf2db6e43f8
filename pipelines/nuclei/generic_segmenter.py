"""``segmenter``: runs any registered nucleus segmentation model (TorchScript or ONNX).

The model's card says what it reads (``mpp``, optionally a fixed ``input_size``, its
``normalisation``) and what it writes (``task``):

- ``semantic_segmentation``: per-pixel class maps ``(N, C, H, W)``, logits (softmax; a sigmoid
  for one channel) or ``probabilities`` (the card's first output). The nucleus probability is
  one minus the ``background`` class (the first class when none is so named); a class named
  ``border`` splits touching nuclei (:func:`~pipelines.nuclei.instances.seeded_instances`),
  else the map goes through the watershed of
  :func:`~pipelines.nuclei.pixel_classifier.probability_to_instances`;
- ``instance_segmentation``: a label map ``(N, 1, H, W)`` or ``(N, H, W)``, 0 background.

Each tile (at the unit's ``mpp``) is resized to the card's resolution (or its fixed input
size), the maps are resized back, and the instances are cut to the tissue and filtered by area
as for every other nucleus segmenter: ``nucleus_features`` turns them into objects.

Example (pipeline nodes)::

    - {id: nuclei, unit: segmenter, after: [tissue], model: hovernet-lite@1}
    - {id: features, unit: nucleus_features, after: [nuclei]}
"""

from __future__ import annotations

from typing import Any, ClassVar

import cv2
import numpy as np
from pydantic import Field

from pathray.units.base import Batch, Resources, UnitConfig
from pathray.units.model_unit import ModelUnit, softmax
from pipelines.nuclei.instances import seeded_instances
from pipelines.nuclei.pixel_classifier import (
    SEGMENTATION_INPUTS,
    SEGMENTATION_OUTPUTS,
    probability_to_instances,
    segment_params,
)
from pipelines.nuclei.resample import resize_labels, scaled_shape
from pipelines.nuclei.segment import filter_and_renumber


class SegmenterConfig(UnitConfig):
    """Config of :class:`Segmenter`.

    Attributes:
        mpp: Resolution of the tiles the unit receives (the tiling's), in um/px.
        threshold: Nucleus probability above which a pixel is nucleus (semantic models).
        params: Overrides of :class:`pipelines.nuclei.segment.SegmentParams` (area range,
            opening, marker spacing).
    """

    mpp: float = Field(0.5, gt=0)
    threshold: float = Field(0.5, gt=0, lt=1)
    params: dict[str, float] = Field(default_factory=dict)


class Segmenter(ModelUnit):
    """Nucleus instances from a registered semantic or instance segmentation model."""

    name = "segmenter"
    version = "1"
    role = "nucleus_segmentation"
    Config = SegmenterConfig
    inputs = SEGMENTATION_INPUTS
    outputs = SEGMENTATION_OUTPUTS
    resources = Resources(num_cpus=1.0)
    batch_size = 8
    tasks: ClassVar[tuple[str, ...]] = ("semantic_segmentation", "instance_segmentation")
    required: ClassVar[tuple[str, ...]] = ("mpp",)

    def setup_model(self) -> None:
        """Validate the post-processing; find the background and border classes."""
        self._params = segment_params(self.config.params)
        names = [n.lower() for n in self.card.class_names]
        self._background = names.index("background") if "background" in names else 0
        self._border = names.index("border") if "border" in names else None

    def model_input(self, image: np.ndarray) -> np.ndarray:
        """One tile as the model reads it: its resolution (or input size), scale, CHW."""
        assert self.card.mpp is not None  # checked in setup
        height, width = self.card.input_size or scaled_shape(
            image.shape, self.config.mpp / self.card.mpp
        )
        view = np.ascontiguousarray(image[..., :3])
        if view.shape[:2] != (height, width):
            shrink = height < view.shape[0]
            method = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            view = cv2.resize(view, (width, height), interpolation=method)
        return self.normalise(view)

    def nucleus_maps(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Nucleus and border probability maps ``(H, W)`` of one semantic output ``(C, H, W)``."""
        if raw.shape[0] == 1:
            fg = raw[0] if self.card.outputs[:1] == ["probabilities"] else 1 / (1 + np.exp(-raw[0]))
            return fg.astype(np.float32), None
        probs = raw if self.card.outputs[:1] == ["probabilities"] else softmax(raw[None])[0]
        fg = 1.0 - probs[self._background]
        if self._border is None:
            return fg.astype(np.float32), None
        border = probs[self._border]
        return (fg - border).astype(np.float32), border.astype(np.float32)

    def _instances(self, raw: np.ndarray, shape: tuple[int, int], tissue: Any) -> np.ndarray:
        """Instance labels of one tile from the model's output for it."""
        mpp = self.config.mpp
        mask = None if tissue is None else np.asarray(tissue, bool)
        if self.card.task == "instance_segmentation":
            found = resize_labels(np.rint(raw.reshape(raw.shape[-2:])).astype(np.int32), shape)
            if mask is not None:
                found = np.where(mask, found, 0)
            return filter_and_renumber(found, mpp=mpp, params=self._params)
        fg, border = self.nucleus_maps(raw.reshape(-1, *raw.shape[-2:]))
        fg = _resize_map(fg, shape)
        if border is not None:
            return seeded_instances(
                fg,
                _resize_map(border, shape),
                mpp=mpp,
                threshold=self.config.threshold,
                params=self._params,
                tissue=mask,
            )
        return probability_to_instances(
            fg, mpp=mpp, threshold=self.config.threshold, params=self._params, tissue=mask
        )

    def __call__(self, batch: Batch) -> Batch:
        """Segment each tile into a label image."""
        images = batch["image"]
        tissue = batch.get("tissue")
        labels = np.zeros(images.shape[:3], np.int32)
        for i in range(len(images)):
            x = self.model_input(np.asarray(images[i]))[None]
            raw = np.asarray(self.predictor.predict(x), np.float32)[0]
            mask = None if tissue is None else tissue[i]
            labels[i] = self._instances(raw, images.shape[1:3], mask)
        counts = labels.reshape(len(labels), -1).max(axis=1, initial=0).astype(np.int32)
        return {"nucleus_labels": labels, "nucleus_count": counts}


def _resize_map(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A float map resized (bilinear) to ``shape``."""
    if values.shape == tuple(shape):
        return values
    out: np.ndarray = cv2.resize(values, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return out


__all__ = ["Segmenter", "SegmenterConfig"]
