"""One torch U-Net over one slide: TIAToolbox's inference engine against PathRay's pipeline.

Both engines run exactly the same computation, on the same tiles, with the same weights:
read a ``--tile`` px tile at 0.5 um/px, run the U-Net of :mod:`pipelines.nuclei.unet` (the
same ``nn.Module`` and the same input scaling, :func:`~pipelines.nuclei.unet.to_tensor`), take
the sigmoid of its foreground map and threshold it at 0.5, and keep the foreground mask:

- **tiatoolbox**: ``SemanticSegmentor.run(..., patch_mode=False)`` in WSI mode with a
  ``ModelABC`` subclass wrapping the module (``infer_batch`` returns the foreground probability,
  ``postproc`` thresholds it), an ``IOSegmentorConfig`` of ``--tile`` px patches with a stride of
  ``--tile`` at 0.5 mpp, ``--batch`` patches per batch and ``--tia-workers`` DataLoader workers;
  its output is the merged whole-slide mask in a Zarr store (TIAToolbox's default WSI output).
  TIAToolbox's default ``torch.compile`` is off (``--tia-compile default`` turns it on). It
  runs the trained module as loaded, as its users do; ``--tia-model inference`` hands it
  PathRay's inference copy instead (:func:`~pathray.units.trainable.inference_module`), which
  separates what the engine gains from what the model rewrite gains.
- **pathray**: :func:`~pathray.engine.runner.run_pipeline` on a local Ray of ``--cpus`` CPUs with
  a one-node pipeline: :class:`UNetForeground`, the nucleus U-Net unit
  (:class:`~pipelines.nuclei.unet.NucleusUNet`: same model loading, same batch size, same
  declared resources, and its inference copy of the module: BatchNorm folded, channels_last)
  with the foreground mask as its output instead of the nucleus instances.
  The model goes through the model registry (``model: unet-bench@1``, an artifact in the
  content-addressed store) as any model does; the output is committed to the cold store
  (Lance): per tile the foreground fraction and the mask as packed bits.

Same tiles: PathRay's planner chooses the tiles (low-resolution tissue mask, tiles with at least
``--min-tissue`` tissue); TIAToolbox gets that choice as its mask (one mask pixel per tile), so
both process the same tile set; the table shows the tile count of each, and each rate is that
engine's own tiles over its own time.

Each engine runs in a fresh process (``spawn``) per repetition; this process samples the
memory of that process tree (PSS summed over the child and all its descendants, the local Ray
included) in a background thread, and, with ``--device cuda``, the GPUs' utilisation and memory
through ``nvidia-smi``. Figures per engine:

- start-up: from spawning the process to ready (imports, catalog, Ray start / engine and model
  construction): paid once per process;
- run: the engine's call over the slide (``run_pipeline`` / ``SemanticSegmentor.run``), with all
  per-run work: planning or mask filtering, workers, inference, merging, writing the output;
- tiles/s: tiles / run seconds (start-up excluded), and tiles / (start-up + run);
- stream tiles/s: from the first batch done to the last (the first batch not counted);
- peak PSS during the run (and during start-up).

``--precision bfloat16`` makes both engines infer under ``torch.autocast`` to bfloat16 (the
torch units' ``precision`` config; fast on GPUs and on CPUs with AMX or AVX-512 BF16).

The two outputs are compared pixel by pixel on every tile (Dice of the foreground masks); a Dice
below 0.95 means the engines did not compute the same thing and the benchmark exits with 1.

Goal (issue 3): PathRay >= 1.5 x TIAToolbox in tiles per second on this machine's CPUs.

Run (full measurement, on a quiet machine)::

    PYTHONPATH=. python -m benchmarks.unet_engine --size 8192 --repeat 3
    PYTHONPATH=. python -m benchmarks.unet_engine --size 2048        # smoke check
    PYTHONPATH=. python -m benchmarks.unet_engine --device cuda      # on a GPU machine

Prints the tables and writes the JSON to ``--out``; also appends it to
``benchmarks/results/unet_engine.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import queue as queue_mod
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    ProcessTreeSampler,
    machine_info,
    median,
    print_table,
    results_dir,
    write_result,
)
from pathray.units.base import Batch, Column
from pipelines.nuclei.unet import NucleusUNet

MPP = 0.5
SEED = 0
THRESHOLD = 0.5
GOAL = 1.5
MIN_DICE = 0.95
MODEL_NAME = "unet-bench"
ENGINES = ("tiatoolbox", "pathray")
#: The U-Net trained once (cached): the nucleus unit's default widths, a short seeded run.
MODEL_CONFIG: dict[str, Any] = {
    "mpp": MPP,
    "channels": (16, 32, 64),
    "batch": 8,
    "crop_size": 64,
    "lr": 3e-3,
    "colour": "light",
    "threshold": THRESHOLD,
    "seed": SEED,
    "device": "cpu",
}


class UNetForeground(NucleusUNet):
    """The nucleus U-Net's thresholded foreground map per tile (no instance split).

    Everything but the output is :class:`~pipelines.nuclei.unet.NucleusUNet`'s: config, model
    loading, resources, batch size, preprocessing and :meth:`predict_maps`.
    """

    name = "unet_foreground"
    role = "benchmark_foreground"
    inputs = (Column("image", "uint8", (None, None, 3)),)  # type: ignore[assignment]
    outputs = (  # type: ignore[assignment]
        Column("foreground", "bool", (None, None), stored=False, description="nucleus pixels"),
        Column("foreground_fraction", "float32", description="fraction of the tile"),
        Column("foreground_bits", "bytes", description="np.packbits of the mask, row-major"),
    )

    def __call__(self, batch: Batch) -> Batch:
        """Foreground mask, fraction and packed mask of each tile."""
        self.check_fitted()
        images = np.asarray(batch["image"])
        masks = np.zeros(images.shape[:3], bool)
        if len(images):
            maps = self.predict_maps(np.stack([self._prepare(image) for image in images]))
            if maps.shape[2:] != images.shape[1:3]:  # work_mpp differs from mpp
                from pipelines.nuclei.resample import resize_image

                maps = np.stack([[resize_image(m, 1 / self._scale) for m in t] for t in maps])
            masks = maps[:, 0] > self.config.threshold
        bits = np.empty(len(masks), object)
        bits[:] = [np.packbits(mask).tobytes() for mask in masks]
        return {
            "foreground": masks,
            "foreground_fraction": masks.reshape(len(masks), -1).mean(axis=1).astype(np.float32),
            "foreground_bits": bits,
        }


# ---------------------------------------------------------------------------------- inputs


def ensure_slide(side: int, folder: Path) -> Path:
    """The synthetic 0.5 um/px slide of ``side`` px, written once (in a child) and cached."""
    path = folder / f"unet-engine-{side}-mpp{MPP}-seed{SEED}.tif"
    if not path.exists():
        print(f"writing {path.name} (once) ...", flush=True)
        partial = path.with_name(f".{path.stem}.{os.getpid()}.tif")
        _in_child(_make_slide, {"path": str(partial), "side": side})
        partial.rename(path)
    return path


def _make_slide(params: dict[str, Any], queue: Any) -> None:
    from pathray.slides.synthetic import make_synthetic_slide

    side = params["side"]
    make_synthetic_slide(
        params["path"], width=side, height=side, mpp=MPP, seed=SEED, write_ground_truth=False
    )
    queue.put({"done": True})


def ensure_model(iterations: int, folder: Path) -> Path:
    """A :class:`UNetForeground` trained on synthetic tiles (seeded), saved once and cached."""
    path = folder / f"unet-engine-model-it{iterations}-seed{SEED}"
    if not (path / "model.pt").exists():
        print(f"training the U-Net ({iterations} iterations, once) ...", flush=True)
        _in_child(_train_model, {"path": str(path), "iterations": iterations})
    return path


def _train_model(params: dict[str, Any], queue: Any) -> None:
    from pipelines.training_data import synthetic_tiles

    unit = UNetForeground({**MODEL_CONFIG, "iterations": params["iterations"]})
    images, labels, _ = synthetic_tiles(16, 128, mpp=MPP, seed=SEED)
    unit.fit(images, labels).save(params["path"])
    queue.put({"loss": unit.training_["final_loss"]})


def plan_tiles_like_pathray(slide: Path, tile: int, min_tissue: float) -> tuple[np.ndarray, Any]:
    """PathRay's plan of the slide (tissue mask, tile grid) as a one-pixel-per-tile mask.

    Returns:
        The ``(rows, columns)`` uint8 mask TIAToolbox gets, and the planned tile ids.
    """
    from pathray.slides.readers import open_reader
    from pathray.slides.tiling import TileGrid, plan_tiles
    from pathray.slides.tissue import tissue_mask

    reader = open_reader(str(slide))
    width, height = reader.level_dimensions[0]
    grid = TileGrid(width, height, 1.0, tile, 0)
    refs = plan_tiles(0, str(slide), grid, tissue_mask(reader, MPP), min_tissue)
    ids = np.asarray(refs["tile_id"].to_numpy(), np.int64)
    mask = np.zeros((grid.rows, grid.columns), np.uint8)
    mask[ids // grid.columns, ids % grid.columns] = 1
    return mask, ids


# ---------------------------------------------------------------------------------- children


def _in_child(target: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Run ``target(params, queue)`` in a spawned process; its one message."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=target, args=(params, queue))
    child.start()
    try:
        return _receive(queue, child)
    finally:
        child.join()


def _receive(queue: Any, child: Any) -> dict[str, Any]:
    """The child's next message (an ``error`` message or a dead child raises)."""
    while True:
        try:
            message: dict[str, Any] = queue.get(timeout=1.0)
        except queue_mod.Empty:
            if not child.is_alive():
                raise RuntimeError(f"child process died (exit code {child.exitcode})") from None
            continue
        if "error" in message:
            raise RuntimeError(f"child process failed:\n{message['error']}")
        return message


