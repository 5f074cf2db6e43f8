"""Tile classification: WSInfer's own pipeline against PathRay's, same model, same slide.

The peer is WSInfer (PyPI ``wsinfer``). Both sides run the same WSInfer model folder
(``config.json`` + ``torchscript_model.pt``, made here, nothing downloaded) on the same slide,
in this one Python process:

- **wsinfer**: its own pipeline as ``wsinfer run`` does it: patching
  (``segment_and_patch_directory_of_slides``: thumbnail, tissue polygon, patch grid, HDF5) then
  ``run_inference`` (its DataLoader over ``read_region`` patches, the config's torchvision
  transforms, the TorchScript model, softmax, CSV), with the model given as a local
  ``LocalModelTorchScript`` and WSInfer's CLI defaults (batch 32, ``min(CPUs, 8)`` workers).
- **pathray**: the same folder registered through the services API (what ``pathray models
  register`` does), then a ``tissue_mask -> tile_classifier`` pipeline (``model: NAME@1``) run
  by :func:`~pathray.engine.runner.run_pipeline` on a local Ray, results committed to Lance.
  Tiles are cut at the card's resolution and input size, so the unit feeds them to the model
  as they are (the same field of view as WSInfer's patch).

Tissue detection differs (WSInfer: saturation threshold on a 2048 px thumbnail, patches whose
centre lies in the tissue polygon; PathRay: optical density at low resolution, tiles with at
least 5 % tissue), so each side's rate is its own tiles over its own time and the table shows
both counts. Predictions are compared on the tiles both kept, matched by grid position: the
largest absolute difference of the class probabilities and the share of tiles with the same
arg-max class (the two sides resample and JPEG-decode the same pixels slightly differently).

Runs (``--repeat``, interleaved so that load drifts hit both sides alike): the first run of each
side is ``cold`` (PathRay: Ray already started, the unit actors start and load the model;
WSInfer: first model load and DataLoader workers); ``steady`` is the median of the rest, which
PathRay runs on the warm unit actors the first run left (:mod:`pathray.engine.warm`; ``--cold``
starts them again in every run, as a library call does by default).
Ray's own start is reported separately. The ratio is PathRay's steady tiles/s over WSInfer's.
``stream`` is the rate from the first batch out to the last (PathRay: its progress callback;
WSInfer: its DataLoader loop, timed in place of its tqdm bar), so the work once the workers and
the model are up.
PathRay's stream rate is taken where the driver receives batches, and Ray Data buffers batches
finished while the driver waits, so on a small slide it overstates the compute rate: read it as
a bound, not a measurement.

Models (``--models``): ``tiny`` (the two-layer CNN of :mod:`pathray.models.examples`, 64 px at
0.5 um/px: the pipelines' overhead dominates) and ``resnet18`` (torchvision's ResNet-18 with
seeded random weights, 224 px at 0.5 um/px: the model dominates).

Goal (issue 17): PathRay >= 2 x WSInfer's tiles/s on this machine's CPUs (and on a GPU).

Run: ``python -m benchmarks.wsinfer_peer [--slides CMU-1-Small-Region.svs] [--models tiny,resnet18]
[--repeat 3] [--cpus 2]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine_info, median, print_table, write_result

WSI_DIR = Path(os.environ.get("PATHRAY_SHARED_DATA", "/work/shared/data")) / "wsi"
SPEC = """
name: wsinfer-peer-{name}
tiling: {{mpp: {mpp}, size: {size}, overlap: 0}}
units:
  - {{id: tissue, unit: tissue_mask, config: {{mpp: {mpp}}}}}
  - {{id: classify, unit: tile_classifier, after: [tissue], model: {name}@1,
      config: {{mpp: {mpp}, batch_size: {batch}}}}}
