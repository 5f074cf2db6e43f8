"""``pathray slides``, ``pathray sets`` and ``pathray annotations``: the data a run reads.

Slides are registered (optionally de-identified), listed and exported; image sets group them
(many-to-many) and can be protected; annotation sets are imported from and exported to GeoJSON,
ImageScope, ASAP and the other supported formats.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pathray.cli.common import (
    ME,
    Actor,
    JsonFlag,
    console,
    err,
    friendly,
    jsonable,
    open_catalog,
    print_json,
    progress_bar,
    slide_id_of,
)
from pathray.config import Settings

slides_app = typer.Typer(help="Register and inspect slides.", no_args_is_help=True)
sets_app = typer.Typer(help="Image sets: create, fill, protect.", no_args_is_help=True)
ann_app = typer.Typer(help="Annotation import and export.", no_args_is_help=True)


@slides_app.command("add")
@friendly
def slides_add(
    path: Annotated[Path, typer.Argument(help="Slide file, DICOM folder, or folder to search.")],
    store: Annotated[str, typer.Option(help="Slide store the files live on.")] = "local",
    image_set: Annotated[str | None, typer.Option("--set", help="Add to this image set.")] = None,
    mpp: Annotated[float | None, typer.Option(help="mpp for slides that declare none.")] = None,
    deidentify: Annotated[
        bool,
        typer.Option(
            help="Register de-identified copies (no label or macro image, no identifying "
            "metadata) written under --into; the originals are not registered."
        ),
    ] = False,
    into: Annotated[
        Path | None,
        typer.Option(help="Folder of the de-identified copies (the store's root).", hidden=False),
    ] = None,
    actor: Actor = ME,
) -> None:
    """Register slides; bad files are reported and the rest register."""
    from pathray.slides.probe import find_slides
    from pathray.slides.register import register_slides

    catalog = open_catalog()
    if deidentify:
        from pathray.slides.deidentify import deidentify_tree

        into = into or Settings.from_env().home / "deidentified" / store
        copies, failed = deidentify_tree(path, into)
        for bad, reason in failed.items():
            err.print(f"[red]rejected[/red] {bad}: {reason}")
        for copy in copies:
            removed = ", ".join(copy.removed_images) or "none"
            console.print(f"de-identified {copy.path.name}: associated images removed: {removed}")
        path = into
    total = len(find_slides(path)) if path.exists() else 0
    with progress_bar() as bar:
        task = bar.add_task("registering", total=total)

        def advance(p: Path) -> None:
            bar.update(task, advance=1, description=f"probing {p.name[:40]}")

        report = register_slides(
            catalog, path, store=store, mpp=mpp, image_set=image_set, actor=actor, on_slide=advance
        )
    for slide in report.registered:
        console.print(f"[green]registered[/green] {slide.id:>4}  {slide.name}")
    for bad, reason in report.rejected.items():
        err.print(f"[red]rejected[/red] {bad}: {reason}")
    if report.rejected and not report.registered:
        raise typer.Exit(2)


@slides_app.command("export")
@friendly
def slides_export(
    slide: Annotated[str, typer.Argument(help="Slide id, name or stem.")],
    out: Annotated[Path, typer.Argument(help="File (or folder, for DICOM) to write.")],
    deidentify: Annotated[
        bool, typer.Option(help="Leave out label and macro images and identifying metadata.")
    ] = False,
    actor: Actor = ME,
) -> None:
    """Copy a slide out of its store; with its label and macro images only for an admin."""
    import shutil

    from pathray.catalog.auth import PermissionDeniedError
    from pathray.engine.plan import reachable_replica
    from pathray.errors import ConfigError
    from pathray.slides.deidentify import deidentify_slide

    catalog = open_catalog()
    record = catalog.get_slide(int(slide) if slide.isdigit() else slide)
    source, _ = reachable_replica(catalog, record.id)
    if out.exists():
        raise ConfigError(f"The export target must not exist. Got {str(out)!r}, which does.")
    if deidentify:
        report = deidentify_slide(source, out)
        catalog.record_slide_export(record.id, str(out), deidentified=True, actor=actor)
        removed = ", ".join(report.removed_images) or "none"
        console.print(f"exported {record.name} de-identified to {out} (removed: {removed})")
        return
    role = catalog.get_user(actor).role
    if role != "admin":
        raise PermissionDeniedError(
            "Exporting a slide with its label and macro images needs the admin role "
            f"(use --deidentify otherwise). Got {actor!r} with role {role!r} instead."
        )
    copy = shutil.copytree if Path(source).is_dir() else shutil.copyfile
    copy(source, out)
    catalog.record_slide_export(record.id, str(out), deidentified=False, actor=actor)
    console.print(f"exported {record.name} to {out} (with its label and macro images)")


@slides_app.command("list")
@friendly
def slides_list(
    image_set: Annotated[str | None, typer.Option("--set", help="Only this image set.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List registered slides."""
    slides = open_catalog().list_slides(image_set)
    if as_json:
        return print_json(slides)
    table = Table("id", "name", "format", "size (px)", "levels", "mpp")
    for s in slides:
        mpp = f"{s.mpp:.3f}" if s.mpp else "-"
        table.add_row(
            str(s.id), s.name, s.format or "-", f"{s.width} x {s.height}", str(s.level_count), mpp
        )
    console.print(table)


