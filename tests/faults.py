"""What the engine fault tests share: a real-model pipeline, its slide, and the checks.

The pipeline is tissue masking followed by the nucleus U-Net with its shipped model
(``nuclei-default@champion``) on a small synthetic H&E slide; its stored tile rows carry the
model's nucleus count per tile. A faulted run must commit exactly the rows of a clean run, and
the catalog's result locations must agree with the Lance datasets (or be absent).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from pathray.catalog import Catalog
from pathray.results.store import KINDS, ColdStore
from pathray.slides.register import register_slides
from pathray.slides.synthetic import make_synthetic_slide

IMAGE_SET = "faults"
#: 2048 px at 0.25 mpp: 1024 px at the unit's 0.5 mpp, 81 tiles of 128 px.
SLIDE_SIDE = 2048
SPEC = """
name: unet-faults
version: "1"
tiling: {mpp: 0.5, size: 128, overlap: 16, min_tissue: 0.0}
units:
  - {id: tissue, unit: tissue_mask, config: {mpp: 0.5}}
  - {id: segment, unit: nucleus_unet, after: [tissue], config: {mpp: 0.5},
     model: nuclei-default@champion}
"""


def make_slide(folder: Path) -> Path:
    """Write the synthetic slide of the fault tests into ``folder``; return its path."""
    path = folder / "faults.tif"
    make_synthetic_slide(
        path, width=SLIDE_SIDE, height=SLIDE_SIDE, mpp=0.25, seed=7, write_ground_truth=False
    )
    return path


def register(catalog: Catalog, slide: Path) -> None:
    """Register the slide in image set :data:`IMAGE_SET` of ``catalog``."""
    report = register_slides(catalog, slide, store="faults", image_set=IMAGE_SET)
    assert report.registered and not report.rejected, report


def sorted_rows(table: pa.Table) -> pa.Table:
    """A results table in key order (slide, tile, object)."""
    keys = [k for k in ("slide_id", "tile_id", "object_id") if k in table.column_names]
    return table.sort_by([(k, "ascending") for k in keys])


def committed_rows(store: ColdStore, run_id: str) -> dict[str, pa.Table]:
    """A run's committed rows per kind, in key order (kinds it has none of are left out)."""
    return {
        kind: sorted_rows(store.read(run_id, kind))
        for kind in KINDS
        if store.uri(run_id, kind).exists()
    }


def assert_same_rows(got: dict[str, pa.Table], want: dict[str, pa.Table]) -> None:
    """The committed rows of a faulted run equal those of a clean run, kind by kind."""
    assert set(got) == set(want)
    for kind, table in want.items():
        assert got[kind].num_rows == table.num_rows > 0, kind
        assert got[kind].equals(table), kind


def assert_locations_agree(catalog: Catalog, store: ColdStore, run_id: str) -> None:
    """The catalog's result locations of a run match its Lance datasets, or there are none.

    A succeeded run has a location per unit node and slide whose row count is the Lance
    dataset's for that slide; any other run has no location at all (no half commit).
    """
    locations = catalog.result_locations(run_id=run_id)
    if catalog.get_run(run_id).status != "succeeded":
        assert locations == [], locations
        return
    assert {loc.unit_name for loc in locations} == {"tissue", "segment"}
    for loc in locations:
        assert loc.uri == str(store.uri(run_id, loc.kind))
        rows = store.read(run_id, loc.kind, slide_id=loc.slide_id, columns=["slide_id"])
        assert loc.row_count == rows.num_rows > 0


def wait_for_staged(
    store: ColdStore,
    alive: Callable[[], bool],
    count: int = 1,
    timeout: float = 300,
    why: Callable[[], str] = lambda: "",
) -> int:
    """Wait until ``count`` batches of tiles are staged in ``store``; return how many are.

    Args:
        store: The cold store the run stages into.
        alive: Asked at every look; False means the run ended early (the test fails).
        count: Staged tile files to wait for.
        timeout: Seconds to wait at most.
        why: Asked when the run ended early, for the failure message (e.g. the run's error).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        staged = len(list((store.root / "staging").glob("*/*.tiles.parquet")))
        if staged >= count:
            return staged
        assert alive(), f"the run ended before it staged any tile: {why()}"
        time.sleep(0.02)
    raise AssertionError(f"no {count} staged tile batches after {timeout} s")
