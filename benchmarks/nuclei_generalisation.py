"""How well the nucleus U-Net generalises, against the classical segmenter on the same tiles.

Object F1 (a prediction matches a reference nucleus at IoU > 0.5), precision, recall and pixel
Dice (:func:`benchmarks.nuclei_quality.score`; CryoNuSeg scored inside its outlined area only)
on the real nucleus sets of ``../shared/data/nuclei``, in two protocols:

- ``split``: the held-out third of each set (``EVAL_TILES`` of
  :mod:`pipelines.nuclei.train_default`), scored with the shipped default model, which learnt
  from the other two thirds (plus synthetic tiles).
- ``lodo-<set>``: leave one data set out: a U-Net with the default hyper-parameters learns from
  the other real sets (all their tiles) plus synthetic tiles and is scored on the whole left-out
  set (another stain, organ or preparation than it has seen).

Every tile is scored at two resolutions: ``native`` (its own, 0.13-0.26 um/px; the U-Net resizes
it to its 0.5 um/px itself) and ``0.5`` (resampled to the preset's 0.5 um/px first, both methods;
labels are brought back to the native grid to be scored). The U-Net's touching nuclei are split
two ways: ``seeds`` (one seed per core between the predicted borders) and ``watershed`` (the
distance watershed with the parameters of ``POSTPROCESS``, chosen on the training tiles).

Then the speed of the default model and of the classical segmenter on 256 px tiles at
0.5 um/px (tiles per second, one thread).

Run: ``python -m benchmarks.nuclei_generalisation [--work DIR] [--train-only]``; the fold models
are trained once and kept in ``--work``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.nuclei_quality import Tally, score  # noqa: E402
from pipelines.nuclei.resample import resize_image, resize_labels  # noqa: E402
from pipelines.nuclei.segment import segment_nuclei  # noqa: E402
from pipelines.nuclei.train_default import (  # noqa: E402
    DEFAULT_FOLDER,
    POSTPROCESS,
    split_tiles,
    synthetic_set,
    train,
)
from pipelines.nuclei.unet import NucleusUNet  # noqa: E402
from pipelines.training_data import RealTiles, real_nucleus_sets  # noqa: E402

#: Training stages of the leave-one-out models, ``(iterations, seed, lr)``, each continuing the
#: previous one: 1000 steps in all, like the shipped model (``SCHEDULE``), split 300 + 700.
FOLD_SCHEDULE = ((300, 0, 3e-3), (700, 1, 1e-3))
#: A segmenter: ``(image, mpp) -> labels``.
Segmenter = Callable[[np.ndarray, float], np.ndarray]


def score_set(segment: Segmenter, tiles: RealTiles, at_mpp: float | None) -> Tally:
    """Segment every tile (at ``at_mpp``, or its own resolution) and score it on its own grid."""
    tally = Tally()
    for image, labels, mpp in zip(tiles.images, tiles.instance_labels, tiles.mpp, strict=True):
        work = at_mpp or mpp
        resized = resize_image(image, mpp / work)
        start = time.perf_counter()
        pred = segment(resized, work)
        tally.seconds.append(time.perf_counter() - start)
        tally.megapixels += resized.shape[0] * resized.shape[1] / 1e6
        pred = resize_labels(pred, image.shape[:2])
        region = labels >= 0 if (labels < 0).any() else None
        score(pred, np.maximum(labels, 0), region, tally)
    return tally


def classical(image: np.ndarray, mpp: float) -> np.ndarray:
    """The classical segmenter."""
    return segment_nuclei(image, mpp=mpp)


def unet_segmenter(folder: Path, split: str) -> Segmenter:
    """A segmenter running a saved NucleusUNet at the tile's resolution."""
    units: dict[float, NucleusUNet] = {}

    def run(image: np.ndarray, mpp: float) -> np.ndarray:
        if mpp not in units:
            config = {**_trained(folder), **POSTPROCESS, "mpp": mpp, "split": split}
            units[mpp] = NucleusUNet.load(folder, config)
        out = units[mpp]({"image": image[None], "tissue": np.ones((1, *image.shape[:2]), bool)})
        labels: np.ndarray = out["nucleus_labels"][0]
        return labels

    return run


