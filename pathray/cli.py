"""The ``pathray`` command: the same operations locally (embedded Ray) or on a cluster.

User mistakes (a missing file, an unknown set, a protected set, an invalid spec) print one clear
line and exit with status 2; only bugs show a traceback.

Ctrl-C (SIGINT) and SIGTERM stop a command cleanly: a run is recorded as cancelled (resumable),
Ray is shut down before the interpreter finalises, and the command says what stopped it and
exits with 130 (SIGINT) or 143 (SIGTERM), the shell's 128 + signal number. The servers
(``pathray serve``, ``pathray ui``) treat either signal as their normal end: they stop and exit 0.
"""

from __future__ import annotations

import getpass
import json
import signal
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from pathray.cli_auth import tokens_app, users_app
from pathray.cli_iterate import register as register_iterate
from pathray.cli_models import models_app
from pathray.cli_pipelines import load_spec, pipelines_app, units_app
from pathray.cli_search import search_app
from pathray.cli_serve import serve_command
from pathray.cli_ui import ui as ui_command
from pathray.config import Settings
from pathray.errors import PathRayError

app = typer.Typer(
    help="PathRay: digital-pathology model management on Ray.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
slides_app = typer.Typer(help="Register and inspect slides.", no_args_is_help=True)
sets_app = typer.Typer(help="Image sets: create, fill, protect.", no_args_is_help=True)
ann_app = typer.Typer(help="Annotation import and export.", no_args_is_help=True)
runs_app = typer.Typer(help="Runs and their results.", no_args_is_help=True)
app.add_typer(slides_app, name="slides")
app.add_typer(sets_app, name="sets")
app.add_typer(ann_app, name="annotations")
app.add_typer(runs_app, name="runs")
app.add_typer(models_app, name="models")
app.add_typer(units_app, name="units")
app.add_typer(pipelines_app, name="pipelines")
register_iterate(app)
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
app.add_typer(search_app, name="search")
app.command("ui")(ui_command)
app.command("serve")(serve_command)

# Wide enough for the metric tables when the output is a pipe or a CI log.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
Actor = Annotated[str, typer.Option(help="Who acts (recorded in the audit log).")]
ME = getpass.getuser()


def friendly(fn: F) -> F:
    """Turn PathRayError into one red line and exit status 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PathRayError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _catalog() -> Any:
    from pathray.catalog import Catalog

    settings = Settings.from_env()
    settings.home.mkdir(parents=True, exist_ok=True)
    return Catalog.open(settings.catalog_url)


def _store() -> Any:
    from pathray.results.store import ColdStore

    return ColdStore.open(Settings.from_env().cold_root)


def _slide_id(catalog: Any, ref: str) -> int:
    return int(catalog.get_slide(int(ref) if ref.isdigit() else ref).id)


@app.command()
@friendly
def init() -> None:
    """Create PATHRAY_HOME with an empty catalog and cold store; you become its first admin."""
    settings = Settings.from_env()
    _store().location.makedirs()
    catalog = _catalog()
    if not catalog.list_users():
        catalog.add_user(ME, role="admin")
        console.print(f"admin: {ME}")
    console.print(f"catalog: {settings.catalog_url}\ncold store: {settings.cold_root}")


@users_app.command("add")
@friendly
def users_add(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Option(help="clinician, engineer or admin.")] = "clinician",
    actor: Actor = ME,
) -> None:
    """Add a user (clinician, engineer or admin)."""
    _catalog().add_user(name, role, actor=actor)
    console.print(f"added {role} {name}")


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

    catalog = _catalog()
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
    with _progress() as bar:
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

    catalog = _catalog()
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
    slides = _catalog().list_slides(image_set)
    if as_json:
        return _print_json(slides)
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
    catalog = _catalog()
    s = catalog.get_slide(int(slide) if slide.isdigit() else slide)
    console.print_json(json.dumps(_jsonable(s)))
    for replica in catalog.replicas_of(s.id):
        mark = "ok" if Path(replica.location).exists() else "MISSING"
        console.print(f"replica: {replica.location} [{mark}]")
    console.print(f"image sets: {', '.join(catalog.image_sets_of(s.id)) or '-'}")


def _jsonable(record: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(record), default=str))


#: ``--json`` of the list commands: one JSON array on stdout, for scripts.
JsonFlag = Annotated[bool, typer.Option("--json", help="Print a JSON array (for scripts).")]


def _print_json(records: list[Any]) -> None:
    """Print records as one JSON array on stdout (never wrapped or coloured)."""
    sys.stdout.write(json.dumps([_jsonable(r) for r in records], indent=1) + "\n")


@sets_app.command("create")
@friendly
def sets_create(name: str, description: str = "", actor: Actor = ME) -> None:
    """Create an image set."""
    _catalog().create_image_set(name, description, actor=actor)
    console.print(f"created image set {name}")


@sets_app.command("add")
@friendly
def sets_add(
    name: str,
    slides: Annotated[list[str], typer.Argument(help="Slide ids or names.")],
    actor: Actor = ME,
) -> None:
    """Add slides to an image set."""
    catalog = _catalog()
    catalog.add_to_image_set(name, [_slide_id(catalog, s) for s in slides], actor=actor)
    console.print(f"added {len(slides)} slide(s) to {name}")


@sets_app.command("remove")
@friendly
def sets_remove(
    name: str,
    slides: Annotated[list[str], typer.Argument(help="Slide ids or names.")],
    actor: Actor = ME,
) -> None:
    """Remove slides from an image set."""
    catalog = _catalog()
    catalog.remove_from_image_set(name, [_slide_id(catalog, s) for s in slides], actor=actor)
    console.print(f"removed {len(slides)} slide(s) from {name}")


@sets_app.command("protect")
@friendly
def sets_protect(name: str, actor: Actor = ME) -> None:
    """Freeze an image set's membership and annotations."""
    _catalog().protect(name, actor=actor)
    console.print(f"{name} is protected")


@sets_app.command("list")
@friendly
def sets_list(as_json: JsonFlag = False) -> None:
    """List image sets."""
    sets = _catalog().list_image_sets()
    if as_json:
        return _print_json(sets)
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

    catalog = _catalog()
    n = import_records(
        catalog,
        read_annotations(file),
        annotation_set=annotation_set,
        slide_id=_slide_id(catalog, slide),
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

    catalog = _catalog()
    records = export_records(catalog, annotation_set, _slide_id(catalog, slide))
    write_annotations(records, out, fmt)  # type: ignore[arg-type]
    console.print(f"wrote {len(records)} annotation(s) to {out}")


@app.command()
@friendly
def run(
    pipeline: Annotated[str, typer.Argument(help="Preset name or pipeline YAML.")] = "nuclei",
    image_set: Annotated[str | None, typer.Option("--set", help="Image set to process.")] = None,
    resume: Annotated[str | None, typer.Option(help="Resume this unfinished run id.")] = None,
    detach: Annotated[
        bool, typer.Option(help="Submit to the Ray cluster at RAY_ADDRESS and return at once.")
    ] = False,
    warm: Annotated[
        bool | None,
        typer.Option(
            "--warm/--cold",
            help="Reuse unit actors kept warm by earlier runs (default: warm when RAY_ADDRESS "
            "names a Ray that outlives this command, else PATHRAY_WARM).",
        ),
    ] = None,
    actor: Actor = ME,
) -> None:
    """Run a pipeline over an image set on Ray (local, or the cluster at RAY_ADDRESS)."""
    import os

    catalog, store = _catalog(), _store()
    if warm is None and os.environ.get("RAY_ADDRESS") and "PATHRAY_WARM" not in os.environ:
        warm = True  # a local Ray of this command ends with it: nothing would stay warm
    if detach:
        _submit_detached(catalog, store, pipeline, image_set, actor, warm)
        return
    spec = load_spec(pipeline) if not resume else None
    if spec is None:
        from pathray.pipeline.spec import PipelineSpec

        spec = PipelineSpec.model_validate(catalog.get_run(resume).spec)
    result = _run_with_progress(catalog, store, spec, image_set, resume, actor, warm)
    _print_run(result, store)


def _submit_detached(
    catalog: Any, store: Any, pipeline: str, image_set: str | None, actor: str, warm: bool | None
) -> None:
    import os

    from pathray.engine.jobs import submit_run

    if not os.environ.get("RAY_ADDRESS"):
        raise PathRayError(
            "--detach needs a Ray cluster that outlives this command. "
            "Set RAY_ADDRESS (a local Ray ends with the command)."
        )
    if image_set is None:
        raise PathRayError("An image set must be given (--set NAME).")
    run_id = submit_run(catalog, store, load_spec(pipeline), image_set, requester=actor, warm=warm)
    console.print(f"submitted run {run_id}; follow it with: pathray runs logs {run_id} --follow")


def _run_with_progress(
    catalog: Any,
    store: Any,
    spec: Any,
    image_set: str | None,
    resume: str | None,
    actor: str,
    warm: bool | None = None,
) -> Any:
    from pathray.engine.runner import run_pipeline

    with _progress() as bar:
        task = bar.add_task(f"{spec.name} tiles", total=None)
        return run_pipeline(
            catalog,
            store,
            spec,
            image_set,
            requester=actor,
            resume=resume,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            warm=warm,
        )


def _progress() -> Progress:
    """A progress bar on stderr that disappears when done."""
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    return Progress(*columns, console=err, transient=True)


def _print_run(result: Any, store: Any) -> None:
    console.print(f"run {result.run_id}: {result.status} in {result.seconds:.1f} s")
    for slide_id, counts in sorted(result.counts.items()):
        console.print(f"  slide {slide_id}: {counts['tiles']} tiles, {counts['objects']} objects")
    for slide_id, reason in result.problems.items():
        err.print(f"[yellow]skipped[/yellow] slide {slide_id}: {reason}")
    console.print(f"  results: {store.uri(result.run_id, 'objects').parent}")


@runs_app.command("list")
@friendly
def runs_list(as_json: JsonFlag = False) -> None:
    """List runs, newest first."""
    runs = _catalog().list_runs()[::-1]  # the catalog lists them oldest first
    if as_json:
        return _print_json(runs)
    table = Table("id", "pipeline", "image set", "status", "created")
    for r in runs:
        table.add_row(
            r.id,
            f"{r.pipeline_name}@{r.pipeline_version}",
            r.image_set,
            r.status,
            str(r.created_at)[:19],
        )
    console.print(table)


@runs_app.command("show")
@friendly
def runs_show(run_id: str) -> None:
    """Show a run, its result locations and evaluations."""
    catalog = _catalog()
    console.print_json(json.dumps(_jsonable(catalog.get_run(run_id))))
    for loc in catalog.result_locations(run_id=run_id):
        console.print(
            f"slide {loc.slide_id} {loc.unit_name}@{loc.unit_version} {loc.kind}: "
            f"{loc.uri} ({loc.row_count} rows)"
        )
    run = catalog.get_run(run_id)
    if run.progress.get("units"):
        console.print(_units_table(run.progress))


def _units_table(progress: dict[str, Any]) -> Table:
    table = Table("unit", "tiles done", "of", "objects")
    for node, unit in progress.get("units", {}).items():
        table.add_row(node, str(unit["tiles_done"]), str(unit["tiles_total"]), str(unit["objects"]))
    return table


@runs_app.command("progress")
@friendly
def runs_progress(run_id: str) -> None:
    """Show a run's status and per-unit progress."""
    run = _catalog().get_run(run_id)
    done, total = run.progress.get("tiles_done", 0), run.progress.get("tiles_total", 0)
    console.print(f"run {run.id}: {run.status}, {done}/{total} tiles")
    if run.cancel_requested_at and not run.finished:
        console.print(f"  cancel requested by {run.cancel_requested_by}")
    console.print(_units_table(run.progress))


@runs_app.command("cancel")
@friendly
def runs_cancel(run_id: str, actor: Actor = ME) -> None:
    """Ask a run to stop (a running run stops at its next batch and can be resumed)."""
    run = _catalog().request_cancel(run_id, actor=actor)
    what = "cancelled" if run.status == "cancelled" else "cancel requested; it stops shortly"
    console.print(f"run {run_id}: {what}")


@runs_app.command("logs")
@friendly
def runs_logs(
    run_id: str,
    unit: Annotated[str | None, typer.Option(help="Only this pipeline node.")] = None,
    level: Annotated[str, typer.Option(help="Lowest level shown.")] = "info",
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Wait for new events.")] = False,
) -> None:
    """Print a run's events: driver milestones and the units' log records."""
    import time

    catalog, last = _catalog(), 0
    while True:
        for event in catalog.run_events(run_id, unit=unit, after_id=last, min_level=level):
            where = event.unit or "driver"
            console.print(f"{str(event.at)[:19]} {event.level:<7} {where:<12} {event.message}")
            last = event.id
        if not follow or catalog.get_run(run_id).finished:
            break
        time.sleep(1.0)


@runs_app.command("export")
@friendly
def runs_export(run_id: str, out: Path) -> None:
    """Export a run's results to Parquet."""
    for path in _store().export_parquet(run_id, out):
        console.print(f"wrote {path}")


@app.command()
@friendly
def compare(
    run_ids: Annotated[list[str], typer.Argument(help="One or more runs, compared side by side.")],
    reference: Annotated[str, typer.Option(help="Reference annotation set.")],
    iou: Annotated[float, typer.Option(help="IoU threshold of a detection match.")] = 0.5,
    successive: Annotated[
        bool,
        typer.Option(
            "--successive",
            help="The runs are successive versions (oldest first): also compare each with the "
            "previous one, object by object (matched, missed, extra, relabelled).",
        ),
    ] = False,
    plots: Annotated[
        Path | None,
        typer.Option(help="Write metric, ROC, PR and confusion plots (PNG and HTML) here."),
    ] = None,
    actor: Actor = ME,
) -> None:
    """Compare runs' objects with a reference annotation set; store the evaluations."""
    from pathray.evaluate.runs import horizontal, vertical

    catalog, store = _catalog(), _store()
    runs = list(dict.fromkeys(run_ids))
    result = horizontal(catalog, store, runs, reference, iou_threshold=iou, actor=actor)
    for run, report in result["runs"].items():
        console.print(metrics_table(f"run {run} vs {reference}", report))
    if len(runs) > 1:
        console.print(runs_table(f"{len(runs)} runs vs {reference}", result["overall"]))
    if successive and len(runs) > 1:
        # The evaluations are stored already; only the run-to-run comparisons are new.
        steps = vertical(
            catalog,
            store,
            runs,
            reference,
            iou_threshold=iou,
            actor=actor,
            overall=result["overall"],
        )
        table = Table(
            "step",
            "run",
            "matched",
            "missed",
            "extra",
            "relabelled",
            title="changes from the previous run",
        )
        for step in steps[1:]:
            ch = step["changes_from_previous"]
            table.add_row(
                str(step["step"]),
                step["run_id"],
                *(str(ch[k]) for k in ("matched", "missed", "extra", "relabelled")),
            )
        console.print(table)
    if plots is not None:
        from pathray.evaluate.plots import report_plots

        classification = {
            run[:8]: rep["classification"]
            for run, rep in result["runs"].items()
            if "classification" in rep
        }
        written = report_plots(
            plots,
            [result["overall"][r] for r in runs],
            labels=[r[:8] for r in runs],
            classification=classification,
            xlabel="iteration" if successive else "run",
        )
        console.print(f"wrote {len(written)} plot files to {plots}")


#: Columns of the several-runs table: header, metric key.
RUN_COLUMNS = (
    ("F1", "f1"),
    ("Dice", "dice"),
    ("IoU", "pixel_iou"),
    ("PQ", "pq"),
    ("AJI", "aji"),
    ("mAP", "map"),
    ("accuracy", "accuracy"),
)


def runs_table(title: str, overall: dict[str, dict[str, Any]]) -> Table:
    """A rich table with one row of overall metrics per run."""
    table = Table("run", "ref", "pred", *(h for h, _ in RUN_COLUMNS), title=title)
    for run, m in overall.items():
        cells = [f"{m[k]:.3f}" if k in m else "-" for _, k in RUN_COLUMNS]
        table.add_row(run, str(m.get("n_ref", "")), str(m.get("n_pred", "")), *cells)
    return table


def metrics_table(title: str, report: dict[str, Any]) -> Table:
    """A rich table of per-slide and overall metrics."""
    table = Table(
        "slide",
        "ref",
        "pred",
        "precision",
        "recall",
        "F1",
        "Dice",
        "IoU",
        "PQ",
        "AJI",
        "mAP",
        title=title,
    )

    def row(name: str, m: dict[str, Any]) -> None:
        table.add_row(
            name,
            str(m.get("n_ref", "")),
            str(m.get("n_pred", "")),
            *(
                f"{m[k]:.3f}" if k in m else "-"
                for k in ("precision", "recall", "f1", "dice", "pixel_iou", "pq", "aji", "map")
            ),
        )

    for name, m in report["per_slide"].items():
        row(str(name), m)
    row("[bold]overall[/bold]", report["overall"])
    return table


@app.command()
@friendly
def demo(
    quick: Annotated[bool, typer.Option(help="Smaller synthetic slides.")] = False,
) -> None:
    """Make sample data, register it, run the nuclei pipeline, compare, print the metrics."""
    from pipelines.demo import run_demo

    run_demo(_catalog(), _store(), Settings.from_env(), console=console, quick=quick)


#: The signal that stopped the command, once one arrived; "stopping" once the command ended.
_STOP: dict[str, int | bool] = {}


def _interrupt(signum: int, frame: Any) -> None:
    """Raise KeyboardInterrupt in the main thread for the first SIGINT or SIGTERM.

    SIGTERM's default action kills the process at once, skipping Ray's shutdown (and, with
    Ray's fatal-signal handler, it used to abort with a native stack). As a KeyboardInterrupt
    it unwinds like Ctrl-C: a run records itself as cancelled, then :func:`main` stops Ray.
    Later signals are ignored while the command unwinds and Ray stops, so the cleanup is not
    cut short by a second Ctrl-C.
    """
    if "signal" in _STOP or _STOP.get("stopping"):
        return
    _STOP["signal"] = signum
    raise KeyboardInterrupt


def _stop_ray() -> None:
    """Shut Ray down now, while the interpreter and every native library are whole."""
    cluster = sys.modules.get("pathray.engine.cluster")  # loaded only if a command used Ray
    if cluster is None:
        return
    try:
        cluster.shutdown()
    except Exception as exc:  # the command's own outcome matters more; say it and go on
        err.print(f"[yellow]warning:[/yellow] Ray did not shut down cleanly: {exc}")


def main() -> None:
    """Entry point of the ``pathray`` console script (see the module docstring for signals)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    code: Any = 0
    try:
        app()  # standalone mode: always ends in SystemExit (KeyboardInterrupt -> 130)
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:  # outside typer's handling (e.g. while the CLI imports)
        code = 130
    finally:
        _STOP["stopping"] = True
        _stop_ray()
    stopped_by = int(_STOP.get("signal", 0))
    if stopped_by and code not in (0, None):  # a server that stopped on it returned 0
        name = signal.Signals(stopped_by).name
        err.print(f"stopped by {name}" + (" (Ctrl-C)" if stopped_by == signal.SIGINT else ""))
        code = 128 + stopped_by
    sys.exit(code)
