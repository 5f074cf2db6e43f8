"""The whole ``nuclei`` pipeline on one large synthetic slide: wall time and peak memory.

Steps (each timed on its own):

1. **slide**: a synthetic H&E slide of ``side x side`` px at 0.25 mpp
   (:func:`~pathray.slides.synthetic.make_synthetic_slide`), made in a child process (so its
   memory does not count against the run) and cached under ``--cache``; a cached slide is
   reused and its recorded generation time reported.
2. **register**: the slide in a fresh catalog (SQLite in a temporary ``PATHRAY_HOME``).
3. **plan**: :func:`~pathray.engine.plan.plan_run` alone (tissue mask + tile references), as
   the driver does at the start of a run.
4. **run**: :func:`~pathray.engine.runner.run_pipeline` with the ``nuclei`` preset on a local
   Ray of ``--cpus`` CPUs (it plans again, so its wall time includes planning).

Memory is sampled every ``--interval`` s by a thread over this process and all its
descendants (the local Ray: gcs_server, raylet with the object store, agents, workers), by
process tree rather than by name, since other Ray instances may share the machine:

- ``RSS sum``: resident memory summed over the tree. Pages of the object store (shared
  memory) are counted once per process mapping them, so this over-counts;
- ``PSS sum``: proportional set size summed over the tree (shared pages split between the
  processes mapping them): the best single figure for "memory the run holds";
- ``driver``: this process's RSS (and ``ru_maxrss``);
- ``object store``: used bytes from ``ray.available_resources()`` against the total, and the
  plasma usage of ``ray._private.internal_api.memory_summary`` (every 4th sample).

Load averages (``os.getloadavg``) are recorded next to every timing: the figures are only
comparable on an otherwise idle machine.

Run::

    python -m benchmarks.pipeline_scale --side 20000
    python -m benchmarks.pipeline_scale --side 100000 --tissue-fraction 0.03 --no-gt
    python -m benchmarks.pipeline_scale --side 4096 --keep   # keep catalog + results

The slide is registered in a child process by default (as ``pathray register`` would be):
registration probes the slide with TIAToolbox, which imports torch (~0.5 GiB); use
``--register-here`` to register in the driver as ``pathray demo`` does.

Prints a table and one JSON line, and appends the line to
``benchmarks/results/pipeline_scale.jsonl``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import re
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import machine_info, print_table, write_result

DEFAULT_CACHE = Path("/tmp/pathray-bench/pipeline_scale")
#: Slides up to this side get their nucleus ground truth by default.
GT_MAX_SIDE = 20000
MIB = 2**20
#: Steps whose peaks are the headline figures (Ray is up; registration is not included).
RUN_PHASES = ("plan", "run", "after")


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(v, 2) for v in os.getloadavg()]


# --------------------------------------------------------------------------- memory sampling


def _pss_bytes(pid: int) -> int | None:
    """Proportional set size of a process (``/proc/<pid>/smaps_rollup``), or None."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class TreeSampler:
    """Samples the memory of this process tree and of the local Ray's object store.

    Args:
        interval: Seconds between samples.

    Attributes:
        phase: Label of the current step; peaks are kept per phase.
        tiles_done: Progress of the run, recorded with each sample.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.phase = "start"
        self.tiles_done = 0
        self.samples: list[dict[str, Any]] = []
        self.peaks: dict[str, dict[str, Any]] = {}
        self._me = psutil.Process()
        self._procs: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.perf_counter()
        self._ticks = 0
        self._plasma_mib: float | None = None
        self._lock = threading.Lock()

    def _object_store(self) -> tuple[float | None, float | None]:
        """``(used MiB, total MiB)`` of the object store, when Ray is up."""
        import ray

        if not ray.is_initialized():
            return None, None
        try:
            total = ray.cluster_resources().get("object_store_memory")
            free = ray.available_resources().get("object_store_memory", total)
        except Exception:  # shutting down
            return None, None
        if total is None:
            return None, None
        return (total - (free or 0)) / MIB, total / MIB

    def _plasma(self) -> float | None:
        """Plasma usage in MiB reported by the raylet (``memory_summary``)."""
        import ray

        if not ray.is_initialized():
            return None
        try:
            from ray._private.internal_api import memory_summary

            text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
        except Exception:  # not available / shutting down
            return None
        match = re.search(r"Plasma memory usage (\d+) MiB", text)
        return float(match.group(1)) if match else None

    def sample(self) -> dict[str, Any]:
        """Take one sample now (and update the peaks)."""
        with self._lock:
            return self._sample()

    def _sample(self) -> dict[str, Any]:
        procs = [self._me]
        with contextlib.suppress(psutil.Error):
            procs += self._me.children(recursive=True)
        rss = pss = 0
        driver_rss = 0
        top: tuple[int, str] = (0, "")
        by_name: dict[str, list[float]] = {}
        for proc in procs:
            try:
                cached = self._procs.setdefault(proc.pid, proc)
                r = cached.memory_info().rss
                name = cached.name()
            except psutil.Error:
                continue
            rss += r
            p = _pss_bytes(proc.pid)
            p = p if p is not None else r
            pss += p
            if proc.pid == self._me.pid:
                driver_rss = r
                name = "driver"
            if r > top[0]:
                top = (r, name)
            entry = by_name.setdefault(name, [0, 0.0])
            entry[0] += 1
            entry[1] += p / MIB
        used, total = self._object_store()
        if self._ticks % 4 == 0:
            self._plasma_mib = self._plasma()
        self._ticks += 1
        row = {
            "t": round(time.perf_counter() - self._t0, 2),
            "phase": self.phase,
            "tiles": self.tiles_done,
            "procs": len(procs),
            "rss_mib": rss / MIB,
            "pss_mib": pss / MIB,
            "driver_mib": driver_rss / MIB,
            "store_used_mib": used,
            "store_total_mib": total,
            "plasma_mib": self._plasma_mib,
            "top": f"{top[1]} {top[0] / MIB:.0f} MiB",
        }
        self.samples.append(row)
        peak = self.peaks.setdefault(self.phase, {})
        for key in ("rss_mib", "pss_mib", "driver_mib", "store_used_mib", "plasma_mib", "procs"):
            value = row[key]
            if value is not None and value > peak.get(key, -1):
                peak[key] = value
                if key == "pss_mib":
                    peak["top_at_pss_peak"] = row["top"]
                    peak["pss_by_process_at_peak"] = {
                        k: [int(n), round(m)] for k, (n, m) in sorted(by_name.items())
                    }
        return row

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> TreeSampler:
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True, name="mem-sampler")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def overall(self, key: str, phases: tuple[str, ...] | None = None) -> float:
        """Peak of ``key`` over the given phases (all by default)."""
        values = [
            p[key]
            for name, p in self.peaks.items()
            if key in p and (phases is None or name in phases)
        ]
        return max(values) if values else float("nan")

    def at_progress(self, total: int, fractions: tuple[float, ...]) -> list[float | None]:
        """PSS sum (MiB) of the first run sample at or past each fraction of the tiles."""
        out: list[float | None] = []
        run = [s for s in self.samples if s["phase"] == "run"]
        for f in fractions:
            hit = next((s for s in run if total and s["tiles"] >= f * total), None)
            out.append(round(hit["pss_mib"]) if hit else None)
        return out

    def timeline(self, points: int = 40) -> list[list[Any]]:
        """Down-sampled ``[t, phase, tiles, pss MiB, rss MiB, store used MiB]`` rows."""
        step = max(1, len(self.samples) // points)
        rows = self.samples[::step] + ([self.samples[-1]] if self.samples else [])
        return [
            [
                s["t"],
                s["phase"],
                s["tiles"],
                round(s["pss_mib"]),
                round(s["rss_mib"]),
                None if s["store_used_mib"] is None else round(s["store_used_mib"]),
            ]
            for s in rows
        ]


# --------------------------------------------------------------------------- the slide


def _generate(
    path: str, side: int, tissue_fraction: float, seed: int, gt: bool, queue: Any
) -> None:
    """Child process: make the slide, report seconds, peak RSS and nuclei through ``queue``."""
    from pathray.slides.synthetic import make_synthetic_slide

    start = time.perf_counter()
    slide = make_synthetic_slide(
        path,
        width=side,
        height=side,
        mpp=0.25,
        seed=seed,
        tissue_fraction=tissue_fraction,
        write_ground_truth=gt,
    )
    queue.put(
        {
            "seconds": time.perf_counter() - start,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "n_nuclei_gt": slide.n_nuclei,
        }
    )


def _register(url: str, path: str, queue: Any) -> None:
    """Child process: register the slide in the catalog at ``url`` (see ``--register-here``)."""
    from pathray.catalog import Catalog
    from pathray.slides.register import register_slides

    start = time.perf_counter()
    register_slides(
        Catalog.open(url), path, store="bench", store_root=str(Path(path).parent), image_set="scale"
    )
    queue.put(
        {
            "seconds": time.perf_counter() - start,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "torch_imported": "torch" in sys.modules,
        }
    )


def in_child(target: Any, *args: Any) -> dict[str, Any]:
    """Run ``target(*args, queue)`` in a spawned process; return what it put on the queue."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=target, args=(*args, queue))
    child.start()
    try:
        result = queue.get()  # before join: the child blocks until its message is consumed
    finally:
        child.join()
    if child.exitcode:
        raise RuntimeError(
            f"{target.__name__} failed in its child process (exit code {child.exitcode})"
        )
    return result


