"""Tiny example models in every safe format, built in a second with fixed seeds.

For tests, the conformance suite and the docs: a small tile classifier saved the way WSInfer
ships models (a folder with ``config.json`` and a TorchScript file), its ONNX export, and tiny
scikit-learn (skops) and XGBoost (JSON/UBJ) classifiers. Nothing is downloaded.

Example:
    >>> folder = write_wsinfer_folder(tmp_path / "tils")  # doctest: +SKIP
    >>> sorted(p.name for p in folder.iterdir())  # doctest: +SKIP
    ['config.json', 'torchscript_model.pt']
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Class names of the example tile classifier.
CLASSES = ("benign", "tumour")
#: Per-channel normalisation of the example tile classifier (ImageNet's).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def tile_net(classes: int = len(CLASSES), seed: int = 0) -> Any:
    """A small CNN tile classifier (logits out) that accepts any input size.

    Args:
        classes: Number of output classes.
        seed: Seed of the weights.
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, classes),
    ).eval()


def flat_net(size: int, classes: int = len(CLASSES), seed: int = 0) -> Any:
    """A classifier that accepts only ``size`` x ``size`` inputs (a linear layer on the pixels)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, classes)).eval()


def nucleus_net(threshold: float = 0.5, gain: float = 20.0) -> Any:
    """A fixed semantic segmenter: logits of ``background`` and ``nucleus`` per pixel.

    A pixel is nucleus when its mean intensity (pixels in ``[0, 1]``) is under ``threshold``:
    haematoxylin-dark nuclei on paler cytoplasm. One 1x1 convolution, no training.
    """
    import torch
    from torch import nn

    conv = nn.Conv2d(3, 2, 1)
    assert conv.bias is not None  # Conv2d has one unless bias=False
    with torch.no_grad():
        conv.weight[:] = torch.tensor([[gain / 3] * 3, [-gain / 3] * 3]).reshape(2, 3, 1, 1)
        conv.bias[:] = torch.tensor([-gain * threshold, gain * threshold])
    return conv.eval()


def save_torchscript(module: Any, path: str | Path, size: int) -> Path:
    """Trace a module on one ``size`` x ``size`` image and save it as TorchScript."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    traced = torch.jit.trace(module, torch.zeros(1, 3, size, size))
    torch.jit.save(traced, str(path))
    return path


