"""DeepZoom tile latency: PathRay's tiles next to OpenSlide's DeepZoomGenerator on the same slide.

For each slide (a real SVS of ``/work/shared/data`` and a large synthetic pyramid mirrored from a
real image, written once and cached under ``benchmarks/results/data``) the benchmark draws
``--tiles`` random tiles over the finest ``--levels`` DeepZoom levels (the ones a viewer asks
for most) and times, per tile:

- ``pathray-cold``: :meth:`DeepZoom.tile` with the encoded-tile cache off and a fresh reader
  (every tile read from the file, resized, encoded as JPEG);
- ``pathray-warm``: the same with the cache on, after a first pass (what a viewer panning back
  and forth sees);
- ``openslide``: ``openslide.deepzoom.DeepZoomGenerator(slide, 254, 1).get_tile`` plus the JPEG
  encode (Pillow, quality 85) a tile server does, on the same tiles (skipped when OpenSlide
  cannot open the file);
- ``read+encode``: the floor: the reader's ``read_region`` at the tile's downsample plus the
  JPEG encode, without DeepZoom's bookkeeping.

It prints p50/p95 per reader and the ratio of OpenSlide's p50 to PathRay's. Goal: p50 well
under 50 ms.

Run: ``python -m benchmarks.deepzoom [--tiles 300] [--levels 5] [--side 16384]``.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import print_table, results_dir, write_result
from pathray.slides.deepzoom import DeepZoom
from pathray.slides.pyramid import pyramid_from_image
from pathray.slides.readers import TiffTileReader

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL = DATA / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"
SOURCE = DATA / "OS-1-detail.ome.tif"


def synthetic_slide(side: int) -> Path:
    """A ``side x side`` JPEG pyramid mirrored from a real image (cached)."""
    path = results_dir("data") / f"deepzoom-mirror-{side}.tif"
    if not path.exists():
        pyramid_from_image(SOURCE, path, width=side, height=side, workers=2)
    return path


def percentiles(times: list[float]) -> dict[str, float]:
    """p50 and p95 in milliseconds."""
    ms = sorted(t * 1e3 for t in times)
    return {
        "p50 ms": statistics.median(ms),
        "p95 ms": ms[min(len(ms) - 1, int(0.95 * len(ms)))],
        "mean ms": statistics.fmean(ms),
    }


def time_each(
    fn: Callable[[int, int, int], object], keys: list[tuple[int, int, int]]
) -> list[float]:
    """Seconds per call of ``fn(level, col, row)`` for every key."""
    out = []
    for key in keys:
        start = time.perf_counter()
        fn(*key)
        out.append(time.perf_counter() - start)
    return out


def random_tiles(dz: DeepZoom, count: int, levels: int, seed: int) -> list[tuple[int, int, int]]:
    """Random tiles over the finest ``levels`` levels, each level weighted by its tile count."""
    rng = random.Random(seed)
    pool = []
    for level in range(max(0, dz.max_level - levels + 1), dz.max_level + 1):
        cols, rows = dz.grid.tile_count(level)
        pool.append((level, cols, rows))
    weights = [c * r for _, c, r in pool]
    keys = []
    for _ in range(count):
        level, cols, rows = rng.choices(pool, weights)[0]
        keys.append((level, rng.randrange(cols), rng.randrange(rows)))
    return keys


def openslide_tiler(path: Path) -> Callable[[int, int, int], bytes] | None:
    """OpenSlide's DeepZoom tiles plus a JPEG encode, or None when it cannot open the file."""
    try:
        import openslide
        from openslide.deepzoom import DeepZoomGenerator
    except ImportError:
        return None
    try:
        gen = DeepZoomGenerator(openslide.OpenSlide(str(path)), 254, 1, limit_bounds=False)
    except Exception:
        return None

    def tile(level: int, col: int, row: int) -> bytes:
        buf = io.BytesIO()
        gen.get_tile(level, (col, row)).save(buf, "jpeg", quality=85)
        return buf.getvalue()

    return tile


def bench_slide(name: str, path: Path, args: argparse.Namespace) -> list[dict[str, object]]:
    """Time every reader on the same random tiles of one slide."""
    cold = DeepZoom(str(path), cache_tiles=0, reader=TiffTileReader(str(path), cache_tiles=0))
    keys = random_tiles(cold, args.tiles, args.levels, args.seed)
    warm = DeepZoom(str(path), reader=TiffTileReader(str(path)))
    for key in keys:  # first pass fills the caches
        warm.tile(*key)
    reader = TiffTileReader(str(path), cache_tiles=0)

    def floor(level: int, col: int, row: int) -> bytes:
        x0, y0, x1, y1 = cold.grid.tile_bounds(level, col, row)
        scale = cold.grid.scale(level)
        w, h = max(1, round((x1 - x0) / scale)), max(1, round((y1 - y0) / scale))
        pixels = reader.read_region(int(x0), int(y0), w, h, downsample=float(scale))
        return cold.encode(pixels)

    runs: dict[str, list[float]] = {
        "pathray-cold": time_each(cold.tile, keys),
        "pathray-warm": time_each(warm.tile, keys),
        "read+encode": time_each(floor, keys),
    }
    peer = openslide_tiler(path)
    if peer is not None:
        runs["openslide"] = time_each(peer, keys)
    w, h = cold.reader.level_dimensions[0]
    rows: list[dict[str, object]] = []
    base = statistics.median(runs["pathray-cold"])
    for reader_name, times in runs.items():
        row: dict[str, object] = {"slide": f"{name} {w}x{h}", "reader": reader_name}
        row.update(percentiles(times))
        row["p50 vs pathray-cold"] = statistics.median(times) / base if base else None
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiles", type=int, default=300, help="random tiles per slide")
    parser.add_argument("--levels", type=int, default=5, help="finest DeepZoom levels sampled")
    parser.add_argument("--side", type=int, default=16384, help="synthetic slide side (px)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = bench_slide("real svs", REAL, args)
    rows += bench_slide("mirror", synthetic_slide(args.side), args)
    print_table(rows, title=f"DeepZoom tile latency ({args.tiles} random tiles per slide)")
    write_result("deepzoom", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