"""
#: Model name -> (patch px at 0.5 um/px, model input px).
MODELS = {"tiny": (64, 64), "resnet18": (224, 224)}
SPACING = 0.5


def write_model(kind: str, folder: Path) -> Path:
    """A WSInfer model folder (``config.json`` + ``torchscript_model.pt``) of one kind."""
    from pathray.models import examples as ex

    patch, size = MODELS[kind]
    if kind == "tiny":
        return ex.write_wsinfer_folder(folder, patch=patch, size=size, spacing=SPACING)
    import torch
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=len(ex.CLASSES)).eval()
    ex.save_torchscript(net, folder / "torchscript_model.pt", size)
    config = ex.wsinfer_config(patch=patch, size=size, spacing=SPACING)
    config["architecture"] = "resnet18"
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def import_wsinfer() -> Any:
    """Import WSInfer offline, patching around its zarr-2-only import hook.

    wsinfer 0.6.1 patches ``zarr.storage.KVStore`` at import (a tiffslide fix); zarr 3 has no
    ``KVStore``, so a stand-in class is put there first. The benchmark reads slides through
    WSInfer's OpenSlide backend, which never touches zarr.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"  # never download anything
    import zarr.storage

    if not hasattr(zarr.storage, "KVStore"):
        zarr.storage.KVStore = type("KVStore", (), {})  # type: ignore[attr-defined]
    import wsinfer

    logging.getLogger("wsinfer").setLevel(logging.WARNING)
    return wsinfer


def stream_rate(marks: list[tuple[float, int]]) -> float | None:
    """Tiles/s from the first batch out to the last: the rate once the workers are up.

    Args:
        marks: ``(time, tiles done so far)`` after each batch.
    """
    if len(marks) < 2 or marks[-1][0] <= marks[0][0]:
        return None
    return (marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0])


class _TimedBatches:
    """Stands in for the ``tqdm`` module inside WSInfer's ``run_inference``.

    ``run_inference`` iterates its DataLoader through ``tqdm.tqdm(loader)``; this records the
    time and the tiles done after each batch instead of drawing a progress bar.
    """

    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []

    def tqdm(self, loader: Any) -> Any:
        done = 0
        for batch in loader:
            yield batch
            done += len(batch[0])  # yielded back after the forward pass on this batch
            self.marks.append((time.perf_counter(), done))


def wsinfer_run(slide: Path, model_dir: Path, work: Path, workers: int, batch: int) -> dict:
    """WSInfer's patching + inference over one slide; its seconds, tiles and predictions."""
    import pandas as pd
    from wsinfer.modellib.models import LocalModelTorchScript
    from wsinfer.modellib.run_inference import run_inference
    from wsinfer.patchlib import segment_and_patch_directory_of_slides
    from wsinfer_zoo.client import ModelConfiguration

    shutil.rmtree(work, ignore_errors=True)
    wsi_dir = work / "slides"  # WSInfer takes a folder holding only slides
    wsi_dir.mkdir(parents=True)
    (wsi_dir / slide.name).symlink_to(slide)
    results = work / "results"
    config = json.loads((model_dir / "config.json").read_text())
    t0 = time.perf_counter()
    segment_and_patch_directory_of_slides(
        wsi_dir, results, config["patch_size_pixels"], config["spacing_um_px"]
    )
    t1 = time.perf_counter()
    model = LocalModelTorchScript(
        config=ModelConfiguration.from_dict(config),
        model_path=str(model_dir / "torchscript_model.pt"),
    )
    import wsinfer.modellib.run_inference as module

    timed = _TimedBatches()
    module.tqdm = timed  # type: ignore[assignment]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            failed = run_inference(wsi_dir, results, model, batch_size=batch, num_workers=workers)
    finally:
        import tqdm

        module.tqdm = tqdm
    t2 = time.perf_counter()
    if any(failed):
        raise RuntimeError(f"WSInfer failed on {failed}. Got no predictions.")
    frame = pd.read_csv(results / "model-outputs-csv" / f"{slide.stem}.csv")
    probs = frame[[f"prob_{c}" for c in config["class_names"]]].to_numpy(np.float32)
    return {
        "seconds": t2 - t0,
        "phases": {"patch": t1 - t0, "infer": t2 - t1},
        "stream_tiles_s": stream_rate(timed.marks),
        "tiles": len(frame),
        "coords": frame[["minx", "miny", "width"]].to_numpy(np.int64),
        "probs": probs,
    }