@slides_app.command("show")
@friendly
def slides_show(slide: Annotated[str, typer.Argument(help="Slide id or name.")]) -> None:
    """Show a slide's metadata, replicas and image sets."""
    catalog = open_catalog()
    s = catalog.get_slide(int(slide) if slide.isdigit() else slide)
    console.print_json(json.dumps(jsonable(s)))
    for replica in catalog.replicas_of(s.id):
        mark = "ok" if Path(replica.location).exists() else "MISSING"
        console.print(f"replica: {replica.location} [{mark}]")
    console.print(f"image sets: {', '.join(catalog.image_sets_of(s.id)) or '-'}")


@sets_app.command("create")
@friendly
def sets_create(name: str, description: str = "", actor: Actor = ME) -> None:
    """Create an image set."""
    open_catalog().create_image_set(name, description, actor=actor)
    console.print(f"created image set {name}")


@sets_app.command("add")
@friendly
def sets_add(
    name: str,
    slides: Annotated[list[str], typer.Argument(help="Slide ids or names.")],
    actor: Actor = ME,
) -> None:
    """Add slides to an image set."""
    catalog = open_catalog()
    catalog.add_to_image_set(name, [slide_id_of(catalog, s) for s in slides], actor=actor)
    console.print(f"added {len(slides)} slide(s) to {name}")


@sets_app.command("remove")
@friendly
def sets_remove(
    name: str,
    slides: Annotated[list[str], typer.Argument(help="Slide ids or names.")],
    actor: Actor = ME,
) -> None:
    """Remove slides from an image set."""
    catalog = open_catalog()
    catalog.remove_from_image_set(name, [slide_id_of(catalog, s) for s in slides], actor=actor)
    console.print(f"removed {len(slides)} slide(s) from {name}")


@sets_app.command("protect")
@friendly
def sets_protect(name: str, actor: Actor = ME) -> None:
    """Freeze an image set's membership and annotations."""
    open_catalog().protect(name, actor=actor)
    console.print(f"{name} is protected")


@sets_app.command("list")
@friendly
def sets_list(as_json: JsonFlag = False) -> None:
    """List image sets."""
    sets = open_catalog().list_image_sets()
    if as_json:
        return print_json(sets)
    table = Table("name", "slides", "protected", "description")
    for s in sets:
        table.add_row(s.name, str(s.slide_count), "yes" if s.protected else "", s.description)
    console.print(table)


@ann_app.command("import")
@friendly
def annotations_import(
    file: Path,
    annotation_set: Annotated[str, typer.Option("--set", help="Annotation set (created if new).")],
    slide: Annotated[str, typer.Option(help="Slide id or name the file annotates.")],
    image_set: Annotated[
        str | None, typer.Option(help="Image set of a new annotation set.")
    ] = None,
    actor: Actor = ME,
) -> None:
    """Import GeoJSON, ASAP XML, ImageScope XML, instance masks or ImageJ ROIs."""
    from pathray.formats import read_annotations
    from pathray.formats.catalog_io import import_records

    catalog = open_catalog()
    n = import_records(
        catalog,
        read_annotations(file),
        annotation_set=annotation_set,
        slide_id=slide_id_of(catalog, slide),
        image_set=image_set,
        author=actor,
    )
    console.print(f"imported {n} annotation(s) into {annotation_set}")


@ann_app.command("export")
@friendly
def annotations_export(
    annotation_set: Annotated[str, typer.Argument(help="Annotation set name.")],
    slide: Annotated[str, typer.Option(help="Slide id or name.")],
    out: Annotated[Path, typer.Option(help="Output file.")],
    fmt: Annotated[str, typer.Option("--format", help="geojson or asap.")] = "geojson",
) -> None:
    """Export one slide's annotations."""
    from pathray.formats import write_annotations
    from pathray.formats.catalog_io import export_records

    catalog = open_catalog()
    records = export_records(catalog, annotation_set, slide_id_of(catalog, slide))
    write_annotations(records, out, fmt)  # type: ignore[arg-type]
    console.print(f"wrote {len(records)} annotation(s) to {out}")
