"""Tile streaming: tiles per second through PathRay's read stage, next to its peers.

All readers read the same tiles: every level-0 tile of a synthetic 256 px JPEG-tiled pyramidal
TIFF (:func:`~pathray.slides.synthetic.make_synthetic_slide`, 0.25 um/px, written once and cached
under ``benchmarks/results/data``), aligned to the file's tile grid, in row-major order, over
``--copies`` copies of the slide (hard links, so a pass covers several slides as a run does;
the slow peers, TIAToolbox and OpenSlide, read ``--peer-copies`` of them: the same tiles, fewer
times, as their rate has no start-up part to amortise):

- ``raw``: a tight single-process loop: ``os.pread`` each tile's compressed bytes and decode
  them with ``imagecodecs.jpeg_decode`` (the floor of any reader built on the same codec);
- ``raw-offset``: the same loop decoding every tile into one reused buffer placed off the
  16-byte boundary, where libjpeg-turbo writes through the caches (``raw`` lets imagecodecs
  allocate each tile, and an aligned block is written with non-temporal stores, about 1.5 x
  slower per tile; which one malloc returns varies): the codec's floor, for reference;
- ``raw-parallel``: the same loop split over ``--cpus`` processes of a ``multiprocessing`` pool
  started beforehand: what this machine gives ``--cpus`` processes right now (on a shared
  machine, less than ``cpus x raw``);
- ``pathray-inproc``: :func:`~pathray.slides.source.iter_tile_batches` in this process;
- ``pathray-ray``: :func:`~pathray.slides.source.tile_dataset` on a local Ray of ``--cpus``
  CPUs, followed by a ``map_batches`` that touches every batch's pixels (it fuses into the read
  tasks, so the pixels are read in the workers and never shipped to the driver);
- ``tiatoolbox``: ``WSIReader.open(path).read_rect((x, y), (256, 256), resolution=0,
  units="level")`` in a loop;
- ``openslide``: ``OpenSlide(path).read_region((x, y), 0, (256, 256))`` in a loop, converted to
  RGB numpy.

Every reader computes the same checksum (a sparse pixel sum) of every tile, so all of them
really decode, and the table shows the mean sampled pixel as a cross-check. Each pass reads
fresh hard links, so no decoded-tile cache (TIAToolbox keeps 256 MB of tiles, PathRay an LRU
per slide) carries over from a previous pass; the file bytes stay in the page cache for every
reader alike. Passes of the readers are interleaved and each reader's median over ``--repeat``
passes is reported, because the machine may be shared.

Ray is started and warmed up (one untimed pass) first; its start-up and the cold pass are
reported separately. The warm Ray rate is given two ways: the whole pass (from the call to the
last result: Ray Data's planning, task launches and its resource ramp-up included) and
first-to-last tile (from the first block consumed in a worker to the last, by the workers'
clocks, the first block not counted).

Goals (from the issue): PathRay-ray >= 0.7 x (cpus x raw) and >= 2 x TIAToolbox.

Run: ``python -m benchmarks.tile_streaming [--side 8192] [--repeat 3] [--copies 32]``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from benchmarks.common import (
    RssSampler,
    machine_info,
    median,
    peak_rss_mib,
    print_table,
    results_dir,
    timed,
    write_result,
)

TILE = 256
MPP = 0.25
SEED = 0
#: Pixels sampled per tile for the checksum: every 64th row and column.
STEP = 64
GOAL_VS_RAW = 0.7  # x (cpus x raw single-process rate)
GOAL_VS_TIA = 2.0


@dataclass
class PassResult:
    """One timed pass of one reader over the tile set.

    Attributes:
        tiles: Tiles read.
        checksum: Sum of the sampled pixels of every tile.
        seconds: Wall-clock seconds of the pass.
        first_to_last: Tiles per second from the first block consumed to the last (Ray only).
    """

    tiles: int
    checksum: int
    seconds: float
    first_to_last: float | None = None

    @property
    def rate(self) -> float:
        """Tiles per second over the whole pass."""
        return self.tiles / self.seconds


@dataclass
class ReaderStats:
    """All passes of one reader."""

    name: str
    passes: list[PassResult] = field(default_factory=list)
    rss_growth_mib: float = 0.0

    def rate(self, first_to_last: bool = False) -> float:
        """Median tiles per second."""
        if first_to_last:
            return median(p.first_to_last for p in self.passes if p.first_to_last)
        return median(p.rate for p in self.passes)

    def mean_pixel(self) -> float:
        """Mean sampled pixel value (a cross-check that all readers read the same pixels)."""
        last = self.passes[-1]
        samples = len(range(0, TILE, STEP)) ** 2 * 3
        return last.checksum / (last.tiles * samples)


# ---------------------------------------------------------------------------------------------
# Data


def ensure_slide(side: int, folder: Path) -> Path:
    """The synthetic slide of ``side`` x ``side`` px, written once and cached in ``folder``."""
    path = folder / f"synthetic-{side}-t{TILE}-seed{SEED}.tif"
    if path.exists():
        return path
    from pathray.slides.synthetic import make_synthetic_slide

    print(f"writing {path.name} (once) ...", flush=True)
    tmp = folder / f".{path.stem}-{os.getpid()}.tif"
    seconds, _ = timed(
        lambda: make_synthetic_slide(
            tmp, width=side, height=side, mpp=MPP, seed=SEED, write_ground_truth=False
        )
    )
    tmp.rename(path)
    for extra in folder.glob(f".{path.stem}-{os.getpid()}.*"):
        extra.unlink()
    print(f"  {seconds:.1f} s, {path.stat().st_size / 2**20:.1f} MiB", flush=True)
    return path


def tile_origins(side: int) -> list[tuple[int, int]]:
    """Level-0 origins of every file tile, row-major."""
    return [(x, y) for y in range(0, side, TILE) for x in range(0, side, TILE)]


@contextmanager
def fresh_copies(slide: Path, copies: int) -> Iterator[list[Path]]:
    """Hard links (or copies) of the slide under new names, removed afterwards.

    New names give every reader a cold decoded-tile cache; the file bytes stay in the page
    cache, as they do for every reader alike.
    """
    folder = Path(tempfile.mkdtemp(prefix="pass-", dir=slide.parent))
    try:
        paths = []
        for i in range(copies):
            link = folder / f"copy{i}.tif"
            try:
                os.link(slide, link)
            except OSError:
                shutil.copyfile(slide, link)
            paths.append(link)
        yield paths
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def tile_refs(paths: list[Path], side: int) -> pa.Table:
    """PathRay tile references of every aligned level-0 tile of each path."""
    from pathray.slides.tiling import TileGrid, plan_tiles

    grid = TileGrid(side, side, downsample=1.0, size=TILE, overlap=0)
    return pa.concat_tables(
        [plan_tiles(i, str(path), grid, mask=None) for i, path in enumerate(paths)]
    )


def _checksum(tile: np.ndarray) -> int:
    return int(tile[::STEP, ::STEP, :3].sum())


def _consume_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The stage after the read: touch every tile's pixels, note the worker's clock."""
    images = batch["image"]
    return {
        "n": np.array([len(images)]),
        "checksum": np.array([int(images[:, ::STEP, ::STEP].sum())]),
        "t": np.array([time.time()]),
    }


