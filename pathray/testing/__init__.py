"""Tools for people who write PathRay units (and for PathRay's own tests).

:func:`check_unit` runs the unit contract's checks on a unit class, as scikit-learn's
``check_estimator`` does for estimators: call it from your own tests.

Example:
    >>> from pathray.testing import check_unit, example_tiles
    >>> from pathray.units.examples import TileStats
    >>> out = check_unit(TileStats, example_tiles(2))
    >>> sorted(out)[:2]
    ['mean_grey', 'mean_od']
"""

from pathray.testing.conformance import (
    ConformanceError,
    check_config,
    check_outputs,
    check_same,
    check_unit,
    example_tiles,
)

__all__ = [
    "ConformanceError",
    "check_config",
    "check_outputs",
    "check_same",
    "check_unit",
    "example_tiles",
]
