"""``pathray models``: list, register, train, show (versions, card, lineage) and promote models.

Mounted by :mod:`pathray.cli` as ``app.add_typer(models_app, name="models")``. This module
imports nothing from :mod:`pathray.cli` (which imports it), so it keeps its own small helpers.
User mistakes print one line and exit with status 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from pathray.cli.common import ME, console, friendly, open_catalog
from pathray.config import Settings

if TYPE_CHECKING:
    from pathray.catalog import ModelVersion

models_app = typer.Typer(
    help="The model registry: models, versions, lineage, aliases.", no_args_is_help=True
)
train_app = typer.Typer(
    help="Train a model from annotation sets and register it as a new version.",
    no_args_is_help=True,
)
models_app.add_typer(train_app, name="train")


def _version_ref(version: str) -> int | str:
    return int(version) if version.isdigit() else version


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def format_metrics(metrics: dict[str, Any], limit: int = 4) -> str:
    """Metrics as ``key=value`` pairs (floats to 4 significant digits), at most ``limit``."""
    pairs = [f"{k}={_short(v)}" for k, v in sorted(metrics.items())]
    more = f", +{len(pairs) - limit}" if len(pairs) > limit else ""
    return ", ".join(pairs[:limit]) + more or "-"


def _artifact_state(digest: str) -> str:
    from pathray.results.artifacts import ArtifactStore

    present = ArtifactStore(Settings.from_env().cold_root).exists(digest)
    return "[green]stored[/green]" if present else "[yellow]not in this cold store[/yellow]"


@models_app.command("list")
@friendly
def models_list() -> None:
    """List registered models with their newest version and aliases."""
    table = Table("name", "framework", "task", "versions", "aliases", "created")
    for m in open_catalog().list_models():
        aliases = ", ".join(f"{a}={v}" for a, v in m.aliases.items()) or "-"
        table.add_row(
            m.name,
            m.framework,
            m.task or "-",
            str(m.latest_version or 0),
            aliases,
            str(m.created_at)[:19],
        )
    console.print(table)


@models_app.command("show")
@friendly
def models_show(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[
        str | None, typer.Option("--version", "-v", help="Version number, alias or 'latest'.")
    ] = None,
) -> None:
    """Show a model's versions, or one version's artifact, lineage, training run and metrics."""
    catalog = open_catalog()
    model = catalog.get_model(name)
    # read everything first: a user error prints its one line and nothing else
    if version is None:
        versions = catalog.list_model_versions(name)
    else:
        lineage = catalog.model_lineage(name, _version_ref(version))
    console.print(f"[bold]{model.name}[/bold] ({model.framework}) {model.task}".rstrip())
    if model.description:
        console.print(model.description)
    if version is None:
        _print_versions(versions)
        if versions and versions[-1].card:
            console.print(f"card of {versions[-1].ref}:")
            console.print_json(json.dumps(versions[-1].card))
        return
    _print_version(lineage[0])
    console.print("lineage: " + " <- ".join(v.ref for v in lineage))
    console.print("card:")
    console.print_json(json.dumps(lineage[0].card or {}))


def _print_versions(versions: list[ModelVersion]) -> None:
    table = Table("version", "aliases", "parent", "artifact", "metrics", "by", "created")
    for v in versions:
        table.add_row(
            str(v.version),
            ", ".join(v.aliases) or "-",
            "-" if v.parent_version is None else str(v.parent_version),
            v.artifact_digest[:12],
            format_metrics(v.metrics),
            v.created_by,
            str(v.created_at)[:19],
        )
    console.print(table)


def _print_version(v: ModelVersion) -> None:
    size = "" if v.artifact_size is None else f", {v.artifact_size} bytes"
    rows = [
        ("version", f"{v.ref}  (id {v.id})"),
        ("aliases", ", ".join(v.aliases) or "-"),
        ("parent", "-" if v.parent_version is None else f"{v.model}@{v.parent_version}"),
        ("artifact", f"sha256:{v.artifact_digest}{size} [{_artifact_state(v.artifact_digest)}]"),
        ("uri", v.artifact_uri),
        ("container", v.container_image or "-"),
        ("resources", format_metrics(v.resources)),
        ("created", f"{str(v.created_at)[:19]} by {v.created_by}"),
    ]
    for key, value in rows:
        console.print(f"{key:>10}: {value}")
    console.print("training run:")
    console.print_json(json.dumps(v.training_run, default=str))
    console.print("metrics:")
    console.print_json(json.dumps(v.metrics, default=str))


@models_app.command("register")
@friendly
def models_register(
    name: Annotated[str, typer.Argument(help="Model name (a new version if it exists).")],
    path: Annotated[
        Path,
        typer.Argument(
            help="Model file (.pt TorchScript, .onnx, .skops, XGBoost .json/.ubj), or a folder "
            "with one model file and its card (card.yaml, card.json or WSInfer's config.json)."
        ),
    ],
    card: Annotated[
        Path | None, typer.Option("--card", help="Model card (YAML or JSON) for a bare file.")
    ] = None,
    alias: Annotated[
        str | None, typer.Option("--alias", help="Alias to point at the new version.")
    ] = None,
    actor: Annotated[str, typer.Option(help="Who acts (recorded in the audit log).")] = ME,
) -> None:
    """Register a model trained elsewhere: check its format, card and shapes, then store it.

    Pickles (torch.save checkpoints, joblib) are refused: save the model as TorchScript, ONNX,
    skops or XGBoost JSON/UBJ.
    """
    from pathray.services.models import register_model

    version = register_model(
        open_catalog(), Settings.from_env().cold_root, name, path, card, alias=alias, actor=actor
    )
    aliases = f" ({', '.join(version.aliases)})" if version.aliases else ""
    console.print(
        f"registered {version.ref}{aliases}: {version.card['format']} "
        f"{version.card['task']}, sha256:{version.artifact_digest[:12]}"
    )


@models_app.command("promote")
@friendly
def models_promote(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Version number (or an alias) to promote.")],
    alias: Annotated[str, typer.Option(help="Alias to point at the version.")] = "champion",
    actor: Annotated[str, typer.Option(help="Who acts (recorded in the audit log).")] = ME,
) -> None:
    """Point an alias (champion by default) at a version of a model."""
    catalog = open_catalog()
    previous = catalog.get_model(name).aliases.get(alias)
    promoted = catalog.set_alias(name, alias, _version_ref(version), actor=actor)
    if previous == promoted.version:
        console.print(f"{promoted.ref} is already {alias}")
    elif previous is None:
        console.print(f"{promoted.ref} is now {alias}")
    else:
        console.print(f"{promoted.ref} is now {alias} (was {name}@{previous})")


def _label_pairs(
    same: list[str], distinct: list[str], mapping: Path | None
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The ``--same`` and ``--distinct`` pairs, plus those of a YAML mapping file."""
    from pathray.units.label_matching import parse_pair

    pairs = {"same": [parse_pair(t) for t in same], "distinct": [parse_pair(t) for t in distinct]}
    if mapping is not None:
        import yaml

        from pathray.errors import ConfigError, NotFoundError

        if not mapping.is_file():
            raise NotFoundError(f"The label mapping must be a YAML file. Got {mapping} instead.")
        data = yaml.safe_load(mapping.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict) or set(data) - {"same", "distinct"}:
            raise ConfigError(
                "The label mapping must be a YAML mapping with keys 'same' and 'distinct'. "
                f"Got {data!r} instead."
            )
        for key in ("same", "distinct"):
            for item in data.get(key) or []:
                if isinstance(item, str):
                    pairs[key].append(parse_pair(item))
                elif isinstance(item, list | tuple) and len(item) == 2:
                    pairs[key].append((str(item[0]), str(item[1])))
                else:
                    raise ConfigError(
                        f"Entries of {key!r} must be 'A:x=B:y' or [A:x, B:y]. Got {item!r}."
                    )
    return pairs["same"], pairs["distinct"]


