"""Pipeline specs: units, their configs and their precursor edges, validated by pydantic.

A spec is written in YAML::

    name: nuclei
    version: "1"
    tiling: {mpp: 0.5, size: 256, overlap: 32}
    units:
      - {id: tissue, unit: tissue_mask}
      - {id: segment, unit: nucleus_segmentation, after: [tissue]}
      - {id: features, unit: nucleus_features, after: [segment]}

A node of a unit that loads a model binds one (``model: nuclei-default@champion``) and may
override its actors' resources (``resources: {gpus: 0.25, cpus: 1}``, see
:mod:`pathray.pipeline.resources`).

:meth:`PipelineSpec.ordered` returns the nodes in a topological order after the checks of
:mod:`pathray.pipeline.validate`; :meth:`PipelineSpec.edges` gives the DAG as data and
:meth:`PipelineSpec.to_yaml` writes the spec back.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from pathray.errors import ConfigError, NotFoundError
from pathray.pipeline.resources import NodeResources
from pathray.pipeline.validate import SOURCE_COLUMNS, validate
from pathray.units.base import Unit
from pathray.units.registry import available, get_unit

__all__ = ["SOURCE_COLUMNS", "PipelineSpec", "TilingSpec", "UnitSpec"]


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
        model: The model the unit loads, from the model registry: ``"name@version"`` or
            ``"name@alias"`` (e.g. ``"nuclei-rf@champion"``); None for classical units.
        resources: Override of the resources of the node's actors (``cpus``, ``gpus``,
            ``memory_mb``); None keeps the unit's and its model's.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str = ""
    unit: str
    version: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    after: tuple[str, ...] = ()
    model: str | None = None
    resources: NodeResources | None = None

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

        Args:
            source: A path, or the YAML text itself (any string holding a newline or a colon
                that is not an existing file).

        Raises:
            ConfigError: If the file is missing, or the YAML or the spec is invalid.
        """
        text = _read_source(source)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"Pipeline YAML is malformed: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(
                f"A pipeline spec must be a YAML mapping. Got {type(data).__name__} instead."
            )
        try:
            return cls.model_validate(data)
        except PydanticValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            raise ConfigError(f"Invalid pipeline spec: {problems}") from None

    def unit_class(self, node: UnitSpec) -> type[Unit]:
        """The unit class of a node, checking that it is registered at the pinned version.

        Raises:
            ConfigError: If the unit is unknown or installed at another version.
        """
        try:
            cls = get_unit(node.unit)
        except NotFoundError:
            raise ConfigError(
                f"Node {node.id!r} unit must be one of {sorted(available())}. "
                f"Got unknown unit {node.unit!r} instead."
            ) from None
        if node.version is not None and node.version != cls.version:
            raise ConfigError(
                f"Node {node.id!r}: unit {node.unit!r} version must be {cls.version!r} "
                f"(installed). Got {node.version!r} instead."
            )
        return cls

    def ordered(self) -> list[UnitSpec]:
        """Validate the DAG and return its nodes in the order the engine runs them.

        The order is topological; tile-level units come before the unit that turns tiles into
        objects, and ties follow the listing (see :mod:`pathray.pipeline.validate`).

        Raises:
            ConfigError: On a duplicate id, an unknown precursor, a cycle, an unknown unit or
                version, an invalid unit config, two mutually exclusive units, a granularity or
                resolution mismatch, or an input column no precursor produces.
        """
        return validate(self)

    def edges(self) -> list[tuple[str, str]]:
        """The precursor relations as ``(precursor, node)`` pairs, in listing order."""
        return [(parent, node.id) for node in self.units for parent in node.after]

    def to_yaml(self) -> str:
        """The spec as YAML that :meth:`from_yaml` reads back to an equal spec."""
        units = []
        for node in self.units:
            entry: dict[str, Any] = {"id": node.id, "unit": node.unit}
            if node.version is not None:
                entry["version"] = node.version
            if node.after:
                entry["after"] = _Flow(node.after)
            if node.config:
                entry["config"] = _Flow(node.config)
            if node.model is not None:
                entry["model"] = node.model
            if node.resources is not None:
                entry["resources"] = _Flow(node.resources.model_dump(exclude_none=True))
            units.append(entry)
        data: dict[str, Any] = {"name": self.name, "version": self.version}
        if self.description:
            data["description"] = self.description
        data["tiling"] = _Flow(self.tiling.model_dump(mode="json", exclude_none=True))
        data["units"] = units
        return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100)

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


def _read_source(source: str | Path) -> str:
    """The YAML text of a path or of a string that is YAML already."""
    if isinstance(source, str) and ("\n" in source or ":" in source):
        try:
            is_file = Path(source).is_file()
        except OSError:  # e.g. a name too long for the file system: YAML text
            is_file = False
        if not is_file:
            return source
    path = Path(source)
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"Pipeline file must be a readable YAML file. Got {str(path)!r} ({exc.strerror}) "
            f"instead."
        ) from None


class _Flow:
    """A mapping or sequence that YAML writes on one line (``{mpp: 0.5}``, ``[tissue]``)."""

    def __init__(self, value: Any) -> None:
        self.value = dict(value) if isinstance(value, dict) else list(value)


class _Dumper(yaml.SafeDumper):
    """Block style for the spec's structure, flow style for :class:`_Flow` values."""


def _represent_flow(dumper: yaml.SafeDumper, data: _Flow) -> yaml.Node:
    if isinstance(data.value, dict):
        return dumper.represent_mapping("tag:yaml.org,2002:map", data.value, flow_style=True)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data.value, flow_style=True)


_Dumper.add_representer(_Flow, _represent_flow)