# ---------------------------------------------------------------------------------------------
# Readers: each reads every tile of ``paths`` at ``origins`` and returns (tiles, checksum).


def read_raw(
    paths: list[Path], origins: list[tuple[int, int]], offset_buffer: bool = False
) -> tuple[int, int]:
    """Compressed bytes with ``os.pread``, decoded with ``imagecodecs.jpeg_decode``.

    With ``offset_buffer`` (the ``raw-offset`` reader, the codec's floor) every tile is decoded
    into one reused buffer off the 16-byte boundary; without it imagecodecs allocates each tile,
    and where malloc returns a 16- or 32-byte aligned block libjpeg-turbo writes it with
    non-temporal stores, past the caches (see :func:`~pathray.slides.readers.pixel_buffer`).
    """
    import imagecodecs
    import tifffile

    from pathray.slides.readers import pixel_buffer

    out = pixel_buffer((TILE, TILE, 3)) if offset_buffer else None
    n = total = 0
    for path in paths:
        with tifffile.TiffFile(path) as tif:
            page = tif.series[0].levels[0].keyframe
            offsets, counts, tables = page.dataoffsets, page.databytecounts, page.jpegtables
            per_row = -(-page.imagewidth // page.tilewidth)
            tw, th = page.tilewidth, page.tilelength
            fd = os.open(path, os.O_RDONLY)
            try:
                for x, y in origins:
                    index = (y // th) * per_row + x // tw
                    data = os.pread(fd, counts[index], offsets[index])
                    tile = imagecodecs.jpeg_decode(data, tables=tables, out=out)
                    total += _checksum(tile)
                    n += 1
            finally:
                os.close(fd)
    return n, total


def read_raw_parallel(
    pool: Any, processes: int, paths: list[Path], origins: list[tuple[int, int]]
) -> tuple[int, int]:
    """:func:`read_raw` split over ``processes`` processes of ``pool`` (contiguous shares)."""
    shares = np.array_split(np.arange(len(origins)), processes)
    parts = [(paths, [origins[i] for i in share]) for share in shares if len(share)]
    results = pool.starmap(read_raw, parts)
    return sum(n for n, _ in results), sum(c for _, c in results)


def read_tiatoolbox(paths: list[Path], origins: list[tuple[int, int]]) -> tuple[int, int]:
    """TIAToolbox's ``read_rect`` at level 0."""
    from tiatoolbox.wsicore.wsireader import WSIReader

    n = total = 0
    for path in paths:
        reader = WSIReader.open(path)
        for x, y in origins:
            tile = reader.read_rect((x, y), (TILE, TILE), resolution=0, units="level")
            total += _checksum(tile)
            n += 1
    return n, total


def read_openslide(paths: list[Path], origins: list[tuple[int, int]]) -> tuple[int, int]:
    """OpenSlide's ``read_region`` at level 0, converted to RGB numpy."""
    import openslide

    n = total = 0
    for path in paths:
        slide = openslide.OpenSlide(str(path))
        try:
            for x, y in origins:
                region = slide.read_region((x, y), 0, (TILE, TILE))
                total += _checksum(np.asarray(region.convert("RGB")))
                n += 1
        finally:
            slide.close()
    return n, total


def read_pathray_inproc(refs: pa.Table, block_rows: int) -> tuple[int, int]:
    """PathRay's read path in this process, batch by batch."""
    from pathray.slides.source import iter_tile_batches

    n = total = 0
    for batch in iter_tile_batches(refs, block_rows):
        out = _consume_batch(batch)
        n += int(out["n"][0])
        total += int(out["checksum"][0])
    return n, total


def read_pathray_ray(
    refs: pa.Table, block_rows: int, read_cpus: float, tasks: int | None
) -> tuple[int, int, float | None]:
    """PathRay's Ray Data read stage; returns tiles, checksum and the first-to-last rate."""
    from pathray.slides.source import tile_dataset

    ds = tile_dataset(refs, block_rows=block_rows, num_cpus=read_cpus, tasks=tasks)
    ds = ds.map_batches(_consume_batch, batch_format="numpy", batch_size=None)
    stamps: list[tuple[float, int]] = []
    total = 0
    for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
        stamps += zip(out["t"].tolist(), out["n"].tolist(), strict=True)
        total += int(out["checksum"].sum())
    stamps.sort()
    n = sum(count for _, count in stamps)
    span = stamps[-1][0] - stamps[0][0] if len(stamps) > 1 else 0.0
    first_to_last = (n - stamps[0][1]) / span if span > 0 else None
    return n, total, first_to_last


# ---------------------------------------------------------------------------------------------
# Driver

READERS = [
    "raw",
    "raw-offset",
    "raw-parallel",
    "pathray-inproc",
    "pathray-ray",
    "tiatoolbox",
    "openslide",
]
#: Readers whose passes cover ``--peer-copies`` slides.
PEERS = ("tiatoolbox", "openslide")


def start_ray(cpus: int, attempts: int = 3) -> float:
    """Start a local Ray of ``cpus`` CPUs (retrying a start that times out); its seconds.

    Uses :func:`~pathray.engine.cluster.ensure_ray`. When another Ray is registered on this
    machine (``ray start`` or a test cluster writes ``/tmp/ray/ray_current_cluster``),
    ``ray.init()`` without an address tries to join it and refuses ``num_cpus``; the benchmark
    then starts its own local Ray explicitly (``address="local"``).
    """
    import ray

    from pathray.engine.cluster import ensure_ray

    os.environ.pop("RAY_ADDRESS", None)  # always a local Ray of known size
    start = time.perf_counter()
    for attempt in range(attempts):
        try:
            try:
                ensure_ray(num_cpus=cpus)
            except ValueError as exc:  # "When connecting to an existing cluster, ..."
                print(f"  {exc} Starting a local Ray explicitly.", flush=True)
                ray.shutdown()
                ray.init(
                    address="local",
                    num_cpus=cpus,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                    _node_ip_address="127.0.0.1",
                )
                ctx = ray.data.DataContext.get_current()
                ctx.enable_progress_bars = False
                ctx.print_on_execution_start = False
                logging.getLogger("ray.data").setLevel(logging.WARNING)
            break
        except Exception as exc:  # a busy machine can time the node start out
            ray.shutdown()
            if attempt == attempts - 1:
                raise
            print(f"  ray start failed ({exc}); retrying", flush=True)
            time.sleep(2)
    return time.perf_counter() - start


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    try:
        from pathray.slides.probe import _quiet_tiatoolbox

        _quiet_tiatoolbox()
    except ImportError:
        pass
    logging.getLogger("tiatoolbox").setLevel(logging.ERROR)


class Bench:
    """The readers, their shared inputs and their passes.

    Args:
        args: Parsed command-line arguments.
        slide: The cached synthetic slide.
    """

    def __init__(self, args: argparse.Namespace, slide: Path) -> None:
        self.args = args
        self.slide = slide
        self.origins = tile_origins(args.side)
        self.pool: Any = None

    def read(
        self, name: str, paths: list[Path], origins: list[tuple[int, int]]
    ) -> tuple[int, int, float | None]:
        """Read the tiles at ``origins`` of every path with one reader."""
        args = self.args
        if name == "raw":
            return (*read_raw(paths, origins), None)
        if name == "raw-offset":
            return (*read_raw(paths, origins, offset_buffer=True), None)
        if name == "raw-parallel":
            if self.pool is None:  # spawned once, outside the timings
                self.pool = mp.get_context("spawn").Pool(args.cpus)
            return (*read_raw_parallel(self.pool, args.cpus, paths, origins), None)
        if name == "tiatoolbox":
            return (*read_tiatoolbox(paths, origins), None)
        if name == "openslide":
            return (*read_openslide(paths, origins), None)
        refs = tile_refs(paths, args.side)
        if len(origins) < len(self.origins):  # a warm-up on the first tiles
            refs = refs.slice(0, len(origins))
        if name == "pathray-inproc":
            return (*read_pathray_inproc(refs, args.block_rows), None)
        if name == "pathray-ray":
            return read_pathray_ray(refs, args.block_rows, args.read_cpus, args.tasks)
        raise ValueError(f"unknown reader {name!r}")

    def copies(self, name: str) -> int:
        """Slide copies one pass of a reader reads."""
        return self.args.peer_copies if name in PEERS else self.args.copies

    def warm_up(self, name: str) -> None:
        """An untimed read of a few tiles (imports, codec set-up, worker pools)."""
        with fresh_copies(self.slide, 1) as paths:
            self.read(name, paths, self.origins[: 2 * self.args.block_rows])

    def run_pass(self, name: str) -> PassResult:
        """One timed pass of a reader over fresh copies of the slide."""
        with fresh_copies(self.slide, self.copies(name)) as paths:
            start = time.perf_counter()
            n, checksum, first_to_last = self.read(name, paths, self.origins)
            seconds = time.perf_counter() - start
        gc.collect()  # drop this pass's readers (TIAToolbox's hold 256 MB caches) untimed
        return PassResult(n, checksum, seconds, first_to_last)

    def close(self) -> None:
        """Stop the process pool."""
        if self.pool is not None:
            self.pool.terminate()


def _ratio(a: float, b: float) -> float:
    return a / b if b and b == b else float("nan")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tile_streaming", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--side", type=int, default=8192, help="slide side in px")
    parser.add_argument("--copies", type=int, default=32, help="slides per pass (hard links)")
    parser.add_argument(
        "--peer-copies", type=int, default=8, help="slides per pass of TIAToolbox and OpenSlide"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed passes per reader")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--block-rows", type=int, default=64, help="tiles per block")
    parser.add_argument("--read-cpus", type=float, default=1.0, help="num_cpus per read task")
    parser.add_argument("--tasks", type=int, default=None, help="read tasks (default: auto)")
    parser.add_argument(
        "--skip", default="", help=f"comma-separated readers to skip, of {', '.join(READERS)}"
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="folder caching the slide (default: results)"
    )
    return parser.parse_args(argv)


def _reader_rows(stats: dict[str, ReaderStats]) -> list[dict[str, Any]]:
    raw = stats["raw"].rate() if "raw" in stats else float("nan")
    rows = []
    for name, st in stats.items():
        rates = [p.rate for p in st.passes]
        rows.append(
            {
                "reader": name,
                "tiles/s": st.rate(),
                "min": min(rates),
                "max": max(rates),
                "x raw": _ratio(st.rate(), raw),
                "mean px": round(st.mean_pixel(), 1),
                "RSS +MiB": round(st.rss_growth_mib),
            }
        )
        if name == "pathray-ray":
            f2l = [p.first_to_last or float("nan") for p in st.passes]
            rows.append(
                {
                    "reader": "  first-to-last",
                    "tiles/s": st.rate(first_to_last=True),
                    "min": min(f2l),
                    "max": max(f2l),
                    "x raw": _ratio(st.rate(first_to_last=True), raw),
                }
            )
    return rows


def _goal_rows(stats: dict[str, ReaderStats], cpus: int) -> list[dict[str, Any]]:
    if "pathray-ray" not in stats:
        return []

    def rate(name: str) -> float:
        return stats[name].rate() if name in stats else float("nan")

    rows = []
    for label, value in [
        ("whole pass", stats["pathray-ray"].rate()),
        ("first-to-last", stats["pathray-ray"].rate(first_to_last=True)),
    ]:
        vs_raw = _ratio(value, cpus * rate("raw"))
        vs_floor = _ratio(value, cpus * rate("raw-offset"))
        vs_tia = _ratio(value, rate("tiatoolbox"))
        rows.append(
            {
                "pathray-ray": label,
                f"/ ({cpus} x raw)": vs_raw,
                f"met (>= {GOAL_VS_RAW})": "yes" if vs_raw >= GOAL_VS_RAW else "NO",
                f"/ ({cpus} x raw-offset)": vs_floor,
                "/ tiatoolbox": vs_tia,
                f"met (>= {GOAL_VS_TIA})": "yes" if vs_tia >= GOAL_VS_TIA else "NO",
                "/ openslide": _ratio(value, rate("openslide")),
                "/ raw-parallel": _ratio(value, rate("raw-parallel")),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the tables and append the JSON line.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The recorded payload.
    """
    args = _parse(argv)
    if args.side % TILE:
        raise SystemExit(f"--side must be a multiple of {TILE}. Got {args.side} instead.")
    _quiet()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    names = [r for r in READERS if r not in skip]
    slide = ensure_slide(args.side, args.data or results_dir("data"))
    bench = Bench(args, slide)
    machine = machine_info()
    print(
        f"tile streaming: {args.copies} x {args.side} px slide(s) ({args.peer_copies} for "
        f"{' and '.join(PEERS)}), {len(bench.origins)} tiles of {TILE} px each, "
        f"{args.repeat} passes per reader\n"
        f"machine: {machine['cores']} cores ({machine['cpu_model']}), "
        f"{machine['memory_gib']} GiB, load {machine['load_avg_1m']}",
        flush=True,
    )
    cold: dict[str, float] = {}
    stats = {name: ReaderStats(name) for name in names}
    try:
        if "pathray-ray" in names:
            cold["ray_init_s"] = start_ray(args.cpus)
            cold["first_pass_s"] = bench.run_pass("pathray-ray").seconds
            print(
                f"ray: started in {cold['ray_init_s']:.1f} s; "
                f"cold first pass {cold['first_pass_s']:.2f} s",
                flush=True,
            )
        for name in names:
            bench.warm_up(name)
        for rep in range(args.repeat):
            for name in names:
                with RssSampler(interval=0.25) as rss:
                    result = bench.run_pass(name)
                stats[name].passes.append(result)
                stats[name].rss_growth_mib = max(stats[name].rss_growth_mib, rss.growth_mib)
                extra = (
                    f", first-to-last {result.first_to_last:,.0f}" if result.first_to_last else ""
                )
                print(f"  pass {rep + 1} {name:15s} {result.rate:8,.0f} tiles/s{extra}", flush=True)
    finally:
        bench.close()

    rows = _reader_rows(stats)
    print_table(rows, title=f"Tiles per second (median of {args.repeat} passes)")
    goals = _goal_rows(stats, args.cpus)
    if goals:
        print_table(goals, title=f"Ratios (PathRay on a local Ray of {args.cpus} CPUs)")
        warm = median(p.seconds for p in stats["pathray-ray"].passes)
        print(
            f"\nRay cold start: init {cold['ray_init_s']:.1f} s; first pass "
            f"{cold['first_pass_s']:.2f} s vs warm median {warm:.2f} s"
        )
    print(f"peak RSS of this process: {peak_rss_mib():.0f} MiB")
    payload = {
        "params": {
            "side": args.side,
            "copies": args.copies,
            "peer_copies": args.peer_copies,
            "tiles_per_pass": len(bench.origins) * args.copies,
            "tile": TILE,
            "repeat": args.repeat,
            "cpus": args.cpus,
            "block_rows": args.block_rows,
            "read_cpus": args.read_cpus,
            "tasks": args.tasks,
        },
        "rates": {name: [p.rate for p in st.passes] for name, st in stats.items()},
        "first_to_last": [p.first_to_last for p in stats["pathray-ray"].passes]
        if "pathray-ray" in stats
        else None,
        "median": {row["reader"].strip(): row["tiles/s"] for row in rows},
        "ratios": goals,
        "cold": cold,
        "peak_rss_mib": peak_rss_mib(),
    }
    write_result("tile_streaming", payload)
    return payload


if __name__ == "__main__":
    main()
