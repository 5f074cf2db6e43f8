"""Pipeline specs: units, their configs and their precursor edges, validated by pydantic.

A spec is written in YAML::

    name: nuclei
    version: "1"
    tiling: {mpp: 0.5, size: 256, overlap: 32}
    units:
      - {id: tissue, unit: tissue_mask}
      - {id: segment, unit: nucleus_segmentation, after: [tissue]}
      - {id: features, unit: nucleus_features, after: [segment]}

:meth:`PipelineSpec.ordered` returns the nodes in a topological order after checking that every
unit exists at the pinned version, every edge names a node, there is no cycle, and every input
column is produced by a precursor (or by the tile source).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from pathray.errors import ConfigError
from pathray.units.base import OBJECT_KEYS, Unit
from pathray.units.registry import get_unit

#: Columns the tile source provides to the first units.
SOURCE_COLUMNS = frozenset({*OBJECT_KEYS[:-1], "image", "size", "tissue_fraction"})


class TilingSpec(BaseModel):
    """How the slides are cut into tiles for the run.

    Attributes:
        mpp: Resolution of the tiles in microns per pixel.
        size: Tile side in pixels at that resolution.
        overlap: Overlap of neighbouring tiles in pixels (>= the largest object's diameter).
        min_tissue: Smallest tissue fraction of a tile worth reading.
        assume_mpp: Level-0 mpp to assume for slides that do not declare one (None: refuse).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    mpp: float = Field(0.5, gt=0)
    size: int = Field(256, ge=16, le=4096)
    overlap: int = Field(32, ge=0)
    min_tissue: float = Field(0.05, ge=0, le=1)
    assume_mpp: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> TilingSpec:
        if self.overlap >= self.size:
            raise ValueError(f"overlap must be below size={self.size}. Got {self.overlap} instead.")
        return self


class UnitSpec(BaseModel):
    """One node of a pipeline.

    Attributes:
        id: Node id, unique in the pipeline (defaults to the unit name).
        unit: Registered unit name.
        version: Pinned unit version (None: the installed one).
        config: The unit's config.
        after: Ids of the precursor nodes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str = ""
    unit: str
    version: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    after: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _default_id(self) -> UnitSpec:
        if not self.id:
            object.__setattr__(self, "id", self.unit)
        return self


class PipelineSpec(BaseModel):
    """A pipeline: a DAG of pinned units plus the tiling they run on."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    version: str = "1"
    description: str = ""
    tiling: TilingSpec = TilingSpec()
    units: tuple[UnitSpec, ...]

    @classmethod
    def from_yaml(cls, source: str | Path) -> PipelineSpec:
        """Load and validate a spec from a YAML file or string.

        Raises:
            ConfigError: If the YAML or the spec is invalid.
        """
        text = Path(source).read_text() if Path(str(source)).is_file() else str(source)
        try:
            data = yaml.safe_load(text)
            return cls.model_validate(data)
        except yaml.YAMLError as exc:
            raise ConfigError(f"Pipeline YAML is malformed: {exc}") from None
        except PydanticValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"Invalid pipeline spec: {problems}") from None

    def unit_class(self, node: UnitSpec) -> type[Unit]:
        """The unit class of a node, checking its pinned version."""
        cls = get_unit(node.unit)
        if node.version is not None and node.version != cls.version:
            raise ConfigError(
                f"Unit {node.unit!r} version must be {cls.version!r} (installed). "
                f"Got {node.version!r} instead."
            )
        return cls

    def ordered(self) -> list[UnitSpec]:
        """Validate the DAG and return its nodes in topological order (stable by listing).

        Raises:
            ConfigError: On a duplicate id, an unknown precursor, a cycle, an unknown unit or
                version, an invalid unit config, or an input column no precursor produces.
        """
        ids = [node.id for node in self.units]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ConfigError(f"Node ids must be unique. Got duplicates {duplicates} instead.")
        nodes = {node.id: node for node in self.units}
        for node in self.units:
            for parent in node.after:
                if parent not in nodes:
                    raise ConfigError(f"Node {node.id!r} runs after unknown node {parent!r}.")
        order: list[UnitSpec] = []
        done: set[str] = set()
        while len(order) < len(self.units):
            ready = [n for n in self.units if n.id not in done and set(n.after) <= done]
            if not ready:
                cycle = sorted(set(ids) - done)
                raise ConfigError(f"The pipeline has a cycle among nodes {cycle}.")
            order.append(ready[0])
            done.add(ready[0].id)
        self._check_columns(order)
        return order

    def _check_columns(self, order: list[UnitSpec]) -> None:
        produced: dict[str, set[str]] = {}
        for node in order:
            cls = self.unit_class(node)
            cls.validate_config(node.config)
            available = set(SOURCE_COLUMNS)
            stack = list(node.after)
            while stack:  # every ancestor's outputs are visible downstream
                parent = stack.pop()
                available |= produced[parent]
                stack += list(self.node(parent).after)
            missing = [c.name for c in cls.inputs if c.name not in available]
            if missing:
                raise ConfigError(
                    f"Node {node.id!r} ({node.unit}) needs input columns {missing} that no "
                    f"precursor produces."
                )
            produced[node.id] = {c.name for c in cls.outputs}

    def node(self, node_id: str) -> UnitSpec:
        """The node with this id."""
        for node in self.units:
            if node.id == node_id:
                return node
        raise ConfigError(f"Pipeline {self.name!r} has no node {node_id!r}.")

    def spec_hash(self) -> str:
        """Stable hash of the whole spec (configs included)."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]
