"""``pathray iterate`` and ``pathray lineage``: the iteration loop and the trace of a result.

Mounted by :mod:`pathray.cli` with ``register(app)``. This module imports nothing from
:mod:`pathray.cli` (which imports it); user mistakes print one line and exit with status 2.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.tree import Tree

from pathray.cli.common import ME, console, err, friendly, open_catalog
from pathray.config import Settings

if TYPE_CHECKING:
    from pathray.iterate.loop import IterationEvent, LoopResult


def _search_space(values: list[str]) -> dict[str, dict[str, list[Any]]]:
    """``unit:path=v1,v2`` options as ``{unit: {path: [v1, v2]}}`` (numbers parsed)."""
    from pathray.errors import ConfigError

    out: dict[str, Any] = {}
    for item in values:
        head, sep, listed = item.partition("=")
        unit, colon, path = head.partition(":")
        if not sep or not colon or not unit or not path or not listed:
            raise ConfigError(
                f"--search-space must look like unit:path=v1,v2 (e.g. "
                f"nucleus_segmentation:params.min_contrast_od=0.08,0.12). Got {item!r} instead."
            )
        out.setdefault(unit, {})[path] = [
            json.loads(v) if _is_json(v) else v for v in listed.split(",")
        ]
    return out


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def iterate_command(
    pipeline: Annotated[str, typer.Argument(help="Preset name or pipeline YAML.")] = "nuclei",
    image_set: Annotated[str, typer.Option("--set", help="Image set with annotated slides.")] = "",
    reference: Annotated[str, typer.Option(help="Reference annotation set.")] = "",
    require: Annotated[
        str,
        typer.Option(
            "--requirement", "--require", help="Requirement, e.g. 'dice >= 0.85 and f1 >= 0.80'."
        ),
    ] = "",
    strategy: Annotated[str, typer.Option(help="auto, config_search, retrain or swap.")] = "auto",
    iterations: Annotated[int, typer.Option(help="Iterations, the first run included.")] = 3,
    seconds: Annotated[
        float | None, typer.Option(help="Start no iteration after this many seconds.")
    ] = None,
    node: Annotated[str | None, typer.Option(help="Node to iterate (default: segmenter).")] = None,
    validation: Annotated[float, typer.Option(help="Fraction of slides held out.")] = 0.5,
    search: Annotated[str, typer.Option(help="Config search: grid or random.")] = "grid",
    samples: Annotated[int, typer.Option(help="Candidates of a random search.")] = 8,
    search_space: Annotated[
        list[str] | None, typer.Option(help="unit:path=v1,v2 (repeatable); replaces a unit's.")
    ] = None,
    corrections: Annotated[
        list[str] | None, typer.Option(help="Accepted correction sets (default: all).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split, searches and training.")] = 0,
    actor: Annotated[str, typer.Option(help="Who acts (recorded in the audit log).")] = ME,
) -> None:
    """Run, evaluate, judge and make new unit versions until the requirement holds."""
    from pathray.errors import ConfigError
    from pathray.iterate.loop import Budget, iterate
    from pathray.iterate.workspace import Settings as LoopSettings
    from pathray.results.store import ColdStore

    if not image_set or not reference or not require:
        raise ConfigError("pathray iterate needs --set, --reference and --require.")
    settings = LoopSettings(search=search, samples=samples, corrections=corrections, seed=seed)
    settings.search_space.update(_search_space(search_space or []))
    result = iterate(
        open_catalog(),
        ColdStore(Settings.from_env().cold_root),
        pipeline,
        image_set,
        reference,
        require,
        strategy=strategy,
        budget=Budget(iterations=iterations, seconds=seconds),
        node=node,
        validation=validation,
        settings=settings,
        requester=actor,
        progress=_print_event,
    )
    console.print(iterations_table(result))
    best = result.best
    console.print(
        f"loop {result.loop.id}: {result.loop.status}"
        + (f", best iteration {best.number} (run {best.run_id})" if best else "")
    )
    if not result.met:
        raise typer.Exit(1)


def _print_event(event: IterationEvent) -> None:
    err.print(f"[dim]iteration {event.number}[/dim] {event.stage}: {event.message}")


def iterations_table(result: LoopResult) -> Table:
    """A table of a loop's iterations: version, metrics and verdict."""
    metrics = list(
        dict.fromkeys(
            [c["metric"] for it in result.iterations for c in it.verdict.get("checks", [])]
            + ["precision", "recall", "f1", "dice"]
        )
    )
    table = Table(
        "#",
        "strategy",
        "unit",
        "unit version",
        "model",
        *metrics,
        "verdict",
        title=f"{result.loop.requirement} (judged on {result.validation_set})",
    )
    for it in result.iterations:
        values = [
            f"{it.evaluation[m]:.3f}" if isinstance(it.evaluation.get(m), int | float) else "-"
            for m in metrics
        ]
        reasons = it.verdict.get("reasons") or []
        verdict = "[green]met[/green]" if it.status == "met" else "; ".join(reasons) or it.status
        table.add_row(
            str(it.number),
            it.strategy,
            it.unit_name,
            str(it.unit_version_id or "-"),
            str(it.details.get("model") or "-"),
            *values,
            verdict,
        )
    return table


def lineage_command(
    ref: Annotated[str, typer.Argument(help="Run id, model@version, or iteration:<id>.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the trace as JSON.")] = False,
) -> None:
    """Trace a run, a model version or an iteration back to slides and annotations."""
    from pathray.iterate.lineage import trace

    tree = trace(open_catalog(), ref)
    if as_json:
        console.print_json(json.dumps(tree, default=str))
        return
    console.print(lineage_tree(tree))


def _label(key: str, value: Any) -> str:
    """A node's label: its key and, for a record, the field that names it.

    Never the whole value: a list or record is drawn as branches below its label.
    """
    if isinstance(value, dict):
        for name in ("node", "ref", "name", "number", "id", "pipeline"):
            if name in value and not isinstance(value[name], dict | list):
                return f"[bold]{key}[/bold] {value[name]}"
        return f"[bold]{key}[/bold]"
    if isinstance(value, list):
        return f"[bold]{key}[/bold] ({len(value)})"
    return f"[bold]{key}[/bold]: {value}"


def _grow(branch: Tree, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if (
                isinstance(item, list)
                and item
                and not any(isinstance(v, dict | list) for v in item)
            ):
                branch.add(f"[bold]{key}[/bold]: {', '.join(map(str, item))}")
            elif isinstance(item, dict | list) and item:
                _grow(branch.add(_label(key, item)), item)
            elif item not in (None, {}, []):
                branch.add(_label(key, item))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, dict):
                _grow(branch.add(_label(str(i), item)), item)
            elif isinstance(item, list):
                branch.add(" -> ".join(map(str, item)))  # an edge, a pair
            else:
                branch.add(str(item))


def lineage_tree(trace: dict[str, Any]) -> Tree:
    """A rich tree of a lineage trace."""
    root = Tree(f"[bold]lineage of a {trace.get('kind', '?')}[/bold]")
    _grow(root, {k: v for k, v in trace.items() if k != "kind"})
    return root


def register(app: typer.Typer) -> None:
    """Add ``iterate`` and ``lineage`` to the ``pathray`` command."""
    app.command("iterate")(friendly(iterate_command))
    app.command("lineage")(friendly(lineage_command))


__all__ = ["iterations_table", "lineage_tree", "register"]