def _tia_model_class() -> Any:
    """The ``ModelABC`` wrapping the U-Net for TIAToolbox (defined lazily: imports torch)."""
    import torch
    from tiatoolbox.models.models_abc import ModelABC

    from pipelines.nuclei.unet import to_tensor

    class TiaUNet(ModelABC):
        """The U-Net as a TIAToolbox model: foreground probability out, mask after merging."""

        #: perf_counter() after each batch (this process runs the inference loop).
        stamps: list[float] = []
        #: Autocast to bfloat16 (``--precision bfloat16``), as PathRay's unit does.
        bfloat16 = False

        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Any) -> Any:
            return self.net(x)

        @staticmethod
        def infer_batch(model: Any, batch_data: Any, *, device: str) -> np.ndarray:
            model.eval()
            images = batch_data.numpy() if isinstance(batch_data, torch.Tensor) else batch_data
            dev = torch.device(device).type
            with (
                torch.inference_mode(),
                torch.autocast(dev, dtype=torch.bfloat16, enabled=TiaUNet.bfloat16),
            ):
                logits = model(to_tensor(np.asarray(images)).to(device))
                prob = torch.sigmoid(logits[:, :1].float()).permute(0, 2, 3, 1).cpu().numpy()
            TiaUNet.stamps.append(time.perf_counter())
            return prob

        @staticmethod
        def postproc(image: Any) -> Any:
            return image[..., 0] > THRESHOLD

    return TiaUNet


