"""Custom selection of units: which units can still be added to a choice, and why not.

The UI greys out the units :func:`selectable` gives a reason for, and shows the reason; the CLI
prints the same reasons (``pathray units list --with UNIT``). A unit cannot join a choice when

- a chosen unit fills the same role (e.g. two nucleus segmenters): they are mutually exclusive;
- it turns tiles into objects and a chosen unit does already: a pipeline's rows turn into objects
  once (see :mod:`pathray.pipeline.validate`).

Example:
    >>> reasons = selectable(["nucleus_features"])
    >>> reasons["nucleus_features"], reasons["tissue_mask"]
    ('already chosen', None)
    >>> reasons["dark_blobs"]
    'exclusive with nucleus_features (both turn tiles into objects; a pipeline does so once)'
"""

from __future__ import annotations

from collections.abc import Sequence

from pathray.errors import ConfigError
from pathray.units.base import Unit
from pathray.units.registry import available


def chosen_classes(chosen: Sequence[str]) -> list[type[Unit]]:
    """The unit classes of a choice, in its order.

    Raises:
        ConfigError: If a name is not a registered unit.
    """
    units = available()
    unknown = [name for name in chosen if name not in units]
    if unknown:
        raise ConfigError(
            f"Chosen units must be registered units {sorted(units)}. Got {unknown} instead."
        )
    return [units[name] for name in chosen]


def exclusion(cls: type[Unit], chosen: Sequence[type[Unit]]) -> str | None:
    """Why a unit cannot join the chosen units, or None if it can."""
    for other in chosen:
        if other is cls or other.name == cls.name:
            return "already chosen"
    for other in chosen:
        if cls.role is not None and other.role == cls.role:
            return f"exclusive with {other.name} (same role {cls.role!r})"
    if cls.emits_objects():
        for other in chosen:
            if other.emits_objects():
                return (
                    f"exclusive with {other.name} (both turn tiles into objects; "
                    f"a pipeline does so once)"
                )
    return None


def selectable(chosen: Sequence[str]) -> dict[str, str | None]:
    """For every registered unit: None if it can be added to the choice, else the reason.

    Args:
        chosen: Names of the units chosen so far.

    Returns:
        Unit name -> None or the reason it is unselectable, sorted by name.

    Raises:
        ConfigError: If a chosen name is not a registered unit.
    """
    picked = chosen_classes(chosen)
    return {name: exclusion(cls, picked) for name, cls in sorted(available().items())}


def exclusive_groups() -> dict[str, list[str]]:
    """Registered units by role, for the roles more than one unit fills (a UI's radio groups)."""
    groups: dict[str, list[str]] = {}
    for name, cls in sorted(available().items()):
        if cls.role is not None:
            groups.setdefault(cls.role, []).append(name)
    return {role: names for role, names in groups.items() if len(names) > 1}
