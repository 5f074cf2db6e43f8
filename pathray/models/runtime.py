"""Loading a model version's folder into a :class:`Predictor`, whatever its format.

Every loader first checks the model file against the SHA-256 recorded in the folder, then keeps
the model resident: TorchScript on torch (CUDA when available, else CPU; autocast when the
caller asks for a precision the card allows), ONNX on onnxruntime (CUDAExecutionProvider when
available, else CPU), scikit-learn from skops (only types skops trusts) and XGBoost boosters.

Example:
    >>> predictor = load_predictor("/cold/artifacts/unpacked/<digest>")  # doctest: +SKIP
    >>> predictor.predict(tiles).shape  # doctest: +SKIP
    (16, 2)
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from pathray.errors import ConfigError, ModelFileError
from pathray.models.card import ModelCard, Precision
from pathray.models.folder import read_model_folder


class Predictor(ABC):
    """A loaded model: ``predict`` maps a batch of inputs to a batch of outputs.

    Args:
        path: The model file (already checked against its SHA-256).
        card: Its card.
    """

    def __init__(self, path: Path, card: ModelCard) -> None:
        self.path = path
        self.card = card

    @abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Outputs for a batch (first axis: rows), as a NumPy array."""

    @abstractmethod
    def sample_input(self) -> np.ndarray:
        """One row of zeros shaped as the model reads it (batch axis included)."""


def _image_input(card: ModelCard) -> np.ndarray:
    if card.input_size is None:
        raise ConfigError(
            f"A {card.format} model's card must give input_size (height, width). Got none."
        )
    channels = len(card.normalisation.mean) if card.normalisation else 3
    return np.zeros((1, channels, *card.input_size), np.float32)


def _broken(path: Path, exc: Exception) -> ModelFileError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelFileError(
        f"Model file {path} cannot be loaded: it is corrupt or truncated ({first})."
    )


class TorchScriptPredictor(Predictor):
    """A TorchScript module on CUDA when available (else CPU), loaded once.

    Args:
        path: The ``.pt`` file.
        card: Its card.
        precision: Arithmetic to run in; one of the card's ``precision``.
        device: ``"cuda"`` or ``"cpu"``; None picks CUDA when available.
    """

    def __init__(
        self,
        path: Path,
        card: ModelCard,
        precision: Precision = "float32",
        device: str | None = None,
    ) -> None:
        import torch

        super().__init__(path, card)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.precision = precision
        try:
            self.module = torch.jit.load(str(path), map_location=self.device).eval()
        except (RuntimeError, ValueError) as exc:
            raise _broken(path, exc) from None

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Run the module on a ``(N, C, H, W)`` batch; returns float32 outputs."""
        import torch

        array = np.asarray(x, np.float32)
        # An image batch laid out NHWC in memory (a transposed view) stays so: channels_last
        # convolutions are faster on CPUs and GPUs, and the values are the same.
        if not (array.ndim == 4 and array.transpose(0, 2, 3, 1).flags.c_contiguous):
            array = np.ascontiguousarray(array)
        tensor = torch.from_numpy(array).to(self.device)
        autocast: Any = contextlib.nullcontext()
        if self.precision != "float32":
            dtype = getattr(torch, self.precision)
            autocast = torch.autocast(self.device.type, dtype=dtype)
        with torch.inference_mode(), autocast:
            out = self.module(tensor)
        return out.float().cpu().numpy()

    def freeze(self) -> bool:
        """Freeze the module for inference (same float32 arithmetic, equal up to rounding).

        Weights become constants and BatchNorm folds into the convolution before it.

        Returns:
            True if frozen; False where TorchScript cannot freeze the module (it is kept).
        """
        import torch

        try:
            self.module = torch.jit.freeze(self.module)
        except (RuntimeError, AttributeError):  # e.g. a module whose forward mutates state
            return False
        return True

    def sample_input(self) -> np.ndarray:
        """One image of the card's input size."""
        return _image_input(self.card)


