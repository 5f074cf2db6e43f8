"""Ways to make the next version of a unit: search its config, retrain its model, swap its kind.

Each strategy takes the loop's :class:`Workspace` and the current :class:`Version` and returns
the next version, or None when it has nothing new to offer (the search finds nothing better, the
training data did not change, the ladder of model kinds is exhausted):

- ``config_search``: score candidate configs (a grid, or a seeded random sample of it) on the
  training slides' labelled tiles, one parallel Ray task each; keep the best if it beats the
  current config.
- ``retrain``: train the unit's model on the training slides' reference annotations plus the
  accepted corrections; a classical unit is replaced by the first trainable unit of its role in
  the ladder. The new model version's parent is the current one.
- ``swap``: train the next model kind of the ladder (random forest -> XGBoost -> U-Net).
- ``auto`` (the default policy): config search first for a classical unit, then retrain, then
  swap; for a trainable unit retrain (when the data changed), swap, then search.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pathray.catalog import ModelVersion
from pathray.pipeline.spec import UnitSpec
from pathray.units.base import Unit
from pathray.units.registry import available
from pathray.units.trainable import TrainableUnit

#: Strategies a loop can be asked to use.
STRATEGIES = ("auto", "config_search", "retrain", "swap")
#: Candidate values of config fields per unit (dotted paths reach into nested configs).
DEFAULT_SEARCH_SPACES: dict[str, dict[str, list[Any]]] = {
    "nucleus_segmentation": {
        "params.min_contrast_od": [0.06, 0.09, 0.12, 0.16],
        "params.relative_threshold": [0.25, 0.35, 0.45],
    },
    "nucleus_pixel_classifier": {"threshold": [0.3, 0.4, 0.5, 0.6, 0.7]},
    "nucleus_unet": {"threshold": [0.3, 0.4, 0.5, 0.6, 0.7]},
}
#: Model kinds tried in turn, as ``(unit, config overrides)``; only those registered and of
#: the iterated unit's role are used.
DEFAULT_LADDER: tuple[tuple[str, dict[str, Any]], ...] = (
    ("nucleus_pixel_classifier", {"model": "random_forest"}),
    ("nucleus_pixel_classifier", {"model": "xgboost"}),
    ("nucleus_unet", {}),
)


@dataclass(frozen=True)
class Version:
    """A version of the iterated node, ready to run.

    Attributes:
        node: The node's spec (unit, config and model reference).
        strategy: How it was made (``start`` for the first).
        model_version: The model version it loads, if any.
        details: How it was made (search scores, training set...).
    """

    node: UnitSpec
    strategy: str
    model_version: ModelVersion | None = None
    details: dict[str, Any] = field(default_factory=dict)


def set_path(config: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of a config with a dotted path (``params.min_contrast_od``) set to a value."""
    out = dict(config)
    head, _, rest = path.partition(".")
    if rest:
        out[head] = set_path(dict(out.get(head) or {}), rest, value)
    else:
        out[head] = value
    return out


def candidate_configs(
    base: Mapping[str, Any],
    space: Mapping[str, Sequence[Any]],
    *,
    search: str = "grid",
    samples: int = 8,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Configs to try: every combination of the space (grid) or a seeded random sample.

    Args:
        base: The current config (fields outside the space keep their values).
        space: Dotted path -> candidate values.
        search: ``"grid"`` or ``"random"``.
        samples: Combinations drawn by a random search.
        seed: Seed of the random search.

    Returns:
        The candidate configs, without repeats.
    """
    paths = list(space)
    combos = list(itertools.product(*(space[p] for p in paths)))
    if search == "random" and len(combos) > samples:
        rng = np.random.default_rng(seed)
        combos = [combos[i] for i in sorted(rng.choice(len(combos), samples, replace=False))]
    out: list[dict[str, Any]] = []
    for combo in combos:
        config = dict(base)
        for path, value in zip(paths, combo, strict=True):
            config = set_path(config, path, value)
        if config not in out:
            out.append(config)
    return out


def ladder_for(cls: type[Unit], ladder: Sequence[tuple[str, Mapping[str, Any]]]) -> list[Any]:
    """The ladder's entries usable in place of a unit: registered, trainable, same role."""
    units = available()
    return [
        (name, dict(config))
        for name, config in ladder
        if name in units and issubclass(units[name], TrainableUnit) and units[name].role == cls.role
    ]


def ladder_position(
    node: UnitSpec, cls: type[Unit], entries: Sequence[tuple[str, Mapping[str, Any]]]
) -> int:
    """Index of the ladder entry a node runs (-1: none, e.g. a classical unit)."""
    config = cls.validate_config(node.config).model_dump(mode="json")
    for i, (name, overrides) in enumerate(entries):
        if name == node.unit and all(config.get(k) == v for k, v in overrides.items()):
            return i
    return -1


def objective(scores: Mapping[str, Any], metrics: Sequence[tuple[str, bool]]) -> float:
    """One number to maximise: the mean of the requirement's metrics (lower-better negated).

    Args:
        scores: Metric values.
        metrics: ``(metric, higher_is_better)`` pairs; those missing from ``scores`` are
            skipped, and with none left the mean of ``f1`` and ``dice`` is used.

    Returns:
        The objective (NaN when nothing can be scored).
    """
    values = [
        float(scores[m]) if up else -float(scores[m])
        for m, up in metrics
        if isinstance(scores.get(m), int | float)
    ]
    if not values:
        values = [float(scores[m]) for m in ("f1", "dice") if m in scores]
    return float(np.mean(values)) if values else float("nan")
