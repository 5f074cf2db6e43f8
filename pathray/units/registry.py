"""The unit registry: unit classes by name, found through entry points.

Units register under the ``pathray.units`` entry-point group (PathRay's own built-ins are
declared in ``pyproject.toml`` the same way), so a lab's package adds units by declaring its own
entry points; :func:`register` adds one at run time (tests, notebooks). Where the installed
distribution's entry points are stale (a checkout imported through ``PYTHONPATH``, an editable
install made before a unit was added), the entry points that the checkout's own
``pyproject.toml`` declares are read too, and the reference units of the core
(:mod:`pathray.units.examples`) are registered in any case.

Example:
    >>> sorted(available())[:2]  # doctest: +SKIP
    ['nucleus_features', 'nucleus_segmentation']
"""

from __future__ import annotations

import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pathray.errors import NotFoundError
from pathray.units.base import Unit

_registry: dict[str, type[Unit]] = {}
_loaded = False
#: Units of the core itself, always registered.
_CORE_UNITS = (
    "pathray.units.examples:NoOp",
    "pathray.units.examples:TileStats",
    "pathray.units.examples:DarkBlobs",
)


def register(cls: type[Unit]) -> type[Unit]:
    """Register a unit class under its ``name`` (usable as a decorator)."""
    _registry[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a unit registered at run time (a no-op for an unknown name)."""
    _registry.pop(name, None)


def _load_entry_points() -> None:
    global _loaded
    if _loaded:
        return
    for ep in entry_points(group="pathray.units"):
        cls = ep.load()
        _registry.setdefault(cls.name, cls)
    for path in (*_checkout_units(), *_CORE_UNITS):
        cls = load_unit_class(path)
        _registry.setdefault(cls.name, cls)
    _loaded = True


def _checkout_units() -> list[str]:
    """Unit paths that the ``pyproject.toml`` of the checkout this package runs from declares.

    Empty for an installed wheel (no ``pyproject.toml`` beside the package).
    """
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return []
    if project.get("name") != "pathray":
        return []
    return list(project.get("entry-points", {}).get("pathray.units", {}).values())


def available() -> dict[str, type[Unit]]:
    """All registered unit classes by name."""
    _load_entry_points()
    return dict(_registry)


def get_unit(name: str) -> type[Unit]:
    """Look up a unit class by name.

    Raises:
        NotFoundError: If no unit has that name.
    """
    units = available()
    if name not in units:
        raise NotFoundError(f"Unit must be one of {sorted(units)}. Got {name!r} instead.")
    return units[name]


def unit_path(cls: type[Unit]) -> str:
    """Import path of a unit class (``module:qualname``), for rebuilding it in a worker."""
    return f"{cls.__module__}:{cls.__qualname__}"


def load_unit_class(path: str) -> type[Unit]:
    """Import a unit class from its :func:`unit_path`."""
    import importlib

    module, _, qualname = path.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]


def producers(column: str) -> list[str]:
    """Names of the registered units that output a column, sorted."""
    return sorted(
        name for name, cls in available().items() if any(c.name == column for c in cls.outputs)
    )


def config_schema(cls: type[Unit]) -> dict[str, Any]:
    """JSON Schema of a unit's config (from its pydantic model)."""
    return cls.Config.model_json_schema()


def describe(cls: type[Unit]) -> dict[str, Any]:
    """Everything a user needs to choose and configure a unit, as JSON-ready data.

    Returns:
        Name, version, role, granularity in and out, resources, batch size, input and output
        columns, and the config's JSON Schema.
    """

    def columns(cols: tuple[Any, ...]) -> list[dict[str, Any]]:
        return [
            {
                "name": c.name,
                "dtype": c.dtype,
                "shape": list(c.shape),
                "granularity": c.granularity,
                "stored": c.stored,
                "description": c.description,
            }
            for c in cols
        ]

    return {
        "name": cls.name,
        "version": cls.version,
        "role": cls.role,
        "description": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
        "granularity": {"in": cls.input_granularity(), "out": cls.output_granularity()},
        "resources": {
            "num_cpus": cls.resources.num_cpus,
            "num_gpus": cls.resources.num_gpus,
            "memory_mb": cls.resources.memory_mb,
        },
        "batch_size": cls.batch_size,
        "inputs": columns(cls.inputs),
        "outputs": columns(cls.outputs),
        "config_schema": config_schema(cls),
    }
