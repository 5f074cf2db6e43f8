"""Quality and speed of the classical nucleus segmentation (pipelines.nuclei.segment).

Scores object F1 (a prediction matches a reference nucleus at IoU > 0.5; such matches are
unique), precision, recall and pixel Dice on:

- ``dsb-he`` / ``dsb-hematoxylin``: the DSB 2018 histology tiles of ``../shared/data``. Their
  scale is not published; it is estimated from the median reference nucleus area, calibrated on
  CryoNuSeg (40x, 0.25 um/px, median nucleus 17 um2): the 512 x 680 tiles are ~0.13 um/px, the
  524 x 348 tiles ~0.26 um/px.
- ``cryonuseg``: two 512 x 512 frozen-section crops at 0.25 um/px, only partly outlined: scored
  inside the outlined nuclei dilated by 2 um (a prediction counts when half of it lies there).
- ``synthetic``: synthetic slides (``make_synthetic_slide``, 0.25 um/px at level 0) processed
  at 0.5 um/px (pyramid level 1) against their exact GeoJSON ground truth.

Then times :func:`segment_nuclei`, :func:`label_to_polygons` and :func:`nucleus_features` on
256 and 512 px centre crops of a dense tile of each kind (median CPU time, one thread).

Run: ``python -m benchmarks.nuclei_quality [--size 4096] [--seeds 1 2] [--no-synthetic]``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from pipelines.nuclei.features import label_to_polygons, nucleus_features  # noqa: E402
from pipelines.nuclei.segment import segment_nuclei  # noqa: E402

SHARED = Path(
    os.environ.get("PATHRAY_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
#: Estimated um/px of the DSB tiles, by tile width.
DSB_MPP = {680: 0.13, 348: 0.26}
CRYO_MPP = 0.25
PARTIAL_MARGIN_UM = 2.0


@dataclass
class Tally:
    """Running totals of one set."""

    tiles: int = 0
    tp: int = 0
    pred: int = 0
    true: int = 0
    inter: int = 0
    sizes: int = 0
    megapixels: float = 0.0
    seconds: list[float] = field(default_factory=list)

    def row(self, name: str) -> dict[str, float | int | str]:
        """Totals as a printable row."""
        return {
            "set": name,
            "tiles": self.tiles,
            "nuclei": self.true,
            "f1": 2 * self.tp / max(self.pred + self.true, 1),
            "precision": self.tp / max(self.pred, 1),
            "recall": self.tp / max(self.true, 1),
            "dice": 2 * self.inter / max(self.sizes, 1),
            "wall_ms_per_mpx": 1000 * sum(self.seconds) / max(self.megapixels, 1e-9),
        }


def score(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None, tally: Tally) -> None:
    """Add one tile's matches to the tally (contingency-table IoU, matches at IoU > 0.5)."""
    pred = pred.astype(np.int64)
    gt = gt.astype(np.int64)
    n_gt = int(gt.max()) + 1
    area_p = np.bincount(pred.ravel())
    area_g = np.bincount(gt.ravel(), minlength=n_gt)
    both = (pred.ravel() > 0) & (gt.ravel() > 0)
    pairs, inter = np.unique(pred.ravel()[both] * n_gt + gt.ravel()[both], return_counts=True)
    p, g = pairs // n_gt, pairs % n_gt
    matched = p[inter / (area_p[p] + area_g[g] - inter) > 0.5]
    pred_ids = np.unique(pred[pred > 0])
    pred_fg = pred > 0
    if region is not None:
        inside = np.bincount(pred.ravel(), weights=region.ravel(), minlength=len(area_p))
        pred_ids = pred_ids[inside[pred_ids] >= 0.5 * area_p[pred_ids]]
        matched = matched[np.isin(matched, pred_ids)]
        pred_fg &= region
    gt_fg = gt > 0
    tally.tiles += 1
    tally.tp += len(matched)
    tally.pred += len(pred_ids)
    tally.true += len(np.unique(gt[gt_fg]))
    tally.inter += int((pred_fg & gt_fg).sum())
    tally.sizes += int(pred_fg.sum() + gt_fg.sum())


def run_tile(image: np.ndarray, mpp: float, tally: Tally) -> np.ndarray:
    """Segment one tile, timing it."""
    start = time.perf_counter()
    labels = segment_nuclei(image, mpp=mpp)
    tally.seconds.append(time.perf_counter() - start)
    tally.megapixels += image.shape[0] * image.shape[1] / 1e6
    return labels


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def real_sets() -> dict[str, Tally]:
    """Score the real tile sets."""
    out: dict[str, Tally] = {}
    dsb = SHARED / "nuclei" / "dsb2018-histology"
    for stain, name in (("he", "dsb-he"), ("hematoxylin_only", "dsb-hematoxylin")):
        tally = out.setdefault(name, Tally())
        for folder in sorted(p for p in (dsb / stain).iterdir() if (p / "images").is_dir()):
            image = _rgb(folder / "images" / f"{folder.name}.png")
            gt = np.asarray(
                Image.open(dsb / stain / "instance_masks_derived" / f"{folder.name}_inst.png")
            )
            labels = run_tile(image, DSB_MPP[image.shape[1]], tally)
            score(labels, gt, None, tally)
    tally = out.setdefault("cryonuseg", Tally())
    for folder in sorted(
        p for p in (SHARED / "nuclei" / "cryonuseg-sample").iterdir() if p.is_dir()
    ):
        image = _rgb(next(folder.glob("*.tif")))
        gt = np.asarray(Image.open(folder / "instance_mask_derived.png"))
        radius = round(PARTIAL_MARGIN_UM / CRYO_MPP)
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        region = cv2.dilate((gt > 0).astype(np.uint8), disk).astype(bool)
        labels = run_tile(image, CRYO_MPP, tally)
        score(labels, gt, region, tally)
    return out


