"""Monitoring of the service: latency and throughput per endpoint, input drift, prediction drift.

Each ingress replica keeps its own Prometheus registry (rendered at ``/metrics``) and a
:class:`DriftMonitor`:

- input drift: colour and stain statistics of every incoming tile (mean R, G, B; mean haematoxylin
  and eosin optical density from colour deconvolution; tissue fraction) are compared with the
  training reference, over a sliding window of recent tiles. The score of a statistic is its
  effect size ``|window mean - reference mean| / reference std``; past ``threshold`` (after at
  least ``min_tiles`` tiles) the statistic is flagged and ``pathray_drift_warning`` is 1.
- prediction drift: objects per tile and the share of each label, against the reference's
  prediction statistics when it has them (always reported, flagged only then).

A reference is built from tiles known to be in distribution (:func:`build_reference`, with the
pipeline's outputs on them for the prediction part) and saved as JSON.

Example:
    >>> import numpy as np
    >>> tiles = [np.full((64, 64, 3), (180, 110, 170), np.uint8)] * 4
    >>> ref = build_reference(tiles)
    >>> round(ref.features["mean_r"].mean)
    180
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field

# Ruifrok & Johnston's H&E(&DAB) stain vectors (rows, optical density per RGB channel).
_STAINS = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_STAINS = _STAINS / np.linalg.norm(_STAINS, axis=1, keepdims=True)
_UNMIX = np.linalg.inv(_STAINS)
#: Statistics of a tile, in this order.
FEATURES = ("mean_r", "mean_g", "mean_b", "hematoxylin", "eosin", "tissue_fraction")
#: Optical density above which a pixel counts as tissue (as the tissue unit's default).
_TISSUE_OD = 0.08


def tile_features(image: np.ndarray, stride: int = 4) -> dict[str, float]:
    """Colour and stain statistics of one RGB tile (every ``stride``-th pixel: cheap per request).

    Args:
        image: ``(H, W, 3)`` uint8.
        stride: Subsampling step in both directions.

    Returns:
        A value per name of :data:`FEATURES`; stain means are over tissue pixels (0 if none).
    """
    px = np.asarray(image[::stride, ::stride], np.float32).reshape(-1, 3)
    od = -np.log10(np.maximum(px, 1.0) / 255.0)
    tissue = od.sum(axis=1) / 3 > _TISSUE_OD
    stains = od[tissue] @ _UNMIX if tissue.any() else np.zeros((1, 3), np.float32)
    means = px.mean(axis=0)
    return {
        "mean_r": float(means[0]),
        "mean_g": float(means[1]),
        "mean_b": float(means[2]),
        "hematoxylin": float(stains[:, 0].mean()),
        "eosin": float(stains[:, 1].mean()),
        "tissue_fraction": float(tissue.mean()),
    }


class FeatureStats(BaseModel):
    """Mean and standard deviation of one statistic over the reference."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    mean: float
    std: float = Field(ge=0)


