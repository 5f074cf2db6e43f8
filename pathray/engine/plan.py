"""Planning a run on the driver: slides -> reachable replica -> tissue mask -> tile references.

Only tile references are made here (a few numbers per tile); pixels are read in the workers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from pathray.catalog import Catalog
from pathray.errors import ConfigError, PathRayError, SlideError
from pathray.pipeline.spec import TilingSpec
from pathray.slides.readers import open_reader
from pathray.slides.tiling import TILE_REF_SCHEMA, TileGrid, plan_tiles
from pathray.slides.tissue import tissue_mask

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """The tiles of a run and the slides that could not be planned.

    Attributes:
        refs: Tile references of every planned slide.
        slides: Planned slide ids with their tile counts.
        problems: Slide id -> why it was skipped (missing replicas, no mpp, unreadable).
    """

    refs: pa.Table
    slides: dict[int, int] = field(default_factory=dict)
    problems: dict[int, str] = field(default_factory=dict)


def reachable_replica(catalog: Catalog, slide_id: int) -> tuple[str, list[str]]:
    """The first replica of a slide that exists, and the ones found missing.

    Raises:
        SlideError: If no replica is reachable.
    """
    missing: list[str] = []
    for replica in catalog.replicas_of(slide_id):
        location = replica.location
        if Path(location).exists():
            return location, missing
        missing.append(location)
    raise SlideError(f"slide {slide_id}", f"no replica is reachable (missing: {missing})")


def plan_slide(catalog: Catalog, slide_id: int, tiling: TilingSpec) -> pa.Table:
    """Tile references of one slide at the tiling's resolution."""
    slide = catalog.get_slide(slide_id)
    path, missing = reachable_replica(catalog, slide_id)
    for location in missing:
        log.warning("slide %s: replica %s is missing; using %s", slide.name, location, path)
    mpp = slide.mpp or tiling.assume_mpp
    if not mpp:
        raise ConfigError(
            f"Slide {slide.name!r} declares no mpp. Register it with --mpp or set "
            "tiling.assume_mpp in the pipeline."
        )
    reader = open_reader(path)
    grid = TileGrid(slide.width, slide.height, tiling.mpp / mpp, tiling.size, tiling.overlap)
    return plan_tiles(slide_id, path, grid, tissue_mask(reader, mpp), tiling.min_tissue)


def plan_run(catalog: Catalog, slide_ids: list[int], tiling: TilingSpec) -> Plan:
    """Plan every slide; a slide that cannot be planned is reported, not fatal."""
    tables, plan = [], Plan(refs=TILE_REF_SCHEMA.empty_table())
    for slide_id in slide_ids:
        try:
            table = plan_slide(catalog, slide_id, tiling)
        except PathRayError as exc:
            plan.problems[slide_id] = str(exc)
            continue
        tables.append(table)
        plan.slides[slide_id] = table.num_rows
    if tables:
        plan.refs = pa.concat_tables(tables)
    return plan
