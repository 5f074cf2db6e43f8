"""The overlay layers of a slide in the viewer: which exist, their style and their legend.

A slide shows, for each image set it belongs to:

- every annotation set of that image set (the reference in green, corrections in orange,
  other human sets in purple), editable unless the image set is protected;
- every run over that image set that wrote objects for the slide: the first run of a pipeline
  in blue, each later run (an iteration) in its own colour with a dashed line;
- every tile classifier of such a run (a unit that wrote tile classes, no objects) as a class
  map: tile cores filled per class, drawn as raster tiles, its classes and their colours in the
  legend (``style["fill"]`` and ``style["classes"]``).

Layer ids are ``ann:<annotation set name>`` and ``run:<run id>:<unit node id>``.

Example:
    >>> style_for("reference", 0)
    {'color': '#2ca02c', 'width': 2, 'dash': False}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pathray.catalog import Catalog
from pathray.catalog.records import Run
from pathray.errors import NotFoundError, PathRayError
from pathray.results.overlay import Layer, label_color
from pathray.results.tile_classes import TILE_LABEL

# Runs after the first of a pipeline (iterations) cycle through these, dashed, so each one is
# told apart from the first run and from the reference.
ITERATION_COLORS = ("#d62728", "#9467bd", "#17becf", "#e377c2", "#bcbd22", "#8c564b")
EXTRA_SET_COLORS = ("#6b46c1", "#b83280", "#2c7a7b", "#975a16")
SET_COLORS = {"reference": "#2ca02c", "correction": "#ff7f0e", "import": "#7f7f7f"}


def style_for(kind: str, index: int) -> dict[str, Any]:
    """Colour, line width and dash of a layer.

    Args:
        kind: An annotation set kind (``reference``, ``correction``...) or ``run``.
        index: For runs, 0 for the first run of a pipeline, k for iteration k; for annotation
            sets, the how-many-th set of that kind on the slide.
    """
    if kind == "run":
        if index == 0:
            return {"color": "#1f77b4", "width": 2, "dash": False}
        color = ITERATION_COLORS[(index - 1) % len(ITERATION_COLORS)]
        return {"color": color, "width": 2, "dash": True}
    if index == 0:
        return {"color": SET_COLORS.get(kind, "#6b46c1"), "width": 2, "dash": kind == "import"}
    # Further sets of a kind: their own colour, thinner, so each one stays told apart.
    return {
        "color": EXTRA_SET_COLORS[(index - 1) % len(EXTRA_SET_COLORS)],
        "width": 1,
        "dash": False,
    }


@dataclass
class LayerInfo:
    """One layer as the viewer's legend lists it."""

    id: str
    name: str
    legend: str
    kind: str
    style: dict[str, Any]
    visible: bool
    editable_set: bool = False
    readonly: bool = False
    set: str | None = None
    labels: list[str] = field(default_factory=list)
    run_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON the viewer reads."""
        return asdict(self)


def slide_layers(catalog: Catalog, slide_id: int) -> list[LayerInfo]:
    """Every overlay layer of a slide, annotation sets first, then runs by creation time."""
    out: list[LayerInfo] = []
    runs_seen: set[str] = set()
    first_of_pipeline: dict[str, int] = {}
    per_kind: dict[str, int] = {}
    for set_name in catalog.image_sets_of(slide_id):
        protected = catalog.get_image_set(set_name).protected
        for ann in catalog.list_annotation_sets(image_set=set_name):
            per_kind[ann.kind] = per_kind.get(ann.kind, -1) + 1
            origin = f"run {ann.parent_run_id[:8]}, {ann.parent_unit}" if ann.parent_run_id else ""
            out.append(
                LayerInfo(
                    id=f"ann:{ann.name}",
                    name=ann.name,
                    legend=f"{ann.kind} annotations" + (f" from {origin}" if origin else ""),
                    kind=ann.kind,
                    style=style_for(ann.kind, per_kind.get(ann.kind, 0)),
                    visible=ann.kind in ("reference", "correction"),
                    editable_set=True,
                    readonly=protected,
                    set=ann.name,
                    labels=list(ann.labels),
                    run_id=ann.parent_run_id,
                )
            )
        runs = sorted(catalog.list_runs(image_set=set_name), key=lambda r: r.created_at)
        for run in runs:
            if run.id in runs_seen or run.status != "succeeded":
                continue
            runs_seen.add(run.id)
            locations = catalog.result_locations(run_id=run.id, slide_id=slide_id, kind="objects")
            if not locations:
                out.extend(_class_maps(catalog, run, slide_id))
                continue
            index = first_of_pipeline.setdefault(run.pipeline_name, 0)
            first_of_pipeline[run.pipeline_name] = index + 1
            loc = locations[-1]  # the last object-producing unit: the run's analysis result
            title = f"{run.pipeline_name} run" if index == 0 else f"iteration {index}"
            out.append(
                LayerInfo(
                    id=f"run:{run.id}:{loc.unit_name}",
                    name=f"{title} ({run.id[:8]})",
                    legend=(
                        f"{run.pipeline_name}@{run.pipeline_version}, "
                        f"unit {loc.unit_name} v{loc.unit_version}"
                    ),
                    kind="run" if index == 0 else "iteration",
                    style=style_for("run", index),
                    visible=True,
                    run_id=run.id,
                )
            )
    # A set that allows any label (a promoted correction set) offers the labels the slide's
    # other sets use, so a relabel picks from a list rather than free text.
    known = sorted({label for layer in out for label in layer.labels})
    for layer in out:
        if layer.editable_set and not layer.labels:
            layer.labels = known
    return out


def _class_maps(catalog: Catalog, run: Run, slide_id: int) -> list[LayerInfo]:
    """The class-map layers of a run without objects: one per unit that wrote tile classes."""
    from pydantic import ValidationError

    from pathray.pipeline.spec import PipelineSpec  # the layer list needs it for such runs only

    tiles = catalog.result_locations(run_id=run.id, slide_id=slide_id, kind="tiles")
    if not tiles:
        return []
    try:
        spec = PipelineSpec.model_validate(run.spec)
        nodes = {node.id: spec.unit_class(node) for node in spec.units}
    except (PathRayError, ValidationError):  # a run recorded without a spec, a unit gone
        return []
    out = []
    for loc in tiles:
        cls = nodes.get(loc.unit_name)
        if cls is None or not any(c.name == TILE_LABEL for c in cls.outputs):
            continue
        classes = _model_classes(catalog, run, loc.unit_name)
        out.append(
            LayerInfo(
                id=f"run:{run.id}:{loc.unit_name}",
                name=f"{run.pipeline_name} classes ({run.id[:8]})",
                legend=(
                    f"{run.pipeline_name}@{run.pipeline_version}, "
                    f"unit {loc.unit_name} v{loc.unit_version}: tile classes"
                ),
                kind="classes",
                style={
                    "color": "#444444",
                    "width": 1,
                    "dash": False,
                    "fill": True,
                    "classes": {c: _hex(label_color(c)) for c in classes},
                },
                visible=True,
                labels=classes,
                run_id=run.id,
            )
        )
    return out


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{v:02x}" for v in rgb)


def _model_classes(catalog: Catalog, run: Run, unit: str) -> list[str]:
    """The class names of the model a run's node ran (its card), or none when it has no card."""
    try:
        nodes, _ = catalog.pipeline_graph(run.pipeline_name, run.pipeline_version)
        node = nodes.get(unit)
        if node is None or node.model_version_id is None:
            return []
        card = catalog.model_version_by_id(node.model_version_id).card or {}
    except PathRayError:  # a pipeline or model no longer in the catalog: no legend, still a map
        return []
    return [str(name) for name in card.get("class_names") or []]


def parse_layer(layer_id: str) -> Layer:
    """The :class:`~pathray.results.overlay.Layer` a viewer layer id names.

    Raises:
        NotFoundError: The id is neither ``ann:<set>`` nor ``run:<run id>:<unit>``.
    """
    kind, _, rest = layer_id.partition(":")
    if kind == "ann" and rest:
        return Layer.annotations(rest)
    if kind == "run" and rest:
        run_id, _, unit = rest.partition(":")
        return Layer.run(run_id, unit or None)
    raise NotFoundError(
        f"A layer id must be 'ann:<annotation set>' or 'run:<run id>:<unit>'. Got {layer_id!r}."
    )
