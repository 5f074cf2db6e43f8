"""The main job (``pathray demo``): sample data -> catalog -> nuclei pipeline -> metrics.

1. Synthetic slides with exact ground truth (:func:`pathray.slides.synthetic.make_synthetic_slide`).
2. The real slides of ``../shared/data`` (SVS, JPEG 2000 SVS, DICOM WSI, OME-TIFF).
3. The real nucleus tiles of ``../shared/data/nuclei`` made into small pyramidal slides, with their
   instance masks imported as reference annotations.
4. The ``nuclei`` preset runs on each image set on the local Ray; each run is compared with its
   reference, and a table of the metrics and of where every result lives is printed.
5. The ``embed`` preset runs on the real slides and their similarity-search index is built
   (``pathray search --like SLIDE:X,Y``).

Re-running the demo reuses what exists (slides are identified by content, annotations are
imported once) and makes new runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from rich.console import Console
from rich.table import Table

from pathray.catalog import Catalog
from pathray.config import Settings
from pathray.engine.runner import RunResult, run_pipeline
from pathray.errors import PathRayError
from pathray.evaluate.run_eval import evaluate_run
from pathray.formats import AnnotationRecord, read_geojson, read_instance_mask
from pathray.formats.catalog_io import REGION_ROLE, import_records
from pathray.results.store import ColdStore
from pathray.slides.pyramid import pyramid_from_image
from pathray.slides.register import register_slides
from pathray.slides.synthetic import make_synthetic_slide
from pipelines.presets import load_preset


def find_sample_data() -> Path | None:
    """The folder of real sample data (slides, nucleus tiles), or None where there is none.

    ``PATHRAY_SHARED_DATA`` if set; else ``shared/data`` beside the checkout this module runs
    from; else ``../shared/data`` or ``shared/data`` under the working directory (an installed
    PathRay run from a checkout's folder).
    """
    if os.environ.get("PATHRAY_SHARED_DATA"):
        return Path(os.environ["PATHRAY_SHARED_DATA"]).expanduser().resolve()
    candidates = (
        Path(__file__).resolve().parents[2] / "shared" / "data",
        Path.cwd() / ".." / "shared" / "data",
        Path.cwd() / "shared" / "data",
    )
    return next((c.resolve() for c in candidates if (c / "wsi").is_dir()), None)


#: The real sample data; the demo runs on synthetic slides alone where there is none.
SHARED = find_sample_data() or Path("shared-data-not-found")


@dataclass(frozen=True)
class NucleusTiles:
    """A folder of real nucleus tiles with instance ground truth.

    Attributes:
        name: Image set name.
        images: ``(image path, instance mask path)`` pairs.
        mpp: Microns per pixel the tiles are taken to have, or None to estimate it per tile
            (:func:`dsb_mpp`); the sources do not say.
        partial: The ground truth outlines only part of each tile.
    """

    name: str
    images: list[tuple[Path, Path]]
    mpp: float | None
    partial: bool = False


def dsb_mpp(width: int) -> float:
    """Estimated mpp of a DSB 2018 histology tile from its width.

    The stage-1 histology tiles come at two scales; matching their median nucleus area to
    CryoNuSeg's (0.25 mpp) gives about 0.13 mpp for the 680-px-wide tiles and 0.26 for the
    348-px-wide ones (see ``benchmarks/nuclei_quality.py``).
    """
    return 0.13 if width >= 500 else 0.26


def nucleus_tile_sets(shared: Path = SHARED) -> list[NucleusTiles]:
    """The real nucleus tile sets of the shared data, with their ground-truth masks."""
    dsb = shared / "nuclei" / "dsb2018-histology"
    sets = []
    for stain in ("he", "hematoxylin_only"):
        pairs = [
            (
                d / "images" / f"{d.name}.png",
                dsb / stain / "instance_masks_derived" / f"{d.name}_inst.png",
            )
            for d in sorted((dsb / stain).iterdir())
            if (d / "images").is_dir()
        ]
        sets.append(NucleusTiles(f"dsb-{stain.replace('_', '-')}", pairs, mpp=None))
    cryo = shared / "nuclei" / "cryonuseg-sample"
    pairs = [
        (next(d.glob("*.tif")), d / "instance_mask_derived.png")
        for d in sorted(cryo.iterdir())
        if d.is_dir()
    ]
    sets.append(NucleusTiles("cryonuseg", pairs, mpp=0.25, partial=True))
    return sets


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def prepare_synthetic(catalog: Catalog, data: Path, quick: bool) -> str:
    """Synthetic slides registered in image set ``synthetic``, ground truth in ``synthetic-gt``."""
    side = 2048 if quick else 4096
    folder = data / "synthetic"
    folder.mkdir(parents=True, exist_ok=True)
    slides = []
    for seed in (1, 2):
        path = folder / f"synthetic-{side}-s{seed}.tif"
        if not path.exists():
            make_synthetic_slide(path, width=side, height=side, mpp=0.25, seed=seed)
        slides.append(path)
    for path in slides:
        register_slides(catalog, path, store="synthetic", store_root=folder, image_set="synthetic")
        slide = catalog.get_slide(path.name)
        name = "synthetic-gt"
        if name in {a.name for a in catalog.list_annotation_sets()} and catalog.count_annotations(
            name, slide.id
        ):
            continue
        records = read_geojson(path.with_suffix("").with_suffix(".nuclei.geojson"))
        import_records(
            catalog, records, annotation_set=name, slide_id=slide.id, image_set="synthetic"
        )
    return "synthetic"


def prepare_nucleus_tiles(catalog: Catalog, data: Path, tiles: NucleusTiles) -> str:
    """Real nucleus tiles as slides in image set ``tiles.name``, ground truth in ``<name>-gt``."""
    folder = data / tiles.name
    folder.mkdir(parents=True, exist_ok=True)
    gt = f"{tiles.name}-gt"
    for image_path, mask_path in tiles.images:
        rgb = _read_rgb(image_path)
        out = folder / f"{image_path.stem[:16]}.tif"
        if not out.exists():
            height, width = rgb.shape[:2]
            mpp = tiles.mpp or dsb_mpp(width)
            pyramid_from_image(rgb, out, mpp=mpp, width=width, height=height)
        register_slides(catalog, out, store=tiles.name, store_root=folder, image_set=tiles.name)
        slide = catalog.get_slide(out.name)
        if gt in {a.name for a in catalog.list_annotation_sets()} and catalog.count_annotations(
            gt, slide.id
        ):
            continue
        records = read_instance_mask(mask_path, label="nucleus")
        if tiles.partial:  # score only where the annotators outlined nuclei
            hull = shapely.union_all([r.geometry for r in records]).convex_hull.buffer(4)
            records.append(AnnotationRecord(hull, "region", properties={"role": REGION_ROLE}))
        import_records(catalog, records, annotation_set=gt, slide_id=slide.id, image_set=tiles.name)
    return tiles.name


def prepare_real_slides(catalog: Catalog) -> str:
    """The shared real slides in image set ``real-wsi`` (no ground truth)."""
    register_slides(catalog, SHARED / "wsi", store="shared-wsi", image_set="real-wsi", mpp=0.5)
    for path in sorted(SHARED.glob("*.ome.tif")):
        register_slides(catalog, path, store="shared-ome", store_root=SHARED, image_set="real-wsi")
    return "real-wsi"


def run_demo(
    catalog: Catalog, store: ColdStore, settings: Settings, *, console: Console, quick: bool = False
) -> dict[str, Any]:
    """Run the whole demo and print its tables.

    Returns:
        Per image set: the run result and, where there is a reference, the metrics.
    """
    data = settings.home / "data"
    console.rule("PathRay demo")
    real = SHARED.is_dir()
    if not real:
        console.print(
            "[yellow]No real sample data found[/yellow] (set PATHRAY_SHARED_DATA to the folder "
            "holding wsi/ and nuclei/): the demo runs on synthetic slides only."
        )
    with console.status("making and registering sample data..."):
        sets = {prepare_synthetic(catalog, data, quick): "synthetic-gt"}
        if real:
            for tiles in nucleus_tile_sets():
                sets[prepare_nucleus_tiles(catalog, data, tiles)] = f"{tiles.name}-gt"
            sets[prepare_real_slides(catalog)] = ""
    spec = load_preset("nuclei")
    results: dict[str, Any] = {}
    for image_set, reference in sets.items():
        with console.status(f"running {spec.name} on {image_set}..."):
            run = run_pipeline(catalog, store, spec, image_set, requester="demo")
        report = evaluate_run(catalog, store, run.run_id, reference) if reference else None
        results[image_set] = {"run": run, "metrics": report}
    console.print(_summary_table(results))
    agreement = (
        copies_agreement(catalog, store, results["real-wsi"]["run"].run_id) if real else None
    )
    if agreement is not None:
        console.print(
            "CMU-1-Small-Region, SVS vs DICOM copy (same scan): nuclei "
            f"{agreement['n_pred']} vs {agreement['n_ref']}, F1 {agreement['f1']:.3f}, "
            f"Dice {agreement['dice']:.3f}"
        )
    console.print(_locations_table(catalog, store, results, settings))
    prepare_search(catalog, store, "real-wsi" if real else "synthetic", console=console)
    return results


def prepare_search(catalog: Catalog, store: ColdStore, image_set: str, *, console: Console) -> Any:
    """Embed an image set's tiles (the ``embed`` preset) and build its search index."""
    from pathray.services.search import SearchService

    with console.status(f"embedding the tiles of {image_set} for similarity search..."):
        run_pipeline(catalog, store, load_preset("embed"), image_set, requester="demo")
        (report,) = SearchService(catalog, store.root).build(image_set)
    first = catalog.slides_in_set(image_set)[0]
    stem = first.name.split(".")[0]
    console.print(
        f"similarity search: {report.rows} tiles of {image_set} indexed ({report.key}); try "
        f"`pathray search --like {stem}:{first.width // 2},{first.height // 2}`"
    )
    return report


def copies_agreement(catalog: Catalog, store: ColdStore, run_id: str) -> dict[str, Any] | None:
    """How far a run's nuclei on the SVS and the DICOM copy of CMU-1-Small-Region agree."""
    from pathray.evaluate import compare_objects

    try:
        svs = catalog.get_slide("CMU-1-Small-Region.svs")
        dicom = catalog.get_slide("CMU-1-Small-Region-dicom")
    except PathRayError:
        return None
    polygons = [
        shapely.from_wkb(
            store.read(run_id, "objects", s.id, ["polygon"])["polygon"].to_numpy(False)
        )
        for s in (svs, dicom)
    ]
    return compare_objects(polygons[0], polygons[1]).metrics()


def _summary_table(results: dict[str, Any]) -> Table:
    table = Table(
        "image set",
        "slides",
        "tiles",
        "nuclei",
        "ref",
        "precision",
        "recall",
        "F1 (IoU>=0.5)",
        "Dice",
        "IoU",
        "s",
        title="nuclei preset: results against the ground truth (overall per set)",
    )
    for name, entry in results.items():
        run: RunResult = entry["run"]
        tiles = sum(c.get("tiles", 0) for c in run.counts.values())
        objects = sum(c.get("objects", 0) for c in run.counts.values())
        m = (entry["metrics"] or {}).get("overall", {})
        keys = ("precision", "recall", "f1", "dice", "pixel_iou")
        cells = [f"{m[k]:.3f}" if k in m else "-" for k in keys]
        table.add_row(
            name,
            str(len(run.counts)),
            str(tiles),
            str(objects),
            str(m.get("n_ref", "-")),
            *cells,
            f"{run.seconds:.0f}",
        )
    return table


def _locations_table(
    catalog: Catalog, store: ColdStore, results: dict[str, Any], settings: Settings
) -> Table:
    table = Table(
        "image set",
        "run",
        "objects (Lance)",
        "evaluations",
        title=f"where results live (catalog: {settings.catalog_url})",
    )
    for name, entry in results.items():
        run_id = entry["run"].run_id
        evaluations = len(catalog.list_evaluations(run_id=run_id))
        table.add_row(name, run_id, str(store.uri(run_id, "objects")), str(evaluations))
    return table
