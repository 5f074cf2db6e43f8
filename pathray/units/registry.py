"""The unit registry: unit classes by name, found through entry points.

Units register under the ``pathray.units`` entry-point group (PathRay's own built-ins are
declared in ``pyproject.toml`` the same way), so a lab's package adds units by declaring its own
entry points; :func:`register` adds one at run time (tests, notebooks).

Example:
    >>> sorted(available())[:2]  # doctest: +SKIP
    ['nucleus_features', 'nucleus_segmentation']
"""

from __future__ import annotations

from importlib.metadata import entry_points

from pathray.errors import NotFoundError
from pathray.units.base import Unit

_registry: dict[str, type[Unit]] = {}
_loaded = False


def register(cls: type[Unit]) -> type[Unit]:
    """Register a unit class under its ``name`` (usable as a decorator)."""
    _registry[cls.name] = cls
    return cls


def _load_entry_points() -> None:
    global _loaded
    if _loaded:
        return
    for ep in entry_points(group="pathray.units"):
        cls = ep.load()
        _registry.setdefault(cls.name, cls)
    _loaded = True


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
