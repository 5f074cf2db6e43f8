"""Evaluation plots, each as a PNG (matplotlib, Agg) and as a self-contained HTML (plotly).

A plot is first described as data (:class:`LinePlot` or :class:`Heatmap`), then drawn by
either backend, so the two files always show the same thing. The HTML embeds plotly.js
(``include_plotlyjs=True``): it opens offline, with no CDN.

- :func:`metric_history`: metrics against iteration (or against runs, side by side);
- :func:`roc_plot` and :func:`pr_plot`: one curve per class;
- :func:`confusion_plot`: the confusion matrix.

Example:
    >>> plot = metric_history([{"f1": 0.6, "dice": 0.7}, {"f1": 0.8, "dice": 0.75}], ["f1"])
    >>> [s.name for s in plot.series], plot.series[0].y
    (['f1'], [0.6, 0.8])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pathray.errors import ConfigError

#: Metrics drawn by default against iteration, when present.
DEFAULT_METRICS = ("dice", "f1", "pq", "aji", "map", "accuracy")


@dataclass(frozen=True)
class Series:
    """One line: its name and points (``x`` may be labels)."""

    name: str
    x: list[Any]
    y: list[float]


@dataclass(frozen=True)
class LinePlot:
    """Lines on shared axes; ``diagonal`` adds the chance line of a ROC plot."""

    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    diagonal: bool = False
    markers: bool = False
    unit_range: bool = True


@dataclass(frozen=True)
class Heatmap:
    """A labelled matrix (rows = reference, columns = prediction)."""

    title: str
    xlabel: str
    ylabel: str
    labels: list[str]
    values: list[list[float]]


Plot = LinePlot | Heatmap


def metric_history(
    steps: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] | None = None,
    *,
    labels: Sequence[str] | None = None,
    title: str = "Metrics by iteration",
    xlabel: str = "iteration",
) -> LinePlot:
    """Metrics against iteration (or any ordered runs).

    Args:
        steps: One flat metrics dict per iteration, oldest first.
        metrics: Names to draw; by default those of :data:`DEFAULT_METRICS` present.
        labels: x values (e.g. run ids); 0, 1, 2, ... by default.
        title: Plot title.
        xlabel: x-axis title.

    Raises:
        ConfigError: If ``labels`` does not match ``steps``.
    """
    xs = list(labels) if labels is not None else list(range(len(steps)))
    if len(xs) != len(steps):
        raise ConfigError(f"labels must have one entry per step ({len(steps)}). Got {len(xs)}.")
    names = (
        list(metrics)
        if metrics is not None
        else [m for m in DEFAULT_METRICS if any(m in s for s in steps)]
    )
    series = []
    for name in names:
        pts = [(x, float(s[name])) for x, s in zip(xs, steps, strict=True) if name in s]
        if pts:
            series.append(Series(name, [p[0] for p in pts], [p[1] for p in pts]))
    return LinePlot(title, xlabel, "value", series, markers=True)


def roc_plot(curves: Mapping[str, Any], title: str = "ROC curves") -> LinePlot:
    """ROC curves from :meth:`~.classification.ClassificationCounts.curves` output."""
    series = [
        Series(f"{c} (AUC {v['auc']:.3f})", v["fpr"], v["tpr"])
        for c, v in curves.get("roc", {}).items()
    ]
    return LinePlot(title, "false positive rate", "true positive rate", series, diagonal=True)


def pr_plot(curves: Mapping[str, Any], title: str = "Precision-recall curves") -> LinePlot:
    """Precision-recall curves from :meth:`~.classification.ClassificationCounts.curves`."""
    series = [
        Series(f"{c} (AP {v['ap']:.3f})", v["recall"], v["precision"])
        for c, v in curves.get("pr", {}).items()
    ]
    return LinePlot(title, "recall", "precision", series)


def confusion_plot(curves: Mapping[str, Any], title: str = "Confusion matrix") -> Heatmap:
    """The confusion matrix from :meth:`~.classification.ClassificationCounts.curves`."""
    return Heatmap(title, "predicted", "reference", list(curves["classes"]), curves["confusion"])


def to_png(plot: Plot, path: str | Path) -> Path:
    """Draw ``plot`` with matplotlib (Agg backend, no display) into a PNG file."""
    from matplotlib.figure import Figure  # the Figure API needs no pyplot and no display

    out = Path(path)
    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    ax = fig.subplots()
    if isinstance(plot, Heatmap):
        values = np.asarray(plot.values, dtype=np.float64)
        image = ax.imshow(values, cmap="Blues")
        fig.colorbar(image, ax=ax)
        ticks = range(len(plot.labels))
        ax.set_xticks(list(ticks), plot.labels, rotation=45, ha="right")
        ax.set_yticks(list(ticks), plot.labels)
        for (i, j), v in np.ndenumerate(values):
            ax.text(
                j,
                i,
                f"{v:g}",
                ha="center",
                va="center",
                color="white" if v > values.max() / 2 else "black",
            )
    else:
        for s in plot.series:
            ax.plot(
                [str(x) if isinstance(x, str) else x for x in s.x],
                s.y,
                marker="o" if plot.markers else None,
                label=s.name,
            )
        if plot.diagonal:
            ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
        if plot.unit_range:
            ax.set_ylim(-0.02, 1.02)
        if plot.series:
            ax.legend(loc="best", fontsize="small")
        ax.grid(alpha=0.3)
    ax.set_title(plot.title)
    ax.set_xlabel(plot.xlabel)
    ax.set_ylabel(plot.ylabel)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def to_html(plot: Plot, path: str | Path) -> Path:
    """Draw ``plot`` with plotly into a standalone HTML file (plotly.js embedded)."""
    import plotly.graph_objects as go

    out = Path(path)
    fig = go.Figure()
    if isinstance(plot, Heatmap):
        fig.add_trace(
            go.Heatmap(
                z=plot.values, x=plot.labels, y=plot.labels, colorscale="Blues", texttemplate="%{z}"
            )
        )
        fig.update_yaxes(autorange="reversed")
    else:
        mode = "lines+markers" if plot.markers else "lines"
        for s in plot.series:
            fig.add_trace(go.Scatter(x=s.x, y=s.y, mode=mode, name=s.name))
        if plot.diagonal:
            fig.add_trace(
                go.Scatter(
                    x=[0, 1],
                    y=[0, 1],
                    mode="lines",
                    name="chance",
                    line={"dash": "dash", "color": "grey"},
                )
            )
        if plot.unit_range:
            fig.update_yaxes(range=[-0.02, 1.02])
    fig.update_layout(
        title=plot.title, xaxis_title=plot.xlabel, yaxis_title=plot.ylabel, template="plotly_white"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(out, include_plotlyjs=True, full_html=True)
    return out


def save(plot: Plot, out_dir: str | Path, stem: str) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.html`` into ``out_dir``; returns both paths."""
    folder = Path(out_dir)
    return [to_png(plot, folder / f"{stem}.png"), to_html(plot, folder / f"{stem}.html")]