def rasterise_geojson(path: Path, shape: tuple[int, int], downsample: float) -> np.ndarray:
    """Label image of GeoJSON polygons (level-0 px, pixel corners) at a downsample."""
    labels = np.zeros(shape, np.int32)
    features = json.loads(path.read_text())["features"]
    for index, feature in enumerate(features, start=1):
        geometry = feature["geometry"]
        rings = geometry["coordinates"]
        outer = rings[0] if geometry["type"] == "Polygon" else rings[0][0]
        # Pixel-centre rule: OpenCV fills integer points, so move corners to centre coordinates.
        points = np.asarray(outer, np.float64) / downsample - 0.5
        cv2.fillPoly(labels, [np.round(points * 16).astype(np.int32)], index, cv2.LINE_8, 4)
    return labels


def synthetic_set(size: int, seeds: list[int], workdir: Path) -> tuple[Tally, np.ndarray]:
    """Score synthetic slides read at 0.5 um/px (level 1) against their exact ground truth.

    Returns:
        The tally and the level-1 image of the first slide (for the timings).
    """
    from pathray.slides.readers import open_reader
    from pathray.slides.synthetic import make_synthetic_slide

    tally = Tally()
    images = []
    for seed in seeds:
        path = workdir / f"synthetic-{size}-s{seed}.tif"
        slide = make_synthetic_slide(path, width=size, height=size, mpp=0.25, seed=seed)
        reader = open_reader(str(path))
        level = reader.best_level(2.0)
        width, height = reader.level_dimensions[level]
        image = reader.read_level(level, 0, 0, width, height)
        images.append(image)
        assert slide.nuclei_geojson is not None
        down = reader.level_downsamples[level]
        gt = rasterise_geojson(slide.nuclei_geojson, (height, width), down)
        labels = run_tile(image, 0.25 * down, tally)
        score(labels, gt, None, tally)
    return tally, images[0]


def timings(synthetic: np.ndarray | None, repeats: int = 20) -> list[dict[str, float | str]]:
    """Median single-thread times on 256 and 512 px crops of dense tiles of each kind."""
    cv2.setNumThreads(1)
    nuclei = SHARED / "nuclei"
    cryo = _rgb(next((nuclei / "cryonuseg-sample" / "TCGA-DE-A4MA").glob("*.tif")))
    he_id = "472b1c5ff988dadc209faea92499bc07f305208dbda29d16262b3d543ac91c71"
    he = _rgb(nuclei / "dsb2018-histology" / "he" / he_id / "images" / f"{he_id}.png")
    tiles = [("cryonuseg@0.25", cryo, CRYO_MPP), ("dsb-he@0.13", he, DSB_MPP[680])]
    if synthetic is not None:
        # A crop around the middle of the slide, where the tissue is.
        h, w = synthetic.shape[:2]
        tiles.append(
            ("synthetic@0.5", synthetic[h // 4 : h // 4 + 512, w // 4 : w // 4 + 512], 0.5)
        )
    rows = []
    for name, image, mpp in tiles:
        for side in (256, 512):
            y0, x0 = max((image.shape[0] - side) // 2, 0), max((image.shape[1] - side) // 2, 0)
            crop = np.ascontiguousarray(image[y0 : y0 + side, x0 : x0 + side])
            rows.append(_time_tile(f"{name} {side}px", crop, mpp, repeats))
    return rows


def _time_tile(name: str, crop: np.ndarray, mpp: float, repeats: int) -> dict[str, float | str]:
    def median_ms(fn) -> float:
        # CPU time of this (single-threaded) process: robust to other load on the machine.
        fn()
        times = []
        for _ in range(repeats):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
        return 1000 * float(np.median(times))

    labels = segment_nuclei(crop, mpp=mpp)
    return {
        "tile": name,
        "nuclei": int(labels.max()),
        "segment_ms": median_ms(lambda: segment_nuclei(crop, mpp=mpp)),
        "polygons_ms": median_ms(lambda: label_to_polygons(labels, offset=(0, 0), downsample=2)),
        "features_ms": median_ms(lambda: nucleus_features(labels, crop, mpp=mpp)),
    }


def _print_table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    keys = list(rows[0])
    print("  ".join(f"{k:>15s}" for k in keys))
    for row in rows:
        cells = [f"{v:15.3f}" if isinstance(v, float) else f"{v!s:>15s}" for v in row.values()]
        print("  ".join(cells))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="synthetic slide side (level 0)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="synthetic seeds")
    parser.add_argument("--no-synthetic", action="store_true", help="skip the synthetic slides")
    parser.add_argument("--repeats", type=int, default=20, help="timing repetitions")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    rows = [tally.row(name) for name, tally in real_sets().items()]
    synthetic = None
    if not args.no_synthetic:
        with tempfile.TemporaryDirectory() as tmp:
            tally, synthetic = synthetic_set(args.size, args.seeds, Path(tmp))
            rows.append(tally.row("synthetic@0.5mpp"))
    _print_table(rows, "Object F1 at IoU > 0.5, precision, recall, pixel Dice (whole sets)")
    _print_table(timings(synthetic, args.repeats), "Median single-thread CPU time per tile (ms)")


if __name__ == "__main__":
    main()
