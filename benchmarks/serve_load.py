"""Tile inference under load through Ray Serve, against the same pipeline in-process.

Steps:

1. **in-process**: the pipeline's unit stages (:class:`~pathray.engine.stages.UnitStage`, as a
   batch run builds them) called directly on real H&E tiles: one tile per call (latency) and
   ``--batch`` tiles per call (throughput).
2. **served**: the application (:func:`serve.app.app_builder`) on a local Ray, the pipeline
   deployed twice: with request batching (``@serve.batch``) and without. A *second process*
   (this module with ``--client``) sends ``--requests`` tile inferences over loopback HTTP from
   ``--concurrency`` threads; it reports throughput and p50/p99 latency of successful answers.
3. **overload**: a slow pipeline (dark blobs sleeping ``--slow-delay`` s per call, one request in
   flight and ``--slow-queue`` queued) hammered by ``--overload-concurrency`` clients twice in a
   row; reports the share of 503 answers, whether each carried ``Retry-After``, and the resident
   memory of this Ray's Serve processes (proxy and replicas, found by process tree) before,
   between and after the bursts: refused requests must not pile up anywhere.

Ratios are served / in-process. The figures depend on the machine's load (printed with them).

Run::

    python -m benchmarks.serve_load
    python -m benchmarks.serve_load --pipeline tissue --requests 400 --concurrency 16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import ROOT, print_table, write_result

SLOW = """
name: slow
version: "1"
tiling: {{mpp: 0.25, size: 128, overlap: 16, min_tissue: 0.0}}
units:
  - {{id: blobs, unit: dark_blobs, config: {{threshold: 110, delay_s: {delay}}}}}
"""


def real_tiles(n: int, size: int = 256) -> list[np.ndarray]:
    """Real H&E tiles at 0.5 um/px from the shared sample slide."""
    from pathray.slides.readers import open_reader
    from tests.helpers import SHARED

    reader = open_reader(str(SHARED / "OS-1-detail.ome.tif"))
    down = 0.5 / 0.227
    step = 220
    origins = [(x, y) for y in range(0, 1500, step) for x in range(0, 1500, step)]
    return [reader.read_region(x, y, size, size, downsample=down) for x, y in origins[:n]]


def _percentiles(seconds: list[float]) -> dict[str, float]:
    arr = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99))}


def in_process(
    pipeline: str, tiles: list[np.ndarray], batch: int, catalog_url: str, cold_root: str
) -> list[dict[str, Any]]:
    """Throughput and latency of the pipeline's stages called directly (same models as served)."""
    from pathray.engine.stages import UnitStage
    from serve.app import load_pipeline, model_paths
    from serve.inference import plan_nodes, run_in_process, tile_batch

    spec = load_pipeline(pipeline)
    plans = plan_nodes(spec, model_paths(spec, catalog_url, cold_root))
    stages = [UnitStage(**p.stage_kwargs()) for p in plans]
    run_in_process(stages, tile_batch(tiles[:1]))  # warm up
    latencies = []
    start = time.perf_counter()
    for tile in tiles:
        t0 = time.perf_counter()
        run_in_process(stages, tile_batch([tile]))
        latencies.append(time.perf_counter() - t0)
    single = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(0, len(tiles), batch):
        run_in_process(stages, tile_batch(tiles[i : i + batch]))
    batched = time.perf_counter() - start
    return [
        {
            "mode": "in-process, 1 tile/call",
            "tiles/s": len(tiles) / single,
            **_percentiles(latencies),
        },
        {"mode": f"in-process, {batch} tiles/call", "tiles/s": len(tiles) / batched},
    ]


# -- the client (second process) -------------------------------------------------------------


def client_main(args: argparse.Namespace) -> int:
    """Send ``--requests`` inferences from ``--concurrency`` threads; print one JSON line."""
    import httpx

    from serve.validation import encode_tile

    bodies = [
        json.dumps({"image": encode_tile(t), "pipeline": args.target})
        for t in real_tiles(args.tiles)
    ]
    headers = {"Authorization": f"Bearer {args.token}", "content-type": "application/json"}
    lock = threading.Lock()
    results: list[tuple[int, float, bool]] = []
    errors: dict[int, str] = {}  # status -> first body, for answers that are neither 200 nor 503
    counter = iter(range(args.requests))
    deadline = time.monotonic() + args.duration if args.duration else None

    def worker() -> None:
        with httpx.Client(base_url=args.url, timeout=120) as http:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None or (deadline is not None and time.monotonic() > deadline):
                    return
                t0 = time.perf_counter()
                r = http.post("/v1/infer", content=bodies[i % len(bodies)], headers=headers)
                took = time.perf_counter() - t0
                with lock:
                    results.append((r.status_code, took, "retry-after" in r.headers))
                    if r.status_code not in (200, 503):
                        errors.setdefault(r.status_code, r.text[:300])

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ok = [took for code, took, _ in results if code == 200]
    refused = [(took, retry) for code, took, retry in results if code == 503]
    print(
        json.dumps(
            {
                "requests": len(results),
                "ok": len(ok),
                "503": len(refused),
                "other": len(results) - len(ok) - len(refused),
                "errors": errors,
                "retry_after_on_all_503": all(r for _, r in refused),
                "wall_s": wall,
                "tiles/s": len(ok) / wall,
                **(_percentiles(ok) if ok else {}),
                "p50_503_ms": float(np.median([t for t, _ in refused]) * 1000) if refused else None,
            }
        )
    )
    return 0


