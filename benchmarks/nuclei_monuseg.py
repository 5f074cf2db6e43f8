"""Nucleus models on held-out real MoNuSeg tiles (40x H&E, one tile per organ), per tile.

The shared data holds 13 MoNuSeg 2018 training tiles (``nuclei/monuseg-train``; the
challenge's test tiles, on which the project is scored, are not here). The four tiles of
:data:`~pipelines.nuclei.train_default.MONUSEG_EVAL_TILES` (lung, breast, kidney, prostate;
four patients) are never trained on; this benchmark scores nucleus models on them with the
project's own metrics (:func:`pathray.evaluate.compare.compare_objects`: object F1 at IoU 0.5,
precision, recall, panoptic quality, AJI), per tile and pooled over the tiles.

Each tile is given to the model at its own 0.25 um/px, as the ``nuclei`` preset would read a
40x slide; the model resizes it to the resolution it was trained at. Predicted and reference
label images become polygons (:func:`pathray.formats.masks.read_instance_mask`) before
matching.

``--tune`` instead chooses a model's watershed post-processing (:data:`TUNING_GRID`) on the
MoNuSeg *training* tiles of :data:`TUNING_TILES` (one per organ), by pooled F1 + AJI, and
prints the best settings; the held-out tiles play no part in it.

Run (about a minute a model on a busy 2-core machine; ``--tune`` five)::

    PYTHONPATH=. python -m benchmarks.nuclei_monuseg [FOLDER ...] [--json OUT] [--tune]

Without folders it scores the shipped model (``pipelines/nuclei/weights/nuclei_default``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from pathray.evaluate.compare import compare_objects, summarize  # noqa: E402
from pathray.formats.masks import read_instance_mask  # noqa: E402
from pathray.units.trainable import read_metadata  # noqa: E402
from pipelines.nuclei.train_default import DEFAULT_FOLDER, MONUSEG_EVAL_TILES  # noqa: E402
from pipelines.nuclei.unet import NucleusUNet  # noqa: E402
from pipelines.training_data import RealTiles, monuseg_tiles  # noqa: E402

#: Organ of each TCGA tissue source site among the MoNuSeg tiles (the id's second field).
ORGANS = {
    "21": "lung",
    "50": "lung",
    "A7": "breast",
    "AR": "breast",
    "E2": "breast",
    "B0": "kidney",
    "CH": "prostate",
    "G9": "prostate",
    "NH": "colon",
}
#: Training tiles the post-processing is tuned on (one per organ, none held out).
TUNING_TILES = (
    "TCGA-50-5931-01Z-00-DX1",
    "TCGA-A7-A13E-01Z-00-DX1",
    "TCGA-B0-5698-01Z-00-DX1",
    "TCGA-CH-5767-01Z-00-DX1",
    "TCGA-NH-A8F7-01A-01-TS1",
)
#: Post-processing settings tried by ``--tune``: the foreground threshold and the watershed's
#: marker spacing, basin merging and smallest nucleus (the extra objects are small pieces).
TUNING_GRID: dict[str, tuple[float, ...]] = {
    "threshold": (0.5, 0.6),
    "merge_depth_um": (0.0, 0.5),
    "min_area_um2": (10.0, 16.0),
}
#: Metrics reported, in order.
COLUMNS = ("f1", "pq", "aji", "precision", "recall")


def organ(tile_id: str) -> str:
    """The organ of a TCGA tile id (``TCGA-<site>-...``)."""
    return ORGANS.get(tile_id.split("-")[1], "unknown")


def load_unit(folder: Path, overrides: Mapping[str, Any] | None = None) -> NucleusUNet:
    """A saved NucleusUNet with its own post-processing (or ``overrides``) for 0.25 um/px tiles."""
    config: dict[str, Any] = dict(read_metadata(folder)["config"])
    config.pop("work_mpp", None)
    config.update({**(overrides or {}), "mpp": 0.25})
    return NucleusUNet.load(folder, config)


def segment(unit: NucleusUNet, image: np.ndarray) -> np.ndarray:
    """One tile's label image."""
    out = unit({"image": image[None], "tissue": np.ones((1, *image.shape[:2]), bool)})
    labels: np.ndarray = out["nucleus_labels"][0]
    return labels


def polygons(labels: np.ndarray) -> list[Any]:
    """One polygon per instance of a label image."""
    return [record.geometry for record in read_instance_mask(labels)]


def score_unit(unit: NucleusUNet, tiles: RealTiles) -> dict[str, Any]:
    """Per-tile and pooled metrics of one unit (see :func:`pathray.evaluate.compare.summarize`)."""
    comparisons = {}
    for name, image, labels in zip(tiles.names, tiles.images, tiles.instance_labels, strict=True):
        pred = segment(unit, image)
        comparisons[name] = compare_objects(polygons(pred), polygons(np.maximum(labels, 0)))
    return summarize(comparisons)


def tune(folder: Path, tiles: RealTiles) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every setting of :data:`TUNING_GRID` with its pooled metrics, best (F1 + AJI) first."""
    import itertools

    base = dict(read_metadata(folder)["config"].get("params", {}))
    results = []
    for values in itertools.product(*TUNING_GRID.values()):
        setting = dict(zip(TUNING_GRID, values, strict=True))
        threshold = setting.pop("threshold")
        overrides = {"threshold": threshold, "params": {**base, **setting}}
        overall = score_unit(load_unit(folder, overrides), tiles)["overall"]
        results.append((overrides, overall))
        print(json.dumps({**overrides, **{k: round(overall[k], 4) for k in COLUMNS}}), flush=True)
    return sorted(results, key=lambda r: -(r[1]["f1"] + r[1]["aji"]))


def table(name: str, report: Mapping[str, Any]) -> list[str]:
    """Printable rows: one per tile, then the pooled figures."""
    rows = []
    for tile, m in report["per_slide"].items():
        values = "  ".join(f"{m[k]:.3f}" for k in COLUMNS)
        rows.append(f"{name:18s} {tile[:12]:12s} {organ(tile):9s} {values}  {m['n_pred']:4d}")
    m = report["overall"]
    values = "  ".join(f"{m[k]:.3f}" for k in COLUMNS)
    rows.append(f"{name:18s} {'all':12s} {'pooled':9s} {values}  {m['n_pred']:4d}")
    return rows


def main(argv: list[str] | None = None) -> None:
    """Score each model folder on the held-out MoNuSeg tiles and print the table."""
    import torch

    torch.set_num_threads(2)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("folders", nargs="*", type=Path, default=[DEFAULT_FOLDER])
    parser.add_argument("--json", type=Path, help="write the reports here")
    parser.add_argument("--tune", action="store_true", help="tune the post-processing instead")
    args = parser.parse_args(argv)
    if args.tune:
        tuning = monuseg_tiles(names=TUNING_TILES)
        for folder in args.folders:
            overrides, overall = tune(folder, tuning)[0]
            print(f"best for {folder}: {json.dumps(overrides)} -> f1 {overall['f1']:.3f}")
        return
    tiles = monuseg_tiles(names=MONUSEG_EVAL_TILES)
    reports = {str(f): score_unit(load_unit(f), tiles) for f in args.folders}
    print(f"{'model':18s} {'tile':12s} {'organ':9s} " + "  ".join(f"{k:5s}" for k in COLUMNS))
    for folder, report in reports.items():
        print("\n".join(table(Path(folder).name, report)))
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1, default=str))


if __name__ == "__main__":
    main()