class OnnxPredictor(Predictor):
    """An ONNX graph on onnxruntime: CUDAExecutionProvider when available, else CPU."""

    def __init__(self, path: Path, card: ModelCard) -> None:
        import onnxruntime as ort

        super().__init__(path, card)
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider",) if p in available]
        providers.append("CPUExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no warnings on every load
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise _broken(path, exc) from None
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Run the graph's first output for a ``(N, C, H, W)`` batch."""
        feed = {self.input_name: np.ascontiguousarray(x, np.float32)}
        return np.asarray(self.session.run(None, feed)[0])

    def sample_input(self) -> np.ndarray:
        """One image of the card's input size."""
        return _image_input(self.card)


class SkopsPredictor(Predictor):
    """A scikit-learn estimator from a skops file, refused when it holds untrusted types."""

    def __init__(self, path: Path, card: ModelCard) -> None:
        import skops.io as sio

        super().__init__(path, card)
        try:
            untrusted = sio.get_untrusted_types(file=path)
            if untrusted:
                raise ModelFileError(
                    f"A skops model must hold only types skops trusts. Got {untrusted} in {path}."
                )
            self.estimator = sio.load(path, trusted=None)
        except ModelFileError:
            raise
        except Exception as exc:  # skops raises assorted errors for damaged archives
            raise _broken(path, exc) from None

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``predict_proba`` where the estimator has it, else ``predict``."""
        method = getattr(self.estimator, "predict_proba", None) or self.estimator.predict
        return np.asarray(method(x))

    def sample_input(self) -> np.ndarray:
        """One row of the estimator's features."""
        return np.zeros((1, int(getattr(self.estimator, "n_features_in_", 1))), np.float32)


class XGBoostPredictor(Predictor):
    """An XGBoost booster from its JSON or UBJSON file."""

    def __init__(self, path: Path, card: ModelCard) -> None:
        import xgboost as xgb

        super().__init__(path, card)
        try:
            self.booster = xgb.Booster(model_file=str(path))
        except xgb.core.XGBoostError as exc:
            raise _broken(path, exc) from None

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The booster's predictions; a binary model's as two columns, P(0) and P(1)."""
        import xgboost as xgb

        out = np.asarray(self.booster.predict(xgb.DMatrix(x)))
        if out.ndim == 1 and len(self.card.class_names) == 2:  # binary: P(class 1) only
            out = np.stack([1 - out, out], axis=1)
        return out

    def sample_input(self) -> np.ndarray:
        """One row of the booster's features."""
        return np.zeros((1, self.booster.num_features()), np.float32)


def load_predictor(
    folder: str | Path, *, precision: Precision = "float32", device: str | None = None
) -> Predictor:
    """Check a version folder's file against its SHA-256 and load it.

    Args:
        folder: A version's folder (``artifacts["model"]`` of a unit).
        precision: Arithmetic for TorchScript models; must be one the card allows.
        device: Device for TorchScript models; None picks CUDA when available.

    Raises:
        NotFoundError: The folder, card or file is missing.
        ModelFileError: The file was changed, is corrupt or holds untrusted types.
        ConfigError: The precision is not one the card allows.
    """
    path, card = read_model_folder(folder)
    if precision not in card.precision:
        raise ConfigError(
            f"precision must be one of the card's {card.precision}. Got {precision!r} instead."
        )
    if card.format == "torchscript":
        return TorchScriptPredictor(path, card, precision, device)
    if card.format == "onnx":
        return OnnxPredictor(path, card)
    if card.format == "skops":
        return SkopsPredictor(path, card)
    return XGBoostPredictor(path, card)


def check_against_card(predictor: Predictor) -> None:
    """Run one row of zeros through the model and check the output against the card.

    Raises:
        ModelFileError: The model fails on the card's input size, its class dimension
            differs from the number of class names, or a feature model reads another number
            of columns than the card's ``features``.
        ConfigError: An image model's card has no input size.
    """
    card = predictor.card
    sample = predictor.sample_input()
    features = len(card.features)
    if features and not card.input_size and sample.shape[1] != features:
        raise ModelFileError(
            f"Model {card.file} must read one column per card feature ({features}: "
            f"{card.features}). It reads {sample.shape[1]} instead."
        )
    try:
        out = predictor.predict(sample)
    except Exception as exc:  # whatever the runtime raises, the cause is the shape
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(
            f"Model {card.file} must accept input of shape {list(sample.shape)} (from its card). "
            f"It failed: {first}"
        ) from None
    classes = len(card.class_names)
    if classes and (out.ndim < 2 or out.shape[1] != classes):
        got = out.shape[1] if out.ndim >= 2 else 1
        raise ModelFileError(
            f"Model {card.file} must output one value per class name ({classes}: "
            f"{card.class_names}). Got {got} (output shape {list(out.shape)}) instead."
        )


__all__ = [
    "OnnxPredictor",
    "Predictor",
    "SkopsPredictor",
    "TorchScriptPredictor",
    "XGBoostPredictor",
    "check_against_card",
    "load_predictor",
]
