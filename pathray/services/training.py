"""Training the multi-dataset nucleus classifier from annotation sets, and registering it.

:func:`train_multihead` takes several datasets, each an annotation set of labelled nucleus
polygons on the slides of an image set with a label set of its own, and:

1. checks everything first (:func:`plan_multihead`): every set exists and every nucleus has a
   label, every label set has at least two classes, the label merges the user asked for
   (``same``, ``distinct``) name labels that exist, and each dataset's slides split by slide into
   training and held-out slides;
2. matches the labels of the datasets by name similarity
   (:func:`pathray.units.label_matching.match_labels`, threshold 0.8) and reports the merges;
3. cuts labelled tiles of the training slides, turns them into the unit's training samples
   (``training_set``) and checks that every class of every dataset has some;
4. fits the unit (random or round-robin sampling, stop on a loss plateau or at the cap, fixed
   seed), printing progress;
5. scores it on each dataset's held-out slides against chance;
6. stores the model folder in the artifact store and records a model version whose
   ``training_run`` names every dataset's image set, annotation set, training and held-out
   slides, label set and the merges.

Nothing is recorded before step 6, so a bad input leaves the registry as it was. The unit is
found through the unit registry (``nucleus_multihead_classifier`` by default, or
``nucleus_multihead_crop_cnn``), never imported.

Example:
    >>> trained = train_multihead(  # doctest: +SKIP
    ...     catalog, cold_root, "nuclei-multi",
    ...     [parse_dataset("A=syn:gt"), parse_dataset("B=syn_b:coarse")],
    ...     same=[("A:stroma", "B:other")],
    ... )
    >>> trained.metrics["heldout_accuracy_A"]  # doctest: +SKIP
    0.93
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pathray.catalog import Catalog, ModelVersion
from pathray.catalog.models_registry import check_alias, check_name
from pathray.engine.runner import code_version
from pathray.errors import ConfigError
from pathray.formats.catalog_io import REGION_ROLE
from pathray.iterate.data import Split, labelled_tiles, split_slides
from pathray.pipeline.spec import TilingSpec
from pathray.results.artifacts import ArtifactStore
from pathray.units.label_matching import SIMILARITY, Merge, match_labels
from pathray.units.registry import get_unit
from pathray.units.trainable import TrainableUnit

#: The unit trained by default.
DEFAULT_UNIT = "nucleus_multihead_classifier"
#: Units this trainer knows how to feed.
MULTIHEAD_UNITS = ("nucleus_multihead_classifier", "nucleus_multihead_crop_cnn")
_DATASET = re.compile(r"^(?:(?P<name>[^=:]+)=)?(?P<image_set>[^=:]+):(?P<annotations>[^=]+)$")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DatasetSource:
    """One dataset: an annotation set of labelled nuclei on the slides of an image set.

    Attributes:
        name: The dataset's name in the label space (letters, digits, ``_``).
        image_set: The image set of its slides.
        annotation_set: The annotation set holding its labelled nucleus polygons.
    """

    name: str
    image_set: str
    annotation_set: str


def parse_dataset(text: str) -> DatasetSource:
    """``[NAME=]IMAGE_SET:ANNOTATION_SET`` -> a :class:`DatasetSource`.

    Without ``NAME=`` the dataset is named after the annotation set (characters other than
    letters, digits and ``_`` become ``_``).

    Raises:
        ConfigError: If the text does not have that shape.
    """
    match = _DATASET.match(text.strip())
    if match is None:
        raise ConfigError(
            f"A dataset must be [NAME=]IMAGE_SET:ANNOTATION_SET. Got {text!r} instead."
        )
    annotations = match["annotations"].strip()
    name = match["name"] or re.sub(r"\W", "_", annotations)
    if not name[:1].isalpha():
        name = f"d_{name}"
    return DatasetSource(name.strip(), match["image_set"].strip(), annotations)


@dataclass(frozen=True)
class MultiHeadPlan:
    """What :func:`train_multihead` will train on, checked.

    Attributes:
        datasets: The datasets, in output order.
        label_sets: ``{dataset: [label, ...]}`` (sorted labels).
        merges: The label merges (by name, then the user's).
        splits: Per dataset, its training and held-out slides.
    """

    datasets: tuple[DatasetSource, ...]
    label_sets: dict[str, list[str]]
    merges: list[Merge]
    splits: dict[str, Split]


def _labels_of(catalog: Catalog, source: DatasetSource, slides: Sequence[int]) -> list[str]:
    """The sorted label set of a dataset; every nucleus must have a label."""
    labels: set[str] = set()
    unlabelled = total = 0
    for slide_id in slides:
        for a in catalog.query_annotations(source.annotation_set, slide_id):
            if a.properties.get("role") == REGION_ROLE:
                continue
            total += 1
            if a.label is None or not str(a.label).strip():
                unlabelled += 1
            else:
                labels.add(str(a.label))
    if unlabelled:
        raise ConfigError(
            f"Annotation set {source.annotation_set!r} (dataset {source.name}) must give every "
            f"nucleus a label to train a classifier. Got {unlabelled} of {total} nuclei without "
            "one instead."
        )
    if len(labels) < 2:
        raise ConfigError(
            f"The label set of dataset {source.name} (annotation set "
            f"{source.annotation_set!r}) must have at least two classes. Got {sorted(labels)} "
            "instead."
        )
    return sorted(labels)


def plan_multihead(
    catalog: Catalog,
    datasets: Sequence[DatasetSource],
    *,
    same: Iterable[tuple[str, str]] = (),
    distinct: Iterable[tuple[str, str]] = (),
    threshold: float = SIMILARITY,
    validation: float = 0.5,
    seed: int = 0,
) -> MultiHeadPlan:
    """Check the datasets, match their labels and split their slides; changes nothing.

    Args:
        catalog: The catalog.
        datasets: The datasets (at least one; names unique).
        same: ``(dataset:label, dataset:label)`` pairs to merge whatever their names.
        distinct: Pairs matched by name to keep apart.
        threshold: Name similarity from which labels of two datasets merge.
        validation: Fraction of each dataset's slides held out.
        seed: Seed of the split.

    Returns:
        The plan.

    Raises:
        NotFoundError: An image set or annotation set does not exist.
        ConfigError: See :func:`train_multihead`.
    """
    if not datasets:
        raise ConfigError("Training needs at least one dataset. Got none instead.")
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise ConfigError(f"Dataset names must be unique. Got {names} instead.")
    label_sets: dict[str, list[str]] = {}
    splits: dict[str, Split] = {}
    for source in datasets:
        catalog.get_annotation_set(source.annotation_set)
        slides = [
            s.id
            for s in catalog.slides_in_set(source.image_set)
            if catalog.count_annotations(source.annotation_set, s.id)
        ]
        try:
            splits[source.name] = split_slides(slides, validation=validation, seed=seed)
        except ConfigError as exc:
            raise ConfigError(f"Dataset {source.name}: {exc}") from None
        label_sets[source.name] = _labels_of(catalog, source, slides)
    merges = match_labels(label_sets, threshold=threshold, same=same, distinct=distinct)
    return MultiHeadPlan(tuple(datasets), label_sets, merges, splits)


def _samples(
    unit: TrainableUnit,
    catalog: Catalog,
    source: DatasetSource,
    slides: Sequence[int],
    tiling: TilingSpec,
    tiles_per_slide: int,
    seed: int,
) -> tuple[Any, np.ndarray]:
    """The unit's samples of one dataset's slides: ``(samples, (dataset, label) pairs)``."""
    tiles = labelled_tiles(
        catalog,
        dict.fromkeys(slides, source.annotation_set),
        tiling,
        tiles_per_slide=tiles_per_slide,
        seed=seed,
    )
    samples, pairs = unit.training_set(
        tiles.images, tiles.instance_labels, tiles.class_labels, mpp=tiling.mpp
    )
    pairs = np.asarray(pairs, dtype=object).reshape(-1, 2)
    pairs[:, 0] = source.name
    return samples, pairs


def _join(parts: Sequence[Any]) -> Any:
    """Samples of several datasets joined: column dicts column by column, arrays end to end."""
    if isinstance(parts[0], Mapping):
        return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
    return np.concatenate([np.asarray(p) for p in parts])


@dataclass(frozen=True)
class TrainedMultiHead:
    """A multi-dataset classifier trained and registered by :func:`train_multihead`.

    Attributes:
        version: The registered model version.
        plan: The checked datasets, label sets, merges and splits.
        metrics: Held-out accuracy and chance (majority share) per dataset.
        training: What the unit reported about its training.
    """

    version: ModelVersion
    plan: MultiHeadPlan
    metrics: dict[str, float]
    training: dict[str, Any]


def train_multihead(
    catalog: Catalog,
    cold_root: str | Path,
    model_name: str,
    datasets: Sequence[DatasetSource],
    *,
    unit: str = DEFAULT_UNIT,
    config: Mapping[str, Any] | None = None,
    same: Iterable[tuple[str, str]] = (),
    distinct: Iterable[tuple[str, str]] = (),
    threshold: float = SIMILARITY,
    sampling: str = "random",
    max_iterations: int | None = None,
    validation: float = 0.5,
    seed: int = 0,
    tiles_per_slide: int = 8,
    tile_size: int = 256,
    alias: str | None = None,
    actor: str = "system",
    progress: Progress | None = None,
) -> TrainedMultiHead:
    """Train the multi-dataset nucleus classifier on annotation sets and register it.

    Args:
        catalog: The catalog (annotations, slides, model registry).
        cold_root: Root of the cold store (the model folder goes to its artifact store).
        model_name: The registry's model name (created on first use; a new version otherwise).
        datasets: The datasets (:func:`parse_dataset`).
        unit: ``nucleus_multihead_classifier`` (nucleus features) or
            ``nucleus_multihead_crop_cnn`` (nucleus crops).
        config: More config of the unit (``hidden``, ``lr``, ``head``...).
        same: Label pairs to merge whatever their names (``("A:stroma", "B:other")``).
        distinct: Label pairs matched by name to keep apart.
        threshold: Name similarity from which labels merge.
        sampling: ``"random"`` or ``"round_robin"``.
        max_iterations: Iteration cap (default: the unit's).
        validation: Fraction of each dataset's slides held out (at least one each side).
        seed: Seed of the split, the tile choice and the training.
        tiles_per_slide: Labelled tiles cut per slide.
        tile_size: Their edge in pixels, at the unit's resolution (0.5 um/px by default).
        alias: An alias to point at the new version.
        actor: Who trains (audit log, ``created_by``).
        progress: Called with one line of text per step worth reporting.

    Returns:
        The trained model.

    Raises:
        NotFoundError: An image set, annotation set or unit does not exist.
        ConfigError: An annotation set with unlabelled nuclei, a label set of a single class,
            a merge naming a label that does not exist, a dataset with fewer than two annotated
            slides, a training split that leaves a class without samples, or an invalid config.
    """
    say = progress or (lambda _line: None)
    check_name("model", model_name)
    if alias is not None:
        check_alias(alias)
    if unit not in MULTIHEAD_UNITS:
        raise ConfigError(f"unit must be one of {list(MULTIHEAD_UNITS)}. Got {unit!r} instead.")
    cls = get_unit(unit)
    plan = plan_multihead(
        catalog,
        datasets,
        same=same,
        distinct=distinct,
        threshold=threshold,
        validation=validation,
        seed=seed,
    )
    for name, labels in plan.label_sets.items():
        split = plan.splits[name]
        say(
            f"dataset {name}: labels {labels}; training slides {list(split.training)}, "
            f"held out {list(split.validation)}"
        )
    for merge in plan.merges:
        how = f"name similarity {merge.score:.2f}" if merge.source == "name" else "asked for"
        say(f"merged {merge.a} = {merge.b} ({how})")
    if not plan.merges:
        say("merged no labels")
    settings: dict[str, Any] = {
        **dict(config or {}),
        "datasets": plan.label_sets,
        "merges": [m.pair for m in plan.merges],
        "sampling": sampling,
        "seed": seed,
    }
    if max_iterations is not None:
        settings["max_iterations"] = max_iterations
    trainee = cls(settings)
    assert isinstance(trainee, TrainableUnit)
    valid = trainee.get_params()
    tiling = TilingSpec(mpp=cls.mpp(valid) or 0.5, size=tile_size, overlap=0)

    parts, pair_parts = [], []
    for source in plan.datasets:
        split = plan.splits[source.name]
        say(f"reading dataset {source.name}: {len(split.training)} training slide(s)")
        samples, pairs = _samples(
            trainee, catalog, source, split.training, tiling, tiles_per_slide, seed
        )
        seen = set(pairs[:, 1].tolist())
        empty = [label for label in plan.label_sets[source.name] if label not in seen]
        if empty:
            raise ConfigError(
                f"Every class of dataset {source.name} must have training samples. Got none "
                f"of {empty} in the training slides {list(split.training)} instead (change the "
                "seed or --validation, or annotate more slides)."
            )
        parts.append(samples)
        pair_parts.append(pairs)
    all_samples, y_all = _join(parts), np.concatenate(pair_parts)
    say(f"training {unit} on {len(y_all)} nuclei ({sampling} sampling, seed {seed})")
    cap = valid["max_iterations"]
    trainee.fit(
        all_samples,
        y_all,
        progress=lambda step, loss: say(f"  step {step}/{cap}: loss {loss:.4f}"),
    )
    training = dict(getattr(trainee, "training_", None) or {})
    training.pop("loss_history", None)
    say(
        f"stopped after {training.get('iterations')} steps "
        f"({'loss plateau' if training.get('converged') else 'iteration cap'})"
    )

    metrics: dict[str, float] = {}
    for source in plan.datasets:
        held = plan.splits[source.name].validation
        samples, pairs = _samples(trainee, catalog, source, held, tiling, tiles_per_slide, seed)
        known = np.isin(pairs[:, 1], plan.label_sets[source.name])
        samples, pairs = _subset(samples, known), pairs[known]
        accuracy = trainee.accuracy(samples, pairs)[source.name]  # type: ignore[attr-defined]
        _, counts = np.unique(pairs[:, 1], return_counts=True)
        chance = float(counts.max() / counts.sum()) if len(counts) else float("nan")
        metrics[f"heldout_accuracy_{source.name}"] = float(accuracy)
        metrics[f"chance_{source.name}"] = chance
        metrics[f"heldout_nuclei_{source.name}"] = float(len(pairs))
        say(
            f"dataset {source.name}: held-out accuracy {accuracy:.3f} on {len(pairs)} nuclei "
            f"(chance, the majority class: {chance:.3f})"
        )

    version = _register(
        catalog, cold_root, model_name, cls, trainee, plan, valid, training, metrics, actor
    )
    if alias is not None:
        version = catalog.set_alias(model_name, alias, version.version, actor=actor)
    say(f"registered {version.ref}")
    return TrainedMultiHead(version, plan, metrics, training)


def _subset(samples: Any, keep: np.ndarray) -> Any:
    if isinstance(samples, Mapping):
        return {k: np.asarray(v)[keep] for k, v in samples.items()}
    return np.asarray(samples)[keep]


def _register(
    catalog: Catalog,
    cold_root: str | Path,
    model_name: str,
    cls: type[Any],
    trainee: TrainableUnit,
    plan: MultiHeadPlan,
    valid: dict[str, Any],
    training: dict[str, Any],
    metrics: dict[str, float],
    actor: str,
) -> ModelVersion:
    """Store the model folder and record the version with its training data."""
    with tempfile.TemporaryDirectory(prefix="pathray-train-") as folder:
        trainee.save(folder)
        artifact = ArtifactStore(cold_root).put(Path(folder))
    catalog.register_model(model_name, "torch", task=cls.role or cls.name, actor=actor)
    slides = sorted({s for split in plan.splits.values() for s in split.training})
    return catalog.add_model_version(
        model_name,
        artifact=artifact,
        training_run={
            "unit": cls.name,
            "unit_version": cls.version,
            "annotation_sets": sorted({d.annotation_set for d in plan.datasets}),
            "image_sets": sorted({d.image_set for d in plan.datasets}),
            "slides": slides,
            "datasets": [
                {
                    "name": d.name,
                    "image_set": d.image_set,
                    "annotation_set": d.annotation_set,
                    "labels": plan.label_sets[d.name],
                    "training_slides": list(plan.splits[d.name].training),
                    "heldout_slides": list(plan.splits[d.name].validation),
                }
                for d in plan.datasets
            ],
            "merges": [m.to_dict() for m in plan.merges],
            "config": valid,
            "seed": valid.get("seed", 0),
            "code_version": code_version(),
            "training": training,
        },
        metrics=metrics,
        resources={"cpus": cls.resources.num_cpus, "gpus": cls.resources.num_gpus},
        created_by=actor,
    )


__all__ = [
    "DEFAULT_UNIT",
    "MULTIHEAD_UNITS",
    "DatasetSource",
    "MultiHeadPlan",
    "TrainedMultiHead",
    "parse_dataset",
    "plan_multihead",
    "train_multihead",
]
