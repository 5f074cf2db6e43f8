"""Training data for the trainable units: labelled tiles, nucleus tables and augmentation.

- :func:`synthetic_tiles`: tiles of synthetic H&E slides (:class:`~pathray.slides.synthetic.
  SyntheticHE`) with their exact instance label images (pixel-centre rule, the renderer's own
  rasterisation) and the class of every instance.
- :func:`dsb2018_tiles`: the real DSB 2018 histology tiles of the shared data folder with their
  instance masks (``instance_masks_derived/<id>_inst.png``) and estimated resolutions.
- :func:`cryonuseg_tiles`: the two partly outlined CryoNuSeg crops; pixels outside the outlined
  area (the nuclei dilated by 2 um) are labelled ``-1``, "unknown", which the U-Net's loss and
  the benchmarks ignore.
- :func:`monuseg_tiles`: the MoNuSeg 2018 training tiles (40x H&E, several organs) with their
  ImageScope XML outlines painted into instance label images.
- :func:`resample_tiles`: real tiles resampled to one resolution (labels by nearest neighbour).
- :func:`nucleus_table`: the feature columns of :class:`~pipelines.nuclei.units.NucleusFeatures`
  measured on reference instances, with their classes (training set of the object classifier).
- :func:`stain_jitter`, :func:`random_dihedral`, :func:`random_crop`: augmentation, re-exported
  from :mod:`pipelines.nuclei.augment`.

Everything is a function of its arguments and ``seed``.

Example:
    >>> tiles = synthetic_tiles(2, 64, mpp=0.5, seed=0)
    >>> tiles.images.shape, tiles.instance_labels.dtype
    ((2, 64, 64, 3), dtype('int32'))
    >>> int(tiles.instance_labels[0].max()) == len(tiles.class_labels[0])
    True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pathray.errors import ConfigError, NotFoundError
from pathray.slides.synthetic import DEFAULT_CLASSES, SyntheticHE
from pathray.slides.synthetic_render import nucleus_labels

# re-exported from their first home, for the units and notebooks that import them from here
from pipelines.nuclei.augment import random_crop as random_crop
from pipelines.nuclei.augment import random_dihedral as random_dihedral
from pipelines.nuclei.augment import stain_jitter as stain_jitter

#: Estimated microns per pixel of the DSB 2018 histology tiles, by tile width (see
#: ``benchmarks/nuclei_quality.py``: calibrated on the median nucleus area).
DSB_MPP = {680: 0.13, 348: 0.26}
#: Resolution of the CryoNuSeg crops (40x).
CRYO_MPP = 0.25
#: Resolution of the MoNuSeg tiles (40x; the files declare none).
MONUSEG_MPP = 0.25
#: Margin around the outlined CryoNuSeg nuclei inside which the outlines are taken as complete.
CRYO_MARGIN_UM = 2.0
#: Feature columns of ``NucleusFeatures`` (the object classifier's inputs).
FEATURE_COLUMNS = (
    "area_um2",
    "perimeter_um",
    "eccentricity",
    "solidity",
    "hematoxylin_mean",
    "eosin_mean",
)


class LabelledTiles(NamedTuple):
    """Tiles with instance labels and per-instance classes.

    Attributes:
        images: ``(N, H, W, 3)`` uint8 RGB.
        instance_labels: ``(N, H, W)`` int32, 0 background, ``1..K`` the nuclei of each tile.
        class_labels: Per tile, an object array of ``K`` class names: ``class_labels[i][k - 1]``
            is the class of instance ``k`` of tile ``i``.
    """

    images: np.ndarray
    instance_labels: np.ndarray
    class_labels: list[np.ndarray]


class RealTiles(NamedTuple):
    """Real tiles of varying sizes with instance labels.

    Attributes:
        images: ``(H, W, 3)`` uint8 RGB tiles.
        instance_labels: ``(H, W)`` int32 instance label images.
        mpp: Estimated microns per pixel of each tile.
        names: Tile identifiers.
    """

    images: list[np.ndarray]
    instance_labels: list[np.ndarray]
    mpp: list[float]
    names: list[str]


def shared_data_root() -> Path:
    """The shared data folder (``$PATHRAY_SHARED_DATA``, else ``../shared/data`` of the repo)."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    return Path(os.environ.get("PATHRAY_SHARED_DATA", default))


