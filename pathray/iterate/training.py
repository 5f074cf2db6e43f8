"""Training jobs and config-search jobs as Ray tasks, and their models in the registry.

- :func:`train_model`: one Ray task fits a trainable unit on labelled tiles (fixed seed from
  its config), saves it and puts the folder in the content-addressed artifact store; the driver
  registers it as a new model version with how it was made (image set, annotation sets,
  slides, config, code version, seed, training metrics) and its parent version.
- :func:`search_configs`: one Ray task per candidate config scores the unit on labelled tiles;
  the tasks run in parallel on the cluster's CPUs.

A task asks for one GPU when the unit is a torch unit and the cluster has one, else CPU only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray

from pathray.catalog import Catalog, ModelVersion
from pathray.engine.cluster import cluster_gpus, ensure_ray
from pathray.engine.runner import code_version
from pathray.iterate.data import TileSet
from pathray.iterate.scoring import label_output, label_scores, predict_labels
from pathray.results.artifacts import Artifact, ArtifactStore
from pathray.units.base import Batch, Unit
from pathray.units.registry import get_unit, load_unit_class, unit_path
from pathray.units.trainable import TorchConfig, TrainableUnit


def framework_of(cls: type[Unit], config: Mapping[str, Any]) -> str:
    """The model registry's framework of a trainable unit's model (torch, xgboost, sklearn)."""
    if issubclass(cls.Config, TorchConfig):
        return "torch"
    model = cls.validate_config(config).model_dump().get("model")
    return "xgboost" if model == "xgboost" else "sklearn"


def task_resources(cls: type[Unit]) -> dict[str, float]:
    """Ray resources of a job on a unit: a GPU for torch units where the cluster has one."""
    gpus = 1.0 if issubclass(cls.Config, TorchConfig) and cluster_gpus() >= 1 else 0.0
    return {"num_cpus": 1.0, "num_gpus": gpus}


@ray.remote(max_retries=1)
def _fit_task(
    path: str,
    config: dict[str, Any],
    batch: Batch,
    labels: np.ndarray,
    classes: list[np.ndarray],
    mpp: float,
    cold_root: str,
) -> tuple[Artifact, dict[str, Any], dict[str, Any]]:
    """Fit a unit, save it, store the folder as an artifact; return it with the training info."""
    import tempfile

    cls = load_unit_class(path)
    unit = cls(config)
    assert isinstance(unit, TrainableUnit)
    unit.fit(*unit.training_set(batch["image"], labels, classes, mpp=mpp))
    with tempfile.TemporaryDirectory(prefix="pathray-train-") as folder:
        unit.save(folder)
        artifact = ArtifactStore(cold_root).put(Path(folder))
    scores = label_scores(unit(batch)[label_output(cls)], labels)
    training = {k: v for k, v in (getattr(unit, "training_", None) or {}).items()}
    training.pop("loss_history", None)  # long; the final loss is kept
    return artifact, training, scores


@dataclass(frozen=True)
class TrainedModel:
    """A model trained by :func:`train_model`.

    Attributes:
        version: The registered model version.
        config: The unit's validated config.
        training: What the unit reported about its training (tiles, pixels, seconds...).
        train_scores: Its scores on its own training tiles (a sanity check, not a validation).
    """

    version: ModelVersion
    config: dict[str, Any]
    training: dict[str, Any]
    train_scores: dict[str, Any]


def train_model(
    catalog: Catalog,
    cold_root: str | Path,
    unit_name: str,
    config: Mapping[str, Any],
    tiles: TileSet,
    *,
    batch: Batch | None = None,
    model_name: str,
    image_set: str,
    parent_version: int | None = None,
    extra: Mapping[str, Any] | None = None,
    actor: str = "system",
) -> TrainedModel:
    """Train a unit's model as a Ray task and register it as a new model version.

    Args:
        catalog: The catalog (model registry).
        cold_root: Root of the cold store (artifacts go there).
        unit_name: A registered trainable unit.
        config: Its config (the seed in it fixes every random choice).
        tiles: The labelled training tiles.
        batch: The tiles with the unit's other inputs (precursors' outputs); default: the
            tiles' own batch.
        model_name: The registry's model name (created on first use).
        image_set: The image set the training slides belong to.
        parent_version: The version of ``model_name`` this one derives from.
        extra: More facts for the version's ``training_run`` (split, loop, iteration...).
        actor: Who asks (audit log, ``created_by``).

    Returns:
        The trained model.

    Raises:
        ConfigError: The unit is not trainable or its config is invalid.
    """
    from pathray.errors import ConfigError

    cls = get_unit(unit_name)
    if not issubclass(cls, TrainableUnit):
        raise ConfigError(f"Unit {unit_name!r} must be trainable to be retrained. It is not.")
    valid = cls.validate_config(config).model_dump(mode="json")
    ensure_ray()
    resources = task_resources(cls)
    artifact, training, scores = ray.get(
        _fit_task.options(**resources).remote(
            unit_path(cls),
            valid,
            tiles.batch if batch is None else batch,
            tiles.instance_labels,
            tiles.class_labels,
            tiles.mpp,
            str(cold_root),
        )
    )
    framework = framework_of(cls, valid)
    catalog.register_model(model_name, framework, task=cls.role or unit_name, actor=actor)
    slides = sorted({int(s) for s in tiles.batch["slide_id"]})
    version = catalog.add_model_version(
        model_name,
        artifact=artifact,
        training_run={
            "unit": unit_name,
            "unit_version": cls.version,
            "image_set": image_set,
            "annotation_sets": sorted(set(tiles.sources.values())),
            "label_sources": {str(k): v for k, v in sorted(tiles.sources.items())},
            "slides": slides,
            "tiles": len(tiles),
            "mpp": tiles.mpp,
            "config": valid,
            "seed": valid.get("seed", 0),
            "code_version": code_version(),
            "resources": resources,
            "training": training,
            **dict(extra or {}),
        },
        metrics={f"train_{k}": v for k, v in scores.items()},
        parent_version=parent_version,
        resources={"cpus": resources["num_cpus"], "gpus": resources["num_gpus"]},
        created_by=actor,
    )
    return TrainedModel(version, valid, training, scores)


@ray.remote(max_retries=1)
def _score_task(
    path: str,
    config: dict[str, Any],
    batch: Batch,
    labels: np.ndarray,
    artifacts: dict[str, str] | None,
) -> dict[str, Any]:
    cls = load_unit_class(path)
    return label_scores(predict_labels(cls, config, batch, artifacts), labels)


def search_configs(
    cls: type[Unit],
    candidates: Sequence[Mapping[str, Any]],
    batch: Batch,
    labels: np.ndarray,
    artifacts: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Score candidate configs of a unit on labelled tiles, one parallel Ray task each.

    Args:
        cls: The unit.
        candidates: Its candidate configs.
        batch: The tile batch with the unit's inputs (precursors' outputs included).
        labels: The reference instance label images of the tiles.
        artifacts: The unit's model artifacts, if it loads one.

    Returns:
        The scores of each candidate, in the candidates' order.
    """
    ensure_ray()
    batch_ref, labels_ref = ray.put(batch), ray.put(labels)
    resources = task_resources(cls)
    futures = [
        _score_task.options(**resources).remote(
            unit_path(cls), dict(config), batch_ref, labels_ref, dict(artifacts or {}) or None
        )
        for config in candidates
    ]
    return list(ray.get(futures))
