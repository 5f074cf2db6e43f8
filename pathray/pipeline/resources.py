"""What one actor of a pipeline node asks for: the unit's share, the model's, the node's.

Three layers, each overriding the one before it key by key:

1. the unit's declared :class:`~pathray.units.base.Resources`;
2. the ``resources`` of the bound model version's card (the model knows how heavy it is);
3. the node's ``resources`` in the spec (``resources: {gpus: 0.25, cpus: 1}``).

The engine then fits the result to the cluster (a GPU share is dropped where the cluster has no
GPU, see :func:`pathray.engine.sizing.fit_stages`).

Example:
    >>> from pathray.units.base import Resources
    >>> declared = Resources(num_cpus=1.0, num_gpus=0.5)
    >>> node_resources(declared, {"gpus": 1.0, "memory_mb": None}, NodeResources(cpus=2))
    Resources(num_cpus=2.0, num_gpus=1.0, memory_mb=0, custom={})
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from pathray.units.base import Resources

#: Keys a node's (or a model card's) resources may hold.
RESOURCE_KEYS = ("cpus", "gpus", "memory_mb")


class NodeResources(BaseModel):
    """A node's override of its actors' resources; a key left out keeps the model's or unit's.

    Attributes:
        cpus: CPUs per actor (>= 0).
        gpus: GPU share per actor (>= 0; a fraction lets several actors share one GPU).
        memory_mb: Memory per actor in MiB (a whole number >= 0).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    cpus: float | None = None
    gpus: float | None = None
    memory_mb: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: Any) -> Any:
        # Checked here so that every mistake reads "X must be Y. Got Z instead."
        if isinstance(data, NodeResources):
            return data
        if not isinstance(data, Mapping):
            raise ValueError(
                f"resources must be a mapping with keys among {list(RESOURCE_KEYS)}. "
                f"Got {type(data).__name__} instead."
            )
        unknown = sorted(str(key) for key in data if key not in RESOURCE_KEYS)
        if unknown:
            raise ValueError(
                f"resources keys must be among {list(RESOURCE_KEYS)}. Got {unknown} instead."
            )
        for key, value in data.items():
            if value is None:
                continue
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"resources.{key} must be a non-negative number. Got {value!r} instead."
                )
            if key == "memory_mb" and value != int(value):
                raise ValueError(
                    f"resources.memory_mb must be a whole number of MiB. Got {value!r} instead."
                )
        return data


def node_resources(
    declared: Resources,
    model: Mapping[str, Any] | None = None,
    node: NodeResources | None = None,
) -> Resources:
    """The resources of one actor of a node (see the module docstring for the layers).

    Args:
        declared: The unit class's resources.
        model: The bound model card's ``resources`` (``cpus``, ``gpus``, ``memory_mb``; a None
            value says nothing), if any.
        node: The node's override, if any.

    Returns:
        The merged resources (custom Ray resources stay the unit's).
    """
    merged: dict[str, Any] = {
        "cpus": declared.num_cpus,
        "gpus": declared.num_gpus,
        "memory_mb": declared.memory_mb,
    }
    for layer in (model or {}, node.model_dump(exclude_none=True) if node else {}):
        merged.update({k: v for k, v in layer.items() if k in RESOURCE_KEYS and v is not None})
    return Resources(
        num_cpus=float(merged["cpus"]),
        num_gpus=float(merged["gpus"]),
        memory_mb=int(merged["memory_mb"] or 0),
        custom=declared.custom,
    )
