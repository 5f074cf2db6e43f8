"""``pathray run``, ``pathray runs`` and ``pathray compare``: running pipelines, following runs.

``run`` records and drives a run (in the foreground with a progress bar, or detached on the
cluster), ``runs`` lists, shows, follows, cancels and exports them, and ``compare`` scores runs
against a reference annotation set and against one another.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

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
    open_store,
    print_json,
    progress_bar,
)
from pathray.cli.pipelines import load_spec
from pathray.errors import PathRayError

runs_app = typer.Typer(help="Runs and their results.", no_args_is_help=True)


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

    catalog, store = open_catalog(), open_store()
    if warm is None and os.environ.get("RAY_ADDRESS") and "PATHRAY_WARM" not in os.environ:
        warm = True  # a local Ray of this command ends with it: nothing would stay warm
    if detach:
        _submit_detached(catalog, store, pipeline, image_set, actor, warm)
        return
    if resume:
        from pathray.pipeline.spec import PipelineSpec

        spec = PipelineSpec.model_validate(catalog.get_run(resume).spec)
    else:
        spec = load_spec(pipeline)
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

    with progress_bar() as bar:
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
    runs = open_catalog().list_runs()[::-1]  # the catalog lists them oldest first
    if as_json:
        return print_json(runs)
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
    catalog = open_catalog()
    console.print_json(json.dumps(jsonable(catalog.get_run(run_id))))
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
    run = open_catalog().get_run(run_id)
    done, total = run.progress.get("tiles_done", 0), run.progress.get("tiles_total", 0)
    console.print(f"run {run.id}: {run.status}, {done}/{total} tiles")
    if run.cancel_requested_at and not run.finished:
        console.print(f"  cancel requested by {run.cancel_requested_by}")
    console.print(_units_table(run.progress))


@runs_app.command("cancel")
@friendly
def runs_cancel(run_id: str, actor: Actor = ME) -> None:
    """Ask a run to stop (a running run stops at its next batch and can be resumed)."""
    run = open_catalog().request_cancel(run_id, actor=actor)
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

    catalog, last = open_catalog(), 0
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
    for path in open_store().export_parquet(run_id, out):
        console.print(f"wrote {path}")


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

    catalog, store = open_catalog(), open_store()
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