def synthetic_tiles(
    n: int,
    size: int,
    mpp: float = 0.5,
    seed: int = 0,
    *,
    min_tissue: float = 0.6,
    classes: Sequence[str] = DEFAULT_CLASSES,
    slide_size: int = 4096,
) -> LabelledTiles:
    """Render labelled tiles of a synthetic slide drawn at ``mpp``.

    Tiles are cut from a grid of ``size`` px cells of one ``slide_size`` px slide of seed
    ``seed`` (so two seeds give disjoint data); the cells mostly covered by tissue are taken in
    a seeded random order.

    Args:
        n: Number of tiles.
        size: Tile edge in pixels.
        mpp: Microns per pixel of the slide (nucleus sizes follow it).
        seed: Slide and order seed.
        min_tissue: Smallest tissue fraction of a tile.
        classes: Nucleus classes drawn.
        slide_size: Edge of the synthetic slide in pixels.

    Returns:
        The :class:`LabelledTiles`.

    Raises:
        ConfigError: If the slide has fewer than ``n`` such tiles.
    """
    he = SyntheticHE(slide_size, slide_size, mpp=mpp, seed=seed, classes=classes)
    grid = slide_size // size
    probe = max(size // 8, 1)
    tissue = he.tissue_mask(0, 0, grid * size, grid * size, downsample=probe)
    per_cell = size // probe
    fraction = (
        tissue[: grid * per_cell, : grid * per_cell]
        .reshape(grid, per_cell, grid, per_cell)
        .mean(axis=(1, 3))
    )
    cells = np.argwhere(fraction >= min_tissue)
    if len(cells) < n:
        raise ConfigError(
            f"n must be at most {len(cells)} for {size} px tiles of a {slide_size} px slide. "
            f"Got {n} instead."
        )
    order = np.random.default_rng(seed).permutation(len(cells))[:n]
    images = np.zeros((n, size, size, 3), np.uint8)
    labels = np.zeros((n, size, size), np.int32)
    names: list[np.ndarray] = []
    for i, (row, col) in enumerate(cells[order]):
        x, y = int(col) * size, int(row) * size
        images[i] = he.render_region(x, y, size, size)
        raw, drawn = nucleus_labels(he, x, y, size, size)
        present = np.flatnonzero(np.bincount(raw.ravel(), minlength=len(drawn.classes) + 1))
        present = present[present > 0]
        lut = np.zeros(len(drawn.classes) + 1, np.int32)
        lut[present] = np.arange(1, len(present) + 1, dtype=np.int32)
        labels[i] = lut[raw]
        names.append(np.array([he.classes[int(c)] for c in drawn.classes[present - 1]], object))
    return LabelledTiles(images, labels, names)


def dsb2018_tiles(stain: str = "he", root: str | Path | None = None) -> RealTiles:
    """The DSB 2018 histology tiles of one stain group, with their instance masks.

    Args:
        stain: ``"he"`` or ``"hematoxylin_only"``.
        root: The shared data folder (default :func:`shared_data_root`).

    Returns:
        The :class:`RealTiles`, sorted by tile id.

    Raises:
        NotFoundError: If the folder is missing.
    """
    from PIL import Image

    folder = Path(root or shared_data_root()) / "nuclei" / "dsb2018-histology" / stain
    masks = folder / "instance_masks_derived"
    if not masks.is_dir():
        raise NotFoundError(f"No DSB 2018 instance masks at {masks}.")
    out = RealTiles([], [], [], [])
    for tile in sorted(p for p in folder.iterdir() if (p / "images").is_dir()):
        image = np.asarray(Image.open(tile / "images" / f"{tile.name}.png").convert("RGB"))
        label = np.asarray(Image.open(masks / f"{tile.name}_inst.png")).astype(np.int32)
        out.images.append(image)
        out.instance_labels.append(label)
        out.mpp.append(DSB_MPP.get(image.shape[1], 0.25))
        out.names.append(tile.name)
    return out


def cryonuseg_tiles(root: str | Path | None = None) -> RealTiles:
    """The CryoNuSeg crops with their instance masks, ``-1`` outside the outlined area.

    Only part of each crop is outlined: the outlined nuclei dilated by :data:`CRYO_MARGIN_UM`
    are taken as the area where the outlines are complete; elsewhere the label is ``-1``.

    Args:
        root: The shared data folder (default :func:`shared_data_root`).

    Returns:
        The :class:`RealTiles` (0.25 um/px), sorted by slide name.

    Raises:
        NotFoundError: If the folder is missing.
    """
    import cv2
    from PIL import Image

    folder = Path(root or shared_data_root()) / "nuclei" / "cryonuseg-sample"
    if not folder.is_dir():
        raise NotFoundError(f"No CryoNuSeg sample at {folder}.")
    radius = round(CRYO_MARGIN_UM / CRYO_MPP)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    out = RealTiles([], [], [], [])
    for tile in sorted(p for p in folder.iterdir() if p.is_dir()):
        image = np.asarray(Image.open(next(tile.glob("*.tif"))).convert("RGB"))
        label = np.asarray(Image.open(tile / "instance_mask_derived.png")).astype(np.int32)
        known = cv2.dilate((label > 0).astype(np.uint8), disk).astype(bool)
        out.images.append(image)
        out.instance_labels.append(np.where(known, label, -1).astype(np.int32))
        out.mpp.append(CRYO_MPP)
        out.names.append(tile.name)
    return out


def monuseg_tiles(
    root: str | Path | None = None,
    names: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> RealTiles:
    """The MoNuSeg 2018 training tiles with their outlines as instance label images.

    Each ``<id>.xml`` (Aperio ImageScope, one region per nucleus, tile pixels) is read with
    :func:`pathray.formats.imagescope.parse_imagescope` and painted with
    :func:`pathray.formats.masks.rasterize` (pixel-centre rule; a later outline wins where two
    overlap). The reader skips regions of fewer than three vertices (a few files hold one: no
    area) and repairs self-intersecting outlines.

    Args:
        root: The shared data folder (default :func:`shared_data_root`).
        names: Tile ids to load (default: every tile of the folder).
        exclude: Tile ids to leave out (held-out tiles).

    Returns:
        The :class:`RealTiles` (:data:`MONUSEG_MPP`), sorted by tile id.

    Raises:
        NotFoundError: If the folder or a named tile is missing.
    """
    import warnings

    from PIL import Image

    from pathray.formats.imagescope import read_imagescope
    from pathray.formats.masks import rasterize

    folder = Path(root or shared_data_root()) / "nuclei" / "monuseg-train"
    if not folder.is_dir():
        raise NotFoundError(f"No MoNuSeg tiles at {folder}.")
    ids = sorted(p.stem for p in folder.glob("*.tif")) if names is None else sorted(names)
    ids = [tile_id for tile_id in ids if tile_id not in set(exclude)]
    out = RealTiles([], [], [], [])
    for tile_id in ids:
        if not (folder / f"{tile_id}.tif").is_file():
            raise NotFoundError(f"MoNuSeg tile {tile_id!r} must be in {folder}. It is missing.")
        image = np.asarray(Image.open(folder / f"{tile_id}.tif").convert("RGB"))
        with warnings.catch_warnings():  # the repaired-outline warning, once per file
            warnings.simplefilter("ignore")
            records = read_imagescope(folder / f"{tile_id}.xml")
        out.images.append(image)
        out.instance_labels.append(rasterize(records, image.shape[:2]))
        out.mpp.append(MONUSEG_MPP)
        out.names.append(tile_id)
    return out


def resample_tiles(tiles: RealTiles, mpp: float) -> RealTiles:
    """Resample real tiles to one resolution (area/bilinear for images, nearest for labels).

    Args:
        tiles: Tiles at their own resolutions.
        mpp: Target microns per pixel.

    Returns:
        The tiles at ``mpp`` (names kept).
    """
    from pipelines.nuclei.resample import resize_image, resize_labels

    out = RealTiles([], [], [], list(tiles.names))
    for image, labels, own in zip(tiles.images, tiles.instance_labels, tiles.mpp, strict=True):
        factor = own / mpp
        out.images.append(resize_image(image, factor))
        out.instance_labels.append(resize_labels(labels, out.images[-1].shape[:2]))
        out.mpp.append(mpp)
    return out


def real_nucleus_sets(root: str | Path | None = None) -> dict[str, RealTiles]:
    """Every real nucleus set of the shared data: ``dsb-he``, ``dsb-hematoxylin``, ``cryonuseg``."""
    return {
        "dsb-he": dsb2018_tiles("he", root),
        "dsb-hematoxylin": dsb2018_tiles("hematoxylin_only", root),
        "cryonuseg": cryonuseg_tiles(root),
    }


def nucleus_table(
    images: Sequence[np.ndarray],
    instance_labels: Sequence[np.ndarray],
    class_labels: Sequence[np.ndarray],
    *,
    mpp: float,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Feature columns of every reference nucleus and its class.

    Args:
        images: RGB tiles.
        instance_labels: Their instance label images.
        class_labels: Per tile, the class of instance ``k`` at index ``k - 1``.
        mpp: Microns per pixel.

    Returns:
        ``(columns, classes)``: :data:`FEATURE_COLUMNS` -> float32 arrays, and the class names.
    """
    from pipelines.nuclei.features import nucleus_features

    parts: dict[str, list[np.ndarray]] = {name: [] for name in FEATURE_COLUMNS}
    classes: list[np.ndarray] = []
    for image, labels, names in zip(images, instance_labels, class_labels, strict=True):
        feats = nucleus_features(np.asarray(labels), np.asarray(image), mpp=mpp)
        for name in FEATURE_COLUMNS:
            parts[name].append(np.asarray(feats[name], np.float32))
        classes.append(np.asarray(names, object)[np.asarray(feats["label"], np.int64) - 1])
    columns = {name: np.concatenate(values) for name, values in parts.items()}
    return columns, np.concatenate(classes) if classes else np.zeros(0, object)


#: Tiny configs of the trainable units: seconds to train, for tests, demos and conformance runs.
TINY_CONFIGS: dict[str, dict[str, object]] = {
    "nucleus_pixel_classifier": {"n_estimators": 5, "max_depth": 8, "max_samples": 4000},
    "nucleus_unet": {"channels": (4, 8), "iterations": 3, "crop_size": 32, "batch": 2},
    "nucleus_object_classifier": {"n_estimators": 10},
    "nucleus_crop_cnn": {"input_size": 16, "widths": (4, 8), "iterations": 3, "batch": 8},
    # the label space is fixed so that the per-dataset columns are declared (declared_outputs)
    "nucleus_multihead_classifier": {
        "datasets": {"synthetic": DEFAULT_CLASSES},
        "hidden": (8,),
        "max_iterations": 20,
    },
    "nucleus_multihead_crop_cnn": {
        "datasets": {"synthetic": DEFAULT_CLASSES},
        "input_size": 16,
        "widths": (4,),
        "max_iterations": 3,
        "batch": 8,
    },
}


def example_model(
    name: str, folder: str | Path, *, seed: int = 0, tiles: int = 3, size: int = 96
) -> tuple[dict[str, object], dict[str, str]]:
    """Train a tiny model of a trainable unit on synthetic tiles and save it.

    Args:
        name: A unit of :data:`TINY_CONFIGS`.
        folder: Where to save the model.
        seed: Seed of the data and of the model.
        tiles: Synthetic tiles to learn from.
        size: Their edge in pixels (at 0.5 um/px).

    Returns:
        ``(config, artifacts)`` to build the unit with: ``cls(config, artifacts)``.

    Raises:
        NotFoundError: If ``name`` has no tiny config.
    """
    from pathray.units.registry import get_unit
    from pathray.units.trainable import TrainableUnit

    if name not in TINY_CONFIGS:
        raise NotFoundError(f"Unit must be one of {sorted(TINY_CONFIGS)}. Got {name!r} instead.")
    cls = get_unit(name)
    assert issubclass(cls, TrainableUnit)
    unit = cls({**TINY_CONFIGS[name], "seed": seed})
    data = synthetic_tiles(tiles, size, mpp=0.5, seed=seed)
    unit.fit(*unit.training_set(*data, mpp=0.5)).save(folder)
    return unit.get_params(), {"model": str(folder)}


def write_object_classifier(
    folder: str | Path, *, seed: int = 0, tiles: int = 3, size: int = 96, fmt: str = "json"
) -> Path:
    """Train an XGBoost nucleus classifier on synthetic nuclei; write it with its card.

    The booster learns the classes of the synthetic slide's nuclei from the
    :data:`FEATURE_COLUMNS` that ``nucleus_features`` writes, and is saved with
    ``save_model`` (``model.json`` or ``model.ubj``) beside a ``card.json`` naming those
    columns: a folder ``pathray models register`` takes as it is.

    Args:
        folder: Where to write ``model.<fmt>`` and ``card.json``.
        seed: Seed of the data and of the booster.
        tiles: Synthetic tiles (at 0.5 um/px) to learn from.
        size: Their edge in pixels.
        fmt: ``"json"`` or ``"ubj"``.

    Returns:
        The folder.
    """
    import json

    import xgboost as xgb

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = synthetic_tiles(tiles, size, mpp=0.5, seed=seed)
    columns, names = nucleus_table(
        list(data.images), list(data.instance_labels), data.class_labels, mpp=0.5
    )
    classes, codes = np.unique(names.astype(str), return_inverse=True)
    matrix = np.column_stack([columns[name] for name in FEATURE_COLUMNS])
    booster = xgb.train(
        {"objective": "multi:softprob", "num_class": len(classes), "max_depth": 3, "seed": seed},
        xgb.DMatrix(matrix, label=codes),
        num_boost_round=5,
    )
    booster.save_model(str(folder / f"model.{fmt}"))
    card = {
        "task": "object_classification",
        "format": f"xgboost_{fmt}",
        "file": f"model.{fmt}",
        "features": list(FEATURE_COLUMNS),
        "class_names": classes.tolist(),
        "outputs": ["probabilities"],
        "source": "pipelines.training_data.write_object_classifier (synthetic nuclei)",
    }
    (folder / "card.json").write_text(json.dumps(card, indent=2))
    return folder
