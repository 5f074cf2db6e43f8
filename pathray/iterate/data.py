"""Training data of an iteration: slides split by slide, and labelled tiles cut from them.

- :func:`split_slides`: training and validation slides, never one slide in both (tiles of one
  slide are correlated, so a tile-level split would flatter the validation metrics).
- :func:`label_sources`: per training slide, the annotation set to learn from: its newest
  accepted correction set when there is one (a clinician's fix of a run's results), else the
  reference.
- :func:`labelled_tiles`: tiles read from the slides at the pipeline's resolution, with the
  annotations painted into instance label images.

Example:
    >>> split_slides([4, 1, 3, 2], validation=0.5, seed=0)  # doctest: +SKIP
    Split(training=(1, 4), validation=(2, 3))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import shapely

from pathray.catalog import Catalog
from pathray.engine.plan import plan_slide
from pathray.errors import ConfigError
from pathray.formats.catalog_io import REGION_ROLE
from pathray.formats.masks import rasterize
from pathray.pipeline.spec import TilingSpec
from pathray.slides.source import read_tiles


@dataclass(frozen=True)
class Split:
    """Slides split into training and validation (held out), by slide.

    Attributes:
        training: Slide ids to learn and search on.
        validation: Slide ids the versions are judged on.
    """

    training: tuple[int, ...]
    validation: tuple[int, ...]


def split_slides(
    slide_ids: Sequence[int],
    *,
    validation: float = 0.5,
    seed: int = 0,
    validation_slides: Sequence[int] | None = None,
) -> Split:
    """Split slides into training and validation slides; no slide is in both.

    Args:
        slide_ids: The slides with reference annotations.
        validation: Fraction of slides held out (at least one slide each side).
        seed: Seed of the shuffle (the same slides and seed give the same split).
        validation_slides: The held-out slides, chosen by hand (overrides the fraction).

    Returns:
        The split, each side sorted.

    Raises:
        ConfigError: Fewer than two slides, a fraction outside (0, 1), or chosen validation
            slides that are not among the slides or leave none for training.
    """
    ids = sorted({int(s) for s in slide_ids})
    if len(ids) < 2:
        raise ConfigError(
            "An iteration needs at least two annotated slides (one to learn from, one to judge "
            f"on). Got {len(ids)} instead."
        )
    if validation_slides is not None:
        held = sorted({int(s) for s in validation_slides})
        unknown = sorted(set(held) - set(ids))
        if unknown or not held or len(held) == len(ids):
            raise ConfigError(
                f"Validation slides must be some, not all, of the annotated slides {ids}. "
                f"Got {held} instead."
            )
    else:
        if not 0 < validation < 1:
            raise ConfigError(f"validation must be in (0, 1). Got {validation!r} instead.")
        count = min(max(round(validation * len(ids)), 1), len(ids) - 1)
        order = np.random.default_rng(seed).permutation(len(ids))
        held = sorted(ids[i] for i in order[:count])
    return Split(tuple(s for s in ids if s not in held), tuple(held))


def annotated_slides(catalog: Catalog, image_set: str, reference: str) -> list[int]:
    """Ids of the image set's slides with at least one reference annotation."""
    catalog.get_annotation_set(reference)
    return [
        s.id for s in catalog.slides_in_set(image_set) if catalog.count_annotations(reference, s.id)
    ]


def label_sources(
    catalog: Catalog,
    slide_ids: Sequence[int],
    reference: str,
    corrections: Sequence[str] | None = None,
) -> dict[int, str]:
    """The annotation set each slide learns from: its newest accepted correction, else reference.

    Args:
        catalog: The catalog.
        slide_ids: The training slides.
        reference: The reference annotation set.
        corrections: Names of the accepted correction sets; None accepts every annotation set
            of kind ``correction``.

    Returns:
        Slide id -> annotation set name (slides with neither are left out).

    Raises:
        NotFoundError: A named correction set does not exist.
        ConfigError: A named set is not a correction set.
    """
    if corrections is None:
        sets = [a.name for a in catalog.list_annotation_sets(kind="correction")]
    else:
        sets = []
        for name in corrections:
            if catalog.get_annotation_set(name).kind != "correction":
                raise ConfigError(
                    f"Accepted corrections must be correction annotation sets. Got {name!r} of "
                    f"kind {catalog.get_annotation_set(name).kind!r} instead."
                )
            sets.append(name)
    sources: dict[int, str] = {}
    for slide_id in slide_ids:
        fixed = [name for name in sets if catalog.count_annotations(name, slide_id)]
        if fixed:
            sources[slide_id] = fixed[-1]  # sets come oldest first: the newest fix wins
        elif catalog.count_annotations(reference, slide_id):
            sources[slide_id] = reference
    return sources


