"""A small torch U-Net for nuclei: foreground and boundary maps, split into instances.

The network (:class:`UNet`: ``len(channels)`` levels, two 3x3 convolutions with batch norm per
level, max-pool down, transposed convolution up, skip connections) predicts two maps per pixel:
nucleus (foreground) and nucleus border. :class:`NucleusUNet` thresholds the foreground and
splits touching nuclei with the watershed of :mod:`pipelines.nuclei.segment` on
``foreground * (1 - border)`` (high in the middle of a nucleus, low between two), so it has the
inputs and outputs of :class:`~pipelines.nuclei.units.NucleusSegmentation`.

Training (``fit(images, labels)``) draws random crops, flips, 90-degree rotations and H&E
stain, brightness and contrast jitter from a generator seeded by the config, so the same data,
config and seed give the same weights on a CPU.

Example:
    >>> import numpy as np
    >>> unit = NucleusUNet({"channels": (4, 8), "iterations": 1, "crop_size": 32})
    >>> images = np.full((1, 40, 40, 3), 230, np.uint8)
    >>> unit.fit(images, np.zeros((1, 40, 40), np.int32)).is_fitted
    True
    >>> unit({"image": images, "tissue": np.ones((1, 40, 40), bool)})["nucleus_count"].tolist()
    [0]
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from skimage.segmentation import find_boundaries

from pathray.errors import ConfigError
from pathray.units.base import Batch, Resources
from pathray.units.trainable import (
    TorchConfig,
    TrainableUnit,
    resolve_device,
    seeded_torch,
    train_torch,
)
from pipelines.nuclei.pixel_classifier import (
    SEGMENTATION_INPUTS,
    SEGMENTATION_OUTPUTS,
    LabelImageTraining,
    as_image_list,
    probability_to_instances,
    segment_params,
)
from pipelines.training_data import random_crop, random_dihedral, stain_jitter


def build_unet(channels: tuple[int, ...], in_channels: int = 3, out_channels: int = 2) -> Any:
    """A U-Net ``torch.nn.Module`` with ``len(channels)`` levels of the given widths.

    Args:
        channels: Feature channels per level, finest first.
        in_channels: Input channels.
        out_channels: Output maps (logits).

    Returns:
        The module; its input sides must be multiples of ``2 ** (len(channels) - 1)``.
    """
    import torch
    from torch import nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            widths = (in_channels, *channels)
            self.down = nn.ModuleList(block(a, b) for a, b in zip(widths, channels, strict=False))
            self.pool = nn.MaxPool2d(2)
            pairs = list(zip(channels[:0:-1], channels[-2::-1], strict=True))
            self.up = nn.ModuleList(nn.ConvTranspose2d(a, b, 2, stride=2) for a, b in pairs)
            self.merge = nn.ModuleList(block(2 * b, b) for _, b in pairs)
            self.head = nn.Conv2d(channels[0], out_channels, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, layer in enumerate(self.down):
                x = layer(x if i == 0 else self.pool(x))
                skips.append(x)
            for up, merge, skip in zip(self.up, self.merge, skips[-2::-1], strict=True):
                x = merge(torch.cat([up(x), skip], dim=1))
            out: torch.Tensor = self.head(x)
            return out

    return UNet()


def unet_targets(labels: np.ndarray) -> np.ndarray:
    """``(H, W, 2)`` uint8 training targets of an instance label image: nucleus, border."""
    labels = np.asarray(labels)
    fg = labels > 0
    border = find_boundaries(labels, mode="inner") & fg
    return np.stack([fg, border], axis=-1).astype(np.uint8)


def to_tensor(images: np.ndarray) -> Any:
    """``(N, H, W, 3)`` uint8 -> ``(N, 3, H, W)`` float32 tensor centred on 0."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 255.0 - 0.5


class UNetConfig(TorchConfig):
    """Config of :class:`NucleusUNet`.

    Attributes:
        mpp: Resolution the unit works at.
        channels: Feature channels per level (finest first).
        iterations: Training steps.
        batch: Crops per training step.
        crop_size: Edge of the training crops (a multiple of ``2 ** (levels - 1)``).
        lr: Adam learning rate.
        border_weight: Weight of the border term of the loss.
        augment: Flip, rotate and stain-jitter the training crops.
        threshold: Foreground probability above which a pixel is nucleus.
        params: Overrides of :class:`pipelines.nuclei.segment.SegmentParams`.
    """

    mpp: float = Field(0.5, gt=0)
    channels: tuple[int, ...] = Field((16, 32, 64), min_length=2, max_length=5)
    iterations: int = Field(300, ge=1)
    batch: int = Field(8, ge=1)
    crop_size: int = Field(128, ge=16)
    lr: float = Field(2e-3, gt=0)
    border_weight: float = Field(1.0, ge=0)
    augment: bool = True
    threshold: float = Field(0.5, gt=0, lt=1)
    params: dict[str, float] = Field(default_factory=dict)


