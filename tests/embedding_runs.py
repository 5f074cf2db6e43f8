"""Embedding runs made without Ray: the engine's own stages, driven in this process.

A run is recorded by ``prepare_run``, its tiles planned by ``plan_run`` and read from the slides,
embedded by ``tile_embedder`` through ``UnitStage``/``WriteStage`` and committed by
``ColdStore.finalize``: the engine's path, only not on Ray (tests/integration/test_search_ray.py
covers that).
"""

from __future__ import annotations

from pathray.catalog import Catalog
from pathray.engine.plan import plan_run
from pathray.engine.runner import prepare_run
from pathray.engine.schemas import stored_schemas
from pathray.engine.stages import UnitStage
from pathray.pipeline.spec import PipelineSpec
from pathray.results.store import ColdStore
from pathray.slides.source import iter_tile_batches
from pathray.units.base import TILE_KEYS
from pathray.units.registry import unit_path
from tests.helpers import OME_FILES

OS1 = next(p for p in OME_FILES if p.name.startswith("OS-1"))
OS2 = next(p for p in OME_FILES if "vsi" in p.name)
#: The encoder block is left out here only to keep the tests quick; the conformance suite and
#: the Ray test run the full unit.
SPEC = PipelineSpec.from_yaml(
    """
name: embed-test
version: "1"
tiling: {mpp: 0.5, size: 128, overlap: 0, min_tissue: 0.05}
units:
  - {id: tissue, unit: tissue_mask, config: {mpp: 0.5}}
  - {id: embed, unit: tile_embedder, after: [tissue], config: {mpp: 0.5, encoder: false}}
"""
)


def run_in_process(catalog: Catalog, store: ColdStore, image_set: str) -> str:
    """Run :data:`SPEC` on an image set through the engine's stages, in this process."""
    run_id = prepare_run(catalog, store, SPEC, image_set)
    order = [(node, SPEC.unit_class(node)) for node in SPEC.ordered()]
    tile_schema, _ = stored_schemas(order)
    markers = tuple(c for c in tile_schema.names if c not in TILE_KEYS)
    write = {
        "staging": str(store.staging(run_id)),
        "object_schema": None,
        "tile_schema": tile_schema,
    }
    stages = [
        UnitStage(
            unit_path(cls),
            dict(node.config),
            tile_columns=markers,
            write=write if i == len(order) - 1 else None,
        )
        for i, (node, cls) in enumerate(order)
    ]
    slides = [s.id for s in catalog.slides_in_set(image_set)]
    for batch in iter_tile_batches(plan_run(catalog, slides, SPEC.tiling).refs, batch_rows=32):
        for stage in stages:
            batch = stage(batch)
    store.finalize(run_id)
    catalog.update_run(run_id, status="succeeded")
    return run_id
