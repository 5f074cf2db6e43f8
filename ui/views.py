"""What the Gradio app shows, as plain data: tables, HTML snippets, plots (no Gradio here).

Each function reads the catalog and returns something a Gradio component displays, so the app
(:mod:`ui.gradio_app`) stays wiring only and these can be called directly.
"""

from __future__ import annotations

import html
from typing import Any

import plotly.graph_objects as go

from pathray.catalog import Catalog
from pathray.catalog.records import ImageSet, Run
from pathray.errors import PathRayError
from pathray.evaluate.plots import metric_history
from pathray.iterate.loop import is_held_out_set
from pathray.pipeline.bind import fitting_models, parse_bindings
from pathray.pipeline.infer import infer_pipeline
from pathray.pipeline.render import render_text
from pathray.pipeline.selection import selectable
from pathray.pipeline.spec import PipelineSpec
from pathray.units.registry import available

#: Metrics shown in tables and offered for plots, when an evaluation has them.
METRICS = ("f1", "precision", "recall", "dice", "pq", "mean_iou", "ap")


def stores_table(catalog: Catalog) -> list[list[Any]]:
    """Slide stores: name and root."""
    return [[s.name, s.root] for s in catalog.list_stores()]


def image_sets(catalog: Catalog) -> list[ImageSet]:
    """The image sets people made (not the training and validation sets of iteration loops)."""
    return [s for s in catalog.list_image_sets() if not is_held_out_set(s.name)]


def image_sets_table(catalog: Catalog) -> list[list[Any]]:
    """Image sets: name, slides, protection (a lock), description."""
    return [
        [s.name, s.slide_count, "🔒 protected" if s.protected else "", s.description]
        for s in image_sets(catalog)
    ]


def slide_cards(catalog: Catalog, image_set: str | None) -> str:
    """Thumbnails of an image set's slides, each opening the viewer."""
    if not image_set:
        return "<p>Choose an image set.</p>"
    info = catalog.get_image_set(image_set)
    lock = " 🔒 protected: annotations are read-only" if info.protected else ""
    cards = []
    # Links are relative to the Gradio page (<mount>/app/), so they hold under any mount prefix.
    for slide in catalog.slides_in_set(image_set):
        name = html.escape(slide.name)
        mpp = f"{slide.mpp:.3g} µm/px" if slide.mpp else "mpp unknown"
        cards.append(
            f'<a class="pr-card" href="../viewer?slide={slide.id}" target="_top" '
            f'data-testid="slide-card" data-slide="{slide.id}">'
            f'<img src="../api/slides/{slide.id}/thumbnail.jpg" alt="{name}" loading="lazy">'
            f"<div><b>{name}</b><br>"
            f"<small>{slide.width} x {slide.height} px, {mpp}</small></div></a>"
        )
    style = (
        "<style>.pr-cards{display:flex;flex-wrap:wrap;gap:12px}.pr-card{width:200px;"
        "border:1px solid #ddd;border-radius:6px;padding:6px;text-decoration:none;color:inherit}"
        ".pr-card img{width:100%;height:150px;object-fit:contain;background:#eee}</style>"
    )
    body = "".join(cards) or "<p>No slides in this set.</p>"
    return f"{style}<h4>{html.escape(image_set)}{lock}</h4><div class='pr-cards'>{body}</div>"


def viewer_frame(slide_id: int | None, edit: str = "") -> str:
    """The slide viewer embedded in the app (the same page ``/viewer`` serves)."""
    if not slide_id:
        return "<p>Choose a slide.</p>"
    src = f"../viewer?slide={int(slide_id)}" + (f"&edit={html.escape(edit)}" if edit else "")
    return (
        f'<p><a href="{src}" target="_blank">open in its own window</a></p>'
        f'<iframe src="{src}" data-testid="viewer-frame" '
        f'style="width:100%;height:720px;border:1px solid #ccc"></iframe>'
    )


def _percent(run: Run) -> str:
    total = run.progress.get("tiles_total") or 0
    done = run.progress.get("tiles_done") or 0
    return f"{100 * done / total:.0f}% ({done}/{total} tiles)" if total else "-"


def runs_table(catalog: Catalog) -> list[list[Any]]:
    """Runs, newest first: id, pipeline, image set, status, progress, requester, times."""
    runs = sorted(catalog.list_runs(), key=lambda r: r.created_at, reverse=True)
    return [
        [
            r.id,
            f"{r.pipeline_name}@{r.pipeline_version}",
            r.image_set,
            r.status,
            _percent(r),
            r.requester,
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        ]
        for r in runs
    ]


def run_progress(catalog: Catalog, run_id: str) -> tuple[str, list[list[Any]], list[list[Any]]]:
    """A run's status line, its progress per unit, and its latest events."""
    run = catalog.get_run(run_id)
    line = (
        f"**{run.id}** · {run.pipeline_name}@{run.pipeline_version} · "
        f"status **{run.status}** · {_percent(run)}"
    )
    if run.error:
        line += f"\n\nerror: `{run.error}`"
    total = run.progress.get("tiles_total") or 0
    units = [
        [node, f"{p.get('tiles_done', 0)}/{total}", p.get("objects", 0)]
        for node, p in (run.progress.get("units") or {}).items()
    ]
    events = [
        [e.at.strftime("%H:%M:%S"), e.unit or "", e.level, e.message]
        for e in catalog.run_events(run_id)[-20:]
    ]
    return line, units, events


