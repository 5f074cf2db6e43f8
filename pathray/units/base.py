"""The unit contract: a plain callable class with declared columns and resources.

A unit is usable unchanged in three places: called directly (tests), as a Ray Data actor
(``map_batches(UnitCls, fn_constructor_kwargs=...)``) and as a Ray Serve deployment.

Rows flow through a pipeline as column batches (``dict[str, np.ndarray]``). Tile rows carry the
key columns of :data:`TILE_KEYS`; object rows carry :data:`OBJECT_KEYS`. A unit whose input is at
tile granularity and whose output is at object granularity returns one row per object plus a
``parent_index`` column (the input row each object came from); the engine uses it to carry the
tile's key columns over to the objects.

Example:
    >>> import numpy as np
    >>> class Brightness(Unit):
    ...     name = "brightness"
    ...     inputs = (Column("image", "uint8", (None, None, 3)),)
    ...     outputs = (Column("brightness", "float32"),)
    ...     def __call__(self, batch):
    ...         return {"brightness": batch["image"].mean(axis=(1, 2, 3)).astype("float32")}
    >>> Brightness()({"image": np.full((2, 4, 4, 3), 10, np.uint8)})["brightness"].tolist()
    [10.0, 10.0]
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticValidationError

from pathray.errors import ConfigError

if TYPE_CHECKING:
    from pathray.catalog.records import ModelVersion

Granularity = Literal["tile", "object"]
Batch = dict[str, np.ndarray]

#: Columns every tile row carries (level-0 pixel geometry of the tile and of the core it owns).
TILE_KEYS: tuple[str, ...] = (
    "slide_id",
    "tile_id",
    "x",
    "y",
    "width",
    "height",
    "downsample",
    "core_x0",
    "core_y0",
    "core_x1",
    "core_y1",
)
#: Columns every object row carries: its tile's keys plus its index within the tile.
OBJECT_KEYS: tuple[str, ...] = (*TILE_KEYS, "object_id")
#: The column a tile -> object unit returns to say which input row each object came from.
PARENT_INDEX = "parent_index"


@dataclass(frozen=True)
class Column:
    """A column a unit reads or writes.

    Attributes:
        name: Column name.
        dtype: NumPy dtype name, or ``"wkb"`` for geometries as WKB bytes (level-0 pixels).
        shape: Per-row shape; ``None`` for a dimension that varies (``()`` for scalars).
        granularity: ``"tile"`` or ``"object"``.
        stored: Whether the engine writes the column to the cold store.
        description: What the column holds, for ``pathray units show``.
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...] = ()
    granularity: Granularity = "tile"
    stored: bool = True
    description: str = ""


@dataclass(frozen=True)
class Resources:
    """What one actor of the unit needs.

    Attributes:
        num_cpus: CPUs per actor.
        num_gpus: GPUs per actor; the engine drops this to 0 where the cluster has none.
        memory_mb: Memory per actor in MiB (0: no reservation).
        custom: Custom Ray resources per actor (e.g. ``{"slide_io": 1}``), which pin the
            unit's actors to the nodes that offer them.
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory_mb: int = 0
    custom: Mapping[str, float] = field(default_factory=dict)


class UnitConfig(BaseModel):
    """Base of unit configs: frozen and strict (unknown keys are errors)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Unit(ABC):
    """Base class of pipeline units.

    Subclasses set the class attributes and implement :meth:`__call__`; those that load a model
    override :meth:`setup`, which runs once per actor.

    Args:
        config: The unit's config, as its ``Config`` model or a mapping validated into one.
        artifacts: Named artifact paths (model files) the unit loads in :meth:`setup`.

    Raises:
        ConfigError: If the config does not validate.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    #: What the unit's output is for (e.g. ``"nucleus_segmentation"``); two units with the same
    #: role are mutually exclusive in one pipeline. None: the unit excludes nothing.
    role: ClassVar[str | None] = None
    Config: ClassVar[type[UnitConfig]] = UnitConfig
    inputs: ClassVar[tuple[Column, ...]] = ()
    outputs: ClassVar[tuple[Column, ...]] = ()
    resources: ClassVar[Resources] = Resources()
    batch_size: ClassVar[int] = 16
    #: Whether the unit loads a model (``artifacts["model"]``), bound by a node's ``model``.
    needs_model: ClassVar[bool] = False

    def __init__(
        self,
        config: UnitConfig | Mapping[str, Any] | None = None,
        artifacts: Mapping[str, str] | None = None,
    ) -> None:
        self.config = self.validate_config(config)
        self.artifacts = dict(artifacts or {})
        self.setup()

    @classmethod
    def validate_config(cls, config: UnitConfig | Mapping[str, Any] | None) -> Any:
        """Validate a config for this unit.

        Args:
            config: A ``Config`` instance, a mapping, or None for the defaults.

        Returns:
            The validated, frozen config.

        Raises:
            ConfigError: If a key is unknown or a value invalid.
        """
        if isinstance(config, cls.Config):
            return config
        try:
            return cls.Config.model_validate(dict(config or {}))
        except PydanticValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigError(f"Invalid config for unit {cls.name!r}: {problems}") from None

    @classmethod
    def config_hash(cls, config: UnitConfig | Mapping[str, Any] | None) -> str:
        """Return a stable short hash of the unit's name, version and validated config."""
        payload = {
            "unit": cls.name,
            "version": cls.version,
            "config": cls.validate_config(config).model_dump(mode="json"),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def input_granularity(cls) -> Granularity:
        """Granularity of the rows the unit reads (that of its first input column)."""
        return cls.inputs[0].granularity if cls.inputs else "tile"

    @classmethod
    def output_granularity(cls) -> Granularity:
        """Granularity of the rows the unit writes (that of its first output column)."""
        return cls.outputs[0].granularity if cls.outputs else cls.input_granularity()

    @classmethod
    def declared_outputs(
        cls, config: UnitConfig | Mapping[str, Any] | None = None
    ) -> tuple[Column, ...]:
        """The output columns a unit with this config writes (default: ``outputs``).

        A unit whose columns depend on its config (one column pair per dataset of the
        multi-dataset classifiers) overrides it.
        """
        return cls.outputs

    @classmethod
    def emits_objects(cls) -> bool:
        """Whether the unit turns tiles into objects (and so returns ``parent_index``)."""
        return cls.input_granularity() == "tile" and cls.output_granularity() == "object"

    @classmethod
    def mpp(cls, config: UnitConfig | Mapping[str, Any] | None = None) -> float | None:
        """Microns per pixel the unit works at (its config's ``mpp`` field), if any."""
        return getattr(cls.validate_config(config), "mpp", None)

    @classmethod  # noqa: B027 - optional hook, accepts any version by default
    def check_model(cls, version: ModelVersion) -> None:
        """Check that a model version fits the unit (task, classes, resolution).

        Validation calls it for every node with a model; the default accepts any version.

        Args:
            version: The registered model version the node binds.

        Raises:
            ConfigError: With the reason, when the version does not fit.
        """

    def setup(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Load models and other heavy state; runs once per actor."""

    @abstractmethod
    def __call__(self, batch: Batch) -> Batch:
        """Compute the unit's output columns for a batch.

        Args:
            batch: Column name -> array with one entry per row; holds at least the unit's
                input columns and the key columns of its granularity.

        Returns:
            The unit's output columns (plus ``parent_index`` for a tile -> object unit).
        """
