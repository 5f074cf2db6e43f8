"""The shared base of the generic units that run one registered model (:class:`ModelUnit`).

``tile_classifier``, ``object_classifier``, ``crop_classifier`` and ``segmenter`` run any
registered model of their task. What they share lives here: which cards they accept (task,
format, card fields that must be given), loading the bound version's folder (checked against
its SHA-256, then the card checked again: the folder may hold a version the catalog's check never
saw), the card's class names and normalisation, and running rows through the model in chunks.
Each unit says only what it accepts, as class attributes::

    class TileClassifier(ModelUnit):
        tasks = ("tile_classification",)
        formats = ("torchscript", "onnx")
        required = ("input_size", "mpp", "class_names")

The same check runs at validation (:meth:`ModelUnit.check_model` on the catalog's version, so a
model that does not fit fails ``pathray pipelines infer --model`` and ``validate`` with exit 2)
and in :meth:`ModelUnit.setup` (on the card stored with the model file).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from pathray.errors import ConfigError
from pathray.models.card import ModelCard, Precision
from pathray.models.runtime import Predictor, TorchScriptPredictor, load_predictor
from pathray.units.base import Unit

if TYPE_CHECKING:
    from pathray.catalog.records import ModelVersion

#: Formats of the image models (pixels in, channels first).
IMAGE_FORMATS = ("torchscript", "onnx")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 1 (the classes), in float64 so each sums to 1 within float32 rounding."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True, initial=-np.inf)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class ModelUnit(Unit):
    """A unit that runs one registered model, bound by its node's ``model: name@version``.

    Subclasses set :attr:`tasks`, :attr:`formats` and :attr:`required`, and may override
    :meth:`setup_model` for what they derive from the card. After :meth:`setup` the instance has
    ``predictor``, ``card``, ``classes`` (the class names as an object array) and ``mean`` and
    ``std`` (the card's normalisation, shaped to broadcast over ``(C, H, W)``).
    """

    needs_model: ClassVar[bool] = True
    #: Card tasks the unit runs.
    tasks: ClassVar[tuple[str, ...]] = ()
    #: Model formats the unit runs.
    formats: ClassVar[tuple[str, ...]] = IMAGE_FORMATS
    #: Card fields that must be given (not empty).
    required: ClassVar[tuple[str, ...]] = ()

    predictor: Predictor
    card: ModelCard
    classes: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def check_card(cls, card: Mapping[str, Any], where: str) -> None:
        """Check that a card describes a model this unit can run.

        Args:
            card: The card as JSON data (empty for versions registered without one).
            where: The model version (``name@version``) or folder, for the message.

        Raises:
            ConfigError: No card, another task or format, or a required field missing; every
                problem is named.
        """
        if not card:
            raise ConfigError(
                f"{cls.name} needs a model with a model card. {where} has none; register it "
                "with 'pathray models register'."
            )
        problems = []
        task = card.get("task")
        if task not in cls.tasks:
            wanted = f"{cls.tasks[0]!r}" if len(cls.tasks) == 1 else f"one of {list(cls.tasks)}"
            problems.append(f"task must be {wanted} (got {task!r})")
        if card.get("format") not in cls.formats:
            problems.append(
                f"format must be one of {list(cls.formats)} (got {card.get('format')!r})"
            )
        problems += [f"{key} must be given" for key in cls.required if not card.get(key)]
        if problems:
            raise ConfigError(f"{cls.name} cannot run {where}: {'; '.join(problems)}.")

    @classmethod
    def check_model(cls, version: ModelVersion) -> None:
        """Accept only versions whose card fits the unit (see :meth:`check_card`).

        Raises:
            ConfigError: The version does not fit, with the reason.
        """
        cls.check_card(version.card, version.ref)

    def setup(self) -> None:
        """Load the bound model (checked against its SHA-256), check its card, keep it resident.

        Raises:
            ConfigError: No model bound, a card that does not fit, or a precision (the
                config's ``precision``, if it has one) the card does not allow.
        """
        folder = self.artifacts.get("model")
        if folder is None:
            raise ConfigError(
                f"{self.name} needs a model: give the node 'model: name@version'. Got none."
            )
        precision: Precision = getattr(self.config, "precision", "float32")
        self.predictor = load_predictor(folder, precision=precision)
        if isinstance(self.predictor, TorchScriptPredictor):
            # weights as constants, BatchNorm folded: 1.36x on a ResNet-18 on one CPU thread
            self.predictor.freeze()
        self.card = self.predictor.card
        self.check_card(self.card.to_json(), str(folder))
        self.classes = np.array(self.card.class_names, dtype=object)
        norm = self.card.normalisation
        self.mean = np.asarray(norm.mean if norm else (0.0,), np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(norm.std if norm else (1.0,), np.float32).reshape(-1, 1, 1)
        self.setup_model()

    def setup_model(self) -> None:
        """What a unit derives from its card once the model is loaded (``self.card``)."""

    def normalise(self, view: np.ndarray) -> np.ndarray:
        """An ``(H, W, C)`` uint8 image as the model reads it: ``[0, 1]``, normalised, CHW."""
        pixels = view.astype(np.float32).transpose(2, 0, 1) / 255.0
        out: np.ndarray = (pixels - self.mean) / self.std
        return out

    def normalise_batch(self, views: np.ndarray) -> np.ndarray:
        """``(N, H, W, C)`` uint8 images as the model reads them, in one multiply-add per value.

        Returns:
            ``(N, C, H, W)`` float32, a view of channels-last memory: the TorchScript runtime
            hands it to torch as it is, the ONNX runtime makes it contiguous.
        """
        gain = 1.0 / (255.0 * self.std.reshape(-1))
        offset = -self.mean.reshape(-1) / self.std.reshape(-1)
        pixels = views.astype(np.float32)
        pixels *= gain
        pixels += offset
        out: np.ndarray = pixels.transpose(0, 3, 1, 2)
        return out

    def predict_rows(
        self,
        rows: Sequence[Any] | np.ndarray,
        batch_size: int,
        prepare: Callable[[Any], np.ndarray] | None = None,
        prepare_chunk: Callable[[Any], np.ndarray] | None = None,
    ) -> np.ndarray:
        """The model's outputs for ``rows``, ``batch_size`` rows per call, as ``(n, k)`` float32.

        Args:
            rows: The rows (an array of model inputs, or items ``prepare`` turns into one).
            batch_size: Rows per model call.
            prepare: Turns one row into one model input; applied a chunk at a time, so only
                one chunk of prepared inputs is in memory at once.
            prepare_chunk: Turns a chunk of rows into the model's input at once (instead of
                ``prepare``), e.g. :meth:`normalise_batch` over stacked views.

        Returns:
            ``k`` values per row, ``k`` the number of class names (``(0, k)`` for no rows).
        """
        k = len(self.classes)
        scores = [np.empty((0, k), np.float32)]
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            if prepare_chunk is not None:
                x = prepare_chunk(chunk)
            elif prepare is not None:
                x = np.stack([prepare(row) for row in chunk])
            else:
                x = np.asarray(chunk)
            scores.append(np.asarray(self.predictor.predict(x), np.float32).reshape(len(x), k))
        return np.concatenate(scores)

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        """Class probabilities from ``(n, k)`` model outputs.

        The outputs as they are when the card's first output is ``probabilities``, else their
        softmax (they are logits).
        """
        return raw if self.card.outputs[:1] == ["probabilities"] else softmax(raw)


__all__ = ["IMAGE_FORMATS", "ModelUnit", "softmax"]