class Reference(BaseModel):
    """The training reference: tile statistics and (optionally) prediction statistics.

    Attributes:
        features: Statistic name -> its distribution over the reference tiles.
        objects_per_tile: Distribution of objects per tile, if the reference has predictions.
        label_shares: Label -> its share of the objects, if the reference has predictions.
        tiles: How many tiles the reference was built from.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    features: dict[str, FeatureStats]
    objects_per_tile: FeatureStats | None = None
    label_shares: dict[str, float] = Field(default_factory=dict)
    tiles: int = 0

    @classmethod
    def load(cls, path: str | Path) -> Reference:
        """Read a reference written by :meth:`save`."""
        return cls.model_validate_json(Path(path).read_text())

    def save(self, path: str | Path) -> Path:
        """Write the reference as JSON."""
        target = Path(path)
        target.write_text(self.model_dump_json(indent=2))
        return target


def _stats(values: Iterable[float]) -> FeatureStats:
    arr = np.asarray(list(values), np.float64)
    return FeatureStats(mean=float(arr.mean()), std=float(arr.std()))


def build_reference(
    images: Iterable[np.ndarray], predictions: Iterable[Mapping[str, Any]] | None = None
) -> Reference:
    """Build a reference from in-distribution tiles and, optionally, the pipeline's outputs.

    Args:
        images: RGB tiles.
        predictions: Per tile, the API's output (:func:`serve.inference.to_json` of that tile):
            its ``objects`` count and ``labels``.
    """
    rows = [tile_features(image) for image in images]
    if not rows:
        raise ValueError("A drift reference needs at least one tile.")
    features = {name: _stats(r[name] for r in rows) for name in FEATURES}
    per_tile: FeatureStats | None = None
    shares: dict[str, float] = {}
    if predictions is not None:
        preds = list(predictions)
        per_tile = _stats(len(p.get("objects", ())) for p in preds)
        counts: dict[str, int] = {}
        for p in preds:
            for label, n in p.get("labels", {}).items():
                counts[label] = counts.get(label, 0) + int(n)
        total = sum(counts.values())
        shares = {label: n / total for label, n in counts.items()} if total else {}
    return Reference(
        features=features, objects_per_tile=per_tile, label_shares=shares, tiles=len(rows)
    )


def _effect(window_mean: float, ref: FeatureStats) -> float:
    """``|window mean - reference mean|`` in reference standard deviations (floored)."""
    spread = max(ref.std, 1e-3 * max(abs(ref.mean), 1.0), 1e-6)
    return abs(window_mean - ref.mean) / spread


class DriftMonitor:
    """Sliding-window comparison of incoming tiles and predictions with the reference.

    Args:
        reference: The training reference (None: statistics are reported, never flagged).
        window: Tiles kept in the window.
        threshold: Effect size past which a statistic drifts.
        min_tiles: Tiles needed before any warning.
    """

    def __init__(
        self,
        reference: Reference | None = None,
        window: int = 200,
        threshold: float = 2.0,
        min_tiles: int = 20,
    ) -> None:
        self.reference = reference
        self.threshold = threshold
        self.min_tiles = min_tiles
        self._tiles: deque[dict[str, float]] = deque(maxlen=window)
        self._objects: deque[int] = deque(maxlen=window)
        self._labels: deque[dict[str, int]] = deque(maxlen=window)
        self._lock = threading.Lock()

    def observe_tile(self, features: Mapping[str, float]) -> None:
        """Add one incoming tile's statistics."""
        with self._lock:
            self._tiles.append(dict(features))

    def observe_prediction(self, objects: int, labels: Mapping[str, int]) -> None:
        """Add one tile's prediction: its object count and label counts."""
        with self._lock:
            self._objects.append(int(objects))
            self._labels.append(dict(labels))

    def report(self) -> dict[str, Any]:
        """The window's statistics, their scores against the reference and the warnings."""
        with self._lock:
            tiles, objects, labels = list(self._tiles), list(self._objects), list(self._labels)
        ref = self.reference
        enough = len(tiles) >= self.min_tiles
        inputs: dict[str, dict[str, Any]] = {}
        for name in FEATURES:
            mean = float(np.mean([t[name] for t in tiles])) if tiles else math.nan
            entry: dict[str, Any] = {"window_mean": _num(mean)}
            if ref is not None and name in ref.features and tiles:
                score = _effect(mean, ref.features[name])
                entry.update(
                    reference_mean=ref.features[name].mean,
                    reference_std=ref.features[name].std,
                    score=score,
                    drifting=enough and score > self.threshold,
                )
            inputs[name] = entry
        predictions = self._prediction_report(objects, labels, enough)
        warnings = [f"input {k}" for k, v in inputs.items() if v.get("drifting")]
        warnings += [f"prediction {k}" for k, v in predictions.items() if v.get("drifting")]
        return {
            "tiles": len(tiles),
            "min_tiles": self.min_tiles,
            "threshold": self.threshold,
            "reference": ref is not None,
            "inputs": inputs,
            "predictions": predictions,
            "warning": bool(warnings),
            "warnings": warnings,
        }

    def _prediction_report(
        self, objects: list[int], labels: list[dict[str, int]], enough: bool
    ) -> dict[str, dict[str, Any]]:
        ref = self.reference
        out: dict[str, dict[str, Any]] = {}
        if not objects:
            return out
        mean = float(np.mean(objects))
        entry: dict[str, Any] = {"window_mean": mean}
        if ref is not None and ref.objects_per_tile is not None:
            score = _effect(mean, ref.objects_per_tile)
            entry.update(
                reference_mean=ref.objects_per_tile.mean,
                score=score,
                drifting=enough and score > self.threshold,
            )
        out["objects_per_tile"] = entry
        counts: dict[str, int] = {}
        for tile in labels:
            for label, n in tile.items():
                counts[label] = counts.get(label, 0) + n
        total = sum(counts.values())
        for label in sorted(set(counts) | set(ref.label_shares if ref else {})):
            share = counts.get(label, 0) / total if total else 0.0
            item: dict[str, Any] = {"window_share": share}
            if ref is not None and ref.label_shares:
                expected = ref.label_shares.get(label, 0.0)
                # a share moving by more than 0.15 (absolute) is a changed label mix
                item.update(
                    reference_share=expected, drifting=enough and abs(share - expected) > 0.15
                )
            out[f"label:{label}"] = item
        return out


