"""A trainable nucleus pixel classifier (ilastik / QuPath style) and shared post-processing.

:func:`pixel_features` stacks multi-scale filter responses of a tile (Gaussian, gradient
magnitude, Laplacian of Gaussian, difference of Gaussians and the two structure-tensor
eigenvalues, on the haematoxylin and eosin densities and on R, G and B, at sigmas given in
microns) plus the haematoxylin contrast above its local background. A random forest or an
XGBoost model maps them to a nucleus probability per pixel; :func:`probability_to_instances`
thresholds it and splits touching nuclei with the watershed of
:mod:`pipelines.nuclei.segment`, so :class:`NucleusPixelClassifier` has the inputs and outputs
of :class:`~pipelines.nuclei.units.NucleusSegmentation` and replaces it in a pipeline.

Example:
    >>> from pipelines.training_data import synthetic_tiles
    >>> images, labels, _ = synthetic_tiles(2, 96, mpp=0.5, seed=0)  # doctest: +SKIP
    >>> unit = NucleusPixelClassifier({"n_estimators": 10}).fit(images, labels)  # doctest: +SKIP
    >>> unit({"image": images, "tissue": labels >= 0})["nucleus_labels"].shape  # doctest: +SKIP
    (2, 96, 96)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field

from pathray.errors import ConfigError
from pathray.units.base import Batch, Column, Resources
from pathray.units.trainable import TrainableConfig, TrainableUnit
from pipelines.nuclei.segment import (
    SegmentParams,
    fill_holes,
    filter_and_renumber,
    local_contrast,
    split_instances,
    stain_densities,
)

#: Inputs and outputs of every nucleus segmenter (those of ``NucleusSegmentation``).
SEGMENTATION_INPUTS = (
    Column("image", "uint8", (None, None, 3)),
    Column("tissue", "bool", (None, None)),
)
SEGMENTATION_OUTPUTS = (
    Column("nucleus_labels", "int32", (None, None), stored=False, description="instances"),
    Column("nucleus_count", "int32", description="nuclei found in the tile"),
)


def _gauss(channel: np.ndarray, sigma: float) -> np.ndarray:
    out: np.ndarray = cv2.GaussianBlur(channel, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return out


def pixel_features(image: np.ndarray, *, mpp: float, sigmas_um: Sequence[float]) -> np.ndarray:
    """Multi-scale filter features of every pixel of a tile.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        mpp: Microns per pixel (sigmas are converted to pixels with it).
        sigmas_um: Filter scales in microns.

    Returns:
        ``(H, W, F)`` float32 with ``F = 5 * (1 + 6 * len(sigmas_um)) + 1``.
    """
    densities = stain_densities(image[..., :3])
    channels = [densities[..., 0], densities[..., 1]]
    channels += [image[..., c].astype(np.float32) / 255.0 for c in range(3)]
    out: list[np.ndarray] = []
    for channel in channels:
        channel = np.ascontiguousarray(channel, np.float32)
        out.append(channel)
        for sigma_um in sigmas_um:
            sigma = max(sigma_um / mpp, 0.3)
            g = _gauss(channel, sigma)
            gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT) / 8
            gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT) / 8
            log = cv2.Laplacian(g, cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REFLECT)
            dog = g - _gauss(channel, 1.6 * sigma)
            sxx, syy, sxy = (_gauss(a, sigma) for a in (gx * gx, gy * gy, gx * gy))
            half, root = (sxx + syy) / 2, np.sqrt(((sxx - syy) / 2) ** 2 + sxy**2)
            out += [
                g,
                np.sqrt(gx * gx + gy * gy),
                log * sigma * sigma,
                dog,
                half + root,
                half - root,
            ]
    out.append(local_contrast(_gauss(channels[0], max(0.5 / mpp, 0.3)), mpp=mpp, radius_um=5.0))
    return np.stack(out, axis=-1).astype(np.float32, copy=False)


def probability_to_instances(
    probability: np.ndarray,
    *,
    mpp: float,
    threshold: float,
    params: SegmentParams,
    tissue: np.ndarray | None = None,
    split: np.ndarray | None = None,
) -> np.ndarray:
    """Turn a nucleus probability map into instances (threshold, clean-up, watershed).

    Args:
        probability: ``(H, W)`` nucleus probability (0..1).
        mpp: Microns per pixel.
        threshold: Probability above which a pixel is nucleus.
        params: Segmentation parameters (opening radius, marker spacing, area range).
        tissue: Optional ``(H, W)`` bool; pixels outside it are never nuclei.
        split: ``(H, W)`` map (0..1) that is high in nucleus interiors and low on the borders
            between touching nuclei; defaults to ``probability``.

    Returns:
        ``(H, W)`` int32 labels, ``1..N`` nuclei.
    """
    mask: np.ndarray = (probability > threshold).astype(np.uint8)
    if params.open_radius_um > 0:
        r = max(round(params.open_radius_um / mpp), 1)
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, disk)
    mask = fill_holes(mask)
    if tissue is not None:
        mask = mask & np.asarray(tissue, bool).astype(np.uint8)
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    surface = np.asarray(probability if split is None else split, np.float32)
    labels = split_instances(mask, surface, mpp=mpp, params=params)
    return filter_and_renumber(labels, mpp=mpp, params=params)


def segment_params(overrides: dict[str, float]) -> SegmentParams:
    """Build :class:`SegmentParams` from a config's overrides, as a ConfigError when invalid."""
    try:
        return SegmentParams(**overrides)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Invalid nucleus segmentation params: {exc}") from None


