"""Binding models to pipeline nodes, and checking the bindings before anything runs.

A node of a unit that loads a model (``needs_model``) names its model as ``name@alias`` or
``name@version``; a node of any other unit names none. Two levels of checks:

- :func:`check_bindings` needs no catalog and runs in every validation
  (:func:`pathray.pipeline.validate.validate`): a model unit without a model, a model on a unit
  that loads none, a malformed reference;
- :func:`check_models` asks the catalog: the reference must name a registered version (or a
  model the node's unit ships, registered on first run), and the unit's
  :meth:`~pathray.units.base.Unit.check_model` must accept it (task, classes, resolution).
  An unknown name is refused with the closest registered names.

A unit that ships a model declares its reference as ``bundled_model`` (the nucleus U-Net:
``nuclei-default@champion``) and registers it with ``install_bundled_model`` (see
:mod:`pathray.engine.models`).
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from pathray.errors import ConfigError, NotFoundError
from pathray.units.base import Unit
from pathray.units.registry import available

if TYPE_CHECKING:
    from pathray.catalog import Catalog
    from pathray.catalog.records import ModelVersion
    from pathray.pipeline.spec import PipelineSpec, UnitSpec


def parse_model_ref(ref: str) -> tuple[str, str]:
    """Split ``"name@version"`` (or ``"name@alias"``) into its parts.

    Raises:
        ConfigError: If the reference has no ``@``, or nothing on one side of it.
    """
    name, sep, version = ref.rpartition("@")
    if not sep or not name or not version:
        raise ConfigError(
            f"A model reference must look like 'name@version' or 'name@alias'. Got {ref!r} instead."
        )
    return name, version


def parse_bindings(bindings: list[str]) -> dict[str, str]:
    """``NODE=name@alias`` bindings (``pipelines infer --model``, the apps) as node -> reference.

    Example:
        >>> parse_bindings(["nucleus_unet=my-unet@prod"])
        {'nucleus_unet': 'my-unet@prod'}

    Raises:
        ConfigError: If a binding is not ``NODE=reference`` or names a node twice.
    """
    bound: dict[str, str] = {}
    for binding in bindings:
        node, sep, ref = binding.partition("=")
        if not sep or not node or not ref:
            raise ConfigError(
                f"A model binding must look like NODE=name@alias. Got {binding!r} instead."
            )
        if node in bound:
            raise ConfigError(
                f"A model binding must bind node {node!r} once. Got it twice instead."
            )
        bound[node] = ref
    return bound


def version_key(version: str) -> int | str:
    """A reference's version part as the registry takes it: a number, or an alias."""
    return int(version) if version.isdigit() else version


def bundled_model(cls: type[Unit]) -> str | None:
    """The reference of the model a unit ships with its code (None: it ships none)."""
    ref: str | None = getattr(cls, "bundled_model", None)
    return ref


def label(node: UnitSpec) -> str:
    """How messages name a node: ``'segment' (nucleus_segmentation)``."""
    return f"{node.id!r} ({node.unit})"


def check_bindings(spec: PipelineSpec, classes: dict[str, type[Unit]]) -> None:
    """Check, without a catalog, that exactly the model units bind a well-formed model.

    Args:
        spec: The pipeline.
        classes: Node id -> its unit class.

    Raises:
        ConfigError: Naming the node and what is wrong.
    """
    for node in spec.units:
        cls = classes[node.id]
        if cls.needs_model and node.model is None:
            default = bundled_model(cls)
            hint = f" (its unit ships {default})" if default else ""
            raise ConfigError(
                f"Node {label(node)} loads a model, so it must bind one with "
                f"'model: name@alias' or 'model: name@version'{hint}; `pathray models list` "
                f"shows the registered ones. Got no model instead."
            )
        if not cls.needs_model and node.model is not None:
            raise ConfigError(
                f"Node {label(node)} loads no model, so it must not bind one. "
                f"Got model {node.model!r} instead."
            )
        if node.model is not None:
            try:
                parse_model_ref(node.model)
            except ConfigError as exc:
                raise ConfigError(f"Node {label(node)}: {exc}") from None


def check_models(catalog: Catalog, spec: PipelineSpec) -> dict[str, ModelVersion | None]:
    """Check every node's model against the catalog and its unit; change nothing.

    Args:
        catalog: The catalog holding the model registry.
        spec: The pipeline (validated here first).

    Returns:
        Node id -> the registered version it binds, or None for a model its unit ships that
        the catalog does not hold yet (registered on the first run). Nodes without a model
        are absent.

    Raises:
        ConfigError: If the spec is invalid, a reference names no registered version (with
            the closest registered names), or a unit refuses its model.
    """
    bound: dict[str, ModelVersion | None] = {}
    for node in spec.ordered():
        if node.model is None:
            continue
        cls = spec.unit_class(node)
        name, version = parse_model_ref(node.model)
        try:
            record = catalog.get_model_version(name, version_key(version))
        except NotFoundError as exc:
            if node.model == bundled_model(cls):
                bound[node.id] = None
                continue
            raise ConfigError(_unknown_model(catalog, node, name, exc)) from None
        try:
            cls.check_model(record)
        except ConfigError as exc:
            raise ConfigError(
                f"Node {label(node)}: model {node.model!r} does not fit the unit: {exc}"
            ) from None
        bound[node.id] = record
    return bound


def fitting_models(catalog: Catalog, cls: type[Unit]) -> list[str]:
    """The references a node of this unit can bind: registered versions its unit accepts.

    For the custom selection of the apps: each accepted version is offered by its aliases and
    by its number (newest first), then the model the unit ships if the catalog lacks it.

    Args:
        catalog: The catalog holding the model registry.
        cls: The unit class.

    Returns:
        ``name@alias`` and ``name@version`` references; empty for a unit that loads no model.
    """
    if not cls.needs_model:
        return []
    refs: list[str] = []
    for model in catalog.list_models():
        for version in reversed(catalog.list_model_versions(model.name)):
            try:
                cls.check_model(version)
            except ConfigError:
                continue
            refs += [f"{model.name}@{alias}" for alias in version.aliases]
            refs.append(f"{model.name}@{version.version}")
    default = bundled_model(cls)
    registered = {parse_model_ref(ref)[0] for ref in refs}
    if default and parse_model_ref(default)[0] not in registered:
        refs.append(default)
    return refs


def _unknown_model(catalog: Catalog, node: UnitSpec, name: str, exc: Exception) -> str:
    """Why a reference names no registered version, with what the user may have meant.

    The known models are the registered ones and those the registered units ship.
    """
    names = sorted(
        {m.name for m in catalog.list_models()} | set(_bundled_names()),
    )
    if name in names:  # the model exists; its version or alias does not
        return f"Node {label(node)} model {node.model!r} must name a registered version: {exc}"
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    if close:
        hint = f" Closest known models: {', '.join(close)}."
    elif names:
        hint = f" Known models: {', '.join(names)}."
    else:
        hint = " No model is registered yet (`pathray models list`)."
    return (
        f"Node {label(node)} model must be registered in the catalog. "
        f"Got unknown model {name!r} instead.{hint}"
    )


def _bundled_names() -> list[str]:
    """Names of the models the registered units ship."""
    refs: list[Any] = [bundled_model(cls) for cls in available().values()]
    return [parse_model_ref(ref)[0] for ref in refs if ref]