def pathray_run(catalog: Any, store: Any, spec: Any, image_set: str, warm: bool) -> dict:
    """One PathRay run; its seconds, phases, tiles and predictions.

    Args:
        catalog: The benchmark's catalog.
        store: Its cold store.
        spec: The pipeline.
        image_set: The set to run on.
        warm: Run on warm unit actors (started by the first such run, reused after).
    """
    from pathray.engine.runner import run_pipeline

    marks: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    result = run_pipeline(
        catalog,
        store,
        spec,
        image_set,
        progress=lambda done, _: marks.append((time.perf_counter(), done)),
        warm=warm,
    )
    seconds = time.perf_counter() - t0
    table = store.read(result.run_id, "tiles", columns=["x", "y", "width", "tile_probabilities"])
    coords = np.stack([table[c].to_numpy().astype(np.int64) for c in ("x", "y", "width")], axis=1)
    probs = np.array(table["tile_probabilities"].to_pylist(), np.float32)
    return {
        "seconds": seconds,
        "phases": dict(result.phases),
        "stream_tiles_s": stream_rate(marks),
        "tiles": result.tiles_processed,
        "coords": coords,
        "probs": probs,
    }


def agreement(a: dict, b: dict) -> dict[str, Any]:
    """Compare two sides' predictions on the tiles both kept, matched by grid position."""

    def keys(coords: np.ndarray) -> list[tuple[int, int]]:
        span = coords[:, 2].astype(np.float64)
        return list(
            zip(
                np.rint(coords[:, 0] / span).astype(int),
                np.rint(coords[:, 1] / span).astype(int),
                strict=True,
            )
        )

    index_b = {k: i for i, k in enumerate(keys(b["coords"]))}
    pairs = [(i, index_b[k]) for i, k in enumerate(keys(a["coords"])) if k in index_b]
    if not pairs:
        return {"common_tiles": 0}
    ia, ib = (np.array(p) for p in zip(*pairs, strict=True))
    pa_, pb = a["probs"][ia], b["probs"][ib]
    offset = np.abs(a["coords"][ia, :2] - b["coords"][ib, :2]).max()
    return {
        "common_tiles": len(pairs),
        "only_wsinfer": a["tiles"] - len(pairs),
        "only_pathray": b["tiles"] - len(pairs),
        "max_origin_offset_px": int(offset),
        "max_abs_prob_diff": float(np.abs(pa_ - pb).max()),
        "mean_abs_prob_diff": float(np.abs(pa_ - pb).mean()),
        "same_class": float((pa_.argmax(1) == pb.argmax(1)).mean()),
    }


def summarise(runs: list[dict]) -> dict[str, Any]:
    """Cold (first run) and steady (median of the rest) seconds and tiles/s of one side."""
    tiles = runs[0]["tiles"]
    cold = runs[0]["seconds"]
    rest = [r["seconds"] for r in runs[1:]] or [cold]
    steady = median(rest)
    steady_runs = runs[1:] or runs
    phases = {k: round(median(r["phases"][k] for r in steady_runs), 3) for k in runs[0]["phases"]}
    summary = {
        "tiles": tiles,
        "cold_s": round(cold, 3),
        "steady_s": round(steady, 3),
        "cold_tiles_s": round(tiles / cold, 1),
        "steady_tiles_s": round(tiles / steady, 1),
        "runs_s": [round(r["seconds"], 3) for r in runs],
        "steady_phases_s": phases,
    }
    rates = [r["stream_tiles_s"] for r in steady_runs if r["stream_tiles_s"]]
    summary["stream_tiles_s"] = round(median(rates), 1) if rates else None
    return summary


