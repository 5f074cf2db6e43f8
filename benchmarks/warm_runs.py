"""A small run, cold against warm: from the run call to the results committed.

One 2,000 x 2,000 px slide (the shared 2202 px NDPI OME-TIFF when present, else a synthetic
slide of that size) through the ``nuclei`` preset (tissue mask -> the registered
``nuclei-default`` U-Net -> nucleus features), in one process on one local Ray:

* ``cold``: ``run_pipeline(..., warm=False)``: Ray Data actor pools of the run's own, so every
  run pays the actors' start (worker process, imports, model load);
* ``warm``: ``run_pipeline(..., warm=True)`` after one warm-up run that starts the pools: the
  run leases the unit actors the earlier runs left (:mod:`pathray.engine.warm`).

The passes alternate (cold, warm, cold, warm, ...) so that load drifts hit both sides alike;
each figure is the median of ``--repeat`` passes, with the phases (plan, first batch, stream,
commit) of the median pass. Warm and cold runs commit the same rows (checked). Goal (issue 17):
a warm small run under 5 s.

Run: ``python -m benchmarks.warm_runs [--repeat 3] [--cpus 2]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, machine_info, median, print_table, results_dir, write_result
from benchmarks.tile_streaming import start_ray

SIDE = 2000


def small_slide() -> Path:
    """The shared NDPI OME-TIFF (2202 px square), or a synthetic 2,000 px slide."""
    shared = Path(os.environ.get("PATHRAY_SHARED_DATA", ROOT.parent / "shared" / "data"))
    found = sorted(shared.glob("*ndpi*.ome.tif"))
    if found:
        return found[0]
    from pathray.slides.synthetic import make_synthetic_slide

    path = results_dir("data") / f"synthetic-{SIDE}-warm.tif"
    if not path.exists():
        make_synthetic_slide(path, width=SIDE, height=SIDE, mpp=0.25, seed=7)
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="passes per side")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--preset", default="nuclei", help="pipeline preset")
    args = parser.parse_args(argv)

    from pathray.catalog import Catalog
    from pathray.engine import warm
    from pathray.engine.runner import run_pipeline
    from pathray.results.store import ColdStore
    from pathray.slides.register import register_slides
    from pipelines.presets import load_preset

    info = machine_info()
    slide = small_slide()
    home = Path(tempfile.mkdtemp(prefix="warm-runs-"))
    try:
        catalog = Catalog.open(f"sqlite:///{home / 'catalog.db'}")
        store = ColdStore(home / "cold")
        register_slides(catalog, slide, store="bench", image_set="bench")
        spec = load_preset(args.preset)
        start_ray(args.cpus)
        first = run_pipeline(catalog, store, spec, "bench", warm=True)  # starts the pools
        runs: dict[str, list[Any]] = {"cold": [], "warm": []}
        for _ in range(args.repeat):
            for side in ("cold", "warm"):
                runs[side].append(run_pipeline(catalog, store, spec, "bench", warm=side == "warm"))
        key = [("slide_id", "ascending"), ("tile_id", "ascending"), ("object_id", "ascending")]
        same = all(
            store.read(r.run_id).sort_by(key).equals(store.read(first.run_id).sort_by(key))
            for r in (runs["cold"][0], runs["warm"][0])
        )
        rows = []
        for side, results in runs.items():
            seconds = [r.seconds for r in results]
            mid = sorted(results, key=lambda r: r.seconds)[len(results) // 2]
            rows.append(
                {
                    "mode": side,
                    "tiles": mid.tiles_processed,
                    "median s": round(median(seconds), 2),
                    **{k: round(v, 2) for k, v in mid.phases.items()},
                    "passes s": " ".join(f"{s:.2f}" for s in seconds),
                }
            )
        cold_s, warm_s = rows[0]["median s"], rows[1]["median s"]
        print_table(
            rows,
            title=f"{args.preset} on {slide.name} ({mid.tiles_processed} tiles), run call to "
            f"results committed, local Ray with {args.cpus} CPUs",
        )
        print(f"first warm run (starts the pools): {first.seconds:.2f} s {first.phases}")
        print(
            f"warm {warm_s:.2f} s vs cold {cold_s:.2f} s: {cold_s / warm_s:.1f}x faster; "
            f"goal warm < 5 s: {'met' if warm_s < 5 else 'NOT met'}; same rows: {same}"
        )
        print(f"machine: {info['cpu_model']}, {info['cores']} cores | load {os.getloadavg()}")
        payload = {
            "args": vars(args),
            "machine": info,
            "rows": rows,
            "first_warm_s": first.seconds,
            "ratio": cold_s / warm_s,
            "same_rows": same,
            "load": os.getloadavg(),
        }
        write_result("warm_runs", payload)
        warm.evict_idle()
        catalog.close()
        return payload
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