class NucleusUNet(LabelImageTraining, TrainableUnit):
    """Nucleus instances from a small U-Net's foreground and border maps.

    ``fit(images, labels)`` takes tiles (``(N, H, W, 3)`` uint8 or a list of tiles) and their
    instance label images at the config's ``mpp``; the loss of every step is kept in
    ``loss_history_``.
    """

    name = "nucleus_unet"
    version = "1"
    role = "nucleus_segmentation"
    Config = UNetConfig
    inputs = SEGMENTATION_INPUTS
    outputs = SEGMENTATION_OUTPUTS
    resources = Resources(num_cpus=1.0, num_gpus=0.0)
    batch_size = 8
    learned = ("model_",)
    model_fields = ("channels", "mpp")

    def setup(self) -> None:
        """Resolve the device and the watershed parameters; load the model artifact if given."""
        self._params = segment_params(self.config.params)
        self._device = resolve_device(self.config.device)
        if self.config.crop_size % 2 ** (len(self.config.channels) - 1):
            raise ConfigError(
                f"crop_size must be a multiple of {2 ** (len(self.config.channels) - 1)}. "
                f"Got {self.config.crop_size} instead."
            )
        super().setup()

    def _new_model(self) -> Any:
        with seeded_torch(self.config.seed):
            return build_unet(tuple(self.config.channels)).to(self._device)

    def _fit(self, X: Any, y: Any = None, **kwargs: Any) -> None:  # noqa: N803
        import torch
        import torch.nn.functional as F  # noqa: N812

        images = as_image_list(X)
        targets = [unet_targets(lab) for lab in (y if y is not None else [])]
        if len(images) != len(targets) or not images:
            raise ConfigError(
                f"fit needs as many label images as tiles (at least one). "
                f"Got {len(images)} tiles and {len(targets)} label images instead."
            )
        c = self.config
        rng = np.random.default_rng(c.seed)

        def next_batch(step: int) -> tuple[Any, ...]:
            xs, ts = [], []
            for k in rng.integers(len(images), size=c.batch):
                image, target = random_crop([images[k][..., :3], targets[k]], c.crop_size, rng)
                if c.augment:
                    image, target = random_dihedral([image, target], rng)
                    image = stain_jitter(image, rng)
                xs.append(image)
                ts.append(target)
            t = torch.from_numpy(np.stack(ts)).permute(0, 3, 1, 2).float()
            return to_tensor(np.stack(xs)), t

        def loss_fn(logits: Any, target: Any) -> Any:
            fg = F.binary_cross_entropy_with_logits(logits[:, 0], target[:, 0])
            border = F.binary_cross_entropy_with_logits(logits[:, 1], target[:, 1])
            prob = torch.sigmoid(logits[:, 0])
            inter = (prob * target[:, 0]).sum()
            dice = 1 - (2 * inter + 1) / (prob.sum() + target[:, 0].sum() + 1)
            return fg + dice + c.border_weight * border

        start = time.perf_counter()
        model = self._new_model()
        with seeded_torch(c.seed):
            history = train_torch(
                model, next_batch, loss_fn, iterations=c.iterations, lr=c.lr, device=self._device
            )
        self.model_ = model
        self.loss_history_ = history
        self.training_ = {
            "tiles": len(images),
            "iterations": c.iterations,
            "final_loss": history[-1],
            "loss_history": [round(v, 6) for v in history],
            "seconds": round(time.perf_counter() - start, 3),
            "device": self._device,
        }

    def predict_maps(self, images: np.ndarray) -> np.ndarray:
        """Foreground and border probabilities, ``(N, 2, H, W)`` float32."""
        import torch

        self.check_fitted()
        images = np.asarray(images)[..., :3]
        n, height, width = images.shape[:3]
        step = 2 ** (len(self.config.channels) - 1)
        pad_y, pad_x = -height % step, -width % step
        if pad_y or pad_x:
            widths = ((0, 0), (0, pad_y), (0, pad_x), (0, 0))
            if min(height, width) > max(pad_y, pad_x):
                images = np.pad(images, widths, mode="reflect")
            else:
                images = np.pad(images, widths, mode="edge")
        out = np.zeros((n, 2, height, width), np.float32)
        with torch.inference_mode():
            for i in range(0, n, 4):
                logits = self.model_(to_tensor(images[i : i + 4]).to(self._device))
                prob = torch.sigmoid(logits)[:, :, :height, :width]
                out[i : i + 4] = prob.cpu().numpy()
        return out

    def __call__(self, batch: Batch) -> Batch:
        """Segment each tile into a label image."""
        self.check_fitted()
        images = batch["image"]
        tissue = batch.get("tissue")
        labels = np.zeros(images.shape[:3], np.int32)
        if len(images):
            maps = self.predict_maps(images)
            for i in range(len(images)):
                fg, border = maps[i]
                labels[i] = probability_to_instances(
                    fg,
                    mpp=self.config.mpp,
                    threshold=self.config.threshold,
                    params=self._params,
                    tissue=None if tissue is None else tissue[i],
                    split=fg * (1.0 - border),
                )
        counts = labels.reshape(len(labels), -1).max(axis=1, initial=0).astype(np.int32)
        return {"nucleus_labels": labels, "nucleus_count": counts}

    def _save_model(self, folder: Path) -> dict[str, Any]:
        import torch

        state = {k: v.detach().cpu() for k, v in self.model_.state_dict().items()}
        torch.save(state, folder / "model.pt")
        return {"architecture": "unet", "channels": list(self.config.channels)}

    def _load_model(self, folder: Path, meta: dict[str, Any]) -> None:
        import torch

        model = self._new_model()
        state = torch.load(folder / "model.pt", map_location=self._device, weights_only=True)
        model.load_state_dict(state)
        model.eval()
        self.model_ = model
        self.loss_history_ = list(self.training_.get("loss_history", []))