def _tia_child(params: dict[str, Any], queue: Any) -> None:
    """TIAToolbox's SemanticSegmentor over the slide in WSI mode."""
    try:
        # A user's script on Linux forks its DataLoader workers; this process was spawned and
        # would spawn them too (each re-importing TIAToolbox, transformers included).
        mp.set_start_method("fork", force=True)
        import torch
        from tiatoolbox import rcParam
        from tiatoolbox.models.engine.io_config import IOSegmentorConfig
        from tiatoolbox.models.engine.semantic_segmentor import SemanticSegmentor

        from benchmarks.tile_streaming import _quiet
        from pipelines.nuclei.unet import build_unet

        _quiet()
        rcParam["torch_compile_mode"] = params["tia_compile"]
        tile, device = params["tile"], params["device"]
        net = build_unet(tuple(params["channels"]))
        net.load_state_dict(torch.load(Path(params["model"]) / "model.pt", weights_only=True))
        net = net.eval()
        if params["tia_model"] == "inference":  # PathRay's inference copy, for the record
            from pathray.units.trainable import inference_module

            net = inference_module(net)
        model = _tia_model_class()(net)
        type(model).bfloat16 = params["precision"] == "bfloat16"
        engine = SemanticSegmentor(
            model=model,
            batch_size=params["batch"],
            num_workers=params["tia_workers"],
            device=device,
            verbose=False,
        )
        resolution = [{"units": "mpp", "resolution": MPP}]
        ioconfig = IOSegmentorConfig(
            input_resolutions=resolution,
            output_resolutions=resolution,
            patch_input_shape=(tile, tile),
            patch_output_shape=(tile, tile),
            stride_shape=(tile, tile),
            save_resolution=resolution[0],
        )
        mask = np.load(params["mask"])
        queue.put({"ready": True})
        start = time.perf_counter()
        out = engine.run(
            [Path(params["slide"])],
            masks=[mask],
            patch_mode=False,
            ioconfig=ioconfig,
            save_dir=Path(params["out"]) / "tia",
            overwrite=True,
            output_type="zarr",
            batch_size=params["batch"],
            num_workers=params["tia_workers"],
            device=device,
        )
        seconds = time.perf_counter() - start
        gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if device != "cpu" else None
        queue.put(
            {
                "run_s": seconds,
                "tiles": len(engine.dataloader.dataset.inputs),
                "batch_stamps": model.stamps,
                "batch_tiles": params["batch"],
                "output": str(next(iter(out.values()))),
                "torch_threads": torch.get_num_threads(),
                "torch_gpu_peak_mib": gpu_peak,
            }
        )
    except BaseException:
        queue.put({"error": traceback.format_exc()})


