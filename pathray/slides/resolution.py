"""Resolution as an explicit ``(value, units)`` pair.

A bare number is never a resolution in PathRay: ``0.5`` could be microns per pixel, a level or a
magnification. :class:`Resolution` names its units, and converts to a downsample factor against
a slide's baseline (level 0).

Example:
    >>> Resolution(0.5, "mpp").downsample(baseline_mpp=0.25)
    2.0
    >>> Resolution(20, "power").downsample(baseline_power=40)
    2.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pathray.errors import ConfigError

Units = Literal["mpp", "power", "level", "baseline"]
_UNITS: tuple[str, ...] = ("mpp", "power", "level", "baseline")


@dataclass(frozen=True)
class Resolution:
    """A resolution with its units.

    Attributes:
        value: The number; its meaning depends on ``units``.
        units: ``"mpp"`` (microns per pixel), ``"power"`` (objective magnification),
            ``"level"`` (pyramid level index) or ``"baseline"`` (scale factor against level 0:
            1.0 is full resolution, 0.5 is half).
    """

    value: float
    units: Units

    def __post_init__(self) -> None:
        if self.units not in _UNITS:
            raise ConfigError(f"units must be one of {_UNITS}. Got {self.units!r} instead.")
        if not self.value > 0 and not (self.units == "level" and self.value == 0):
            raise ConfigError(f"A resolution value must be positive. Got {self.value!r} instead.")

    def downsample(
        self,
        baseline_mpp: float | None = None,
        baseline_power: float | None = None,
        level_downsamples: tuple[float, ...] | list[float] | None = None,
    ) -> float:
        """Return the downsample factor of this resolution against level 0.

        Args:
            baseline_mpp: Microns per pixel of level 0 (needed for ``"mpp"``).
            baseline_power: Objective power of level 0 (needed for ``"power"``).
            level_downsamples: Downsample of each level (needed for ``"level"``).

        Returns:
            The factor by which level-0 pixels are reduced (>= 0; 1.0 is full resolution).

        Raises:
            ConfigError: If the slide lacks what the units need.
        """
        if self.units == "mpp":
            if not baseline_mpp:
                raise ConfigError(
                    "A resolution in mpp needs the slide's microns per pixel, which it does not "
                    "declare. Register the slide with an explicit mpp or use 'baseline' units."
                )
            return self.value / baseline_mpp
        if self.units == "power":
            if not baseline_power:
                raise ConfigError("A resolution in 'power' needs the slide's objective power.")
            return baseline_power / self.value
        if self.units == "level":
            if level_downsamples is None or int(self.value) >= len(level_downsamples):
                raise ConfigError(f"Level {self.value} does not exist on this slide.")
            return float(level_downsamples[int(self.value)])
        return 1.0 / self.value

    def __str__(self) -> str:
        return f"{self.value:g} {self.units}"
