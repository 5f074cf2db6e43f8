"""The slide viewer measured in a real browser (headless Chromium driven by Playwright).

Builds a slide with a dense annotation layer (100k nuclei-sized polygons by default), starts
``pathray ui`` on it, signs in, and reports:

- time to first overlay paint, from navigation start, for a view holding about 10k objects
  (goal: under 1 s), with how many objects were drawn;
- the same for the whole slide (all objects: coarse zoom, drawn from centroids or server-side
  raster tiles) and the draw time of one overlay frame there;
- DeepZoom tile request latency in the browser, p50 and p95 (goal p50 under 50 ms), from the
  Resource Timing entries of the tile requests (request sent to response end, so the
  browser's own connection queueing is left out; the full duration is given too);
- frames per second while panning over the dense layer.

Usage::

    python -m benchmarks.viewer --side 4096 --objects 100000 --runs 3

Benchmarks are not tests: this prints numbers (and writes them as JSON with ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import shapely

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
USER, PASSWORD = "bench", "bench-password"


def dense_polygons(side: int, count: int, seed: int = 0) -> list[Any]:
    """``count`` nucleus-like hexagons (radius 4-6 px) on a jittered grid over the slide."""
    rng = np.random.default_rng(seed)
    per_row = int(np.ceil(np.sqrt(count)))
    step = side / per_row
    angles = np.linspace(0, 2 * np.pi, 7)[:-1]
    shapes = []
    for k in range(count):
        cx = (k % per_row + 0.5) * step + rng.uniform(-step / 4, step / 4)
        cy = (k // per_row + 0.5) * step + rng.uniform(-step / 4, step / 4)
        r = rng.uniform(4, 6)
        shapes.append(shapely.Polygon(np.c_[cx + r * np.cos(angles), cy + r * np.sin(angles)]))
    return shapes


def prepare(home: Path, side: int, count: int) -> int:
    """A catalog under ``home`` with one slide and ``count`` annotations; returns the slide id."""
    from pathray.catalog import Catalog
    from pathray.config import Settings
    from pathray.slides.register import register_slides
    from pathray.slides.synthetic import make_synthetic_slide

    settings = Settings.from_env(home)
    path = home / "slides" / f"dense-{side}.tif"
    path.parent.mkdir(parents=True, exist_ok=True)
    make_synthetic_slide(path, width=side, height=side, write_ground_truth=False, workers=2)
    with Catalog.open(settings.catalog_url) as catalog:
        catalog.add_user(USER, "clinician")
        catalog.set_password(USER, PASSWORD)
        register_slides(catalog, path, store="bench", image_set="bench")
        slide = catalog.get_slide(path.name).id
        catalog.create_annotation_set("dense", image_set="bench", labels=["nucleus"])
        shapes = dense_polygons(side, count)
        for start in range(0, count, 20_000):
            chunk = shapes[start : start + 20_000]
            catalog.add_annotations("dense", slide, [(s, "nucleus", None) for s in chunk], USER)
    return slide


def start_app(home: Path, port: int) -> subprocess.Popen[bytes]:
    """``pathray ui`` on ``home``, once it answers."""
    env = dict(os.environ, PATHRAY_HOME=str(home), PYTHONPATH=str(REPO))
    env.pop("PATHRAY_CATALOG_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pathray", "ui", "--port", str(port), "--no-warm-ray"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 420  # minutes on a busy machine
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/login", timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("pathray ui did not start")


TILE_TIMINGS = """() => performance.getEntriesByType('resource')
  .filter((e) => e.name.includes('_files/'))
  .map((e) => [e.responseEnd - e.requestStart, e.duration])"""

PAN_FPS = """async () => {
  const v = window.pathrayViewer;
  let frames = 0, run = true;
  const tick = () => { frames++; if (run) requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  const t = performance.now();
  for (let i = 0; i < 20; i++) {
    v.viewport.panBy(new OpenSeadragon.Point(i % 2 ? -0.05 : 0.05, 0.02), true);
    await new Promise((r) => setTimeout(r, 100));
  }
  run = false;
  return {fps: frames / ((performance.now() - t) / 1000), drawMs: window.pathrayMetrics.lastDrawMs};
}"""


def measure(url: str, slide: int, side: int, count: int, runs: int) -> dict[str, Any]:
    """Open the viewer ``runs`` times per view and collect the browser's timings."""
    from playwright.sync_api import sync_playwright

    # A square holding about 10k of the objects (they are spread evenly).
    edge = int(side * np.sqrt(10_000 / count))
    views = {"10k objects": f"0,0,{edge},{edge}", "whole slide": f"0,0,{side},{side}"}
    out: dict[str, Any] = {"objects_on_slide": count, "views": {}}
    tiles: list[list[float]] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for name, box in views.items():
            paints, drawn, modes = [], [], []
            for _ in range(runs):
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                page = context.new_page()
                page.goto(f"{url}/login")
                page.fill("input[name=username]", USER)
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_url("**/app/**")
                page.goto(f"{url}/viewer?slide={slide}&view={box}")
                page.wait_for_selector(
                    "body[data-overlay-painted='1']", state="attached", timeout=300_000
                )
                m = page.evaluate("window.pathrayMetrics")
                paints.append(m["firstOverlayPaintMs"])
                drawn.append(m["firstOverlayObjects"])
                modes.append(page.evaluate("[...window.pathrayLayers.values()][0].data.mode"))
                page.wait_for_load_state("networkidle")
                tiles.extend(page.evaluate(TILE_TIMINGS))
                if name == "10k objects":
                    out["pan"] = page.evaluate(PAN_FPS)
                context.close()
            out["views"][name] = {
                "first_overlay_paint_ms": paints,
                "median_ms": statistics.median(paints),
                "objects_drawn": drawn,
                "mode": modes[0],
            }
        browser.close()
    server = np.array([t[0] for t in tiles])
    total = np.array([t[1] for t in tiles])
    out["tiles"] = {
        "requests": len(tiles),
        "p50_ms": float(np.percentile(server, 50)),
        "p95_ms": float(np.percentile(server, 95)),
        "p50_duration_ms": float(np.percentile(total, 50)),
        "p95_duration_ms": float(np.percentile(total, 95)),
    }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=4096, help="slide edge in pixels")
    parser.add_argument("--objects", type=int, default=100_000, help="annotations on the slide")
    parser.add_argument("--runs", type=int, default=3, help="page loads per view")
    parser.add_argument("--port", type=int, default=7877)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--home", type=Path, help="keep (and reuse) the prepared data here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pathray-viewer-bench-") as tmp:
        home = args.home or Path(tmp)
        t = time.perf_counter()
        done = home / "slide-id.txt"  # a kept --home is prepared once
        if done.exists():
            slide = int(done.read_text())
        else:
            slide = prepare(home, args.side, args.objects)
            done.write_text(str(slide))
        took = time.perf_counter() - t
        print(f"prepared {args.objects} objects on a {args.side}^2 slide in {took:.0f} s")
        proc = start_app(home, args.port)
        try:
            result = measure(
                f"http://127.0.0.1:{args.port}", slide, args.side, args.objects, args.runs
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    for name, view in result["views"].items():
        print(
            f"first overlay paint, {name}: median {view['median_ms']:.0f} ms "
            f"(runs {[round(v) for v in view['first_overlay_paint_ms']]}, "
            f"{view['objects_drawn'][0]} objects drawn as {view['mode']})"
        )
    tiles = result["tiles"]
    print(
        f"tile latency over {tiles['requests']} requests: p50 {tiles['p50_ms']:.1f} ms, "
        f"p95 {tiles['p95_ms']:.1f} ms (full duration p50 {tiles['p50_duration_ms']:.1f}, "
        f"p95 {tiles['p95_duration_ms']:.1f} ms)"
    )
    if "pan" in result:
        pan = result["pan"]
        print(f"panning the 10k view: {pan['fps']:.0f} fps, overlay frame {pan['drawMs']:.1f} ms")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
