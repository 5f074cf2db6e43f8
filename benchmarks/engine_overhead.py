"""Overhead of PathRay's DAG engine: a chain of no-op units against a bare Ray Data pipeline.

Both sides read the same tiles of the same synthetic slide through PathRay's tile source and
pass them through the same number of actor-pool stages with the same resources; the units do
nothing. What differs is what the engine adds around the units: the unit wrapper
(:class:`~pathray.engine.stages.UnitStage`: key columns, tile markers, per-unit progress
reports), the staging of every tile to Parquet with deterministic keys (in the last unit's
actors), and, for the whole run, planning (tissue mask, tile grid), the catalog records, the
commit to Lance and the result locations.

Three figures (each the median of ``--repeat`` passes, the passes interleaved so load drifts
hit both sides alike):

* ``bare``: ``tile_dataset -> map_batches(NoOp) x k -> iter_batches``;
* ``engine stream``: :func:`~pathray.engine.runner.build_dataset` over the same tile
  references (unit stages and writer), iterated the same way;
* ``engine run``: :func:`~pathray.engine.runner.run_pipeline` end to end (plan, stream,
  commit to Lance, catalog).

Goal (issue 3): the engine within 10 % of the bare pipeline.

Run: ``python -m benchmarks.engine_overhead [--side 8192] [--units 3] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine_info, median, print_table, results_dir, write_result
from benchmarks.tile_streaming import TILE, ensure_slide, start_ray

SPEC = """
name: noop-chain
version: "1"
tiling: {{mpp: {mpp}, size: {tile}, overlap: 0, min_tissue: 0.0}}
units:
{units}
"""


class BareNoOp:
    """What a hand-written Ray Data stage would do: add a constant column, keep the batch."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Return the batch with a zero per row."""
        return {**batch, "noop": np.zeros(len(batch["image"]), np.int8)}


def chain_spec(units: int, mpp: float) -> str:
    """A pipeline of ``units`` no-op units in a chain."""
    lines = []
    for i in range(units):
        after = f", after: [n{i - 1}]" if i else ""
        lines.append(f"  - {{id: n{i}, unit: noop{after}}}")
    return SPEC.format(mpp=mpp, tile=TILE, units="\n".join(lines))


def bare_pass(refs: Any, units: int, stage: dict[str, Any], read_cpus: float) -> int:
    """Stream the tiles through ``units`` bare no-op stages; the number of tiles seen."""
    from pathray.slides.source import tile_dataset

    ds = tile_dataset(refs, block_rows=32, num_cpus=read_cpus)
    for _ in range(units):
        ds = ds.map_batches(BareNoOp, batch_size=64, batch_format="numpy", **stage)
    n = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        n += len(batch["tile_id"])
    return n


def engine_stream_pass(spec: Any, refs: Any, staging: Path) -> int:
    """Stream the tiles through the engine's stages (units and writer); tiles written."""
    from pathray.engine.runner import build_dataset

    ds = build_dataset(spec, refs, staging)
    n = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        n += int(np.asarray(batch["tiles"]).sum())
    shutil.rmtree(staging, ignore_errors=True)
    return n


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=8192, help="slide side in px")
    parser.add_argument("--units", type=int, default=3, help="no-op units in the chain")
    parser.add_argument("--repeat", type=int, default=3, help="passes per side")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    args = parser.parse_args(argv)

    from pathray.catalog import Catalog
    from pathray.engine.cluster import free_resources
    from pathray.engine.plan import plan_run
    from pathray.engine.runner import run_pipeline
    from pathray.engine.sizing import fit_stages, stage_resources
    from pathray.pipeline.spec import PipelineSpec
    from pathray.results.store import ColdStore
    from pathray.slides.register import register_slides

    info = machine_info()
    data = results_dir("data")
    slide = ensure_slide(args.side, data)
    home = Path(tempfile.mkdtemp(prefix="engine-overhead-"))
    try:
        catalog = Catalog.open(f"sqlite:///{home / 'catalog.db'}")
        store = ColdStore(home / "cold")
        report = register_slides(catalog, slide, store="bench", image_set="bench")
        slide_id = report.registered[0].id
        mpp = report.registered[0].mpp or 0.5
        spec = PipelineSpec.from_yaml(chain_spec(args.units, mpp))
        start_ray(args.cpus)
        refs = plan_run(catalog, [slide_id], spec.tiling).refs
        declared = stage_resources(spec, spec.ordered())
        stages, read_cpus = fit_stages(declared, free_resources()[0])
        bare_stage = dict(stages[0])
        times: dict[str, list[float]] = {"bare": [], "engine stream": [], "engine run": []}
        tiles: dict[str, int] = {}
        bare_pass(refs, args.units, bare_stage, read_cpus)  # warm-up: workers, page cache
        for i in range(args.repeat):
            t0 = time.perf_counter()
            tiles["bare"] = bare_pass(refs, args.units, bare_stage, read_cpus)
            t1 = time.perf_counter()
            tiles["engine stream"] = engine_stream_pass(spec, refs, home / f"staging-{i}")
            t2 = time.perf_counter()
            result = run_pipeline(catalog, store, spec, "bench")
            t3 = time.perf_counter()
            tiles["engine run"] = result.tiles_processed
            times["bare"].append(t1 - t0)
            times["engine stream"].append(t2 - t1)
            times["engine run"].append(t3 - t2)
        bare = median(times["bare"])
        rows = []
        for name, values in times.items():
            seconds = median(values)
            rows.append(
                {
                    "pipeline": name,
                    "tiles": tiles[name],
                    "median s": round(seconds, 2),
                    "tiles/s": round(tiles[name] / seconds, 1),
                    "overhead vs bare": f"{(seconds / bare - 1) * 100:+.1f} %",
                    "passes s": " ".join(f"{v:.2f}" for v in values),
                }
            )
        print_table(
            rows,
            title=f"{args.units} no-op units over {tiles['bare']} tiles of {TILE} px "
            f"({args.side} px slide), local Ray with {args.cpus} CPUs",
        )
        stream = median(times["engine stream"]) / bare - 1
        print(f"goal: engine within 10 % of bare Ray Data -> stream {stream * 100:+.1f} %")
        print(f"machine: {info['cpu_model']}, {info['cores']} cores | load {os.getloadavg()}")
        payload = {"args": vars(args), "machine": info, "rows": rows, "stream_overhead": stream}
        write_result("engine_overhead", payload)
        catalog.close()
        return payload
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