def _pathray_child(params: dict[str, Any], queue: Any) -> None:
    """PathRay's run_pipeline over the slide on a local Ray."""
    import ray

    try:
        from benchmarks.pipeline_scale import start_ray  # retries a start a busy machine times out
        from benchmarks.tile_streaming import _quiet
        from benchmarks.unet_engine import UNetForeground as Foreground  # not __main__'s
        from pathray.catalog import Catalog
        from pathray.engine.runner import run_pipeline
        from pathray.pipeline.spec import PipelineSpec
        from pathray.results.artifacts import ArtifactStore
        from pathray.results.store import ColdStore
        from pathray.slides.register import register_slides
        from pathray.units.base import Resources
        from pathray.units.registry import register
        from pathray.units.trainable import read_metadata

        _quiet()
        logging.getLogger("alembic").setLevel(logging.WARNING)  # the new catalog's migrations
        home = Path(params["out"]) / "pathray"
        catalog = Catalog.open(f"sqlite:///{home / 'catalog.db'}")
        store = ColdStore(home / "cold")
        slide = Path(params["slide"])
        register_slides(catalog, slide, store="bench", store_root=slide.parent, image_set="unet")
        catalog.register_model(MODEL_NAME, "torch", task="benchmark")
        catalog.add_model_version(
            MODEL_NAME,
            artifact=ArtifactStore(store.root).put(params["model"]),
            training_run={"benchmark": "unet_engine"},
            created_by="benchmark",
        )
        register(Foreground)
        gpus = 1.0 if params["device"] != "cpu" else 0.0
        cpus = params["unit_cpus"] or Foreground.resources.num_cpus
        Foreground.resources = Resources(num_cpus=cpus, num_gpus=gpus)
        config = {
            **read_metadata(params["model"])["config"],
            "device": params["device"],
            "precision": params["precision"],
        }
        spec = PipelineSpec.model_validate(
            {
                "name": "unet-engine",
                "tiling": {
                    "mpp": MPP,
                    "size": params["tile"],
                    "overlap": 0,
                    "min_tissue": params["min_tissue"],
                },
                "units": [
                    {
                        "id": "unet",
                        "unit": Foreground.name,
                        "model": f"{MODEL_NAME}@1",
                        "config": config,
                    }
                ],
            }
        )
        start_ray(params["cpus"])
        queue.put({"ready": True})
        stamps: list[tuple[float, int]] = []
        start = time.perf_counter()
        result = run_pipeline(
            catalog,
            store,
            spec,
            "unet",
            requester="benchmark",
            progress=lambda done, _: stamps.append((time.perf_counter(), done)),
        )
        seconds = time.perf_counter() - start
        queue.put(
            {
                "run_s": seconds,
                "tiles": result.tiles_processed,
                "status": result.status,
                "progress": stamps,
                "output": str(store.uri(result.run_id, "tiles")),
                "unit_cpus": cpus,
                "phases": result.phases,
            }
        )
    except BaseException:
        queue.put({"error": traceback.format_exc()})
    finally:
        ray.shutdown()


_CHILDREN = {"tiatoolbox": _tia_child, "pathray": _pathray_child}