def _num(value: float) -> float | None:
    return value if math.isfinite(value) else None


#: Latency buckets in seconds (a tile inference takes milliseconds to seconds).
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServiceMetrics:
    """Prometheus metrics of one ingress replica, plus a short window for the JSON view.

    Args:
        drift: The drift monitor whose scores are exported as gauges.
        window_s: Seconds of recent requests kept for throughput and percentiles.
    """

    def __init__(self, drift: DriftMonitor, window_s: float = 60.0) -> None:
        self.drift = drift
        self.window_s = window_s
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pathray_requests",
            "Requests answered, by endpoint, method and status.",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "pathray_request_latency_seconds",
            "Request latency by endpoint.",
            ["endpoint"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.inflight = Gauge(
            "pathray_inflight_requests", "Requests being answered.", registry=self.registry
        )
        self.errors = Counter(
            "pathray_errors", "Error answers by code.", ["code"], registry=self.registry
        )
        self.tiles = Counter(
            "pathray_tiles", "Tiles inferred.", ["pipeline"], registry=self.registry
        )
        self.objects = Counter(
            "pathray_objects", "Objects predicted, by label.", ["label"], registry=self.registry
        )
        self.drift_score = Gauge(
            "pathray_drift_score",
            "Effect size of a window statistic against the reference.",
            ["kind", "name"],
            registry=self.registry,
        )
        self.drift_warning = Gauge(
            "pathray_drift_warning",
            "1 when an input or prediction statistic drifts past the threshold.",
            registry=self.registry,
        )
        self.drift_tiles = Gauge(
            "pathray_drift_window_tiles", "Tiles in the drift window.", registry=self.registry
        )
        self._recent: deque[tuple[float, str, float, int]] = deque()
        self._lock = threading.Lock()

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Record one answered request."""
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        now = time.monotonic()
        with self._lock:
            self._recent.append((now, endpoint, seconds, status))
            while self._recent and self._recent[0][0] < now - self.window_s:
                self._recent.popleft()

    def endpoints(self) -> dict[str, dict[str, Any]]:
        """Per endpoint over the window: requests, throughput, error share, p50/p99 latency."""
        now = time.monotonic()
        with self._lock:
            recent = [r for r in self._recent if r[0] >= now - self.window_s]
        span = min(self.window_s, max(now - recent[0][0], 1e-3)) if recent else self.window_s
        out: dict[str, dict[str, Any]] = {}
        for endpoint in sorted({r[1] for r in recent}):
            mine = [r for r in recent if r[1] == endpoint]
            lat = np.array([r[2] for r in mine])
            out[endpoint] = {
                "requests": len(mine),
                "per_second": len(mine) / span,
                "errors": sum(1 for r in mine if r[3] >= 400),
                "p50_ms": float(np.percentile(lat, 50) * 1000),
                "p99_ms": float(np.percentile(lat, 99) * 1000),
            }
        return out

    def render(self) -> bytes:
        """The Prometheus text exposition, with the drift gauges refreshed."""
        report = self.drift.report()
        for kind in ("inputs", "predictions"):
            for name, entry in report[kind].items():
                if entry.get("score") is not None:
                    self.drift_score.labels(kind, name).set(entry["score"])
        self.drift_warning.set(1.0 if report["warning"] else 0.0)
        self.drift_tiles.set(report["tiles"])
        return generate_latest(self.registry)


__all__ = [
    "FEATURES",
    "DriftMonitor",
    "FeatureStats",
    "Reference",
    "ServiceMetrics",
    "build_reference",
    "tile_features",
]