def report_plots(
    out_dir: str | Path,
    steps: Sequence[Mapping[str, Any]],
    labels: Sequence[str] | None = None,
    classification: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    xlabel: str = "iteration",
) -> list[Path]:
    """Write the standard plots of a comparison: metrics by step, then per-run class plots.

    Args:
        out_dir: Folder for the files (created).
        steps: Overall metrics of each run, in order.
        labels: Name of each run (x axis); 0, 1, ... by default.
        classification: Run name -> curves (``report["classification"]``), for the ROC, PR
            and confusion plots of the runs that classify.
        xlabel: x-axis title of the metrics plot.

    Returns:
        Every file written.
    """
    written = save(metric_history(steps, labels=labels, xlabel=xlabel), out_dir, "metrics")
    for name, curves in (classification or {}).items():
        stem = _safe(name)
        written += save(roc_plot(curves, f"ROC curves: {name}"), out_dir, f"roc_{stem}")
        written += save(pr_plot(curves, f"Precision-recall: {name}"), out_dir, f"pr_{stem}")
        written += save(confusion_plot(curves, f"Confusion: {name}"), out_dir, f"confusion_{stem}")
    return written


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(name))[:64]


__all__ = [
    "Heatmap",
    "LinePlot",
    "Series",
    "confusion_plot",
    "metric_history",
    "pr_plot",
    "report_plots",
    "roc_plot",
    "save",
    "to_html",
    "to_png",
]
