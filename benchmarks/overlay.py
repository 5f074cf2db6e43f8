"""Overlay queries for the viewer: a 10k-object view and a coarse view of 100k objects.

One slide (``--side`` px square) carries ``--objects`` synthetic nuclei written as a run's
objects to the cold store (:func:`~pathray.results.synthetic_objects.write_objects_run`), and
the same objects promoted into a correction annotation set in the catalog (SQLite in a temporary
folder, or PostgreSQL with ``--pg URL``). For both layers it times:

- ``fine``: :func:`overlay_features` on a window holding about 10k objects at downsample 2
  (full polygons, GeoJSON dicts);
- ``coarse``: the whole slide at downsample 64 (centroids, capped at 5000, evenly thinned);
- ``tile``: :func:`overlay_tile` of the DeepZoom tile holding the whole slide (every object as
  a dot), and of one full-resolution tile.

The peers do the same job the plain way: for the run, read the slide's whole objects table,
decode every polygon and keep those meeting the window (``full scan``); for the annotations,
the catalog's general :meth:`query_annotations` (every geometry decoded, then filtered), both
followed by ``shapely.geometry.mapping`` per object. Ratios are peer time / PathRay time.

Run: ``python -m benchmarks.overlay [--objects 100000] [--side 40000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import mapping

from benchmarks.common import median, print_table, repeat_timed, timed, write_result
from pathray.catalog import Catalog
from pathray.results.overlay import Layer, overlay_features, overlay_tile
from pathray.results.store import ColdStore
from pathray.results.synthetic_objects import write_objects_run
from pathray.slides.deepzoom import DeepZoomGrid


def naive_run_view(store: ColdStore, run_id: str, slide_id: int, bbox: Any) -> list[Any]:
    """The plain way: read everything, decode everything, filter, convert."""
    table = store.read(run_id, "objects", slide_id=slide_id)
    geoms = shapely.from_wkb(table["polygon"].to_numpy(zero_copy_only=False))
    keep = shapely.intersects(geoms, shapely.box(*bbox))
    return [mapping(g) for g in geoms[keep]]


def naive_annotation_view(cat: Catalog, name: str, slide_id: int, bbox: Any) -> list[Any]:
    """The catalog's general query plus a GeoJSON conversion per object."""
    return [mapping(a.geometry) for a in cat.query_annotations(name, slide_id, bbox)]


def bench_layer(
    ctx: dict[str, Any],
    kind: str,
    layer: Layer,
    store: ColdStore | None,
    peer: Any,
    coarse_level: int,
) -> list[dict[str, Any]]:
    """Time the fine view, the coarse view and two PNG tiles of one layer, and the peer."""
    cat, slide_id, repeat = ctx["cat"], ctx["slide"], ctx["repeat"]

    def fine() -> Any:
        return overlay_features(cat, store, slide_id, layer, ctx["fine"], 2.0, max_features=20_000)

    def coarse() -> Any:
        return overlay_features(cat, store, slide_id, layer, ctx["whole"], 64.0)

    fc_fine, fc_coarse = fine(), coarse()
    t_fine = median(repeat_timed(fine, repeat))
    t_peer = median(repeat_timed(lambda: peer(ctx["fine"]), repeat))
    t_coarse = median(repeat_timed(coarse, repeat))
    t_peer_coarse = median(repeat_timed(lambda: peer(ctx["whole"]), 1))
    grid_top = DeepZoomGrid(*cat.get_slide(slide_id).level_dimensions[0]).max_level
    t_tile = median(
        repeat_timed(lambda: overlay_tile(cat, store, slide_id, layer, coarse_level, 0, 0), 2)
    )
    t_fine_tile = median(
        repeat_timed(lambda: overlay_tile(cat, store, slide_id, layer, grid_top, 3, 3), 2)
    )
    coarse_view = f"coarse {fc_coarse['total']} -> {fc_coarse['returned']} {fc_coarse['mode']}"
    return [
        {
            "layer": kind,
            "view": f"fine {fc_fine['returned']} polygons",
            "pathray s": t_fine,
            "peer s": t_peer,
            "peer / pathray": t_peer / t_fine,
        },
        {
            "layer": kind,
            "view": coarse_view,
            "pathray s": t_coarse,
            "peer s": t_peer_coarse,
            "peer / pathray": t_peer_coarse / t_coarse,
        },
        {
            "layer": kind,
            "view": f"PNG tile, level {coarse_level} (whole slide)",
            "pathray s": t_tile,
        },
        {"layer": kind, "view": "PNG tile, full resolution", "pathray s": t_fine_tile},
    ]


def main(argv: list[str] | None = None) -> None:
    """Build the data, time every query, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--side", type=int, default=40_000, help="slide side (px)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg", default=None, help="PostgreSQL URL instead of SQLite")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="pathray-overlay-"))
    cat = Catalog.open(args.pg or f"sqlite:///{tmp / 'catalog.db'}")
    store = ColdStore(tmp / "cold")
    cat.add_store("bench", str(tmp))
    slide = cat.register_slide(
        name="bench.tif",
        checksum=hashlib.sha256(tmp.name.encode()).hexdigest(),
        store="bench",
        relative_path="bench.tif",
        width=args.side,
        height=args.side,
    )
    cat.create_image_set(f"bench-{tmp.name}")
    cat.add_to_image_set(f"bench-{tmp.name}", [slide.id])
    side = args.side
    build_run, run = timed(
        lambda: write_objects_run(
            cat, store, f"bench-{tmp.name}", {slide.id: (side, side)}, count=args.objects
        )
    )
    build_promote, corr = timed(lambda: cat.promote_run(run.run_id, slide.id, store))
    # A window holding ~10k objects: a tenth of the slide's area, at the top-left corner.
    edge = side * (10_000 / args.objects) ** 0.5
    fine_box = (0.0, 0.0, edge, edge)
    whole = (0.0, 0.0, float(side), float(side))
    grid = DeepZoomGrid(side, side)
    coarse_level = max(lv for lv in range(grid.level_count) if grid.tile_count(lv) == (1, 1))
    rows: list[dict[str, Any]] = []
    ctx = {"cat": cat, "slide": slide.id, "fine": fine_box, "whole": whole, "repeat": args.repeat}
    run_peer = lambda box: naive_run_view(store, run.run_id, slide.id, box)  # noqa: E731
    ann_peer = lambda box: naive_annotation_view(cat, corr.name, slide.id, box)  # noqa: E731
    rows += bench_layer(ctx, "run", Layer.run(run.run_id), store, run_peer, coarse_level)
    rows += bench_layer(
        ctx, "annotations", Layer.annotations(corr.name), None, ann_peer, coarse_level
    )
    print(f"built: run {build_run:.1f} s, promotion into the catalog {build_promote:.1f} s")
    print_table(rows, title=f"Overlay queries, {args.objects} objects on a {side} px slide")
    write_result(
        "overlay",
        {"args": vars(args), "rows": rows, "build_s": build_run, "promote_s": build_promote},
    )
    cat.close()


if __name__ == "__main__":
    main()
