"""Do the tile embedder's neighbours share their tile's class or source more often than chance?

Real tiles of ``../shared/data`` (see its README), cut into crops that the embedder describes:

- tissue: the nine NCT-CRC-HE tiles (one per class, 224 px at 0.5 um/px), each cut into four
  112 px quadrants; a crop's class is its tile's. Chance that another crop shares it: 3/35.
- nuclei: the nucleus tiles of four sources (DSB 2018 H&E, DSB 2018 hematoxylin only, CryoNuSeg
  frozen sections, MoNuSeg), four 128 px crops of each tile (its quadrants' centres); a crop's
  source is its data set.

For each crop, its nearest neighbours among the other crops (cosine, exact) are looked up, and we
report how often the nearest one, and on average the ``k`` nearest, share the crop's class or
source, beside the chance of that (the share of other crops that do). Crops of the same tile are
left out of the neighbours of the nuclei sets, so a crop cannot find its own tile. Every variant
of the embedding is scored: the default (colour, texture, encoder) and each block alone.

Run: ``python -m benchmarks.embedding_quality``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image

from benchmarks.common import ROOT, print_table, write_result

SHARED = ROOT.parent / "shared" / "data"
VARIANTS: dict[str, dict[str, Any]] = {
    "default (colour + texture + encoder)": {},
    "colour only": {"texture_weight": 0.0, "encoder": False},
    "texture only": {"colour_weight": 0.0, "encoder": False},
    "encoder only": {"colour_weight": 0.0, "texture_weight": 0.0},
}


@dataclass
class Crops:
    """Crops with the group (class or source) and the tile each came from."""

    images: np.ndarray
    groups: np.ndarray
    tiles: np.ndarray


def _rgb(path: Path) -> np.ndarray:
    if path.suffix in (".tif", ".tiff"):
        image = tifffile.imread(path)
    else:
        image = np.asarray(Image.open(path).convert("RGB"))
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def _quadrant_crops(image: np.ndarray, size: int) -> list[np.ndarray]:
    """Four ``size`` crops centred on the image's quadrants' centres."""
    h, w = image.shape[:2]
    crops = []
    for cy in (h // 4, 3 * h // 4):
        for cx in (w // 4, 3 * w // 4):
            y0 = int(np.clip(cy - size // 2, 0, h - size))
            x0 = int(np.clip(cx - size // 2, 0, w - size))
            crops.append(image[y0 : y0 + size, x0 : x0 + size])
    return crops


def tissue_crops() -> Crops:
    """The NCT-CRC-HE tiles' quadrants, grouped by class."""
    images, groups, tiles = [], [], []
    for i, path in enumerate(sorted((SHARED / "tissue" / "nct-crc-he").glob("*.tif"))):
        for crop in _quadrant_crops(_rgb(path), 112):
            images.append(crop)
            groups.append(path.name.split("-")[0])
            tiles.append(i)
    return Crops(np.stack(images), np.array(groups), np.array(tiles))


def nucleus_crops() -> Crops:
    """Crops of the nucleus tiles, grouped by source."""
    root = SHARED / "nuclei"
    sources = {
        "dsb-he": sorted((root / "dsb2018-histology" / "he").glob("*/images/*.png")),
        "dsb-hematoxylin": sorted(
            (root / "dsb2018-histology" / "hematoxylin_only").glob("*/images/*.png")
        ),
        "cryonuseg": sorted((root / "cryonuseg-sample").glob("*/*.tif")),
        "monuseg": sorted((root / "monuseg-train").glob("*.tif")),
    }
    images, groups, tiles = [], [], []
    tile = 0
    for source, paths in sources.items():
        for path in paths:
            image = _rgb(path)
            if min(image.shape[:2]) < 128:
                continue
            for crop in _quadrant_crops(image, 128):
                images.append(crop)
                groups.append(source)
                tiles.append(tile)
            tile += 1
    return Crops(np.stack(images), np.array(groups), np.array(tiles))


def embed(images: np.ndarray, config: dict[str, Any]) -> np.ndarray:
    """The tile embedder's vectors of crops (tissue from the tissue-mask unit)."""
    from pipelines.embed.units import TileEmbedder
    from pipelines.tissue.units import TissueMaskUnit

    tissue = TissueMaskUnit()({"image": images})["tissue"]
    return TileEmbedder({"mpp": 0.5, **config})({"image": images, "tissue": tissue})["embedding"]


def agreement(
    vectors: np.ndarray, crops: Crops, k: int, other_tiles_only: bool
) -> dict[str, float]:
    """How often neighbours share the group, and the chance of it."""
    scores = vectors @ vectors.T
    n = len(vectors)
    same_group = crops.groups[:, None] == crops.groups[None, :]
    allowed = ~np.eye(n, dtype=bool)
    if other_tiles_only:
        allowed &= crops.tiles[:, None] != crops.tiles[None, :]
    scores = np.where(allowed, scores, -np.inf)
    order = np.argsort(-scores, axis=1)[:, :k]
    hits = np.take_along_axis(same_group, order, axis=1)
    chance = (same_group & allowed).sum(axis=1) / allowed.sum(axis=1)
    return {
        "top-1 agree": round(float(hits[:, 0].mean()), 3),
        f"top-{k} agree": round(float(hits.mean()), 3),
        "chance": round(float(chance.mean()), 3),
    }


def main(argv: list[str] | None = None) -> None:
    """Score every variant on both sets and print (and record) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", type=int, default=3)
    args = parser.parse_args(argv)
    sets = {"tissue classes (NCT-CRC-HE)": (tissue_crops(), False)}
    sets["nucleus-tile sources"] = (nucleus_crops(), True)
    rows = []
    for set_name, (crops, other_tiles) in sets.items():
        for variant, config in VARIANTS.items():
            vectors = embed(crops.images, config)
            rows.append(
                {
                    "crops": f"{set_name}: {len(crops.images)}",
                    "embedding": variant,
                    **agreement(vectors, crops, args.k, other_tiles),
                }
            )
    print_table(rows, title="tile embedder: neighbours sharing class / source")
    write_result("embedding_quality", {"k": args.k, "rows": rows})


if __name__ == "__main__":
    main()