def run_engine(engine: str, params: dict[str, Any], interval: float) -> dict[str, Any]:
    """One run of one engine in a fresh process, with its process tree's memory sampled."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start = time.perf_counter()
    child = ctx.Process(target=_CHILDREN[engine], args=(params, queue), name=engine)
    child.start()
    try:
        with ProcessTreeSampler(child.pid, interval, gpu=params["device"] != "cpu") as tree:
            tree.phase = "start-up"
            _receive(queue, child)
            ready = time.perf_counter()
            tree.phase = "run"
            result = _receive(queue, child)
            tree.phase = "end"
    finally:
        child.join(timeout=120)
        if child.is_alive():
            child.kill()
    result["startup_s"] = ready - start
    result["peak_pss_run_mib"] = tree.peak("pss_mib", "run")
    result["peak_rss_run_mib"] = tree.peak("rss_mib", "run")
    result["peak_pss_startup_mib"] = tree.peak("pss_mib", "start-up")
    result["peak_procs"] = tree.peak("procs")
    result["gpu"] = tree.gpu_summary("run")
    result["stream_rate"] = _stream_rate(engine, result)
    return result


def _stream_rate(engine: str, result: dict[str, Any]) -> float | None:
    """Tiles per second from the first batch done to the last (the first batch not counted)."""
    if engine == "pathray":
        marks = result.pop("progress")
        if len(marks) < 4:  # a few written blocks: too coarse to time a stream
            return None
        (t0, n0), (t1, n1) = marks[0], marks[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None
    stamps = result.pop("batch_stamps")
    if len(stamps) < 2 or stamps[-1] <= stamps[0]:
        return None
    # every batch but the last is full; the last holds the remainder
    tiles_after_first = result["tiles"] - result["batch_tiles"]
    return tiles_after_first / (stamps[-1] - stamps[0])


# ---------------------------------------------------------------------------------- checks


def compare_outputs(pathray_tiles: str, tia_zarr: str, tile: int) -> dict[str, Any]:
    """Pixel agreement of the two foreground masks on every tile PathRay stored.

    Returns:
        Tiles compared, the Dice over all of them, the lowest per-tile Dice (tiles with at least
        1% foreground in either), the share of equal pixels and the largest per-tile difference
        of foreground fraction.
    """
    import lance
    import zarr

    table = lance.dataset(pathray_tiles).to_table(columns=["x", "y", "foreground_bits"])
    group: Any = zarr.open(tia_zarr, mode="r")
    predictions = np.asarray(group["predictions"])
    if predictions.ndim == 3:
        predictions = predictions[..., 0]
    inter = total = equal = 0
    worst, worst_fraction = 1.0, 0.0
    xs, ys = table["x"].to_numpy(), table["y"].to_numpy()
    for x, y, bits in zip(xs, ys, table["foreground_bits"].to_pylist(), strict=True):
        ours = np.unpackbits(np.frombuffer(bits, np.uint8))[: tile * tile].reshape(tile, tile)
        theirs = np.zeros((tile, tile), np.uint8)
        part = predictions[y : y + tile, x : x + tile] > 0
        theirs[: part.shape[0], : part.shape[1]] = part
        both, count = int((ours & theirs).sum()), int(ours.sum() + theirs.sum())
        inter, total = inter + both, total + count
        equal += int((ours == theirs).sum())
        if max(ours.sum(), theirs.sum()) >= 0.01 * tile * tile:
            worst = min(worst, 2 * both / count)
        worst_fraction = max(worst_fraction, abs(float(ours.mean()) - float(theirs.mean())))
    n = table.num_rows
    return {
        "tiles_compared": n,
        "dice": 2 * inter / total if total else 1.0,
        "min_tile_dice": worst,
        "equal_pixels": equal / (n * tile * tile) if n else float("nan"),
        "max_fraction_diff": worst_fraction,
        "foreground_fraction": total / 2 / (n * tile * tile) if n else float("nan"),
    }


# ---------------------------------------------------------------------------------- report


def _ratio(a: float | None, b: float | None) -> float:
    return a / b if a and b else float("nan")


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Median figures of each engine over its repetitions."""
    out = {}
    for engine, results in runs.items():

        def med(key: str, rs: list[dict[str, Any]] = results) -> float:
            return median(r[key] for r in rs if r.get(key) is not None)

        out[engine] = {
            "tiles": med("tiles"),
            "startup_s": med("startup_s"),
            "run_s": med("run_s"),
            "tiles_per_s": median(r["tiles"] / r["run_s"] for r in results),
            "tiles_per_s_with_startup": median(
                r["tiles"] / (r["run_s"] + r["startup_s"]) for r in results
            ),
            "stream_tiles_per_s": med("stream_rate"),
            "peak_pss_run_mib": med("peak_pss_run_mib"),
            "peak_rss_run_mib": med("peak_rss_run_mib"),
            "peak_pss_startup_mib": med("peak_pss_startup_mib"),
        }
    return out


