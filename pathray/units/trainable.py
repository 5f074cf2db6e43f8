"""The trainable-unit contract: a unit that learns, following the scikit-learn estimator contract.

A :class:`TrainableUnit` is a :class:`~pathray.units.base.Unit` with a ``fit`` method:

- ``fit(X, y, **kw)`` learns from data and returns ``self``; everything learned lives in public
  attributes whose names end in ``_`` (``model_``, ``classes_``, ...), listed in ``learned``.
  The config holds only hyper-parameters (it is the estimator's ``get_params``), so
  ``type(unit)(unit.config)`` is an unfitted clone (:meth:`TrainableUnit.clone`).
- ``save(folder)`` writes the learned state as model file(s) plus ``pathray-model.json``
  (unit name and version, the training config, the classes, library versions, file hashes);
  ``load(folder)`` rebuilds a fitted unit from it. A unit built with
  ``artifacts={"model": folder}`` loads that folder in :meth:`~pathray.units.base.Unit.setup`,
  once per actor, the way the engine builds units.
- Randomness comes only from the config's ``seed``: the same data, config and seed give the same
  model, and the same inputs, config and artifacts give the same outputs.
- Calling or saving an unfitted unit raises :class:`~pathray.errors.ConfigError` naming the unit.

Torch units choose their device from the config's ``device`` (``"auto"``: CUDA where present);
their class ``resources`` ask for a GPU share, which the engine keeps where the cluster has GPUs
and drops on a cluster without (they then compute on CPUs). Batches go to a GPU through pinned
memory (:func:`to_device`), the model stays resident between batches, and inference autocasts
to the config's ``precision``.

Example:
    >>> import numpy as np
    >>> from pathray.units.base import Column
    >>> class MeanThreshold(TrainableUnit):
    ...     name = "mean_threshold"
    ...     inputs = (Column("value", "float64", granularity="object"),)
    ...     outputs = (Column("above", "bool", granularity="object"),)
    ...     learned = ("threshold_",)
    ...     def _fit(self, X, y=None, **kw):
    ...         self.threshold_ = float(np.mean(X))
    ...     def _save_model(self, folder):
    ...         return {"threshold": self.threshold_}
    ...     def _load_model(self, folder, meta):
    ...         self.threshold_ = meta["model"]["threshold"]
    ...     def __call__(self, batch):
    ...         self.check_fitted()
    ...         return {"above": batch["value"] > self.threshold_}
    >>> unit = MeanThreshold().fit(np.array([1.0, 3.0]))
    >>> unit({"value": np.array([1.0, 2.5])})["above"].tolist()
    [False, True]
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import itertools
import json
import platform
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import Field

from pathray.errors import ConfigError
from pathray.units.base import Unit, UnitConfig

#: Name of the metadata file in a model folder.
METADATA = "pathray-model.json"
#: Version of the metadata layout.
FORMAT_VERSION = 1
#: Libraries whose versions are recorded with every model.
_LIBRARIES = ("numpy", "scikit-learn", "xgboost", "torch", "opencv-python", "scikit-image")


class TrainableConfig(UnitConfig):
    """Base of trainable-unit configs.

    Attributes:
        seed: Seed of every random choice made while training (and of nothing else).
    """

    seed: int = Field(0, ge=0)


class TorchConfig(TrainableConfig):
    """Base of torch-unit configs.

    Attributes:
        device: ``"auto"`` (CUDA where present, else CPU), ``"cpu"`` or ``"cuda"``.
        precision: Arithmetic of inference: ``"float32"``, or ``"bfloat16"`` (autocast: the
            convolutions and matrix products in bfloat16, several times faster on GPUs and on
            CPUs with AMX or AVX-512 BF16; logits within about 1 % of float32's, the nucleus
            U-Net's probabilities within 3e-4). Training always runs in float32.
    """

    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["float32", "bfloat16"] = "float32"


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries a model may depend on (those installed)."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """Read the ``pathray-model.json`` of a model folder.

    Args:
        folder: The model folder.

    Returns:
        The metadata.

    Raises:
        ConfigError: If the folder holds no readable metadata.
    """
    path = Path(folder) / METADATA
    try:
        meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"Model artifact must be a folder written by TrainableUnit.save. "
            f"Cannot read {path}: {exc}"
        ) from None
    return meta


class TrainableUnit(Unit):
    """Base class of units that learn their model (scikit-learn estimator contract).

    Subclasses implement :meth:`_fit`, :meth:`_save_model`, :meth:`_load_model` and
    ``__call__`` (which starts with :meth:`check_fitted`), and list their learned attributes in
    ``learned``. ``model_fields`` names the config fields that shape the learned model: loading
    an artifact with a config that differs in one of them is an error.

    Args:
        config: The unit's config (hyper-parameters only).
        artifacts: ``{"model": folder}`` to load a model saved by :meth:`save`.

    Raises:
        ConfigError: If the config is invalid, or the model folder unreadable or made by
            another unit or with another model-shaping config.
    """

    Config: ClassVar[type[UnitConfig]] = TrainableConfig
    #: Learned attributes (each ends in ``_``); the unit is fitted when all are set.
    learned: ClassVar[tuple[str, ...]] = ("model_",)
    #: Config fields the learned model depends on (checked when loading an artifact).
    model_fields: ClassVar[tuple[str, ...]] = ()
    #: A trainable unit in a pipeline runs the model its node binds (it is not trained there).
    needs_model: ClassVar[bool] = True

    def setup(self) -> None:
        """Load the model folder given as ``artifacts["model"]``, if any."""
        folder = self.artifacts.get("model")
        if folder:
            self._restore(Path(folder))

    # -- the estimator contract -------------------------------------------------------------

    def fit(self, X: Any, y: Any = None, **kwargs: Any) -> Self:  # noqa: N803 - sklearn naming
        """Learn the model from training data.

        Args:
            X: Training inputs (what each unit documents).
            y: Training targets.
            **kwargs: Unit-specific options.

        Returns:
            ``self``, fitted.
        """
        self._fit(X, y, **kwargs)
        missing = [name for name in self.learned if getattr(self, name, None) is None]
        if missing:  # a bug in the subclass, not a user error
            raise RuntimeError(f"{type(self).__name__}._fit did not set {missing}")
        return self

    @property
    def is_fitted(self) -> bool:
        """Whether every learned attribute is set."""
        return all(getattr(self, name, None) is not None for name in self.learned)

    def check_fitted(self) -> None:
        """Raise unless the unit is fitted.

        Raises:
            ConfigError: If the unit has neither been trained nor given a model artifact.
        """
        if not self.is_fitted:
            raise ConfigError(
                f"unit {self.name!r} is not fitted: train it (fit) or give its model artifact "
                "(artifacts={'model': folder})."
            )

    def get_params(self) -> dict[str, Any]:
        """The hyper-parameters (the config as plain JSON-able values)."""
        params: dict[str, Any] = self.config.model_dump(mode="json")
        return params

    def clone(self) -> Self:
        """An unfitted unit with the same config (``sklearn.base.clone``)."""
        return type(self)(self.config)

    def training_set(
        self,
        images: Any,
        instance_labels: Any,
        class_labels: Any,
        *,
        mpp: float | None = None,
    ) -> tuple[Any, Any]:
        """Turn labelled tiles into this unit's ``fit`` arguments.

        Use: ``unit.fit(*unit.training_set(images, instance_labels, class_labels))``.

        Args:
            images: RGB tiles (``(N, H, W, 3)`` uint8 or a list of tiles).
            instance_labels: Their instance label images (0 background).
            class_labels: Per tile, the class name of instance ``k`` at index ``k - 1``.
            mpp: Microns per pixel of the tiles (default: the unit's own).

        Returns:
            ``(X, y)``.

        Raises:
            ConfigError: If the unit does not learn from labelled tiles.
        """
        raise ConfigError(f"unit {self.name!r} does not learn from labelled tiles.")

    # -- persistence --------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write the learned state to a folder: model file(s) and ``pathray-model.json``.

        Args:
            folder: Created if missing; files of an earlier save are overwritten.

        Raises:
            ConfigError: If the unit is not fitted.
        """
        self.check_fitted()
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        model_meta = self._save_model(path)
        files = sorted(p.name for p in path.iterdir() if p.is_file() and p.name != METADATA)
        meta = {
            "format": FORMAT_VERSION,
            "unit": self.name,
            "unit_version": self.version,
            "class": f"{type(self).__module__}:{type(self).__qualname__}",
            "config": self.get_params(),
            "classes": [str(c) for c in getattr(self, "classes_", None) or []],
            "model": model_meta,
            "training": getattr(self, "training_", None) or {},
            "files": {name: _sha256(path / name) for name in files},
            "libraries": library_versions(),
        }
        text = json.dumps(meta, indent=1, sort_keys=True, default=_json_default)
        (path / METADATA).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path, config: UnitConfig | Mapping[str, Any] | None = None) -> Self:
        """Build a fitted unit from a folder written by :meth:`save`.

        Args:
            folder: The model folder.
            config: The config to run with; None: the one the model was trained with.

        Returns:
            The fitted unit.

        Raises:
            ConfigError: See :class:`TrainableUnit`.
        """
        if config is None:
            config = read_metadata(folder).get("config", {})
        return cls(config, {"model": str(folder)})

    def _restore(self, folder: Path) -> None:
        meta = read_metadata(folder)
        if meta.get("unit") != self.name:
            raise ConfigError(
                f"Model artifact {folder} must belong to unit {self.name!r}. "
                f"Got one of unit {meta.get('unit')!r} instead."
            )
        trained = meta.get("config", {})
        current = self.get_params()
        for name in self.model_fields:
            if name in trained and trained[name] != current.get(name):
                raise ConfigError(
                    f"Config field {name!r} of unit {self.name!r} must match its model artifact "
                    f"({trained[name]!r}). Got {current.get(name)!r} instead."
                )
        for name, digest in meta.get("files", {}).items():
            if not (folder / name).is_file() or _sha256(folder / name) != digest:
                raise ConfigError(f"Model file {folder / name} is missing or altered.")
        if "classes_" in self.learned:
            self.classes_ = list(meta.get("classes", []))
        self.training_ = meta.get("training", {})
        self._load_model(folder, meta)

    # -- hooks --------------------------------------------------------------------------------

    @abstractmethod
    def _fit(self, X: Any, y: Any = None, **kwargs: Any) -> None:  # noqa: N803
        """Learn; set every attribute of ``learned``."""

    @abstractmethod
    def _save_model(self, folder: Path) -> dict[str, Any]:
        """Write the model file(s) into ``folder``; return extra JSON metadata for loading."""

    @abstractmethod
    def _load_model(self, folder: Path, meta: dict[str, Any]) -> None:
        """Set the learned attributes from ``folder`` and its metadata."""


def _json_default(value: Any) -> Any:
    """JSON for NumPy scalars and arrays in metadata."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def resolve_device(device: str) -> str:
    """The torch device for a config's ``device``.

    Args:
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns:
        ``"cuda"`` or ``"cpu"``.

    Raises:
        ConfigError: If ``"cuda"`` is asked for and none is available.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError('device must be "auto" or "cpu" on a machine without CUDA. Got "cuda".')
    return device


def _fold_batch_norms(module: Any) -> None:
    """Fold, in place, each ``BatchNorm`` that directly follows a convolution in a Sequential.

    Inside an ``nn.Sequential`` the order of the children is the data flow, so a convolution
    followed by a batch norm is exactly ``bn(conv(x))``: the pair becomes one convolution (and an
    ``Identity``). No tracing: ``torch.fx`` patches ``nn.Module.__call__`` process-wide while it
    traces, which broke every other thread's inference in the same process (issue 23, item 3).
    """
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    for child in module.children():
        _fold_batch_norms(child)
    if not isinstance(module, nn.Sequential):
        return
    names = list(module._modules)
    for first, second in itertools.pairwise(names):
        conv, norm = module._modules[first], module._modules[second]
        if isinstance(conv, convs) and isinstance(norm, norms) and norm.track_running_stats:
            module._modules[first] = fuse_conv_bn_eval(conv, norm)
            module._modules[second] = nn.Identity()


def inference_module(model: Any) -> Any:
    """A copy of a trained torch module laid out for fast inference; the original is untouched.

    Two rewrites that keep the outputs (to float rounding, about 1e-7):

    - each ``BatchNorm`` right after a convolution inside an ``nn.Sequential`` is folded into the
      convolution's weights, so inference does one pass over each feature map instead of two
      (pairs outside a Sequential, whose data flow only tracing could tell, keep their layers);
    - parameters in ``channels_last`` memory order, the layout oneDNN's and cuDNN's fastest
      convolution kernels work in (a NumPy ``(N, H, W, C)`` batch permuted to ``NCHW`` is
      already in that order, so the input needs no copy).

    On two CPU cores the nucleus U-Net runs 1.8x faster so (200 ms -> 111 ms per batch of
    four 256 px tiles). Nothing outside the copy is touched, so it is safe while other threads
    infer.

    Args:
        model: A module in eval mode.

    Returns:
        The module to call under ``torch.inference_mode()``.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(
        ...     torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()
        ... ).eval()
        >>> x = torch.rand(1, 3, 8, 8)
        >>> fast = inference_module(net)
        >>> bool(torch.allclose(fast(x), net(x), atol=1e-6))
        True
        >>> any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
        False
    """
    import copy

    import torch

    fast = copy.deepcopy(model)
    if not model.training:  # folding needs eval-mode statistics
        _fold_batch_norms(fast)
    return fast.to(memory_format=torch.channels_last)


#: Serialises building inference copies, so concurrent first calls build one copy, not several.
_BUILD_LOCK = threading.Lock()


def cached_inference_module(unit: Any) -> Any:
    """:func:`inference_module` of ``unit.model_``, built once per fitted model.

    Safe to call from several threads at once (a Serve replica infers in worker threads): the
    first caller builds the copy under a lock and the others get that same copy.

    Args:
        unit: A fitted unit whose ``model_`` is a torch module.

    Returns:
        The inference copy; rebuilt when ``model_`` has been replaced (a new fit or load) or
        changed in place (training steps bump the parameters' version counters).
    """

    def current() -> Any:
        model = unit.model_
        state = [t._version for t in (*model.parameters(), *model.buffers())]
        cached = unit.__dict__.get("_inference_cache")
        fresh = cached is not None and cached[0] is model and cached[1] == state
        return model, state, cached[2] if fresh else None

    model, state, fast = current()
    if fast is not None:
        return fast
    with _BUILD_LOCK:
        model, state, fast = current()  # another thread may have built it meanwhile
        if fast is None:
            fast = inference_module(model)
            unit.__dict__["_inference_cache"] = (model, state, fast)
    return fast


@contextmanager
def inference_context(unit: Any) -> Iterator[Any]:
    """The block a torch unit infers in: its inference module, no autograd, its ``precision``.

    Args:
        unit: A fitted torch unit (``model_``, ``config.precision`` and ``_device`` set).

    Yields:
        :func:`cached_inference_module` of the unit. Inside the block, ``bfloat16`` units
        autocast on their device, so outputs may be bfloat16: cast them with ``.float()``
        before ``.numpy()``.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> unit = SimpleNamespace(
        ...     model_=torch.nn.Linear(4, 2).eval(),
        ...     config=SimpleNamespace(precision="bfloat16"),
        ...     _device="cpu",
        ... )
        >>> with inference_context(unit) as model:
        ...     y = model(torch.ones(1, 4))
        >>> y.dtype, y.requires_grad
        (torch.bfloat16, False)
    """
    import torch

    model = cached_inference_module(unit)
    bfloat16 = unit.config.precision == "bfloat16"
    device = torch.device(unit._device).type
    with (
        torch.inference_mode(),
        torch.autocast(device, dtype=torch.bfloat16, enabled=bfloat16),
    ):
        yield model


def to_device(tensor: Any, device: str) -> Any:
    """A CPU batch on the unit's device for inference.

    A GPU gets it through pinned (page-locked) memory with a non-blocking copy, so the copy
    runs by DMA without a staging buffer; on a CPU the tensor is returned as it is.

    Args:
        tensor: A CPU tensor.
        device: ``"cpu"`` or ``"cuda"`` (as :func:`resolve_device` gives).

    Returns:
        The tensor on ``device``.

    Example:
        >>> import torch
        >>> x = torch.ones(2)
        >>> to_device(x, "cpu") is x
        True
    """
    import torch

    if torch.device(device).type == "cpu":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


#: Bytes of the widest feature map one forward pass on a CPU may hold. A pass larger than the
#: CPU's caches is slower per tile, not faster: the nucleus U-Net (16 channels at 256 px, 4 MiB of
#: float32 per tile) took 18-20 ms per tile one tile per pass, 26-28 ms four per pass and 32 ms
#: eight per pass on two threads (37, 53 and 60 ms on one thread; a Xeon with AMX); in
#: bfloat16 two per pass were fastest.
CPU_PASS_BYTES = 4 * 2**20


def forward_pass_size(unit: Any, item_values: int, batch: int, override: int | None = None) -> int:
    """Items per forward pass of a torch unit's inference.

    A GPU takes the whole batch in one pass; a CPU takes as many items as keep the widest
    feature map within :data:`CPU_PASS_BYTES` (float32: 4 bytes a value; bfloat16: 2).

    Args:
        unit: A torch unit (``config.precision`` and ``_device`` set).
        item_values: Values of one item's widest feature map (``height * width * channels``).
        batch: Items in the call.
        override: The unit's explicit choice, if any (wins on every device).

    Returns:
        Between 1 and ``max(batch, 1)``.

    Example:
        >>> from types import SimpleNamespace
        >>> unit = SimpleNamespace(config=SimpleNamespace(precision="float32"), _device="cpu")
        >>> forward_pass_size(unit, 256 * 256 * 16, batch=8)
        1
        >>> forward_pass_size(unit, 64 * 64 * 16, batch=8)
        8
        >>> unit.config.precision = "bfloat16"
        >>> forward_pass_size(unit, 256 * 256 * 16, batch=8)
        2
    """
    import torch

    batch = max(int(batch), 1)
    if override is not None:
        return min(max(int(override), 1), batch)
    if torch.device(unit._device).type != "cpu":
        return batch
    value_bytes = 2 if unit.config.precision == "bfloat16" else 4
    return min(max(CPU_PASS_BYTES // max(item_values * value_bytes, 1), 1), batch)


@contextmanager
def seeded_torch(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator inside the block and restore the global state after it.

    Args:
        seed: The seed.

    Yields:
        Nothing; model weights created inside the block depend only on ``seed``.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def train_torch(
    model: Any,
    next_batch: Callable[[int], tuple[Any, ...]],
    loss_fn: Callable[..., Any],
    *,
    iterations: int,
    lr: float,
    device: str,
) -> list[float]:
    """Train a torch module with Adam for a number of iterations.

    Args:
        model: The ``torch.nn.Module`` (already on ``device``).
        next_batch: ``iteration -> (inputs, *targets)`` as CPU tensors (seeded by the caller).
        loss_fn: ``(outputs, *targets) -> scalar loss``.
        iterations: Optimiser steps.
        lr: Learning rate.
        device: Where to compute.

    Returns:
        The loss of every iteration.
    """
    import torch

    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    history: list[float] = []
    for step in range(iterations):
        inputs, *targets = (t.to(device) for t in next_batch(step))
        optimiser.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), *targets)
        loss.backward()
        optimiser.step()
        history.append(float(loss.detach()))
    model.eval()
    return history
