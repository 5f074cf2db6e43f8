"""``crop_classifier``: any registered image classifier, run on a crop around each nucleus.

The seed's nucleus pipeline for models trained elsewhere: detect -> crop ``crop_size`` px (64)
around each nucleus centroid -> resize to the card's ``input_size`` (e.g. 224) -> the card's
normalisation -> classify. Each nucleus the tile's core owns becomes an object with its outline,
box and centroid, and the model's ``object_probabilities`` (a softmax of the logits, unless the
card's first output is ``probabilities``), ``object_class`` and ``object_label`` (from the card's
``class_names``), the same columns ``object_classifier`` writes.

The model is TorchScript or ONNX, with a card whose task is ``object_classification`` or
``tile_classification`` (an image classifier), its ``input_size`` and ``class_names``.
A card whose normalisation has four channels gets the nucleus mask (1 inside the nucleus) as the
fourth, as ``nucleus_crop_cnn`` trains with. The crop is cut at the unit's ``mpp`` (the
tiling's); the card's ``mpp`` is not used, since ``crop_size`` says how much tissue a crop holds.
The crops are those of ``nucleus_crop_cnn`` (:mod:`pipelines.classify.crops`).

Why a unit of its own rather than a mode of ``object_classifier``: ``object_classifier`` maps
object rows to object rows, and object rows carry no pixels; a crop classifier must read tiles
(``image``, ``nucleus_labels``) and emit the objects, like ``nucleus_features``. Units declare
their columns and granularity once, for the DAG inference, validation and the conformance suite,
so one unit cannot switch them by config; two names also let ``pathray pipelines infer`` and the
app's model picker offer each unit only the models it runs (feature models to
``object_classifier``, image models to ``crop_classifier``). Both have the role
``object_classification``, so a pipeline holds one of them.

Example (pipeline nodes)::

    - {id: nuclei, unit: nucleus_segmentation, after: [tissue]}
    - {id: cells, unit: crop_classifier, after: [nuclei], model: cell-types@champion}
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from pathray.units.base import PARENT_INDEX, Batch, Column, Resources, UnitConfig
from pathray.units.model_unit import ModelUnit
from pipelines.classify.crops import (
    GEOMETRY_OUTPUTS,
    empty_geometry,
    extract_crops,
    owned_nuclei,
    resize_crops,
)
from pipelines.classify.generic_objects import OBJECT_CLASS_OUTPUTS, label_objects

#: Channels of a card's normalisation that ask for the nucleus mask as a fourth channel.
_WITH_MASK = 4


class CropClassifierConfig(UnitConfig):
    """Config of :class:`CropClassifier`.

    Attributes:
        mpp: Resolution of the tiles the unit receives (the tiling's), in um/px.
        crop_size: Edge of the window cut around each nucleus centroid, in tile pixels.
        batch_size: Crops per forward pass.
        precision: Arithmetic of TorchScript models; must be one the card allows.
    """

    mpp: float = Field(0.5, gt=0)
    crop_size: int = Field(64, ge=8, le=1024)
    batch_size: int = Field(64, ge=1, le=4096)
    precision: Literal["float32", "float16", "bfloat16"] = "float32"


class CropClassifier(ModelUnit):
    """Per-nucleus class probabilities, class and label from a registered image classifier."""

    name = "crop_classifier"
    version = "1"
    role = "object_classification"
    Config = CropClassifierConfig
    inputs = (
        Column("image", "uint8", (None, None, 3)),
        Column("nucleus_labels", "int32", (None, None)),
    )
    outputs = (*GEOMETRY_OUTPUTS, *OBJECT_CLASS_OUTPUTS)
    resources = Resources(num_cpus=1.0)
    batch_size = 8
    tasks: ClassVar[tuple[str, ...]] = ("object_classification", "tile_classification")
    required: ClassVar[tuple[str, ...]] = ("input_size", "class_names")

    def setup_model(self) -> None:
        """Whether the model reads the nucleus mask as a fourth channel (its normalisation)."""
        norm = self.card.normalisation
        self.mask_channel = norm is not None and len(norm.mean) == _WITH_MASK

    def model_input(self, crop: np.ndarray) -> np.ndarray:
        """One crop as the model reads it: the card's input size, normalised, CHW."""
        assert self.card.input_size is not None  # checked in setup
        return self.normalise(resize_crops(crop[None], self.card.input_size)[0])

    def __call__(self, batch: Batch) -> Batch:
        """Classify the nuclei each tile's core owns; one object row per nucleus."""
        parts: dict[str, list[np.ndarray]] = {}
        crops = []
        for i in range(len(batch["nucleus_labels"])):
            nuclei = owned_nuclei(batch, i)
            if nuclei is None:
                continue
            crops.append(
                extract_crops(
                    batch["image"][i],
                    nuclei.labels,
                    nuclei.ids,
                    nuclei.centres,
                    size=self.config.crop_size,
                    mask_channel=self.mask_channel,
                )
            )
            parts.setdefault(PARENT_INDEX, []).append(np.full(len(nuclei.ids), i, np.int64))
            for name, values in nuclei.columns.items():
                parts.setdefault(name, []).append(values)
        # all the batch's crops in one go: tiles hold a few dozen nuclei, a forward pass more
        channels = 4 if self.mask_channel else 3
        size = self.config.crop_size
        every = np.concatenate(crops) if crops else np.zeros((0, size, size, channels), np.uint8)
        raw = self.predict_rows(every, self.config.batch_size, self.model_input)
        columns = {
            PARENT_INDEX: np.zeros(0, np.int64),
            **empty_geometry(),
        }
        out = {
            name: np.concatenate(parts[name]) if parts.get(name) else default
            for name, default in columns.items()
        }
        return {**out, **label_objects(self.probabilities(raw), self.classes)}


__all__ = ["CropClassifier", "CropClassifierConfig"]
