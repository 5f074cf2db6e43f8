"""A small torch U-Net for nuclei: foreground and boundary maps, split into instances.

The network (:class:`UNet`: ``len(channels)`` levels, two 3x3 convolutions with batch norm per
level, max-pool down, transposed convolution up, skip connections) predicts two maps per pixel:
nucleus (foreground) and nucleus border. :class:`NucleusUNet` thresholds the foreground and
splits touching nuclei with the watershed of :mod:`pipelines.nuclei.segment` on
``foreground * (1 - border)`` (high in the middle of a nucleus, low between two), so it has the
inputs and outputs of :class:`~pipelines.nuclei.units.NucleusSegmentation`.

Training (``fit(images, labels)``) draws random crops, flips, 90-degree rotations and colour
augmentation (``colour="strong"``: HED jitter, eosin removal, hue, saturation, gamma, brightness,
contrast, blur and a zoom of +-20%, :mod:`pipelines.nuclei.augment`; ``"light"``: a small H&E
jitter) from a generator seeded by the config, so the same data, config and seed give the same
weights on a CPU. Label ``-1`` marks pixels whose truth is unknown (a partly outlined tile):
the loss ignores them. ``fit(..., sample_weight=w)`` draws tile ``i`` with probability
proportional to ``w[i]``; ``fit(..., warm_start=unit)`` starts from another fitted U-Net's weights
(same channels) instead of random ones.

Resolution: the network runs at ``work_mpp`` (None: the model artifact's when loading one, else
``mpp``); tiles arrive at ``mpp`` and are resized to ``work_mpp`` and back, so a model trained at
0.25 um/px serves a pipeline tiled at 0.5 um/px. With ``stain_normalise`` every tile is first
mapped to the reference stains (:mod:`pipelines.nuclei.stain`). ``split="seeds"`` separates
touching nuclei with one seed per core between the predicted borders
(:mod:`pipelines.nuclei.instances`) instead of the distance watershed.

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
from typing import Any, Literal

import numpy as np
from pydantic import Field
from skimage.segmentation import find_boundaries

from pathray.errors import ConfigError
from pathray.units.base import Batch, Resources
from pathray.units.trainable import (
    TorchConfig,
    TrainableUnit,
    forward_pass_size,
    inference_context,
    resolve_device,
    seeded_torch,
    to_device,
    train_torch,
)
from pipelines.nuclei.augment import (
    colour_augment,
    random_crop,
    random_dihedral,
    random_scale_crop,
    stain_jitter,
)
from pipelines.nuclei.instances import seeded_instances
from pipelines.nuclei.pixel_classifier import (
    SEGMENTATION_INPUTS,
    SEGMENTATION_OUTPUTS,
    LabelImageTraining,
    as_image_list,
    probability_to_instances,
    segment_params,
)
from pipelines.nuclei.resample import resize_image, resize_labels
from pipelines.nuclei.stain import normalise_stain


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
        augment: Flip, rotate and colour-augment the training crops.
        colour: Colour augmentation: ``"strong"`` (with a zoom) or ``"light"`` (H&E jitter).
        stain_normalise: Map every tile to the reference stains first (training and use).
        work_mpp: Resolution the network runs at (None: the loaded model's, else ``mpp``).
        split: How touching nuclei are separated: ``"watershed"`` (distance and the maps) or
            ``"seeds"`` (one seed per core between the predicted borders).
        threshold: Foreground probability above which a pixel is nucleus.
        infer_batch: Tiles per forward pass of inference (None: sized to the device by
            :func:`~pathray.units.trainable.forward_pass_size`: the whole call on a GPU, on a
            CPU as many as keep the first level's feature maps in its caches, one 256 px tile
            in float32). Training is not affected.
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
    colour: Literal["strong", "light"] = "strong"
    stain_normalise: bool = False
    work_mpp: float | None = Field(None, gt=0)
    split: Literal["watershed", "seeds"] = "watershed"
    threshold: float = Field(0.5, gt=0, lt=1)
    infer_batch: int | None = Field(None, ge=1)
    params: dict[str, float] = Field(default_factory=dict)


class NucleusUNet(LabelImageTraining, TrainableUnit):
    """Nucleus instances from a small U-Net's foreground and border maps.

    ``fit(images, labels)`` takes tiles (``(N, H, W, 3)`` uint8 or a list of tiles) and their
    instance label images at the config's ``mpp`` (``-1``: unknown); the loss of every step is
    kept in ``loss_history_``.
    """

    name = "nucleus_unet"
    version = "1"
    role = "nucleus_segmentation"
    Config = UNetConfig
    inputs = SEGMENTATION_INPUTS
    outputs = SEGMENTATION_OUTPUTS
    # Half a GPU where the cluster has GPUs (two actors share one); none elsewhere.
    resources = Resources(num_cpus=1.0, num_gpus=0.5)
    batch_size = 8
    #: The model shipped with the unit (pipelines.nuclei.default_model.REFERENCE), bound by
    #: ``pathray pipelines infer`` when no other is given and registered on first use.
    bundled_model = "nuclei-default@champion"
    learned = ("model_",)
    model_fields = ("channels", "stain_normalise")

    @classmethod
    def install_bundled_model(cls, catalog: Any, cold_root: str | Path, name: str) -> bool:
        """Register the model shipped with this unit (``nuclei-default``) if ``name`` is it.

        Called by the engine when a pipeline names a model the catalog does not know.
        """
        from pipelines.nuclei.default_model import install

        return install(catalog, cold_root, name)

    def setup(self) -> None:
        """Resolve the device and the watershed parameters; load the model artifact if given."""
        self._params = segment_params(self.config.params)
        self._device = resolve_device(self.config.device)
        self._work_mpp = float(self.config.work_mpp or self.config.mpp)
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

        images = [self._prepare(image) for image in as_image_list(X)]
        labels = [np.asarray(lab) for lab in (y if y is not None else [])]
        if len(images) != len(labels) or not images:
            raise ConfigError(
                f"fit needs as many label images as tiles (at least one). "
                f"Got {len(images)} tiles and {len(labels)} label images instead."
            )
        # targets: nucleus, border, known (label -1: truth unknown, ignored by the loss)
        sized = [resize_labels(lab, im.shape[:2]) for lab, im in zip(labels, images, strict=True)]
        targets = [
            np.dstack([unet_targets(np.maximum(lab, 0)), lab >= 0]).astype(np.uint8)
            for lab in sized
        ]
        c = self.config
        rng = np.random.default_rng(c.seed)
        weights = kwargs.get("sample_weight")
        p = None if weights is None else np.asarray(weights, np.float64) / np.sum(weights)
        if p is not None and len(p) != len(images):
            raise ConfigError(
                f"sample_weight must have one weight per tile ({len(images)}). "
                f"Got {len(p)} instead."
            )

        def sample(k: int) -> tuple[np.ndarray, np.ndarray]:
            pair = [images[k], targets[k]]
            if not c.augment:
                image, target = random_crop(pair, c.crop_size, rng)
                return image, target
            if c.colour == "strong":
                image, target = random_scale_crop(pair, c.crop_size, rng)
            else:
                image, target = random_crop(pair, c.crop_size, rng)
            image, target = random_dihedral([image, target], rng)
            strong = c.colour == "strong"
            image = colour_augment(image, rng) if strong else stain_jitter(image, rng)
            return image, target

        def next_batch(step: int) -> tuple[Any, ...]:
            pairs = [sample(int(k)) for k in rng.choice(len(images), size=c.batch, p=p)]
            t = torch.from_numpy(np.stack([t for _, t in pairs])).permute(0, 3, 1, 2).float()
            return to_tensor(np.stack([x for x, _ in pairs])), t

        def loss_fn(logits: Any, target: Any) -> Any:
            known = target[:, 2]
            total = known.sum().clamp(min=1.0)
            bce = F.binary_cross_entropy_with_logits
            fg = (bce(logits[:, 0], target[:, 0], reduction="none") * known).sum() / total
            border = (bce(logits[:, 1], target[:, 1], reduction="none") * known).sum() / total
            prob = torch.sigmoid(logits[:, 0]) * known
            inter = (prob * target[:, 0]).sum()
            dice = 1 - (2 * inter + 1) / (prob.sum() + (target[:, 0] * known).sum() + 1)
            return fg + dice + c.border_weight * border

        start = time.perf_counter()
        model = self._new_model()
        warm = kwargs.get("warm_start")
        if warm is not None:  # fine-tune: start from another fitted U-Net's weights
            if not isinstance(warm, NucleusUNet) or not warm.is_fitted:
                raise ConfigError(
                    f"warm_start must be a fitted NucleusUNet. Got {type(warm).__name__} instead."
                )
            source: Any = getattr(warm, "model_")  # noqa: B009 - typed Any on purpose
            model.load_state_dict(source.state_dict())
        with seeded_torch(c.seed):
            history = train_torch(
                model, next_batch, loss_fn, iterations=c.iterations, lr=c.lr, device=self._device
            )
        self.model_ = model
        self.loss_history_ = history
        self.training_ = {
            "tiles": len(images),
            "work_mpp": self._work_mpp,
            "iterations": c.iterations,
            "final_loss": history[-1],
            "loss_history": [round(v, 6) for v in history],
            "seconds": round(time.perf_counter() - start, 3),
            "warm_start": None if warm is None else warm.training_,
            "device": self._device,
        }

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        """A tile at ``mpp`` as the network sees it: RGB at ``work_mpp``, stain-normalised."""
        rgb = resize_image(np.ascontiguousarray(np.asarray(image)[..., :3]), self._scale)
        return normalise_stain(rgb) if self.config.stain_normalise else rgb

    @property
    def _scale(self) -> float:
        """Size of a tile at ``work_mpp`` over its size at ``mpp``."""
        return float(self.config.mpp) / self._work_mpp

    def predict_maps(self, images: np.ndarray) -> np.ndarray:
        """Foreground and border probabilities of tiles already at ``work_mpp``.

        Args:
            images: ``(N, H, W, 3)`` uint8 RGB (stain-normalised when the config says so).

        Returns:
            ``(N, 2, H, W)`` float32.
        """
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
        values = images.shape[1] * images.shape[2] * self.config.channels[0]
        per_pass = forward_pass_size(self, values, n, self.config.infer_batch)
        with inference_context(self) as model:
            for i in range(0, n, per_pass):
                logits = model(to_device(to_tensor(images[i : i + per_pass]), self._device))
                prob = torch.sigmoid(logits.float())[:, :, :height, :width]
                out[i : i + per_pass] = prob.cpu().numpy()
        return out

    def __call__(self, batch: Batch) -> Batch:
        """Segment each tile into a label image."""
        self.check_fitted()
        images = batch["image"]
        tissue = batch.get("tissue")
        labels = np.zeros(images.shape[:3], np.int32)
        if len(images):
            maps = self.predict_maps(np.stack([self._prepare(image) for image in images]))
            for i in range(len(images)):
                fg, border = maps[i]
                mask = None if tissue is None else resize_labels(np.asarray(tissue[i]), fg.shape)
                found = self._instances(fg, border, mask)
                labels[i] = renumber(resize_labels(found, images.shape[1:3]))
        counts = labels.reshape(len(labels), -1).max(axis=1, initial=0).astype(np.int32)
        return {"nucleus_labels": labels, "nucleus_count": counts}

    def _instances(self, fg: np.ndarray, border: np.ndarray, tissue: np.ndarray | None) -> Any:
        """Instances of one tile's maps, at ``work_mpp``."""
        c = self.config
        if c.split == "seeds":
            return seeded_instances(
                fg,
                border,
                mpp=self._work_mpp,
                threshold=c.threshold,
                params=self._params,
                tissue=tissue,
            )
        return probability_to_instances(
            fg,
            mpp=self._work_mpp,
            threshold=c.threshold,
            params=self._params,
            tissue=tissue,
            split=fg * (1.0 - border),
        )

    def _save_model(self, folder: Path) -> dict[str, Any]:
        import torch

        state = {k: v.detach().cpu() for k, v in self.model_.state_dict().items()}
        torch.save(state, folder / "model.pt")
        return {
            "architecture": "unet",
            "channels": list(self.config.channels),
            "work_mpp": self._work_mpp,
        }

    def _load_model(self, folder: Path, meta: dict[str, Any]) -> None:
        import torch

        trained = float(meta.get("model", {}).get("work_mpp") or meta["config"]["mpp"])
        if self.config.work_mpp is None:
            self._work_mpp = trained
        elif abs(self.config.work_mpp - trained) > 1e-6 * trained:
            raise ConfigError(
                f"Config field 'work_mpp' of unit {self.name!r} must match its model artifact "
                f"({trained!r}) or be left out. Got {self.config.work_mpp!r} instead."
            )
        model = self._new_model()
        state = torch.load(folder / "model.pt", map_location=self._device, weights_only=True)
        model.load_state_dict(state)
        model.eval()
        self.model_ = model
        self.loss_history_ = list(self.training_.get("loss_history", []))


def renumber(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered ``1..N`` in label order (instances lost in a resize leave no gap)."""
    present = np.unique(labels)
    present = present[present > 0]
    if len(present) and present[-1] == len(present):
        return labels.astype(np.int32, copy=False)
    lut = np.zeros(int(labels.max(initial=0)) + 1, np.int32)
    lut[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    out: np.ndarray = lut[labels]
    return out