@dataclass(frozen=True)
class TileSet:
    """Labelled tiles.

    Attributes:
        batch: A tile batch as the engine builds it (key columns plus ``image``).
        instance_labels: ``(N, H, W)`` int32 instance label images.
        class_labels: Per tile, the class of instance ``k`` at index ``k - 1``.
        mpp: Microns per pixel of the tiles.
        sources: Slide id -> the annotation set its labels came from.
    """

    batch: dict[str, np.ndarray]
    instance_labels: np.ndarray
    class_labels: list[np.ndarray]
    mpp: float
    sources: dict[int, str]

    @property
    def images(self) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 RGB tiles."""
        return self.batch["image"]

    def __len__(self) -> int:
        return len(self.instance_labels)


def _paint(
    geoms: np.ndarray, labels: Sequence[str | None], x: float, y: float, size: int, down: float
) -> tuple[np.ndarray, np.ndarray]:
    """Instance labels of one tile from level-0 geometries (those meeting it), and their classes."""
    box = shapely.box(x, y, x + size * down, y + size * down)
    hits = np.flatnonzero(shapely.intersects(geoms, box)) if len(geoms) else np.zeros(0, int)
    local = [shapely.transform(geoms[i], lambda xy: (xy - np.array([x, y])) / down) for i in hits]
    image = rasterize(local, (size, size))
    classes = np.empty(len(hits), dtype=object)
    classes[:] = [labels[int(i)] or "nucleus" for i in hits]
    # renumber 1..K over the instances that kept pixels, so label k is classes[k - 1]
    present = np.flatnonzero(np.bincount(image.ravel(), minlength=len(hits) + 1))
    present = present[present > 0]
    lut = np.zeros(len(hits) + 1, np.int32)
    lut[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    return lut[image], classes[present - 1]


def labelled_tiles(
    catalog: Catalog,
    sources: Mapping[int, str],
    tiling: TilingSpec,
    *,
    tiles_per_slide: int = 8,
    min_tissue: float = 0.5,
    seed: int = 0,
) -> TileSet:
    """Read tiles of annotated slides with their annotations as instance label images.

    Tiles are cut from a grid without overlap at the tiling's ``mpp`` and ``size``; among those
    with enough tissue (and inside the annotated region, when the reference outlines one),
    ``tiles_per_slide`` are taken in a seeded random order.

    Args:
        catalog: The catalog.
        sources: Slide id -> annotation set to paint (see :func:`label_sources`).
        tiling: The pipeline's tiling (resolution and tile size).
        tiles_per_slide: Tiles taken per slide at most.
        min_tissue: Smallest tissue fraction of a tile.
        seed: Seed of the tile choice.

    Returns:
        The labelled tiles.

    Raises:
        ConfigError: No slide yields a tile.
    """
    grid = TilingSpec(mpp=tiling.mpp, size=tiling.size, overlap=0, min_tissue=min_tissue)
    rng = np.random.default_rng(seed)
    batches: list[dict[str, np.ndarray]] = []
    labels: list[np.ndarray] = []
    classes: list[np.ndarray] = []
    for slide_id, set_name in sorted(sources.items()):
        refs = plan_slide(catalog, slide_id, grid)
        found = catalog.query_annotations(set_name, slide_id)
        objects = [a for a in found if a.properties.get("role") != REGION_ROLE]
        regions = [a.geometry for a in found if a.properties.get("role") == REGION_ROLE]
        if regions and refs.num_rows:
            area = shapely.union_all(regions)
            boxes = shapely.box(
                refs["x"].to_numpy(),
                refs["y"].to_numpy(),
                refs["x"].to_numpy() + refs["width"].to_numpy(),
                refs["y"].to_numpy() + refs["height"].to_numpy(),
            )
            refs = refs.filter(shapely.contains(area, boxes))
        if not refs.num_rows or not objects:
            continue
        take = np.sort(rng.permutation(refs.num_rows)[:tiles_per_slide])
        batch = read_tiles(refs.take(take))
        geoms = np.array([a.geometry for a in objects], dtype=object)
        names = [a.label for a in objects]
        for i in range(len(take)):
            painted, kinds = _paint(
                geoms,
                names,
                float(batch["x"][i]),
                float(batch["y"][i]),
                tiling.size,
                float(batch["downsample"][i]),
            )
            labels.append(painted)
            classes.append(kinds)
        batches.append(batch)
    if not batches:
        raise ConfigError(
            f"Training needs annotated tiles with at least {min_tissue:.0%} tissue. The slides "
            f"{sorted(sources)} gave none."
        )
    merged = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
    return TileSet(merged, np.stack(labels), classes, tiling.mpp, dict(sources))
