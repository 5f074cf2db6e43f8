"""A small ready-to-open catalog for trying the app and for its browser tests.

:func:`prepare_demo` writes synthetic slides, registers two in an image set ``demo`` (with a
reference annotation set ``demo-gt`` from the slides' ground truth: enough to iterate on) and
one in a protected image set ``locked`` (with a read-only set ``locked-gt``), makes an empty
set ``demo-notes`` (the first clinician's) to draw into, and
creates users with passwords.

Example:
    >>> users = {"alice": ("clinician", "secret-pw")}
    >>> prepare_demo(catalog, Path("/tmp/demo"), users)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pathray.catalog import Catalog
from pathray.formats import read_geojson
from pathray.formats.catalog_io import import_records
from pathray.slides.register import register_slides
from pathray.slides.synthetic import make_synthetic_slide, sidecar_paths

LABELS = ("tumor", "lymphocyte", "stroma")


def _slide(folder: Path, name: str, side: int, seed: int) -> Path:
    path = folder / f"{name}.tif"
    if not path.exists():
        make_synthetic_slide(path, width=side, height=side, mpp=0.25, seed=seed, workers=2)
    return path


def prepare_demo(
    catalog: Catalog,
    folder: Path,
    users: Mapping[str, tuple[str, str]],
    *,
    side: int = 2048,
) -> dict[str, int]:
    """Fill a catalog with the demo slides, sets and users.

    Args:
        catalog: The (empty) catalog.
        folder: Where the slide files go.
        users: ``{name: (role, password)}``.
        side: Edge of the synthetic slides in pixels.

    Returns:
        Slide ids by name: ``{"demo": id, "demo-2": id, "locked": id}``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name, (role, password) in users.items():
        catalog.add_user(name, role)
        catalog.set_password(name, password)
    ids = {}
    # (image set, slide name, seed, edge): the demo set has two annotated slides, so that an
    # iteration (one slide to learn from, one to judge on) runs on it; the protected slide
    # only shows read-only behaviour, and the second demo slide only has to be annotated:
    # half the size will do for both.
    slides = (
        ("demo", "demo", 1, side),
        ("demo", "demo-2", 3, side // 2),
        ("locked", "locked", 2, side // 2),
    )
    for set_name, name, seed, edge in slides:
        path = _slide(folder, f"{name}-slide", edge, seed)
        register_slides(catalog, path, store="demo", store_root=folder, image_set=set_name)
        slide = catalog.get_slide(path.name)
        if name == set_name:  # the set's first slide makes its sets
            catalog.create_annotation_set(f"{set_name}-gt", image_set=set_name, labels=list(LABELS))
        records = read_geojson(sidecar_paths(path)[0])
        import_records(catalog, records, annotation_set=f"{set_name}-gt", slide_id=slide.id)
        ids[name] = slide.id
    catalog.protect("locked")
    # An empty set to draw into, owned by the demo's first clinician (a reference set may be
    # changed by its owner, an engineer or an admin: pathray.catalog.access).
    annotator = next((n for n, (role, _) in users.items() if role == "clinician"), "system")
    catalog.create_annotation_set(
        "demo-notes", image_set="demo", labels=list(LABELS), actor=annotator
    )
    return ids
