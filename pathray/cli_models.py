"""``pathray models``: list, register, show (versions, card, lineage) and promote models.

Mounted by :mod:`pathray.cli` as ``app.add_typer(models_app, name="models")``. This module
imports nothing from :mod:`pathray.cli` (which imports it), so it keeps its own small helpers.
User mistakes print one line and exit with status 2.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from pathray.config import Settings
from pathray.errors import PathRayError

if TYPE_CHECKING:
    from pathray.catalog import Catalog, ModelVersion

models_app = typer.Typer(
    help="The model registry: models, versions, lineage, aliases.", no_args_is_help=True
)

console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
ME = getpass.getuser()


def _friendly(fn: F) -> F:
    """Turn PathRayError into one red line and exit status 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PathRayError as exc:
            err.print(f"[red]error:[/red] {exc}", soft_wrap=True)  # one line, never wrapped
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _catalog() -> Catalog:
    from pathray.catalog import Catalog

    settings = Settings.from_env()
    settings.home.mkdir(parents=True, exist_ok=True)
    return Catalog.open(settings.catalog_url)


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
@_friendly
def models_list() -> None:
    """List registered models with their newest version and aliases."""
    table = Table("name", "framework", "task", "versions", "aliases", "created")
    for m in _catalog().list_models():
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
@_friendly
def models_show(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[
        str | None, typer.Option("--version", "-v", help="Version number, alias or 'latest'.")
    ] = None,
) -> None:
    """Show a model's versions, or one version's artifact, lineage, training run and metrics."""
    catalog = _catalog()
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
@_friendly
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
        _catalog(), Settings.from_env().cold_root, name, path, card, alias=alias, actor=actor
    )
    aliases = f" ({', '.join(version.aliases)})" if version.aliases else ""
    console.print(
        f"registered {version.ref}{aliases}: {version.card['format']} "
        f"{version.card['task']}, sha256:{version.artifact_digest[:12]}"
    )


@models_app.command("promote")
@_friendly
def models_promote(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str, typer.Argument(help="Version number (or an alias) to promote.")],
    alias: Annotated[str, typer.Option(help="Alias to point at the version.")] = "champion",
    actor: Annotated[str, typer.Option(help="Who acts (recorded in the audit log).")] = ME,
) -> None:
    """Point an alias (champion by default) at a version of a model."""
    catalog = _catalog()
    previous = catalog.get_model(name).aliases.get(alias)
    promoted = catalog.set_alias(name, alias, _version_ref(version), actor=actor)
    if previous == promoted.version:
        console.print(f"{promoted.ref} is already {alias}")
    elif previous is None:
        console.print(f"{promoted.ref} is now {alias}")
    else:
        console.print(f"{promoted.ref} is now {alias} (was {name}@{previous})")


__all__ = ["format_metrics", "models_app"]