def _trained(folder: Path) -> dict:
    from pathray.units.trainable import read_metadata

    config: dict = read_metadata(folder)["config"]
    config.pop("work_mpp", None)
    return config


def folds(work: Path, only: str | None = None) -> dict[str, tuple[Path, dict[str, RealTiles]]]:
    """Every protocol: the model folder and the sets it is scored on (training if missing)."""
    sets = real_nucleus_sets()
    out = {"split": (DEFAULT_FOLDER, split_tiles(sets, held_out=True))}
    for left_out in sets if only is None else [only]:
        warm = None
        for stage, (iterations, seed, lr) in enumerate(FOLD_SCHEDULE, start=1):
            folder = work / f"lodo-{left_out}" / f"stage{stage}"
            if not (folder / "model.pt").is_file():
                others = {k: v for k, v in sets.items() if k != left_out}
                start = time.perf_counter()
                config = {"iterations": iterations, "seed": seed, "lr": lr}
                unit = train(
                    {**others, "synthetic": synthetic_set()}, config=config, warm_start=warm
                )
                unit.save(folder)
                took = time.perf_counter() - start
                print(f"trained lodo-{left_out} stage {stage} in {took:.0f} s", flush=True)
            warm = NucleusUNet.load(folder)
        out[f"lodo-{left_out}"] = (folder, {left_out: sets[left_out]})
    return out


def quality(work: Path) -> list[dict]:
    """The quality table: protocol x set x resolution x method."""
    rows = []
    for protocol, (folder, sets) in folds(work).items():
        methods: dict[str, Segmenter] = {"classical": classical}
        for split in ("seeds", "watershed"):
            methods[f"unet-{split}"] = unet_segmenter(folder, split)
        for name, tiles in sets.items():
            for at in (None, 0.5):
                for method, segment in methods.items():
                    row = score_set(segment, tiles, at).row(name)
                    rows.append(
                        {
                            "protocol": protocol,
                            "set": name,
                            "at_mpp": "native" if at is None else str(at),
                            "method": method,
                            **{k: row[k] for k in ("tiles", "nuclei", "f1", "precision")},
                            **{k: row[k] for k in ("recall", "dice")},
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def speed(repeats: int = 10) -> list[dict]:
    """Tiles per second on 256 px tiles at 0.5 um/px: default model vs classical, one thread."""
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    cryo = real_nucleus_sets()["cryonuseg"]
    image = resize_image(cryo.images[0], cryo.mpp[0] / 0.5)
    tile = np.ascontiguousarray(image[:256, :256])
    batch = {"image": tile[None], "tissue": np.ones((1, 256, 256), bool)}
    config = {**_trained(DEFAULT_FOLDER), **POSTPROCESS, "mpp": 0.5}
    unit = NucleusUNet.load(DEFAULT_FOLDER, config)
    runs: dict[str, Callable[[], object]] = {
        "classical": lambda: segment_nuclei(tile, mpp=0.5),
        "unet (default model)": lambda: unit(batch),
    }
    rows = []
    for name, fn in runs.items():
        fn()
        times = []
        for _ in range(repeats):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
        rows.append({"method": name, "tiles_per_s": 1.0 / float(np.median(times))})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache/pathray/nuclei-folds")
    parser.add_argument("--train-only", action="store_true", help="train the fold models only")
    parser.add_argument("--fold", help="train only the fold leaving this set out")
    args = parser.parse_args(argv)
    if args.train_only:
        folds(args.work, only=args.fold)
        return
    rows = quality(args.work)
    print("\nObject F1 at IoU > 0.5 (precision, recall, pixel Dice)")
    print(f"{'protocol':22s} {'set':16s} {'at':7s} {'method':16s}  f1     prec   rec    dice")
    for r in rows:
        print(
            f"{r['protocol']:22s} {r['set']:16s} {r['at_mpp']:7s} {r['method']:16s}  "
            f"{r['f1']:.3f}  {r['precision']:.3f}  {r['recall']:.3f}  {r['dice']:.3f}"
        )
    print("\nSpeed on 256 px tiles at 0.5 um/px (CPU time, one thread)")
    for r in speed():
        print(f"{r['method']:24s} {r['tiles_per_s']:.1f} tiles/s")


if __name__ == "__main__":
    main()
