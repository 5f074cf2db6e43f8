"""Drawings of a pipeline's DAG: layered text for terminals, a PNG for reports and the UI.

Both use one layout: a row per level (see :mod:`pathray.pipeline.dag`), top to bottom, so the
order reads downwards and the branches that run in parallel stand side by side in a row. Within a
row the nodes sit under their precursors (ordered by the mean position of their precursors).

Example:
    >>> from pathray.pipeline.infer import infer_pipeline
    >>> print(render_text(infer_pipeline(["tissue_mask"])))  # doctest: +NORMALIZE_WHITESPACE
    pipeline custom v1: tiles of 256 px at 0.5 mpp, overlap 32 px
    <BLANKLINE>
      +---------------+
      | tissue_mask   |
      | tissue_mask@1 |
      | tile -> tile  |
      +---------------+
    <BLANKLINE>
    order: tissue_mask
    results (sinks): tissue_mask
    <BLANKLINE>
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from pathray.pipeline.dag import parallel_groups, sinks
from pathray.pipeline.spec import PipelineSpec, UnitSpec

GAP = 3  # spaces between boxes of a row
MARGIN = 2


def layout(
    spec: PipelineSpec, widths: Mapping[str, float], gap: float
) -> tuple[list[list[str]], dict[str, float]]:
    """Rows of node ids (one per level) and the centre x of every node.

    A node sits under the mean of its precursors' centres; the nodes of a row keep that order
    and are pushed apart to ``gap`` between boxes, then the row is shifted back so that it stays
    under its precursors on average.

    Args:
        spec: The pipeline.
        widths: Box width of every node.
        gap: Space between neighbouring boxes.

    Raises:
        ConfigError: If the spec is invalid.
    """
    rows: list[list[str]] = []
    centre: dict[str, float] = {}
    for k, group in enumerate(parallel_groups(spec)):
        if k == 0:
            desired, x = {}, 0.0
            for node_id in group:
                desired[node_id] = x + widths[node_id] / 2
                x += widths[node_id] + gap
        else:
            desired = {
                n: sum(centre[p] for p in spec.node(n).after) / len(spec.node(n).after)
                for n in group
            }
        row = sorted(group, key=desired.__getitem__)  # stable: ties keep the engine's order
        right = -math.inf
        for node_id in row:
            centre[node_id] = max(desired[node_id], right + widths[node_id] / 2)
            right = centre[node_id] + widths[node_id] / 2 + gap
        shift = sum(centre[n] - desired[n] for n in row) / len(row)
        for node_id in row:
            centre[node_id] -= shift
        rows.append(row)
    return rows, centre


def node_lines(spec: PipelineSpec, node: UnitSpec) -> list[str]:
    """The text of a node's box: id, unit@version, granularity, precursors."""
    cls = spec.unit_class(node)
    lines = [
        node.id,
        f"{node.unit}@{node.version or cls.version}",
        f"{cls.input_granularity()} -> {cls.output_granularity()}",
    ]
    if node.after:
        lines.append(f"after: {', '.join(node.after)}")
    return lines


def header(spec: PipelineSpec) -> str:
    """One line naming the pipeline and its tiling."""
    t = spec.tiling
    return (
        f"pipeline {spec.name} v{spec.version}: tiles of {t.size} px at {t.mpp} mpp, "
        f"overlap {t.overlap} px"
    )


def _box(lines: list[str], height: int, width: int) -> list[str]:
    rule = "+" + "-" * (width - 2) + "+"
    body = [f"| {line.ljust(width - 4)} |" for line in lines]
    body += ["|" + " " * (width - 2) + "|"] * (height - len(lines))
    return [rule, *body, rule]


def _marks(width: int, marks: dict[int, str], span: tuple[int, int] | None = None) -> str:
    chars = [" "] * width
    if span is not None:
        for x in range(span[0], span[1] + 1):
            chars[x] = "-"
    for x, mark in marks.items():
        chars[x] = mark
    return "".join(chars).rstrip()


