"""A drift reference built from an image set (``pathray serve --drift-reference-set SET``).

Input drift is only flagged against a reference (:class:`serve.monitoring.Reference`). This
module samples tissue tiles from the slides of an image set known to be in distribution (the
training set, say) at the served pipeline's resolution, and builds the reference from their
colour and stain statistics.

Example:
    >>> with Catalog.open(url) as catalog:  # doctest: +SKIP
    ...     reference = reference_from_image_set(catalog, "training", mpp=0.5)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from pathray.errors import ConfigError
from serve.monitoring import Reference, build_reference, tile_features

#: Share of tissue a sampled tile must have to enter the reference.
MIN_TISSUE = 0.5


def _slide_tiles(
    catalog: Any, slide_id: int, mpp: float, size: int, per_slide: int
) -> Iterator[np.ndarray]:
    """Up to ``per_slide`` tissue tiles of one slide, spread over a regular grid."""
    from pathray.engine.plan import reachable_replica
    from pathray.slides.readers import open_reader

    slide = catalog.get_slide(slide_id)
    path, _ = reachable_replica(catalog, slide_id)
    down = mpp / slide.mpp if slide.mpp else 1.0
    side = max(round(size * down), 1)  # level-0 pixels per tile
    origins = [
        (x, y)
        for y in range(0, max(slide.height - side, 0) + 1, side)
        for x in range(0, max(slide.width - side, 0) + 1, side)
    ]
    # every k-th grid position, so the sample covers the slide rather than its first rows
    step = max(len(origins) // (4 * per_slide), 1)
    reader = open_reader(path)
    found = 0
    for x, y in origins[::step]:
        tile = reader.read_region(x, y, size, size, downsample=down)
        if tile_features(tile)["tissue_fraction"] >= MIN_TISSUE:
            found += 1
            yield tile
            if found == per_slide:
                return


def reference_from_image_set(
    catalog: Any, image_set: str, mpp: float, size: int = 256, per_slide: int = 32
) -> Reference:
    """The drift reference of the tissue tiles of an image set's slides.

    Args:
        catalog: An open :class:`~pathray.catalog.Catalog`.
        image_set: The image set's name.
        mpp: Resolution of the tiles (the served pipeline's ``tiling.mpp``).
        size: Tile side in pixels.
        per_slide: Most tiles taken from one slide.

    Raises:
        NotFoundError: The image set does not exist.
        ConfigError: Its slides hold no tissue tile.
    """
    tiles = [
        tile
        for slide in catalog.slides_in_set(image_set)
        for tile in _slide_tiles(catalog, slide.id, mpp, size, per_slide)
    ]
    if not tiles:
        raise ConfigError(
            f"Image set {image_set!r} must hold slides with tissue tiles to build a drift "
            "reference. Got none."
        )
    return build_reference(tiles)


__all__ = ["MIN_TISSUE", "reference_from_image_set"]