def check_mpp(unit_mpp: float, data_mpp: float | None) -> None:
    """Refuse training tiles at another resolution than the unit's (lengths would be off).

    Raises:
        ConfigError: If ``data_mpp`` is given and differs from ``unit_mpp`` by more than 1%.
    """
    if data_mpp is not None and abs(data_mpp - unit_mpp) > 0.01 * unit_mpp:
        raise ConfigError(
            f"Training tiles must be at the unit's resolution ({unit_mpp} um/px). "
            f"Got {data_mpp} um/px instead: resample them or set the unit's mpp."
        )


class LabelImageTraining:
    """Training set of the tile segmenters: tiles and their instance label images as they are."""

    config: Any

    def training_set(
        self,
        images: Any,
        instance_labels: Any,
        class_labels: Any = None,
        *,
        mpp: float | None = None,
    ) -> tuple[Any, Any]:
        """Tiles and label images as they are: ``fit(images, labels)`` (classes unused).

        Raises:
            ConfigError: If ``mpp`` differs from the unit's.
        """
        check_mpp(self.config.mpp, mpp)
        return images, instance_labels


def as_image_list(images: Any) -> list[np.ndarray]:
    """A batch array ``(N, H, W, 3)`` or a sequence of tiles, as a list of tiles."""
    return [np.asarray(image) for image in images]


