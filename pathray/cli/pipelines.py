"""``pathray units ...`` and ``pathray pipelines ...``: browse units, check and draw pipelines.

The sub-apps are mounted on the main ``pathray`` command (:mod:`pathray.cli`). Like the rest of
the CLI, a user mistake (an unknown unit, an invalid spec) prints one clear line and exits with
status 2, without a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pathray.cli.common import console, friendly, open_catalog
from pathray.errors import ConfigError, NotFoundError
from pathray.pipeline.spec import PipelineSpec, TilingSpec

units_app = typer.Typer(
    help="Pipeline units: list, show, what can still be chosen.", no_args_is_help=True
)
pipelines_app = typer.Typer(
    help="Pipelines: presets, show, validate, graph, infer.", no_args_is_help=True
)

SpecArg = Annotated[str, typer.Argument(help="Preset name or pipeline YAML file.")]


def load_spec(name_or_path: str) -> PipelineSpec:
    """A pipeline from a YAML file, or a preset by name.

    Raises:
        ConfigError: If the file is not a valid spec.
        NotFoundError: If it is neither a file nor a preset.
    """
    path = Path(name_or_path)
    if path.is_file() or path.suffix in {".yaml", ".yml"}:
        return PipelineSpec.from_yaml(path)
    from pipelines.presets import load_preset, preset_names

    try:
        return load_preset(name_or_path)
    except NotFoundError:
        raise NotFoundError(
            f"Pipeline must be a YAML file or a preset {preset_names()}. "
            f"Got {name_or_path!r} instead."
        ) from None


def _resources(cls: Any) -> str:
    r = cls.resources
    parts = [f"{r.num_cpus:g} CPU"]
    if r.num_gpus:
        parts.append(f"{r.num_gpus:g} GPU")
    if r.memory_mb:
        parts.append(f"{r.memory_mb} MiB")
    return ", ".join(parts)


@units_app.command("list")
@friendly
def units_list(
    chosen: Annotated[
        list[str] | None,
        typer.Option("--with", help="Units chosen so far: say which others can still join."),
    ] = None,
) -> None:
    """List the registered units (with --with: which of them can join a choice, and why not)."""
    from pathray.pipeline.selection import selectable
    from pathray.units.registry import available

    reasons = selectable(chosen) if chosen else None
    table = Table("name", "version", "role", "granularity", "resources", "batch")
    if reasons is not None:
        table.add_column("selectable")
    for name, cls in sorted(available().items()):
        row = [
            name,
            cls.version,
            cls.role or "-",
            f"{cls.input_granularity()} -> {cls.output_granularity()}",
            _resources(cls),
            str(cls.batch_size),
        ]
        if reasons is not None:
            row.append("yes" if reasons[name] is None else "[dim]no[/dim]")
        table.add_row(*row)
    console.print(table)
    for name, reason in (reasons or {}).items():
        if reason is not None:
            typer.echo(f"{name}: not selectable: {reason}")


@units_app.command("show")
@friendly
def units_show(
    name: Annotated[str, typer.Argument(help="Unit name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print everything as JSON.")] = False,
) -> None:
    """Show a unit: columns read and written, resources, and its config's JSON Schema."""
    from pathray.units.registry import describe, get_unit

    info = describe(get_unit(name))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    console.print(f"[bold]{info['name']}[/bold] v{info['version']}  {info['description']}")
    console.print(
        f"role: {info['role'] or '-'}   granularity: {info['granularity']['in']} -> "
        f"{info['granularity']['out']}   resources: {_resources(get_unit(name))}   "
        f"batch size: {info['batch_size']}",
        highlight=False,
    )
    for kind in ("inputs", "outputs"):
        table = Table("name", "dtype", "shape", "granularity", "stored", "description", title=kind)
        for c in info[kind]:
            shape = "(" + ", ".join("*" if d is None else str(d) for d in c["shape"]) + ")"
            table.add_row(
                c["name"],
                c["dtype"],
                shape,
                c["granularity"],
                "yes" if c["stored"] else "no",
                c["description"],
            )
        console.print(table)
    console.print("config (JSON Schema):")
    console.print_json(json.dumps(info["config_schema"]))


@pipelines_app.command("presets")
@friendly
def pipelines_presets() -> None:
    """List the preset pipelines (one-click specs)."""
    from pipelines.presets import load_preset, preset_names

    table = Table("name", "version", "units", "description")
    for name in preset_names():
        spec = load_preset(name)
        table.add_row(name, spec.version, ", ".join(n.id for n in spec.units), spec.description)
    console.print(table)