@train_app.command("multihead")
@friendly
def train_multihead_command(
    name: Annotated[str, typer.Argument(help="Model name (a new version if it exists).")],
    dataset: Annotated[
        list[str],
        typer.Option(
            "--dataset",
            "-d",
            help="A dataset as [NAME=]IMAGE_SET:ANNOTATION_SET (labelled nucleus polygons); "
            "repeat for each dataset.",
        ),
    ],
    same: Annotated[
        list[str] | None,
        typer.Option("--same", help="Merge two labels: A:label=B:label (repeatable)."),
    ] = None,
    distinct: Annotated[
        list[str] | None,
        typer.Option(
            "--distinct", help="Keep two labels matched by name apart: A:x=B:y (repeatable)."
        ),
    ] = None,
    mapping: Annotated[
        Path | None,
        typer.Option("--mapping", help="YAML file with 'same' and 'distinct' lists of pairs."),
    ] = None,
    similarity: Annotated[
        float, typer.Option(help="Name similarity from which labels of two datasets merge.")
    ] = 0.8,
    unit: Annotated[
        str,
        typer.Option(help="nucleus_multihead_classifier (features) or nucleus_multihead_crop_cnn."),
    ] = "nucleus_multihead_classifier",
    sampling: Annotated[str, typer.Option(help="random or round_robin.")] = "random",
    max_iterations: Annotated[
        int | None, typer.Option(help="Iteration cap (training stops earlier on a plateau).")
    ] = None,
    validation: Annotated[
        float, typer.Option(help="Fraction of each dataset's slides held out.")
    ] = 0.5,
    tiles_per_slide: Annotated[int, typer.Option(help="Labelled tiles cut per slide.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the split, the tiles and training.")] = 0,
    config: Annotated[
        str | None, typer.Option(help="More unit config as JSON, e.g. '{\"hidden\": [32]}'.")
    ] = None,
    alias: Annotated[
        str | None, typer.Option("--alias", help="Alias to point at the new version.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and report the label merges; train nothing.")
    ] = False,
    actor: Annotated[str, typer.Option(help="Who acts (recorded in the audit log).")] = ME,
) -> None:
    """Train one nucleus classifier on several differently labelled datasets.

    Labels of different datasets whose names are alike (similarity >= 0.8) are merged; the
    merges are printed and can be overridden with --same, --distinct or --mapping. Slides are
    split by slide per dataset; the model is scored on each dataset's held-out slides and
    registered with its training data in the version's lineage.
    """
    from pathray.errors import ConfigError
    from pathray.services.training import parse_dataset, plan_multihead, train_multihead

    sources = [parse_dataset(d) for d in dataset]
    same_pairs, distinct_pairs = _label_pairs(same or [], distinct or [], mapping)
    try:
        extra = json.loads(config) if config else {}
    except ValueError as exc:
        raise ConfigError(f"--config must be a JSON object. Got {config!r} ({exc}).") from None
    if not isinstance(extra, dict):
        raise ConfigError(f"--config must be a JSON object. Got {config!r} instead.")
    catalog = open_catalog()
    if dry_run:
        plan = plan_multihead(
            catalog,
            sources,
            same=same_pairs,
            distinct=distinct_pairs,
            threshold=similarity,
            validation=validation,
            seed=seed,
        )
        for key, labels in plan.label_sets.items():
            console.print(f"dataset {key}: labels {labels}")
        for m in plan.merges:
            console.print(f"merged {m.a} = {m.b} ({m.source}, similarity {m.score:.2f})")
        if not plan.merges:
            console.print("merged no labels")
        return
    trained = train_multihead(
        catalog,
        Settings.from_env().cold_root,
        name,
        sources,
        unit=unit,
        config=extra,
        same=same_pairs,
        distinct=distinct_pairs,
        threshold=similarity,
        sampling=sampling,
        max_iterations=max_iterations,
        validation=validation,
        seed=seed,
        tiles_per_slide=tiles_per_slide,
        alias=alias,
        actor=actor,
        progress=lambda line: console.print(line, highlight=False),
    )
    console.print(f"lineage: pathray models show {name} --version {trained.version.version}")


__all__ = ["format_metrics", "models_app"]