def render_text(spec: PipelineSpec) -> str:
    """An ASCII drawing of the DAG: a row of boxes per level, arrows between rows.

    Where every precursor in a row feeds every node of the next row the arrows share one bus;
    otherwise each box's ``after:`` line says which precursors feed it.

    Raises:
        ConfigError: If the spec is invalid.
    """
    texts = {node.id: node_lines(spec, node) for node in spec.units}
    widths = {node_id: max(len(s) for s in lines) + 4 for node_id, lines in texts.items()}
    rows, x = layout(spec, widths, GAP)
    left = min(x[n] - widths[n] / 2 for n in x)
    start: dict[str, int] = {}
    for row in rows:
        end = -GAP
        for n in row:
            wanted = math.floor(x[n] - left + MARGIN + 0.5) - widths[n] // 2
            start[n] = max(wanted, end + GAP)
            end = start[n] + widths[n]
    shift = MARGIN - min(start.values())
    start = {n: s + shift for n, s in start.items()}
    centre = {n: start[n] + widths[n] // 2 for n in start}
    total = max(start[n] + widths[n] for n in start) + MARGIN
    drawn: list[str] = [header(spec), ""]
    for k, row in enumerate(rows):
        if k:
            drawn += _connector(spec, rows[k - 1], row, centre, total)
        height = max(len(texts[n]) for n in row)
        canvas = [[" "] * total for _ in range(height + 2)]
        for n in row:
            for i, line in enumerate(_box(texts[n], height, widths[n])):
                canvas[i][start[n] : start[n] + widths[n]] = line
        drawn += ["".join(chars).rstrip() for chars in canvas]
    drawn += ["", f"order: {' -> '.join(n.id for n in spec.ordered())}"]
    for k, row in enumerate(rows):
        if len(row) > 1:
            drawn.append(f"parallel at level {k}: {' | '.join(row)}")
    drawn.append(f"results (sinks): {', '.join(sinks(spec))}")
    return "\n".join(drawn) + "\n"


def _connector(
    spec: PipelineSpec, upper: list[str], lower: list[str], centre: dict[str, int], width: int
) -> list[str]:
    edges = {(p, c) for c in lower for p in spec.node(c).after if p in upper}
    ups = sorted({p for p, _ in edges}, key=centre.__getitem__)
    downs = sorted({c for _, c in edges}, key=centre.__getitem__)
    lines = [_marks(width, {centre[p]: "|" for p in ups})]
    complete = len(edges) == len(ups) * len(downs)
    xs = [centre[n] for n in (*ups, *downs)]
    if complete and (min(xs) != max(xs)):
        lines.append(_marks(width, dict.fromkeys(xs, "+"), (min(xs), max(xs))))
    lines.append(_marks(width, {centre[c]: "v" for c in downs}))
    return lines


# -- PNG ---------------------------------------------------------------------------------------

_FILL = {"tile": "#dbe9f6", "object": "#fde2c8"}
_EDGE = {"tile": "#3b75af", "object": "#c66a12"}
_CHAR_IN = 0.075  # width of a character at 9 pt, in inches


def render_png(spec: PipelineSpec, path: str | Path, dpi: int = 150) -> Path:
    """Draw the DAG as a PNG image: a row of boxes per level, arrows for precursor relations.

    Boxes are coloured by the granularity of the unit's output (tiles blue, objects orange).

    Args:
        spec: The pipeline.
        path: Where to write the image (parent folders are created).
        dpi: Resolution of the image.

    Returns:
        The path written.

    Raises:
        ConfigError: If the spec is invalid.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    texts = {node.id: node_lines(spec, node) for node in spec.units}
    box_w = max(len(s) for lines in texts.values() for s in lines) * _CHAR_IN + 0.4
    box_h, gap_x, gap_y, top = 0.85, 0.4, 0.7, 0.8
    rows, xs = layout(spec, dict.fromkeys(texts, box_w), gap_x)
    left = min(xs.values()) - box_w / 2 - gap_x
    title = header(spec)
    width = max(max(xs.values()) + box_w / 2 + gap_x - left, len(title) * _CHAR_IN * 1.15 + 0.4)
    height = len(rows) * (box_h + gap_y) - gap_y + top + 0.5
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    mid = width / 2
    offset = mid - (min(xs.values()) + max(xs.values())) / 2
    xy: dict[str, tuple[float, float]] = {}
    for k, row in enumerate(rows):
        y = height - top - k * (box_h + gap_y) - box_h / 2
        for node_id in row:
            xy[node_id] = (xs[node_id] + offset, y)
    for node in spec.units:
        x, y = xy[node.id]
        out = spec.unit_class(node).output_granularity()
        ax.add_patch(
            FancyBboxPatch(
                (x - box_w / 2, y - box_h / 2),
                box_w,
                box_h,
                boxstyle="round,pad=0.02,rounding_size=0.08",
                facecolor=_FILL[out],
                edgecolor=_EDGE[out],
                linewidth=1.2,
            )
        )
        lines = texts[node.id]
        ax.text(x, y + 0.22, lines[0], ha="center", va="center", weight="bold")
        ax.text(x, y - 0.12, "\n".join(lines[1:3]), ha="center", va="center", fontsize=9)
    level = {node_id: k for k, row in enumerate(rows) for node_id in row}
    for parent, child in spec.edges():
        (px, py), (cx, cy) = xy[parent], xy[child]
        skip = level[child] - level[parent] > 1
        ax.add_patch(
            FancyArrowPatch(
                (px, py - box_h / 2),
                (cx, cy + box_h / 2),
                arrowstyle="-|>",
                mutation_scale=14,
                linewidth=1.2,
                color="#444444",
                connectionstyle="arc3,rad=0.35" if skip else "arc3,rad=0",
            )
        )
    ax.text(mid, height - 0.35, title, ha="center", va="center", fontsize=10)
    ax.text(0.15, 0.2, "blue: tile output   orange: object output", fontsize=8, color="#555555")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=dpi)
    return target