def save_onnx(module: Any, path: str | Path, size: int) -> Path:
    """Export a module to ONNX with a dynamic batch axis (input ``input``, output ``logits``).

    Uses the TorchScript-based exporter (``dynamo=False``): it needs no network and takes
    under a second, against about six for the dynamo exporter on the same tiny net.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        module,
        (torch.zeros(1, 3, size, size),),
        str(path),
        dynamo=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    return path


def wsinfer_config(
    classes: Sequence[str] = CLASSES, patch: int = 64, size: int = 32, spacing: float = 0.5
) -> dict[str, Any]:
    """A WSInfer model config (spec 1.0): ``patch`` px at ``spacing`` um/px, resized to ``size``."""
    return {
        "spec_version": "1.0",
        "architecture": "tiny-cnn",
        "num_classes": len(classes),
        "class_names": list(classes),
        "patch_size_pixels": patch,
        "spacing_um_px": spacing,
        "transform": [
            {"name": "Resize", "arguments": {"size": size}},
            {"name": "ToTensor"},
            {"name": "Normalize", "arguments": {"mean": list(MEAN), "std": list(STD)}},
        ],
    }


def write_wsinfer_folder(
    folder: str | Path, *, patch: int = 64, size: int = 32, spacing: float = 0.5, seed: int = 0
) -> Path:
    """Write a WSInfer-style model folder: ``config.json`` and ``torchscript_model.pt``.

    Args:
        folder: Where to write it.
        patch: Patch edge WSInfer reads, in pixels at ``spacing``.
        size: Edge the patch is resized to (the model's input).
        spacing: Resolution of the patch in um/px.
        seed: Seed of the weights.
    """
    folder = Path(folder)
    save_torchscript(tile_net(seed=seed), folder / "torchscript_model.pt", size)
    config = wsinfer_config(patch=patch, size=size, spacing=spacing)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def tile_card(fmt: str, file: str, size: int = 32, mpp: float = 1.0) -> dict[str, Any]:
    """A native card for the example tile classifier."""
    return {
        "task": "tile_classification",
        "format": fmt,
        "file": file,
        "input_size": [size, size],
        "mpp": mpp,
        "normalisation": {"mean": list(MEAN), "std": list(STD)},
        "class_names": list(CLASSES),
        "outputs": ["logits"],
        "resources": {"cpus": 1, "gpus": 0.25, "memory_mb": 512},
        "precision": ["float32", "bfloat16"],
        "licence": "CC0-1.0",
        "source": "pathray.models.examples",
    }


def segmentation_card(fmt: str, file: str, size: int = 256, mpp: float = 0.5) -> dict[str, Any]:
    """A native card for :func:`nucleus_net` (semantic segmentation, logits)."""
    return {
        "task": "semantic_segmentation",
        "format": fmt,
        "file": file,
        "input_size": [size, size],
        "mpp": mpp,
        "class_names": ["background", "nucleus"],
        "outputs": ["logits"],
        "licence": "CC0-1.0",
        "source": "pathray.models.examples",
    }


def colour_net(colours: Sequence[Sequence[int]], window: int = 16, gain: float = 10.0) -> Any:
    """A fixed classifier of the colour at the centre of its input (for crop tests).

    Class ``k``'s logit is ``-gain`` times the squared distance between the mean of the centred
    ``window`` x ``window`` pixels and ``colours[k]`` (RGB 0-255, normalised as
    :func:`crop_card` says), so a nucleus of colour ``k`` comes out as class ``k`` only when
    its crop is centred on it. No training.
    """
    import torch
    from torch import nn

    prototypes = (
        torch.tensor([list(c) for c in colours], dtype=torch.float32) / 255 - torch.tensor(MEAN)
    ) / (torch.tensor(STD))

    class CentreColour(nn.Module):
        prototypes: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("prototypes", prototypes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            top, left = x.shape[-2] // 2 - window // 2, x.shape[-1] // 2 - window // 2
            centre = x[:, :, top : top + window, left : left + window].mean(dim=(2, 3))
            distance = ((centre[:, None, :] - self.prototypes[None]) ** 2).sum(-1)
            return -gain * distance

    return CentreColour().eval()


def crop_net(classes: int = len(CLASSES), seed: int = 0) -> Any:
    """A small, cheap crop classifier (logits out): 8x average pooling, then :func:`tile_net`.

    The pooling keeps a forward pass on 224 px crops to a few thousand operations per crop, so
    thousands of nuclei run in seconds on two CPUs.
    """
    from torch import nn

    return nn.Sequential(nn.AvgPool2d(8), *tile_net(classes, seed)).eval()


def crop_card(
    fmt: str, file: str, classes: Sequence[str] = CLASSES, size: int = 224
) -> dict[str, Any]:
    """A native card for a nucleus crop classifier reading ``size`` px RGB crops."""
    return {
        "task": "object_classification",
        "format": fmt,
        "file": file,
        "input_size": [size, size],
        "normalisation": {"mean": list(MEAN), "std": list(STD)},
        "class_names": list(classes),
        "outputs": ["logits"],
        "licence": "CC0-1.0",
        "source": "pathray.models.examples",
    }


def _features(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def write_skops(path: str | Path, seed: int = 0) -> Path:
    """A small scikit-learn logistic regression on 4 features, saved with skops."""
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    path = Path(path)
    sio.dump(LogisticRegression().fit(*_features(seed)), path)
    return path


def write_xgboost(path: str | Path, seed: int = 0) -> Path:
    """A small XGBoost binary classifier on 4 features (JSON or UBJ by the path's suffix)."""
    import xgboost as xgb

    path = Path(path)
    x, y = _features(seed)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2, "seed": seed},
        xgb.DMatrix(x, label=y),
        num_boost_round=3,
    )
    booster.save_model(str(path))
    return path


def feature_card(fmt: str, file: str) -> dict[str, Any]:
    """A native card for the example feature classifiers (skops, XGBoost)."""
    return {
        "task": "object_classification",
        "format": fmt,
        "file": file,
        "class_names": ["negative", "positive"],
        "outputs": ["probabilities"],
    }


__all__ = [
    "CLASSES",
    "MEAN",
    "STD",
    "colour_net",
    "crop_card",
    "crop_net",
    "feature_card",
    "flat_net",
    "nucleus_net",
    "save_onnx",
    "save_torchscript",
    "segmentation_card",
    "tile_card",
    "tile_net",
    "write_skops",
    "write_wsinfer_folder",
    "write_xgboost",
    "wsinfer_config",
]