def bench_model(
    kind: str, slide: Path, args: argparse.Namespace, home: Path, catalog: Any, store: Any
) -> dict[str, Any]:
    """Both sides over one slide with one model, ``--repeat`` times each, interleaved."""
    from pathray.pipeline.spec import PipelineSpec
    from pathray.services.models import register_model

    model_dir = write_model(kind, home / f"model-{kind}")
    version = register_model(catalog, store.root, kind, model_dir)
    card = version.card
    spec = PipelineSpec.from_yaml(
        SPEC.format(name=kind, mpp=card["mpp"], size=card["input_size"][0], batch=args.batch)
    )
    sides: dict[str, list[dict]] = {"wsinfer": [], "pathray": []}
    for i in range(args.repeat):
        for side in ("wsinfer", "pathray") if i % 2 == 0 else ("pathray", "wsinfer"):
            if side == "wsinfer":
                run = wsinfer_run(slide, model_dir, home / "wsinfer", args.workers, args.batch)
            else:
                run = pathray_run(catalog, store, spec, "bench", warm=not args.cold)
            print(
                f"  {kind} {side} run {i + 1}: {run['tiles']} tiles in {run['seconds']:.2f} s",
                flush=True,
            )
            sides[side].append(run)
    result = {side: summarise(runs) for side, runs in sides.items()}
    result["agreement"] = agreement(sides["wsinfer"][-1], sides["pathray"][-1])
    result["ratio_steady"] = round(
        result["pathray"]["steady_tiles_s"] / result["wsinfer"]["steady_tiles_s"], 2
    )
    result["ratio_cold"] = round(
        result["pathray"]["cold_tiles_s"] / result["wsinfer"]["cold_tiles_s"], 2
    )
    streams = result["pathray"]["stream_tiles_s"], result["wsinfer"]["stream_tiles_s"]
    result["ratio_stream"] = round(streams[0] / streams[1], 2) if all(streams) else None
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison, print the tables and the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slides", default="CMU-1-Small-Region.svs", help="comma-separated")
    parser.add_argument("--models", default="tiny,resnet18", help=f"of {sorted(MODELS)}")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side (first is cold)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--batch", type=int, default=32, help="tiles per forward pass")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="PathRay without warm unit actors (every run starts its actors and loads the model)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(len(os.sched_getaffinity(0)), 8),
        help="WSInfer's DataLoader workers (its CLI default: min(CPUs, 8))",
    )
    args = parser.parse_args(argv)

    try:
        import_wsinfer()
    except ImportError as exc:  # the peer is an optional extra: run_all goes on without it
        print(
            f"skipped: WSInfer is not installed ({exc}). Install it with 'pip install --no-deps "
            "wsinfer wsinfer-zoo h5py tiffslide tabulate' (the 'bench' extra)."
        )
        return {"skipped": str(exc)}
    from benchmarks.tile_streaming import start_ray
    from pathray.catalog import Catalog
    from pathray.results.store import ColdStore
    from pathray.slides.register import register_slides

    info = machine_info()
    load_before = os.getloadavg()
    home = Path(tempfile.mkdtemp(prefix="wsinfer-peer-"))
    out: dict[str, Any] = {"args": vars(args), "results": {}}
    try:
        ray_s = None
        for name in [s.strip() for s in args.slides.split(",") if s.strip()]:
            slide = WSI_DIR / name
            catalog = Catalog.open(f"sqlite:///{home / f'{slide.stem}.db'}")
            store = ColdStore(home / f"cold-{slide.stem}")
            register_slides(catalog, slide, store="shared", image_set="bench")
            if ray_s is None:
                ray_s = start_ray(args.cpus)
            for kind in [m.strip() for m in args.models.split(",") if m.strip()]:
                out["results"][f"{name}/{kind}"] = bench_model(
                    kind, slide, args, home, catalog, store
                )
            catalog.close()
        out["ray_start_s"] = round(ray_s or 0.0, 2)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    rows = []
    for key, res in out["results"].items():
        for side in ("wsinfer", "pathray"):
            s = res[side]
            rows.append(
                {
                    "slide/model": key,
                    "side": side,
                    "tiles": s["tiles"],
                    "cold s": s["cold_s"],
                    "cold tiles/s": s["cold_tiles_s"],
                    "steady s": s["steady_s"],
                    "steady tiles/s": s["steady_tiles_s"],
                    "stream tiles/s": s["stream_tiles_s"],
                    "phases s": " ".join(f"{k}={v:.2f}" for k, v in s["steady_phases_s"].items()),
                }
            )
    print_table(rows, title=f"WSInfer vs PathRay, local Ray with {args.cpus} CPUs")
    ratios = [
        {
            "slide/model": k,
            "steady": r["ratio_steady"],
            "cold": r["ratio_cold"],
            "stream (workers up)": r["ratio_stream"],
        }
        for k, r in out["results"].items()
    ]
    print_table(ratios, title="PathRay / WSInfer tiles/s")
    agree = [{"slide/model": k, **r["agreement"]} for k, r in out["results"].items()]
    print_table(agree, title="Predictions on the tiles both kept (matched by grid position)")
    out["load_avg"] = {"before": load_before, "after": os.getloadavg()}
    out["goal_met"] = all(r["ratio_steady"] >= 2.0 for r in out["results"].values())
    print(f"goal: PathRay >= 2x WSInfer tiles/s (steady) -> {out['goal_met']}")
    print(f"machine: {info['cpu_model']}, {info['cores']} cores | load {out['load_avg']}")
    print(json.dumps(out, indent=1, default=str))
    write_result("wsinfer_peer", out)
    return out


if __name__ == "__main__":
    main()
