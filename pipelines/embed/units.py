"""The tile embedder: one fixed-length vector per tile, for similarity search.

Its output column ``embedding`` (float32, ``(EMBEDDING_DIM,)``, unit L2 norm) is stored in the
run's tiles dataset as a fixed-size list, which :mod:`pathray.services.search` indexes. It needs
no download: the vector joins stain colour and texture descriptors (:mod:`pipelines.embed.features`)
with the averaged encoder activations of the nucleus U-Net shipped in the repository (or of the
U-Net folder given as ``artifacts["model"]``, with the same channels).

Example:
    >>> import numpy as np
    >>> unit = TileEmbedder({"encoder": False})
    >>> images = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), np.uint8)
    >>> out = unit({"image": images, "tissue": np.ones((2, 64, 64), bool)})
    >>> out["embedding"].shape, float(np.linalg.norm(out["embedding"][0]).round(4))
    ((2, 176), 1.0)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from pathray.errors import ConfigError
from pathray.units.base import Batch, Column, Resources, Unit, UnitConfig
from pipelines.embed.features import (
    COLOUR_DIM,
    ENCODER_CHANNELS,
    ENCODER_DIM,
    HAND_DIM,
    TEXTURE_DIM,
    colour_features,
    encoder_features,
    texture_features,
    unit_norm,
)
from pipelines.nuclei.resample import resize_image

#: Length of the tile embedder's vectors.
EMBEDDING_DIM = HAND_DIM + ENCODER_DIM


class TileEmbedderConfig(UnitConfig):
    """Config of :class:`TileEmbedder`.

    Attributes:
        mpp: Resolution the tiles arrive at.
        encoder: Whether to include the U-Net encoder block (zeros otherwise: the length stays).
        colour_weight: Weight of the colour block before the final normalisation.
        texture_weight: Weight of the texture block.
        encoder_weight: Weight of the encoder block.
    """

    mpp: float = Field(0.5, gt=0)
    encoder: bool = True
    colour_weight: float = Field(1.0, ge=0)
    texture_weight: float = Field(1.0, ge=0)
    encoder_weight: float = Field(1.0, ge=0)


class TileEmbedder(Unit):
    """A unit-norm descriptor of each tile: stain colour, texture and U-Net encoder features."""

    name = "tile_embedder"
    version = "1"
    role = "embedding"
    Config = TileEmbedderConfig
    inputs = (
        Column("image", "uint8", (None, None, 3)),
        Column("tissue", "bool", (None, None)),
    )
    outputs = (
        Column(
            "embedding",
            "float32",
            (EMBEDDING_DIM,),
            description=(
                f"unit-norm tile descriptor: colour ({COLOUR_DIM}), texture ({TEXTURE_DIM}), "
                f"U-Net encoder ({ENCODER_DIM})"
            ),
        ),
    )
    resources = Resources(num_cpus=1.0)
    batch_size = 16

    def setup(self) -> None:
        """Load the U-Net whose encoder the vectors use (the shipped one unless given)."""
        self._model = None
        self._model_mpp = self.config.mpp
        if not self.config.encoder:
            return
        from pipelines.nuclei.train_default import DEFAULT_FOLDER
        from pipelines.nuclei.unet import NucleusUNet

        folder = Path(self.artifacts.get("model") or DEFAULT_FOLDER)
        unet = NucleusUNet({"device": "cpu"}, {"model": str(folder)})
        channels = tuple(unet.config.channels)
        if channels != ENCODER_CHANNELS:
            raise ConfigError(
                f"The embedding model's U-Net channels must be {ENCODER_CHANNELS}. "
                f"Got {channels} instead."
            )
        self._model = unet.model_
        self._model_mpp = unet._work_mpp

    def __call__(self, batch: Batch) -> Batch:
        """Describe each tile."""
        images = np.asarray(batch["image"])[..., :3]
        tissue = np.asarray(batch["tissue"], bool)
        c = self.config
        n = len(images)
        out = np.zeros((n, EMBEDDING_DIM), np.float32)
        for i in range(n):
            out[i, :COLOUR_DIM] = c.colour_weight * colour_features(images[i], tissue[i])
            out[i, COLOUR_DIM:HAND_DIM] = c.texture_weight * texture_features(images[i])
        if self._model is not None and n:
            scale = c.mpp / self._model_mpp
            scaled = np.stack([resize_image(np.ascontiguousarray(im), scale) for im in images])
            out[:, HAND_DIM:] = c.encoder_weight * encoder_features(self._model, scaled)
        return {"embedding": unit_norm(out)}


__all__ = ["EMBEDDING_DIM", "TileEmbedder", "TileEmbedderConfig"]