@pipelines_app.command("show")
@friendly
def pipelines_show(pipeline: SpecArg) -> None:
    """Show a pipeline: its nodes in run order, their roles, resolutions and branches."""
    from pathray.pipeline.dag import parallel_groups, sinks
    from pathray.pipeline.render import header

    spec = load_spec(pipeline)
    order = spec.ordered()
    typer.echo(header(spec))
    if spec.description:
        typer.echo(spec.description)
    table = Table("#", "node", "unit", "role", "granularity", "mpp", "after")
    for i, node in enumerate(order):
        cls = spec.unit_class(node)
        mpp = cls.mpp(node.config)
        table.add_row(
            str(i),
            node.id,
            f"{node.unit}@{cls.version}",
            cls.role or "-",
            f"{cls.input_granularity()} -> {cls.output_granularity()}",
            "-" if mpp is None else f"{mpp:g}",
            ", ".join(node.after) or "-",
        )
    console.print(table)
    typer.echo(f"parallel groups: {parallel_groups(spec)}")
    typer.echo(f"results (sinks): {', '.join(sinks(spec))}")
    typer.echo(f"spec hash: {spec.spec_hash()}")


def check_spec_models(spec: PipelineSpec) -> dict[str, str]:
    """Check a spec's models against the catalog (PATHRAY_HOME).

    Returns:
        Node id -> its model and where it comes from, for the nodes that bind one.

    Opens the catalog only when a node binds a model.

    Raises:
        ConfigError: If a model is unknown (with the closest registered names) or does not fit
            its unit.
    """
    if not any(node.model for node in spec.units):
        return {}
    from pathray.pipeline.bind import check_models

    with open_catalog() as catalog:
        bound = check_models(catalog, spec)
    described = {}
    for node_id, record in bound.items():
        node = spec.node(node_id)
        what = (
            f"shipped with {node.unit}, registered on the first run"
            if record is None
            else f"version {record.version}"
        )
        described[node_id] = f"{node.model} ({what})"
    return described


@pipelines_app.command("validate")
@friendly
def pipelines_validate(pipeline: SpecArg) -> None:
    """Validate a pipeline spec and its models; exit status 2 with the reason if invalid."""
    spec = load_spec(pipeline)
    order = spec.ordered()
    models = check_spec_models(spec)
    typer.echo(
        f"valid: {spec.name} v{spec.version}, {len(order)} unit(s); "
        f"order: {' -> '.join(n.id for n in order)}"
    )
    for node_id, described in models.items():
        typer.echo(f"model: {node_id} <- {described}")


@pipelines_app.command("graph")
@friendly
def pipelines_graph(
    pipeline: SpecArg,
    png: Annotated[Path | None, typer.Option(help="Also draw the DAG into this PNG.")] = None,
) -> None:
    """Draw a pipeline's DAG as text (and as a PNG image with --png)."""
    from pathray.pipeline.render import render_png, render_text

    spec = load_spec(pipeline)
    typer.echo(render_text(spec), nl=False)
    if png is not None:
        typer.echo(f"wrote {render_png(spec, png)}")


@pipelines_app.command("infer")
@friendly
def pipelines_infer(
    units: Annotated[list[str], typer.Argument(help="Chosen unit names, in any order.")],
    name: Annotated[str, typer.Option(help="Name of the pipeline.")] = "custom",
    mpp: Annotated[
        float | None, typer.Option(help="Tiling resolution (default: the units' own).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the YAML to this file.")] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="NODE=name@alias (or name@version): the model a unit's node binds; repeatable.",
        ),
    ] = None,
) -> None:
    """Order chosen units into a pipeline from their inputs and outputs; print its YAML.

    A unit that loads a model binds the one given with --model; without it, the model the unit
    ships (if any) is bound, and the output says so. The order, the parallel groups and the
    models follow as YAML comments, so the output is a valid spec.
    """
    from pathray.pipeline.bind import parse_bindings
    from pathray.pipeline.dag import parallel_groups
    from pathray.pipeline.infer import infer_pipeline

    if mpp is not None and mpp <= 0:
        raise ConfigError(f"--mpp must be positive. Got {mpp} instead.")
    tiling = TilingSpec(mpp=mpp) if mpp is not None else None
    models = parse_bindings(model or [])
    spec = infer_pipeline(units, models=models, tiling=tiling, name=name)
    bound = check_spec_models(spec)
    text = spec.to_yaml()
    typer.echo(text, nl=False)
    typer.echo(f"# order: {' -> '.join(n.id for n in spec.units)}")
    typer.echo(f"# parallel groups: {parallel_groups(spec)}")
    for node_id, described in bound.items():
        default = "; bound by default, choose another with --model" if node_id not in models else ""
        typer.echo(f"# model: {node_id} <- {described}{default}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        typer.echo(f"# written to {out}")