def slide_path(cache: Path, side: int, tissue_fraction: float, seed: int, gt: bool) -> Path:
    """Cached slide file for these parameters."""
    return cache / f"synthetic-{side}-tf{tissue_fraction:g}-s{seed}{'-gt' if gt else ''}.tif"


def ensure_slide(
    cache: Path, side: int, tissue_fraction: float, seed: int, gt: bool
) -> tuple[Path, dict[str, Any]]:
    """The slide (made if not cached) and facts about its generation.

    A slide is made under a temporary name and renamed when complete, so an interrupted
    generation leaves no half-written slide in the cache.
    """
    path = slide_path(cache, side, tissue_fraction, seed, gt)
    meta_path = path.with_suffix(".meta.json")
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        meta["cached"] = True
        return path, meta
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.tif")
    print(
        f"making {side} x {side} px slide (tissue_fraction={tissue_fraction}, gt={gt}) ...",
        flush=True,
    )
    load_before = load()
    result = in_child(_generate, str(partial), side, tissue_fraction, seed, gt)
    for src in partial.parent.glob(partial.stem + ".*"):
        src.rename(src.with_name(src.name.replace(partial.stem, path.stem, 1)))
    meta = {
        **result,
        "side": side,
        "tissue_fraction": tissue_fraction,
        "seed": seed,
        "gt": gt,
        "file_mib": path.stat().st_size / MIB,
        "load_before": load_before,
        "load_after": load(),
    }
    meta_path.write_text(json.dumps(meta))
    meta["cached"] = False
    return path, meta


