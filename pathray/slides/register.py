"""Registering slides in the catalog from files and folders.

Each slide is probed (:func:`~pathray.slides.probe.probe_slide`) and checksummed before anything
is written; the catalog write is one transaction per slide. A bad file is reported with its
reason and the rest of the batch registers.

Example:
    >>> report = register_slides(catalog, "../shared/data/wsi", store="shared")  # doctest: +SKIP
    >>> [s.name for s in report.registered], report.rejected  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pathray.catalog import Catalog
from pathray.catalog.records import Slide
from pathray.errors import ConfigError, PathRayError, SlideError
from pathray.slides.probe import checksum, find_slides, probe_slide


@dataclass
class RegisterReport:
    """Outcome of a registration batch.

    Attributes:
        registered: Slides now in the catalog (new, or a new replica of a known slide).
        rejected: Path -> reason, for every file that was refused.
    """

    registered: list[Slide] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError as exc:
        raise SlideError(path, f"is not under the store's root {root}") from exc


def register_slides(
    catalog: Catalog,
    source: str | Path,
    *,
    store: str,
    store_root: str | Path | None = None,
    mpp: float | None = None,
    image_set: str | None = None,
    actor: str = "system",
    on_slide: Callable[[Path], None] | None = None,
) -> RegisterReport:
    """Register every slide found under ``source``.

    Args:
        catalog: The catalog.
        source: A slide file, a DICOM folder, or a folder searched recursively.
        store: Name of the slide store the files belong to (created if new).
        store_root: Root of a new store (default: ``source`` if a folder, else its parent).
        mpp: Microns per pixel to record for slides that do not declare one.
        image_set: Add the registered slides to this image set (created if new).
        actor: Who registers (for the audit log).
        on_slide: Called with each path before it is processed (progress bars).

    Returns:
        What registered and what was rejected, with reasons.

    Raises:
        ConfigError: If the source or the store's root is an object-store URI (slides are read
            from a local path, or one every node sees).
    """
    for where in (source, store_root):
        if where is not None and "://" in str(where):
            raise ConfigError(
                "Slides must be registered from a local path (or one every Ray node sees); "
                f"slide stores on an object store are not supported yet. Got {str(where)!r} "
                "instead. Copy the slides to a shared folder, or mount the bucket, and register "
                "that path."
            )
    source = Path(source)
    if not source.exists():
        raise SlideError(source, "does not exist")
    default_root = source if source.is_dir() else source.parent
    root = Path(
        catalog.add_store(store, str(Path(store_root or default_root).resolve()), actor=actor).root
    )
    report = RegisterReport()
    for path in find_slides(source):
        if on_slide:
            on_slide(path)
        try:
            info = probe_slide(path)
            slide = catalog.register_slide(
                name=path.name,
                checksum=checksum(path),
                store=store,
                relative_path=_relative(path, root),
                width=info.width,
                height=info.height,
                level_count=info.level_count,
                level_dimensions=[list(d) for d in info.level_dimensions],
                level_downsamples=list(info.level_downsamples),
                mpp=info.mpp or mpp,
                mpp_source="file" if info.mpp else ("user" if mpp else None),
                objective_power=info.objective_power,
                vendor=info.vendor,
                format=info.format,
                properties=info.properties,
                actor=actor,
            )
        except PathRayError as exc:
            report.rejected[str(path)] = exc.reason if isinstance(exc, SlideError) else str(exc)
            continue
        report.registered.append(slide)
    if image_set and report.registered:
        if image_set not in {s.name for s in catalog.list_image_sets()}:
            catalog.create_image_set(image_set, actor=actor)
        catalog.add_to_image_set(image_set, [s.id for s in report.registered], actor=actor)
    return report