def report(summary: dict[str, dict[str, float]], args: argparse.Namespace) -> dict[str, Any]:
    """Print the tables; return the ratios (PathRay / TIAToolbox)."""
    columns = {
        "tiles": "tiles",
        "startup_s": "start-up s",
        "run_s": "run s",
        "tiles_per_s": "tiles/s",
        "tiles_per_s_with_startup": "tiles/s +start-up",
        "stream_tiles_per_s": "stream tiles/s",
        "peak_pss_run_mib": "peak PSS MiB",
        "peak_rss_run_mib": "peak RSS sum MiB",
        "peak_pss_startup_mib": "start-up PSS MiB",
    }
    rows = [
        {"engine": engine, **{label: figures[key] for key, label in columns.items()}}
        for engine, figures in summary.items()
    ]
    ratios = {
        key: _ratio(summary["pathray"][key], summary["tiatoolbox"][key])
        for key in columns
        if key != "tiles"
    }
    rows.append({"engine": "pathray / tiatoolbox", **{columns[k]: v for k, v in ratios.items()}})
    print_table(
        rows,
        title=f"U-Net over a {args.size} px slide at {MPP} um/px, {args.tile} px tiles, batch "
        f"{args.batch}, device {args.device}, {args.precision} (median of {args.repeat})",
    )
    met = ratios["tiles_per_s"] >= GOAL
    print(
        f"\ngoal: PathRay >= {GOAL} x TIAToolbox tiles/s: {ratios['tiles_per_s']:.2f} x "
        f"-> {'met' if met else 'NOT met'} (with start-up: "
        f"{ratios['tiles_per_s_with_startup']:.2f} x; stream: "
        f"{ratios['stream_tiles_per_s']:.2f} x)"
    )
    return ratios


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.unet_engine", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--size", type=int, default=8192, help="slide side in px (0.5 mpp)")
    parser.add_argument("--tile", type=int, default=256, help="tile (patch) side in px")
    parser.add_argument("--batch", type=int, default=NucleusUNet.batch_size, help="tiles/batch")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of PathRay's local Ray")
    parser.add_argument("--tia-workers", type=int, default=1, help="TIAToolbox DataLoader workers")
    parser.add_argument(
        "--tia-compile",
        default="disable",
        help="TIAToolbox's torch_compile_mode ('disable', or its default 'default')",
    )
    parser.add_argument(
        "--tia-model",
        choices=("eager", "inference"),
        default="eager",
        help="the module TIAToolbox runs: the trained one as loaded (its users' path) or "
        "PathRay's inference copy (BatchNorm folded, channels_last), to separate engine from model",
    )
    parser.add_argument(
        "--unit-cpus", type=float, default=None, help="CPUs per U-Net actor (default: the unit's)"
    )
    parser.add_argument("--device", default="cpu", help="torch device of both engines (cuda)")
    parser.add_argument(
        "--precision",
        choices=("float32", "bfloat16"),
        default="float32",
        help="inference arithmetic of both engines (bfloat16: autocast, the units' precision)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per engine (ABBA order)")
    parser.add_argument("--min-tissue", type=float, default=0.05, help="tissue share of a tile")
    parser.add_argument("--train-iterations", type=int, default=40, help="U-Net training steps")
    parser.add_argument("--interval", type=float, default=0.25, help="memory sampling period")
    parser.add_argument("--data", type=Path, default=None, help="cache of slide and model")
    parser.add_argument("--keep", action="store_true", help="keep both engines' outputs")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON result (default: benchmarks/results/unet_engine-<size>.json)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables, write the JSON.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        0.

    Raises:
        SystemExit: If the two engines' outputs disagree (exit status 1).
    """
    args = _parse(argv)
    if args.size % args.tile:
        raise SystemExit(f"--size must be a multiple of --tile={args.tile}. Got {args.size}.")
    data = args.data or results_dir("data")
    data.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    load_start = [round(v, 2) for v in os.getloadavg()]
    print(
        f"unet_engine: {args.size} px slide, {args.tile} px tiles, device {args.device}, "
        f"{args.precision}\n"
        f"machine: {machine['cores']} cores ({machine['cpu_model']}), {machine['memory_gib']} GiB, "
        f"load {load_start}",
        flush=True,
    )
    slide = ensure_slide(args.size, data)
    model = ensure_model(args.train_iterations, data)
    mask, tile_ids = plan_tiles_like_pathray(slide, args.tile, args.min_tissue)
    work = Path(tempfile.mkdtemp(prefix="unet-engine-", dir=data))
    np.save(work / "mask.npy", mask)
    print(f"{len(tile_ids)} tissue tiles of {mask.size}; outputs under {work}", flush=True)
    base = {
        "slide": str(slide),
        "model": str(model),
        "mask": str(work / "mask.npy"),
        "tile": args.tile,
        "batch": args.batch,
        "cpus": args.cpus,
        "tia_workers": args.tia_workers,
        "tia_compile": args.tia_compile,
        "tia_model": args.tia_model,
        "unit_cpus": args.unit_cpus,
        "device": args.device,
        "precision": args.precision,
        "min_tissue": args.min_tissue,
        "channels": list(MODEL_CONFIG["channels"]),
    }
    runs: dict[str, list[dict[str, Any]]] = {engine: [] for engine in ENGINES}
    agreement: dict[str, Any] = {}
    try:
        for rep in range(args.repeat):
            order = ENGINES if rep % 2 == 0 else ENGINES[::-1]
            outputs = {}
            for engine in order:
                out = work / f"rep{rep}-{engine}"
                result = run_engine(engine, {**base, "out": str(out)}, args.interval)
                outputs[engine] = result.pop("output")
                runs[engine].append(result)
                print(
                    f"  run {rep + 1} {engine:10s} {result['tiles']} tiles: start-up "
                    f"{result['startup_s']:.1f} s, run {result['run_s']:.1f} s, "
                    f"{result['tiles'] / result['run_s']:.1f} tiles/s, peak PSS "
                    f"{result['peak_pss_run_mib']:.0f} MiB"
                    + (
                        " ("
                        + ", ".join(f"{k} {v:.1f} s" for k, v in result["phases"].items())
                        + ")"
                        if result.get("phases")
                        else ""
                    ),
                    flush=True,
                )
            if rep == 0:
                agreement = compare_outputs(outputs["pathray"], outputs["tiatoolbox"], args.tile)
            if not args.keep:
                for engine in ENGINES:
                    shutil.rmtree(work / f"rep{rep}-{engine}", ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    summary = summarise(runs)
    ratios = report(summary, args)
    agree = agreement.get("dice", 0.0) >= MIN_DICE
    print_table(
        [{"check": k, "value": v} for k, v in agreement.items()],
        title=f"Outputs (foreground masks) agree: {'yes' if agree else 'NO'} "
        f"(Dice >= {MIN_DICE} required)",
    )
    same_tiles = {engine: [r["tiles"] for r in rs] for engine, rs in runs.items()}
    print(f"tiles planned {len(tile_ids)}; processed {same_tiles}")
    load_end = [round(v, 2) for v in os.getloadavg()]
    print(f"load average (1, 5, 15 min): start {load_start}, end {load_end}")
    for engine, rs in runs.items():
        gpu = [r["gpu"] for r in rs if r.get("gpu")]
        if gpu:
            print(f"GPU during {engine} runs: {gpu}")
    payload = {
        "params": {k: v for k, v in vars(args).items() if k not in ("out", "data")},
        "tiles_planned": len(tile_ids),
        "summary": summary,
        "ratios": ratios,
        "goal": {"ratio": GOAL, "met": bool(ratios.get("tiles_per_s", 0.0) >= GOAL)},
        "agreement": {**agreement, "agree": agree},
        "runs": runs,
        "load_start": load_start,
        "load_end": load_end,
    }
    record = write_result("unet_engine", payload)
    out_path = args.out or results_dir() / f"unet_engine-{args.size}.json"
    line = record.read_text().splitlines()[-1]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(json.loads(line), indent=1) + "\n")
    print(f"JSON written to {out_path}")
    if not agree:  # an exception, so that run_all (which ignores return values) sees it too
        raise SystemExit(f"The engines' outputs disagree (Dice {agreement.get('dice')}).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