# --------------------------------------------------------------------------- the run


def start_ray(cpus: int, attempts: int = 6) -> int:
    """A local Ray of ``cpus`` CPUs; returns the attempts it took.

    Ray gives its raylet a fixed 30 s to register at startup, which a loaded machine can miss
    ("The current node timed out during startup"), so the start is retried.
    """
    import ray

    from pathray.engine.cluster import ensure_ray

    for attempt in range(1, attempts + 1):
        try:
            ensure_ray(num_cpus=cpus)
            return attempt
        except Exception as exc:  # Ray raises plain Exception here
            print(f"ray start attempt {attempt} failed: {exc}", file=sys.stderr, flush=True)
            ray.shutdown()
            if attempt == attempts:
                raise
            time.sleep(10 * attempt)
    return attempts


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Everything after the slide exists; returns the JSON payload."""
    gt = args.gt if args.gt is not None else args.side <= GT_MAX_SIDE
    path, gen = ensure_slide(args.cache, args.side, args.tissue_fraction, args.seed, gt)
    print(
        f"slide {path.name}: {gen['file_mib']:.0f} MiB, made in {gen['seconds']:.1f} s"
        f"{' (cached)' if gen['cached'] else ''}, load {gen['load_before']} -> {gen['load_after']}",
        flush=True,
    )

    home = Path(tempfile.mkdtemp(prefix="home-", dir=args.cache))
    os.environ["PATHRAY_HOME"] = str(home)
    import ray

    from pathray.catalog import Catalog
    from pathray.engine.plan import plan_run
    from pathray.engine.runner import run_pipeline
    from pathray.results.store import ColdStore
    from pathray.slides.register import register_slides
    from pipelines.presets import load_preset

    timings: dict[str, dict[str, Any]] = {}

    def step(name: str, fn: Any) -> Any:
        sampler.phase = name
        before = load()
        start = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - start
        sampler.sample()  # a step shorter than the interval still gets a sample
        timings[name] = {"seconds": seconds, "load_before": before, "load_after": load()}
        return out

    spec = load_preset("nuclei")
    result = None
    try:
        with TreeSampler(args.interval) as sampler:
            catalog = step("catalog", lambda: Catalog.open(f"sqlite:///{home / 'catalog.db'}"))
            store = ColdStore(home / "cold")
            ray_attempts = step("ray-start", lambda: start_ray(args.cpus))
            if args.register_here:
                step(
                    "register",
                    lambda: register_slides(
                        catalog, path, store="bench", store_root=path.parent, image_set="scale"
                    ),
                )
                registered = {"in": "driver"}
            else:
                registered = step("register", lambda: in_child(_register, catalog.url, str(path)))
                registered["in"] = "child process"
            slide_ids = [s.id for s in catalog.slides_in_set("scale")]
            if len(slide_ids) != 1:
                raise RuntimeError(f"expected 1 registered slide, got {slide_ids}")
            plan = step("plan", lambda: plan_run(catalog, slide_ids, spec.tiling))
            if plan.problems:
                raise RuntimeError(f"planning failed: {plan.problems}")
            planned = plan.refs.num_rows
            del plan
            print(f"planned {planned} tiles; running nuclei on {args.cpus} CPUs ...", flush=True)
            marks: dict[str, float] = {}

            def progress(done: int, total: int) -> None:
                now = time.perf_counter()
                marks.setdefault("first", now)
                marks["last"] = now
                sampler.tiles_done = done
                if args.verbose and done % 200 < 32:
                    row = sampler.samples[-1]
                    print(
                        f"  {done}/{total} tiles, PSS {row['pss_mib']:.0f} MiB, "
                        f"RSS {row['rss_mib']:.0f} MiB, store {row['store_used_mib'] or 0:.0f} MiB",
                        flush=True,
                    )

            marks["start"] = time.perf_counter()
            result = step(
                "run",
                lambda: run_pipeline(
                    catalog, store, spec, "scale", requester="benchmark", progress=progress
                ),
            )
            sampler.phase = "after"
    finally:
        ray.shutdown()
        if args.keep:
            print(f"kept catalog and results in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
        if args.drop_slide and not args.keep:
            for f in path.parent.glob(path.stem + ".*"):
                f.unlink()

    assert result is not None
    tiles = sum(c.get("tiles", 0) for c in result.counts.values())
    nuclei = sum(c.get("objects", 0) for c in result.counts.values())
    run_s = timings["run"]["seconds"]
    stream_s = marks["last"] - marks["first"] if "first" in marks else 0.0
    payload = {
        "side": args.side,
        "tissue_fraction": args.tissue_fraction,
        "seed": args.seed,
        "cpus": args.cpus,
        "ground_truth": gt,
        "slide_mib": round(gen["file_mib"], 1),
        "generate_s": round(gen["seconds"], 1),
        "generate_cached": gen["cached"],
        "generate_peak_rss_mib": round(gen["peak_rss_mib"]),
        "generate_load": [gen["load_before"], gen["load_after"]],
        "n_nuclei_gt": gen.get("n_nuclei_gt"),
        "register": {
            k: (round(v, 2) if isinstance(v, float) else v) for k, v in registered.items()
        },
        "ray_start_attempts": ray_attempts,
        "planned_tiles": planned,
        "tiles": tiles,
        "nuclei": nuclei,
        "status": result.status,
        **{f"{k}_s": round(v["seconds"], 2) for k, v in timings.items()},
        "loads": {k: [v["load_before"], v["load_after"]] for k, v in timings.items()},
        "tiles_per_s": round(tiles / run_s, 2) if run_s else None,
        "stream_tiles_per_s": round(tiles / stream_s, 2) if stream_s > 0 else None,
        "first_batch_s": round(marks["first"] - marks["start"], 2) if "first" in marks else None,
        "peak_pss_mib": round(sampler.overall("pss_mib", RUN_PHASES)),
        "peak_rss_sum_mib": round(sampler.overall("rss_mib", RUN_PHASES)),
        "peak_driver_rss_mib": round(sampler.overall("driver_mib", RUN_PHASES)),
        "peak_pss_all_steps_mib": round(sampler.overall("pss_mib")),
        "driver_ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_store_used_mib": round(sampler.overall("store_used_mib")),
        "peak_plasma_mib": sampler.overall("plasma_mib"),
        "store_total_mib": round(
            next((s["store_total_mib"] for s in sampler.samples if s["store_total_mib"]), 0)
        ),
        "peak_procs": int(sampler.overall("procs")),
        "pss_at_25_50_75_100pct": sampler.at_progress(tiles, (0.25, 0.5, 0.75, 1.0)),
        "peaks_by_phase": {
            k: {kk: (round(vv) if isinstance(vv, float) else vv) for kk, vv in v.items()}
            for k, v in sampler.peaks.items()
        },
        "timeline": sampler.timeline(),
        "samples": len(sampler.samples),
        "interval_s": args.interval,
    }
    return payload


def report(p: dict[str, Any]) -> None:
    """Print the table of figures."""
    loads = p["loads"]
    rows = [
        {
            "step": "generate slide",
            "seconds": p["generate_s"],
            "load before": str(p["generate_load"][0]),
            "load after": str(p["generate_load"][1]),
            "note": "cached"
            if p["generate_cached"]
            else f"peak RSS {p['generate_peak_rss_mib']} MiB",
        },
    ]
    for name in ("ray-start", "register", "plan", "run"):
        if f"{name}_s" in p:
            peak = p["peaks_by_phase"].get(name, {})
            rows.append(
                {
                    "step": name,
                    "seconds": p[f"{name}_s"],
                    "load before": str(loads[name][0]),
                    "load after": str(loads[name][1]),
                    "note": f"peak PSS {peak.get('pss_mib', '-')} MiB, "
                    f"driver {peak.get('driver_mib', '-')} MiB",
                }
            )
    reg = p["register"]
    if reg.get("in") == "child process":
        next(r for r in rows if r["step"] == "register")["note"] += (
            f"; child: RSS {reg['peak_rss_mib']:.0f} MiB, torch {reg['torch_imported']}"
        )
    print_table(
        rows,
        title=f"pipeline_scale: nuclei preset on a {p['side']} x {p['side']} px slide "
        f"(0.25 mpp, tissue_fraction {p['tissue_fraction']}), {p['cpus']} CPUs",
    )
    figures = [
        ("slide file (MiB)", p["slide_mib"]),
        ("planned tiles", p["planned_tiles"]),
        ("tiles", p["tiles"]),
        ("nuclei", p["nuclei"]),
        ("ground-truth nuclei", p["n_nuclei_gt"]),
        ("tiles/s (run wall)", p["tiles_per_s"]),
        ("tiles/s (first to last batch)", p["stream_tiles_per_s"]),
        ("run start to first batch (s)", p["first_batch_s"]),
        ("peak PSS sum, driver + Ray (MiB)", p["peak_pss_mib"]),
        ("peak RSS sum, driver + Ray (MiB, over-counts shm)", p["peak_rss_sum_mib"]),
        (
            "peak driver RSS (MiB; ru_maxrss)",
            f"{p['peak_driver_rss_mib']} ({p['driver_ru_maxrss_mib']})",
        ),
        (
            "peak object store used / total (MiB)",
            f"{p['peak_store_used_mib']} / {p['store_total_mib']}",
        ),
        ("peak plasma usage (memory_summary, MiB)", p["peak_plasma_mib"]),
        ("PSS at 25/50/75/100% of tiles (MiB)", str(p["pss_at_25_50_75_100pct"])),
        ("peak processes in the tree", p["peak_procs"]),
    ]
    print_table([{"figure": k, "value": v} for k, v in figures])
    breakdown = p["peaks_by_phase"].get("run", {}).get("pss_by_process_at_peak", {})
    print_table(
        [
            {"process": k, "count": n, "PSS MiB": m}
            for k, (n, m) in sorted(breakdown.items(), key=lambda kv: -kv[1][1])
        ],
        title="PSS by process name at the run's PSS peak",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--side", type=int, default=20000, help="slide side in level-0 px (0.25 mpp)"
    )
    parser.add_argument(
        "--tissue-fraction", type=float, default=0.5, help="approximate tissue cover (0-1)"
    )
    parser.add_argument("--seed", type=int, default=0, help="synthetic slide seed")
    parser.add_argument(
        "--gt",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"write the nucleus ground truth (default: when side <= {GT_MAX_SIDE})",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run's catalog and results")
    parser.add_argument(
        "--drop-slide", action="store_true", help="delete the cached slide afterwards"
    )
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--interval", type=float, default=0.5, help="memory sampling period (s)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help="where slides are cached (and run homes made)",
    )
    parser.add_argument(
        "--register-here",
        action="store_true",
        help="register the slide in this process (default: in a child process, "
        "as `pathray register` would, so its imports do not count against the run)",
    )
    parser.add_argument("--verbose", action="store_true", help="print progress with memory")
    args = parser.parse_args(argv)
    print(f"machine: {json.dumps(machine_info())}; load {load()}", flush=True)
    payload = run_benchmark(args)
    report(payload)
    write_result("pipeline_scale", payload)
    print(json.dumps(payload, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