def sample_pixels(
    labels: Sequence[np.ndarray], n: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Balanced pixel indices per tile: half nucleus, half background (a third of it near nuclei).

    Args:
        labels: Instance (or binary) label images.
        n: Total pixels wanted.
        rng: The random generator.

    Returns:
        One ``(flat_indices, targets)`` pair per tile.
    """
    ring_kernel = np.ones((5, 5), np.uint8)
    fg_all: list[np.ndarray] = []
    near_all: list[np.ndarray] = []
    far_all: list[np.ndarray] = []
    for k, lab in enumerate(labels):
        fg = np.asarray(lab) > 0
        near = cv2.dilate(fg.astype(np.uint8), ring_kernel).astype(bool) & ~fg
        for store, mask in ((fg_all, fg), (near_all, near), (far_all, ~fg & ~near)):
            flat = np.flatnonzero(mask.ravel())
            store.append(np.stack([np.full(len(flat), k), flat], axis=1))
    pools = [np.concatenate(p) for p in (fg_all, near_all, far_all)]
    wanted = (n // 2, n // 6, n - n // 2 - n // 6)
    picks = []
    for pool, count, target in zip(pools, wanted, (1, 0, 0), strict=True):
        chosen = (
            pool[rng.choice(len(pool), min(count, len(pool)), replace=False)] if len(pool) else pool
        )
        picks.append(np.column_stack([chosen, np.full(len(chosen), target)]))
    rows = np.concatenate(picks)
    return [
        (rows[rows[:, 0] == k, 1], rows[rows[:, 0] == k, 2].astype(np.int64))
        for k in range(len(labels))
    ]


class PixelClassifierConfig(TrainableConfig):
    """Config of :class:`NucleusPixelClassifier`.

    Attributes:
        mpp: Resolution the unit works at.
        model: ``"random_forest"`` (scikit-learn) or ``"xgboost"``.
        sigmas_um: Filter scales in microns.
        n_estimators: Trees.
        max_depth: Depth limit of each tree.
        max_samples: Training pixels sampled from the labelled tiles (balanced).
        threshold: Probability above which a pixel is nucleus.
        n_jobs: Threads of the model (training and prediction).
        params: Overrides of :class:`pipelines.nuclei.segment.SegmentParams` (watershed and
            area filter).
    """

    mpp: float = Field(0.5, gt=0)
    model: Literal["random_forest", "xgboost"] = "random_forest"
    sigmas_um: tuple[float, ...] = Field((0.5, 1.0, 2.0), min_length=1)
    n_estimators: int = Field(50, ge=1)
    max_depth: int = Field(12, ge=1)
    max_samples: int = Field(40_000, ge=100)
    threshold: float = Field(0.5, gt=0, lt=1)
    n_jobs: int = Field(1, ge=1)
    params: dict[str, float] = Field(default_factory=dict)


class NucleusPixelClassifier(LabelImageTraining, TrainableUnit):
    """Nucleus instances from a per-pixel classifier on multi-scale filter features.

    ``fit(images, labels)`` takes tiles (``(N, H, W, 3)`` uint8 or a list of tiles) and their
    label images (instance or binary; ``> 0`` is nucleus) at the config's ``mpp``.
    """

    name = "nucleus_pixel_classifier"
    version = "1"
    role = "nucleus_segmentation"
    Config = PixelClassifierConfig
    inputs = SEGMENTATION_INPUTS
    outputs = SEGMENTATION_OUTPUTS
    resources = Resources(num_cpus=1.0)
    batch_size = 8
    learned = ("model_", "n_features_in_")
    model_fields = ("model", "sigmas_um", "mpp")

    def setup(self) -> None:
        """Validate the watershed parameters; load the model artifact if given."""
        cv2.setNumThreads(1)
        self._params = segment_params(self.config.params)
        super().setup()

    def features(self, image: np.ndarray) -> np.ndarray:
        """The ``(H, W, F)`` feature stack of a tile under this config."""
        return pixel_features(image, mpp=self.config.mpp, sigmas_um=self.config.sigmas_um)

    def _new_model(self) -> Any:
        c = self.config
        if c.model == "xgboost":
            from xgboost import XGBClassifier

            return XGBClassifier(
                n_estimators=c.n_estimators,
                max_depth=min(c.max_depth, 8),
                learning_rate=0.3,
                tree_method="hist",
                random_state=c.seed,
                n_jobs=c.n_jobs,
            )
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(
            n_estimators=c.n_estimators,
            max_depth=c.max_depth,
            min_samples_leaf=2,
            random_state=c.seed,
            n_jobs=c.n_jobs,
        )

    def _fit(self, X: Any, y: Any = None, **kwargs: Any) -> None:  # noqa: N803
        images = as_image_list(X)
        labels = [np.asarray(lab) for lab in (y if y is not None else [])]
        if len(images) != len(labels) or not images:
            raise ConfigError(
                f"fit needs as many label images as tiles (at least one). "
                f"Got {len(images)} tiles and {len(labels)} label images instead."
            )
        start = time.perf_counter()
        rng = np.random.default_rng(self.config.seed)
        xs, ys = [], []
        for image, (index, target) in zip(
            images, sample_pixels(labels, self.config.max_samples, rng), strict=True
        ):
            feats = self.features(image)
            xs.append(feats.reshape(-1, feats.shape[-1])[index])
            ys.append(target)
        x, y_all = np.concatenate(xs), np.concatenate(ys)
        if len(np.unique(y_all)) < 2:
            raise ConfigError("fit needs both nucleus and background pixels in the label images.")
        self.model_ = self._new_model().fit(x, y_all)
        self.n_features_in_ = int(x.shape[1])
        self.training_ = {
            "pixels": len(y_all),
            "tiles": len(images),
            "seconds": round(time.perf_counter() - start, 3),
        }

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        """Nucleus probability of every pixel of a tile, ``(H, W)`` float32."""
        self.check_fitted()
        feats = self.features(image)
        flat = feats.reshape(-1, feats.shape[-1])
        proba = self.model_.predict_proba(flat)[:, 1].astype(np.float32)
        return proba.reshape(image.shape[:2])

    def __call__(self, batch: Batch) -> Batch:
        """Segment each tile into a label image."""
        self.check_fitted()
        images = batch["image"]
        tissue = batch.get("tissue")
        labels = np.zeros(images.shape[:3], np.int32)
        for i in range(len(images)):
            labels[i] = probability_to_instances(
                self.predict_proba(images[i]),
                mpp=self.config.mpp,
                threshold=self.config.threshold,
                params=self._params,
                tissue=None if tissue is None else tissue[i],
            )
        counts = labels.reshape(len(labels), -1).max(axis=1, initial=0).astype(np.int32)
        return {"nucleus_labels": labels, "nucleus_count": counts}

    def _save_model(self, folder: Path) -> dict[str, Any]:
        if self.config.model == "xgboost":
            self.model_.save_model(folder / "model.ubj")
        else:
            import joblib

            joblib.dump(self.model_, folder / "model.joblib", compress=3)
        return {"n_features_in": self.n_features_in_}

    def _load_model(self, folder: Path, meta: dict[str, Any]) -> None:
        if self.config.model == "xgboost":
            from xgboost import XGBClassifier

            model = XGBClassifier(n_jobs=self.config.n_jobs)
            model.load_model(folder / "model.ubj")
        else:
            import joblib

            model = joblib.load(folder / "model.joblib")
            model.n_jobs = self.config.n_jobs
        self.model_ = model
        self.n_features_in_ = int(meta["model"]["n_features_in"])
