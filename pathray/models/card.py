"""Model cards: what a registered model does, what it reads and what it needs to run.

A card travels with every model version (``card.json`` in the version's folder, and the
``card`` column of the catalog). It is written as YAML or JSON; WSInfer's model ``config.json``
(``spec_version``, ``architecture``, ``num_classes``, ``class_names``, ``patch_size_pixels``,
``spacing_um_px``, ``transform``) is accepted as it is and converted.

Pixels reach a model as ``float32`` in ``[0, 1]`` (channels first for TorchScript and ONNX), then
``(x - mean) / std`` per channel when the card has a ``normalisation``.

Example:
    >>> card = ModelCard(task="tile_classification", format="onnx", file="model.onnx",
    ...                  input_size=(224, 224), mpp=0.5, class_names=["benign", "tumour"])
    >>> card.resources.gpus
    0.0
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from pathray.errors import ConfigError, NotFoundError

Task = Literal[
    "tile_classification",
    "object_classification",
    "semantic_segmentation",
    "instance_segmentation",
    "embedding",
]
Format = Literal["torchscript", "onnx", "skops", "xgboost_json", "xgboost_ubj"]
Precision = Literal["float32", "float16", "bfloat16"]
_FLOAT32: tuple[Precision, ...] = ("float32",)

#: Names a card file may have in a model folder (WSInfer's ``config.json`` included).
CARD_NAMES = ("card.yaml", "card.yml", "card.json", "config.json")
_WSINFER_KEYS = frozenset(
    {
        "spec_version",
        "architecture",
        "num_classes",
        "class_names",
        "patch_size_pixels",
        "spacing_um_px",
        "transform",
    }
)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Normalisation(_Strict):
    """Per-channel mean and standard deviation applied to pixels scaled to ``[0, 1]``."""

    mean: tuple[float, ...] = Field(min_length=1)
    std: tuple[float, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_length(self) -> Normalisation:
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(
                "mean and std must have one value per channel and std must be > 0. "
                f"Got mean={list(self.mean)}, std={list(self.std)} instead."
            )
        return self


class CardResources(_Strict):
    """What one copy of the model needs: CPUs, a GPU share and memory (None: unknown)."""

    cpus: float = Field(1.0, ge=0)
    gpus: float = Field(0.0, ge=0)
    memory_mb: int | None = Field(None, ge=0)


class ModelCard(_Strict):
    """The card of a model version.

    Attributes:
        task: What the model does.
        format: The file's format; always a safe one (never a pickle).
        file: The model file's name inside the version's folder.
        input_size: ``(height, width)`` in pixels the model reads, if fixed.
        mpp: Resolution of those pixels in micrometres per pixel.
        normalisation: Per-channel ``mean`` and ``std`` (pixels in ``[0, 1]``), if any.
        class_names: Names of the classes, in output order.
        outputs: Names of the model's outputs (e.g. ``["probabilities"]``).
        features: Object columns a feature model (skops, XGBoost) reads, in its column order
            (e.g. ``["area_um2", "solidity"]``, as ``nucleus_features`` writes them).
        resources: CPUs, GPU share and memory one copy needs.
        precision: Arithmetic the model may run in (``float32`` always works).
        container_image: Image to run it in, if any.
        licence: Its licence.
        source: Where it came from (URL, paper, team).
    """

    task: Task
    format: Format
    file: str = Field(min_length=1)
    input_size: tuple[int, int] | None = None
    mpp: float | None = Field(None, gt=0)
    normalisation: Normalisation | None = None
    class_names: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    features: list[str] = Field(default_factory=list)
    resources: CardResources = Field(default_factory=CardResources)
    precision: list[Precision] = Field(default_factory=lambda: list(_FLOAT32), min_length=1)
    container_image: str | None = None
    licence: str | None = None
    source: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ModelCard:
        if "/" in self.file or "\\" in self.file or self.file in (".", ".."):
            raise ValueError(f"file must be a plain file name. Got {self.file!r} instead.")
        if self.input_size is not None and min(self.input_size) < 1:
            raise ValueError(f"input_size must be positive. Got {self.input_size} instead.")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names must be unique. Got {self.class_names} instead.")
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"features must be unique. Got {self.features} instead.")
        return self

    def to_json(self) -> dict[str, Any]:
        """The card as JSON-ready data (what the catalog stores)."""
        return self.model_dump(mode="json")


def card_from_mapping(data: Mapping[str, Any], where: str = "model card") -> ModelCard:
    """Validate card data (a native card, or WSInfer's config when it has ``spec_version``).

    Args:
        data: The parsed card.
        where: What to name in error messages (usually the file).

    Returns:
        The card. A WSInfer config needs ``file`` added beforehand (see :func:`card_from_wsinfer`).

    Raises:
        ConfigError: Unknown fields, missing fields or invalid values.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"A model card must be a mapping. Got {type(data).__name__} in {where}.")
    try:
        return ModelCard.model_validate(dict(data))
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'card'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"Invalid model card {where}: {problems}") from None