def run_client(url: str, token: str, target: str, **options: Any) -> dict[str, Any]:
    """Run the load client in a second process; return its report."""
    cmd = [sys.executable, "-m", "benchmarks.serve_load", "--client", "--url", url]
    cmd += ["--token", token, "--target", target]
    for key, value in options.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def serve_rss_mib() -> float:
    """Resident memory of this Ray's Serve processes (proxy, controller, replicas), MiB."""
    import psutil
    import ray

    node: Any = ray._private.worker._global_node  # this driver's local Ray
    raylet = node.all_processes["raylet"][0].process.pid
    total = 0
    for proc in psutil.Process(raylet).children(recursive=True):
        try:
            if "Serve" in " ".join(proc.cmdline()) or "Proxy" in " ".join(proc.cmdline()):
                total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


# -- the benchmark ---------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Start the service, load it, overload it; return the payload."""
    from ray import serve

    from pathray.catalog import Catalog
    from pathray.engine.cluster import ensure_ray
    from serve.app import PipelineArgs, ServeArgs, app_builder, load_pipeline, start

    tiles = real_tiles(args.tiles)
    home = Path(tempfile.mkdtemp(prefix="serve_load_"))
    catalog = Catalog.open(f"sqlite:///{home / 'catalog.db'}")
    baseline = in_process(args.pipeline, tiles, args.batch, catalog.url, str(home / "cold"))
    token = catalog.create_api_token("bench", "service").token
    spec = load_pipeline(args.pipeline)
    unbatched = home / "unbatched.yaml"
    unbatched.write_text(spec.model_copy(update={"name": f"{spec.name}_nobatch"}).to_yaml())
    slow = home / "slow.yaml"
    slow.write_text(SLOW.format(delay=args.slow_delay))
    limits = {"max_ongoing_requests": 64, "max_queued_requests": 256}
    served = ServeArgs(
        pipelines=[
            PipelineArgs(source=args.pipeline, max_batch_size=args.batch, **limits),
            PipelineArgs(source=str(unbatched), batching=False, **limits),
            PipelineArgs(
                source=str(slow),
                batching=False,
                max_ongoing_requests=1,
                max_queued_requests=args.slow_queue,
            ),
        ],
        catalog_url=catalog.url,
        cold_root=str(home / "cold"),
        max_ongoing_requests=256,
        max_queued_requests=512,
    )
    ensure_ray(num_cpus=args.cpus)
    url = start(app_builder(served), port=args.port)
    rows: list[dict[str, Any]] = list(baseline)
    try:
        load = {"requests": args.requests, "concurrency": args.concurrency, "tiles": args.tiles}
        run_client(url, token, spec.name, **{**load, "requests": args.concurrency * 2})  # warm
        for target, label in ((spec.name, "batching"), (f"{spec.name}_nobatch", "no batching")):
            report = run_client(url, token, target, **load)
            rows.append({"mode": f"served, {label}", **report})
        rss = [serve_rss_mib()]
        overload = []
        for _ in range(2):
            report = run_client(
                url,
                token,
                "slow",
                requests=10**6,
                concurrency=args.overload_concurrency,
                duration=args.overload_seconds,
                tiles=4,
            )
            overload.append(report)
            rss.append(serve_rss_mib())
    finally:
        serve.shutdown()
        catalog.close()
    base = rows[0]["tiles/s"]
    for row in rows:
        row["vs in-process"] = row["tiles/s"] / base
    return {
        "pipeline": args.pipeline,
        "cpus": args.cpus,
        "loadavg": os.getloadavg(),
        "rows": rows,
        "overload": overload,
        "serve_rss_mib": rss,
    }


def unexpected_failures(payload: dict[str, Any]) -> list[str]:
    """What went wrong that should not have: the benchmark fails (exit 1) when this is not empty.

    Under load (high limits) every request must succeed; under overload only 200 and 503 with
    ``Retry-After`` are expected, and some requests must still succeed.
    """
    found = []
    for row in payload["rows"]:
        if not str(row.get("mode", "")).startswith("served"):
            continue
        if row["ok"] != row["requests"]:
            found.append(
                f"{row['mode']}: {row['ok']}/{row['requests']} requests succeeded "
                f"(errors: {row.get('errors')})"
            )
    for i, burst in enumerate(payload["overload"], 1):
        if burst["other"] or not burst["ok"] or not burst["retry_after_on_all_503"]:
            found.append(
                f"overload burst {i}: {burst['ok']} ok, {burst['503']} refused, "
                f"{burst['other']} other (errors: {burst.get('errors')}), "
                f"Retry-After on every 503: {burst['retry_after_on_all_503']}"
            )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", default="nuclei", help="preset or YAML to load-test")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tiles", type=int, default=32, help="distinct tiles sent")
    parser.add_argument("--batch", type=int, default=8, help="max batch size when batching")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--slow-delay", type=float, default=0.5)
    parser.add_argument("--slow-queue", type=int, default=2)
    parser.add_argument("--overload-concurrency", type=int, default=32)
    parser.add_argument("--overload-seconds", type=float, default=10.0)
    # client mode (the second process)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        return client_main(args)
    payload = run_benchmark(args)
    columns = ["mode", "tiles/s", "vs in-process", "p50_ms", "p99_ms", "ok", "503"]
    print_table(payload["rows"], columns, f"tile inference, {args.pipeline} ({args.cpus} CPUs)")
    print_table(
        [
            {"burst": i + 1, **{k: r.get(k) for k in ("requests", "ok", "503", "other")},
             "retry-after": r["retry_after_on_all_503"], "p50 503 ms": r["p50_503_ms"]}
            for i, r in enumerate(payload["overload"])
        ],
        title=f"overload: slow pipeline, {args.overload_concurrency} clients",
    )  # fmt: skip
    print(
        "Serve processes RSS (MiB) before / after burst 1 / after burst 2:",
        payload["serve_rss_mib"],
    )
    print(f"load average: {payload['loadavg']}")
    write_result("serve_load", payload)
    failures = unexpected_failures(payload)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
