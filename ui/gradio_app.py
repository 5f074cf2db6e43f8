"""The Gradio Blocks app: browse, view, runs and their progress, model selection, compare.

Mounted at ``/app`` by :func:`ui.server.create_app`; the signed-in user comes from the PathRay
session (``gr.Request.username``). The slide viewer is the server's ``/viewer`` page in an
iframe, so it shares the session and is the same page a clinician may open on its own.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from pathray.catalog import Catalog
from pathray.errors import PathRayError
from pathray.results.store import ColdStore
from pipelines.presets import preset_names
from ui import views
from ui.iterate_bridge import loops_markdown, ray_ready
from ui.iterate_bridge import start_iteration as start_iteration_loop
from ui.service import service_markdown, service_settings

RUN_HEADERS = ["run", "pipeline", "image set", "status", "progress", "requester", "created"]
EVAL_HEADERS = ["run", "reference", "slide", *views.METRICS]
CSS = ".pr-units li{margin:2px 0} .pr-units li.excluded{text-decoration:line-through}"


def _user(request: gr.Request | None) -> str:
    return (request.username if request is not None else None) or "anonymous"


def build_blocks(catalog: Catalog, store: ColdStore) -> gr.Blocks:
    """Build the app's Blocks over a catalog and a cold store."""

    def slide_choices(image_set: str | None = None) -> list[tuple[str, int]]:
        return [(f"{s.name} (#{s.id})", s.id) for s in catalog.list_slides(image_set=image_set)]

    def set_names() -> list[str]:
        return [s.name for s in views.image_sets(catalog)]

    def staff(request: gr.Request | None) -> bool:
        """Whether the signed-in user is an engineer or an admin."""
        try:
            return catalog.get_user(_user(request)).role in ("engineer", "admin")
        except PathRayError:
            return False

    def run_ids() -> list[str]:
        return [row[0] for row in views.runs_table(catalog)]

    with gr.Blocks(title="PathRay") as demo:
        with gr.Row():
            who = gr.Markdown(elem_id="pr-user")
            gr.HTML('<a href="../logout" data-testid="logout">Sign out</a>', js_on_load=None)
        with gr.Tabs():
            with gr.Tab("Browse", id="browse"):
                with gr.Row():
                    stores = gr.Dataframe(
                        headers=["store", "root"], label="Slide stores", interactive=False
                    )
                    sets = gr.Dataframe(
                        headers=["image set", "slides", "protection", "description"],
                        label="Image sets",
                        interactive=False,
                        elem_id="pr-sets",
                    )
                browse_set = gr.Dropdown(label="Image set", choices=[], elem_id="pr-browse-set")
                cards = gr.HTML(js_on_load=None, elem_id="pr-cards")
            with gr.Tab("Viewer", id="viewer"):
                view_slide = gr.Dropdown(label="Slide", choices=[], elem_id="pr-view-slide")
                frame = gr.HTML(js_on_load=None)
            with gr.Tab("Runs", id="runs"):
                runs = gr.Dataframe(headers=RUN_HEADERS, label="Runs", interactive=False)
                with gr.Row():
                    run_pick = gr.Dropdown(label="Run", choices=[], elem_id="pr-run-pick")
                    watch = gr.Checkbox(label="Live progress", value=True)
                run_line = gr.Markdown(elem_id="pr-run-status")
                with gr.Row():
                    unit_progress = gr.Dataframe(
                        headers=["unit", "tiles", "objects"], label="Progress per unit"
                    )
                    events = gr.Dataframe(
                        headers=["at", "unit", "level", "message"], label="Events"
                    )
                with gr.Row():
                    correct_slide = gr.Dropdown(label="Slide to correct", choices=[])
                    correct_btn = gr.Button("Open the run's results for correction")
                    cancel_btn = gr.Button(
                        "Cancel run", variant="stop", interactive=False, elem_id="pr-cancel"
                    )
                correct_out = gr.HTML(js_on_load=None)
                loops = gr.Markdown(elem_id="pr-loops")
                iterations = gr.Dataframe(
                    headers=["loop", "#", "unit", "run", "status", "f1", "dice", "verdict"],
                    label="Iterations",
                )
            with gr.Tab("New run", id="new"):
                with gr.Row():
                    mode = gr.Radio(["Preset", "Custom"], value="Preset", label="Model selection")
                    preset = gr.Dropdown(
                        preset_names(), value="nuclei", label="Preset", elem_id="pr-preset"
                    )
                    run_set = gr.Dropdown(label="Image set", choices=[], elem_id="pr-run-set")
                units = gr.CheckboxGroup(label="Custom units", choices=[], elem_id="pr-units")
                models = gr.Dropdown(
                    label="Models of the chosen units (unit=model@alias)",
                    choices=[],
                    multiselect=True,
                    elem_id="pr-models",
                )
                with gr.Row():
                    unit_list = gr.HTML(js_on_load=None)
                    structure = gr.Code(label="Inferred pipeline", language=None, interactive=False)
                start = gr.Button("Start run", variant="primary", elem_id="pr-start")
                with gr.Row():
                    requirement = gr.Textbox(
                        label="Requirement",
                        value="f1 >= 0.8",
                        placeholder="dice >= 0.85 and f1 >= 0.80",
                    )
                    reference = gr.Dropdown(
                        label="Reference annotation set", choices=[], elem_id="pr-reference"
                    )
                    iterate_btn = gr.Button("Start iteration")
                started = gr.Markdown(elem_id="pr-started")
            with gr.Tab("Compare", id="compare"):
                with gr.Row():
                    cmp_set = gr.Dropdown(label="Image set", choices=[])
                    metric = gr.Dropdown(list(views.METRICS), value="f1", label="Metric")
                evals = gr.Dataframe(headers=EVAL_HEADERS, label="Metrics per run and slide")
                plot = gr.Plot(label="Metric against iteration", elem_id="pr-plot")
                with gr.Row():
                    run_a = gr.Dropdown(label="Version A (run)", choices=[])
                    run_b = gr.Dropdown(label="Version B (run)", choices=[])
                pair = gr.Dataframe(headers=["metric", "A", "B", "B - A"], label="Side by side")
            # Shown on load to engineers and admins only (the settings of the serving side).
            with gr.Tab("Service", id="service", visible=False) as service_tab:
                service_md = gr.Markdown(elem_id="pr-service")
                service_btn = gr.Button("Refresh", size="sm")
        timer = gr.Timer(2.0)

        # -- handlers ----------------------------------------------------------------------------

        def on_load(request: gr.Request) -> tuple[Any, ...]:
            names = set_names()
            first = names[0] if names else None
            ids = run_ids()
            chosen: list[str] = []
            listing, graph = views.selection_state(chosen)
            return (
                f"Signed in as **{_user(request)}**",
                views.stores_table(catalog),
                views.image_sets_table(catalog),
                gr.update(choices=names, value=first),
                gr.update(choices=slide_choices()),
                views.runs_table(catalog),
                gr.update(choices=ids, value=ids[0] if ids else None),
                gr.update(choices=names, value=first),
                gr.update(choices=sorted(views.available()), value=[]),
                listing,
                graph,
                gr.update(choices=[a.name for a in catalog.list_annotation_sets()]),
                gr.update(choices=names, value=first),
                gr.update(choices=ids),
                gr.update(choices=ids),
            )

        demo.load(
            on_load,
            outputs=[
                who,
                stores,
                sets,
                browse_set,
                view_slide,
                runs,
                run_pick,
                run_set,
                units,
                unit_list,
                structure,
                reference,
                cmp_set,
                run_a,
                run_b,
            ],
        )
        browse_set.change(lambda s: views.slide_cards(catalog, s), browse_set, cards)
        view_slide.change(lambda s: views.viewer_frame(s), view_slide, frame)

        def cancellable(run_id: str | None) -> Any:
            # Only a pending or running run can be cancelled: the button says so by itself.
            if not run_id:
                return gr.update(interactive=False)
            return gr.update(interactive=not catalog.get_run(run_id).finished)

        def show_run(run_id: str | None) -> tuple[Any, ...]:
            if not run_id:
                return "", [], [], gr.update(choices=[]), cancellable(None)
            line, per_unit, evs = views.run_progress(catalog, run_id)
            run = catalog.get_run(run_id)
            slides = gr.update(choices=slide_choices(run.image_set))
            return line, per_unit, evs, slides, cancellable(run_id)

        run_pick.change(
            show_run, run_pick, [run_line, unit_progress, events, correct_slide, cancel_btn]
        )

        def tick(run_id: str | None, live: bool) -> tuple[Any, ...]:
            if not live:
                return (gr.skip(),) * 7
            line, per_unit, evs = views.run_progress(catalog, run_id) if run_id else ("", [], [])
            runs_now, loops_now = views.runs_table(catalog), loops_markdown()
            its = views.iterations_table(catalog)
            return line, per_unit, evs, runs_now, loops_now, its, cancellable(run_id)

        outputs = [run_line, unit_progress, events, runs, loops, iterations, cancel_btn]
        timer.tick(tick, [run_pick, watch], outputs)

        def open_correction(run_id: str | None, slide_id: int | None, request: gr.Request) -> str:
            if not run_id or not slide_id:
                return "Choose a run and a slide."
            try:
                made = catalog.promote_run(run_id, int(slide_id), store, actor=_user(request))
            except PathRayError as exc:
                return f'<p style="color:#c53030">{exc}</p>'
            return views.viewer_frame(int(slide_id), edit=f"ann:{made.name}")

        correct_btn.click(open_correction, [run_pick, correct_slide], correct_out)

        def cancel(run_id: str | None, request: gr.Request) -> tuple[str, Any]:
            if not run_id:
                return "Choose a run.", cancellable(None)
            try:
                run = catalog.request_cancel(run_id, actor=_user(request))
            except PathRayError as exc:  # finished meanwhile: say so, no traceback
                return f"**Not cancelled:** {exc}", cancellable(run_id)
            return f"Cancel requested for {run.id} (status {run.status}).", cancellable(run_id)

        cancel_btn.click(cancel, run_pick, [run_line, cancel_btn])

        def choose(chosen: list[str], picked: list[str] | None) -> tuple[Any, ...]:
            offered = views.model_choices(catalog, chosen)
            # one model per unit, and only for units still chosen
            kept: dict[str, str] = {}
            for binding in picked or []:
                if binding in offered:
                    kept[binding.partition("=")[0]] = binding
            listing, graph = views.selection_state(chosen, list(kept.values()))
            reasons = views.selectable(chosen)
            allowed = [n for n, why in reasons.items() if why is None or n in chosen]
            return (
                gr.update(choices=allowed, value=chosen),
                gr.update(choices=offered, value=list(kept.values())),
                listing,
                graph,
            )

        units.input(choose, [units, models], [units, models, unit_list, structure])
        models.input(choose, [units, models], [units, models, unit_list, structure])

        def start_run(
            how: str,
            preset_name: str,
            chosen: list[str],
            picked: list[str] | None,
            image_set: str,
            request: gr.Request,
        ) -> tuple[Any, ...]:
            from pathray.engine.jobs import submit_run

            try:
                spec = views.spec_for(how, preset_name, chosen, picked)
                ray_ready()
                run_id = submit_run(catalog, store, spec, image_set, requester=_user(request))
            except PathRayError as exc:
                return f"**Not started:** {exc}", gr.skip(), gr.skip()
            ids = run_ids()
            return (
                f"Started run **{run_id}** ({spec.name}) on {image_set}.",
                gr.update(choices=ids, value=run_id),
                views.runs_table(catalog),
            )

        start.click(start_run, [mode, preset, units, models, run_set], [started, run_pick, runs])

        def start_iteration(
            text: str,
            ref: str,
            how: str,
            preset_name: str,
            chosen: list[str],
            picked: list[str] | None,
            image_set: str,
            request: gr.Request,
        ) -> str:
            try:
                return start_iteration_loop(
                    catalog,
                    store,
                    views.spec_for(how, preset_name, chosen, picked),
                    image_set,
                    ref,
                    text,
                    requester=_user(request),
                )
            except PathRayError as exc:
                return f"**Not started:** {exc}"

        iterate_btn.click(
            start_iteration, [requirement, reference, mode, preset, units, models, run_set], started
        )

        def compare(image_set: str | None, name: str) -> tuple[Any, ...]:
            ids = [r.id for r in catalog.list_runs(image_set=image_set)] if image_set else None
            table = views.evaluations_table(catalog, ids)
            return table, views.metric_plot(catalog, image_set, name)

        cmp_set.change(compare, [cmp_set, metric], [evals, plot])
        metric.change(compare, [cmp_set, metric], [evals, plot])
        run_a.change(lambda a, b: views.side_by_side(catalog, a, b), [run_a, run_b], pair)
        run_b.change(lambda a, b: views.side_by_side(catalog, a, b), [run_a, run_b], pair)

        def service_state(request: gr.Request) -> tuple[Any, str]:
            if not staff(request):  # neither the tab nor what it would show
                return gr.update(visible=False), ""
            return gr.update(visible=True), service_markdown(*service_settings())

        demo.load(service_state, None, [service_tab, service_md])
        service_btn.click(service_state, None, [service_tab, service_md])
    return demo