def read_card_data(path: str | Path) -> dict[str, Any]:
    """Parse a card file (YAML or JSON; JSON is YAML's subset, so one parser reads both).

    Raises:
        NotFoundError: The file does not exist.
        ConfigError: It does not parse to a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"Model card {path} does not exist.")
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            data = yaml.safe_load(path.read_text())
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"Model card {path} must be valid YAML or JSON. Got: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Model card {path} must hold a mapping. Got {type(data).__name__}.")
    return data


def is_wsinfer_config(data: Mapping[str, Any]) -> bool:
    """Whether card data is a WSInfer model config (it has ``spec_version``)."""
    return "spec_version" in data


def card_from_wsinfer(
    config: Mapping[str, Any], file: str, where: str = "config.json"
) -> ModelCard:
    """Convert a WSInfer model config (spec 1.0) into a tile-classification card.

    WSInfer reads patches of ``patch_size_pixels`` at ``spacing_um_px`` and may resize them; the
    card states what the model itself reads: ``input_size`` is the resized size and ``mpp`` the
    spacing scaled by the same factor, so the same tissue reaches the model.

    Args:
        config: The parsed ``config.json``.
        file: The TorchScript file's name next to it.
        where: What to name in error messages.

    Raises:
        ConfigError: Unknown or missing keys, a class count that differs from the class names,
            or a transform other than Resize, ToTensor and Normalize.
    """
    unknown = sorted(set(config) - _WSINFER_KEYS)
    missing = sorted(_WSINFER_KEYS - set(config) - {"architecture"})
    if unknown or missing:
        raise ConfigError(
            f"A WSInfer config must have exactly the keys {sorted(_WSINFER_KEYS)}. Got unknown "
            f"{unknown} and missing {missing} in {where}."
        )
    if config["spec_version"] != "1.0":
        raise ConfigError(
            f"WSInfer spec_version must be '1.0'. Got {config['spec_version']!r} in {where}."
        )
    names = list(config["class_names"])
    if config["num_classes"] != len(names):
        raise ConfigError(
            f"num_classes must equal the number of class_names ({len(names)}). "
            f"Got {config['num_classes']!r} in {where}."
        )
    patch = config["patch_size_pixels"]
    size, normalisation = _wsinfer_transforms(config["transform"], patch, where)
    data = {
        "task": "tile_classification",
        "format": "torchscript",
        "file": file,
        "input_size": (size, size),
        "mpp": float(config["spacing_um_px"]) * patch / size,
        "normalisation": normalisation,
        "class_names": names,
        "outputs": ["logits"],
        "source": f"WSInfer config ({config.get('architecture', 'unknown architecture')})",
    }
    return card_from_mapping(data, where)


def _wsinfer_transforms(
    transforms: Any, patch: Any, where: str
) -> tuple[int, dict[str, Any] | None]:
    """The model's input edge and normalisation from WSInfer's transform list."""
    if not isinstance(patch, int) or isinstance(patch, bool) or patch < 1:
        raise ConfigError(
            f"patch_size_pixels must be a positive integer. Got {patch!r} in {where}."
        )
    size: Any = patch
    normalisation = None
    for item in transforms or []:
        name = item.get("name") if isinstance(item, Mapping) else None
        args = dict(item.get("arguments") or {}) if isinstance(item, Mapping) else {}
        if name == "Resize":
            value = args.get("size")
            size = value[0] if isinstance(value, list | tuple) else value
            if not isinstance(size, int) or size < 1:
                raise ConfigError(
                    f"Resize size must be a positive integer. Got {value!r} in {where}."
                )
        elif name == "Normalize":
            normalisation = {"mean": args.get("mean"), "std": args.get("std")}
        elif name != "ToTensor":
            raise ConfigError(
                "WSInfer transforms must be Resize, ToTensor or Normalize. "
                f"Got {item!r} in {where}."
            )
    return size, normalisation


__all__ = [
    "CARD_NAMES",
    "CardResources",
    "Format",
    "ModelCard",
    "Normalisation",
    "Precision",
    "Task",
    "card_from_mapping",
    "card_from_wsinfer",
    "is_wsinfer_config",
    "read_card_data",
]