def iterations_table(catalog: Catalog) -> list[list[Any]]:
    """Iterations of every loop: loop, number, unit, run, status, metrics, verdict."""
    rows = []
    for it in catalog.list_iterations():
        verdict = it.verdict.get("met") if isinstance(it.verdict, dict) else None
        rows.append(
            [
                it.loop_id[:8],
                it.number,
                it.unit_name,
                (it.run_id or "")[:8],
                it.status,
                *(_fmt(it.evaluation.get(m)) for m in ("f1", "dice")),
                "" if verdict is None else ("met" if verdict else "not met"),
            ]
        )
    return rows


def evaluations_table(catalog: Catalog, run_ids: list[str] | None = None) -> list[list[Any]]:
    """Metrics per run and per slide (``all`` for the whole set)."""
    rows = []
    for ev in catalog.list_evaluations():
        if run_ids is not None and ev.run_id not in run_ids:
            continue
        slide = "all" if ev.slide_id is None else str(ev.slide_id)
        values = [_fmt(ev.metrics.get(m)) for m in METRICS]
        rows.append([ev.run_id[:8], ev.annotation_set, slide, *values])
    return rows


def _fmt(value: Any) -> Any:
    return round(float(value), 4) if isinstance(value, int | float) else ""


def side_by_side(catalog: Catalog, run_a: str | None, run_b: str | None) -> list[list[Any]]:
    """Overall metrics of two runs next to each other, with the difference (B - A)."""
    if not run_a or not run_b:
        return []
    overall = {}
    for run_id in (run_a, run_b):
        found = [e for e in catalog.list_evaluations(run_id=run_id) if e.slide_id is None]
        overall[run_id] = found[-1].metrics if found else {}
    rows = []
    for metric in METRICS:
        a, b = overall[run_a].get(metric), overall[run_b].get(metric)
        if a is None and b is None:
            continue
        diff = b - a if isinstance(a, int | float) and isinstance(b, int | float) else None
        rows.append([metric, _fmt(a), _fmt(b), _fmt(diff)])
    return rows


def metric_plot(catalog: Catalog, image_set: str | None, metric: str) -> go.Figure:
    """A metric against iteration: the evaluated runs on a set, in the order they ran."""
    runs = sorted(
        (r for r in catalog.list_runs(image_set=image_set or None) if r.status == "succeeded"),
        key=lambda r: r.created_at,
    )
    steps: list[dict[str, Any]] = []
    labels: list[str] = []
    for run in runs:
        found = [e for e in catalog.list_evaluations(run_id=run.id) if e.slide_id is None]
        if found and isinstance(found[-1].metrics.get(metric), int | float):
            steps.append(found[-1].metrics)
            labels.append(f"{len(labels)}: {run.id[:8]}")
    if not steps:
        where = image_set or "any image set"
        return _no_data_plot(f"No data: no evaluated run on {where} has {metric} yet.")
    plot = metric_history(steps, [metric], labels=labels, title=f"{metric} by iteration")
    fig = go.Figure()
    for series in plot.series:
        fig.add_trace(go.Scatter(x=series.x, y=series.y, mode="lines+markers", name=series.name))
    fig.update_layout(
        title=plot.title, xaxis_title="run (0 = first)", yaxis_title=metric, height=360
    )
    return fig


def _no_data_plot(message: str) -> go.Figure:
    """An empty plot that says why it is empty (no axes to misread)."""
    fig = go.Figure()
    fig.add_annotation(
        text=message, showarrow=False, font={"size": 16}, x=0.5, y=0.5, xref="paper", yref="paper"
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=200, plot_bgcolor="white")
    return fig


def selection_state(chosen: list[str], models: list[str] | None = None) -> tuple[str, str]:
    """The units list and the inferred pipeline of a custom choice of units.

    Units that cannot join the choice are greyed out with the reason; the structure (order and
    parallel branches) is drawn as text.

    Args:
        chosen: The chosen units.
        models: Model bindings ``unit=name@alias`` (see :func:`model_choices`).
    """
    reasons = selectable(chosen)
    items = []
    for name, why in reasons.items():
        role = available()[name].role or ""
        if name in chosen:
            items.append(
                f'<li class="chosen" data-unit="{name}">✔ <b>{name}</b> <small>{role}</small></li>'
            )
        elif why is None:
            items.append(f'<li data-unit="{name}">{name} <small>{role}</small></li>')
        else:
            items.append(
                f'<li class="excluded" data-unit="{name}" style="color:#aaa">'
                f"{name} <small>— {html.escape(why)}</small></li>"
            )
    listing = f'<ul class="pr-units" data-testid="unit-list">{"".join(items)}</ul>'
    if not chosen:
        return listing, "Choose units to see the pipeline PathRay infers."
    try:
        return listing, render_text(infer_pipeline(chosen, models=parse_bindings(models or [])))
    except PathRayError as exc:  # an incomplete choice: say what is missing
        return listing, f"No pipeline yet: {exc}"


def model_choices(catalog: Catalog, chosen: list[str]) -> list[str]:
    """The models the chosen units can bind, as ``unit=name@alias`` choices.

    Each chosen unit that loads a model is offered the registered versions it accepts
    (:func:`pathray.pipeline.bind.fitting_models`) and the model it ships.
    """
    units = available()
    return [
        f"{name}={ref}"
        for name in chosen
        if name in units
        for ref in fitting_models(catalog, units[name])
    ]


def spec_for(
    mode: str, preset: str | None, chosen: list[str], models: list[str] | None = None
) -> PipelineSpec:
    """The pipeline of a preset, or the one inferred from a custom choice and its models."""
    if mode == "Preset":
        from pipelines.presets import load_preset

        return load_preset(preset or "")
    return infer_pipeline(chosen, models=parse_bindings(models or []))
