"""What the strategies work with: the split, the labelled training tiles, and the strategies.

A :class:`Workspace` belongs to one loop. It reads the training tiles once, when a strategy
first needs them, runs the iterated node's precursors over them once, and remembers every
config it has tried so that no strategy offers the same version twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pathray.catalog import Catalog
from pathray.engine.models import resolve_models
from pathray.iterate.data import Split, TileSet, label_sources, labelled_tiles
from pathray.iterate.requirement import Requirement
from pathray.iterate.scoring import label_output, run_prefix
from pathray.iterate.strategies import (
    DEFAULT_LADDER,
    DEFAULT_SEARCH_SPACES,
    Version,
    candidate_configs,
    ladder_for,
    ladder_position,
    objective,
)
from pathray.iterate.training import framework_of, search_configs, train_model
from pathray.pipeline.spec import PipelineSpec, UnitSpec
from pathray.results.artifacts import ArtifactStore
from pathray.units.base import Batch
from pathray.units.trainable import TrainableUnit


@dataclass
class Settings:
    """How a loop makes its versions.

    Attributes:
        search_space: Unit name -> dotted config path -> candidate values (defaults:
            :data:`~pathray.iterate.strategies.DEFAULT_SEARCH_SPACES`).
        search: ``"grid"`` or ``"random"``.
        samples: Candidates of a random search.
        ladder: Model kinds to train in turn, ``(unit, config)``.
        corrections: Accepted correction sets (None: all of kind ``correction``).
        tiles_per_slide: Labelled tiles taken per training slide.
        seed: Seed of the split, the tile choice, the searches and the training.
    """

    search_space: dict[str, dict[str, list[Any]]] = field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_SEARCH_SPACES.items()}
    )
    search: str = "grid"
    samples: int = 8
    ladder: list[tuple[str, dict[str, Any]]] = field(
        default_factory=lambda: [(u, dict(c)) for u, c in DEFAULT_LADDER]
    )
    corrections: list[str] | None = None
    tiles_per_slide: int = 8
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        """The settings as plain JSON (recorded with the loop)."""
        return json.loads(json.dumps(self.__dict__, default=list))


def _key(node: UnitSpec) -> str:
    return json.dumps([node.unit, node.config, node.model], sort_keys=True, default=str)


class Workspace:
    """The loop's data and strategies.

    Args:
        catalog: The catalog.
        cold_root: The cold store's root (artifacts).
        spec: The pipeline as it started.
        node_id: The iterated node.
        split: The training and validation slides.
        reference: The reference annotation set.
        requirement: The requirement (its metrics steer the search).
        training_set: Name of the image set of the training slides.
        settings: How versions are made.
        loop_id: The loop (recorded with every model version).
        actor: Who runs the loop.
        notify: Called with ``(stage, message)`` as work starts.
    """

    def __init__(
        self,
        catalog: Catalog,
        cold_root: str | Path,
        spec: PipelineSpec,
        node_id: str,
        split: Split,
        reference: str,
        requirement: Requirement,
        training_set: str,
        settings: Settings,
        loop_id: str,
        actor: str,
        notify: Callable[[str, str], None],
    ) -> None:
        self.catalog, self.cold_root, self.spec = catalog, cold_root, spec
        self.node_id, self.split, self.reference = node_id, split, reference
        self.requirement, self.training_set, self.settings = requirement, training_set, settings
        self.loop_id, self.actor, self.notify = loop_id, actor, notify
        self.tried: set[str] = set()
        self._tiles: TileSet | None = None
        self._prepared: Batch | None = None
        self._goals = [(t.metric, t.higher_is_better) for t in requirement.thresholds]

    # -- data --------------------------------------------------------------------------------

    @property
    def tiles(self) -> TileSet:
        """The labelled training tiles (read on first use)."""
        if self._tiles is None:
            sources = label_sources(
                self.catalog, self.split.training, self.reference, self.settings.corrections
            )
            self.notify("data", f"reading labelled tiles of {len(sources)} training slide(s)")
            self._tiles = labelled_tiles(
                self.catalog,
                sources,
                self.spec.tiling,
                tiles_per_slide=self.settings.tiles_per_slide,
                seed=self.settings.seed,
            )
        return self._tiles

    @property
    def prepared(self) -> Batch:
        """The training tiles with the iterated node's precursors' outputs."""
        if self._prepared is None:
            models = resolve_models(self.catalog, self.spec, self.cold_root)
            folders = {nid: m.path for nid, m in models.items()}
            self._prepared = run_prefix(self.spec, self.node_id, self.tiles.batch, folders)
        return self._prepared

    def model_folder(self, version: Version) -> dict[str, str] | None:
        """The unpacked model artifact a version loads, as unit artifacts."""
        if version.model_version is None:
            return None
        path = ArtifactStore(self.cold_root).unpack(version.model_version.artifact_digest)
        return {"model": str(path)}

    # -- strategies --------------------------------------------------------------------------

    def config_search(self, current: Version, number: int) -> Version | None:
        """Search the current unit's config on the training tiles; None if nothing beats it."""
        cls = self.spec.unit_class(current.node)
        space = self.settings.search_space.get(cls.name)
        if not space:
            return None
        label_output(cls)  # a unit without label images cannot be scored on tiles
        base = cls.validate_config(current.node.config).model_dump(mode="json")
        candidates = [base] + [
            c
            for c in candidate_configs(
                base,
                space,
                search=self.settings.search,
                samples=self.settings.samples,
                seed=self.settings.seed + number,
            )
            if c != base and _key(current.node.model_copy(update={"config": c})) not in self.tried
        ]
        if len(candidates) == 1:
            return None
        self.notify("search", f"scoring {len(candidates)} configs of {cls.name} as Ray tasks")
        artifacts = self.model_folder(current)
        scores = search_configs(
            cls, candidates, self.prepared, self.tiles.instance_labels, artifacts
        )
        values = [objective(s, self._goals) for s in scores]
        best = max(range(len(candidates)), key=lambda i: (values[i], -i))
        ranked = sorted(range(len(candidates)), key=lambda i: -values[i])[:5]
        details = {
            "searched": len(candidates),
            "search": self.settings.search,
            "current_score": values[0],
            "best_score": values[best],
            "top": [{"config": candidates[i], "scores": scores[i]} for i in ranked],
            "training_slides": list(self.split.training),
        }
        if best == 0:
            return None
        node = current.node.model_copy(update={"config": candidates[best]})
        return Version(node, "config_search", current.model_version, details)

    def retrain(self, current: Version, number: int) -> Version | None:
        """Retrain the unit's model (a classical unit: the ladder's first kind of its role)."""
        cls = self.spec.unit_class(current.node)
        if issubclass(cls, TrainableUnit):
            trained_on = (current.model_version.training_run if current.model_version else {}).get(
                "label_sources"
            )
            sources = {str(k): v for k, v in sorted(self.tiles.sources.items())}
            if trained_on == sources:
                return None  # the same data and config would give the same model
            return self._train(current, number, current.node.unit, current.node.config, "retrain")
        entries = ladder_for(cls, self.settings.ladder)
        if not entries:
            return None
        unit, config = entries[0]
        return self._train(current, number, unit, config, "retrain")

    def swap(self, current: Version, number: int) -> Version | None:
        """Train the next model kind of the ladder."""
        cls = self.spec.unit_class(current.node)
        entries = ladder_for(cls, self.settings.ladder)
        position = ladder_position(current.node, cls, entries)
        for unit, config in entries[position + 1 :]:
            made = self._train(current, number, unit, config, "swap")
            if made is not None:
                return made
        return None

    def _train(
        self,
        current: Version,
        number: int,
        unit: str,
        config: Mapping[str, Any],
        strategy: str,
    ) -> Version | None:
        from pathray.units.registry import get_unit

        cls = get_unit(unit)
        config = {**dict(config), "seed": self.settings.seed}
        if "mpp" in cls.Config.model_fields:  # the unit works at the pipeline's resolution
            config.setdefault("mpp", self.spec.tiling.mpp)
        valid = cls.validate_config(config).model_dump(mode="json")
        name = f"{self.spec.name}-{self.node_id}-{unit}-{framework_of(cls, valid)}"
        parent = current.model_version
        parent_number = parent.version if parent is not None and parent.model == name else None
        self.notify("train", f"training {name} on {len(self.tiles)} tiles as a Ray task")
        trained = train_model(
            self.catalog,
            self.cold_root,
            unit,
            valid,
            self.tiles,
            batch=self.prepared,
            model_name=name,
            image_set=self.training_set,
            parent_version=parent_number,
            extra={"loop_id": self.loop_id, "iteration": number, "strategy": strategy},
            actor=self.actor,
        )
        node = UnitSpec(
            id=current.node.id,
            unit=unit,
            config=valid,
            after=current.node.after,
            model=trained.version.ref,
            resources=current.node.resources,  # a user's placement outlives retraining
        )
        if _key(node) in self.tried:
            return None
        details = {
            "model": trained.version.ref,
            "training": trained.training,
            "train_scores": trained.train_scores,
            "label_sources": {str(k): v for k, v in sorted(self.tiles.sources.items())},
            "training_slides": list(self.split.training),
        }
        return Version(node, strategy, trained.version, details)

    def next_version(self, current: Version, number: int, strategy: str) -> Version | None:
        """The next version by one strategy, or by the default policy (``auto``)."""
        order: Sequence[str]
        if strategy != "auto":
            order = (strategy,)
        elif issubclass(self.spec.unit_class(current.node), TrainableUnit):
            order = ("retrain", "swap", "config_search")
        else:
            order = ("config_search", "retrain", "swap")
        makers = {"config_search": self.config_search, "retrain": self.retrain, "swap": self.swap}
        for name in order:
            made = makers[name](current, number)
            if made is not None and _key(made.node) not in self.tried:
                return made
        return None

    def remember(self, version: Version) -> None:
        """Mark a version as tried."""
        self.tried.add(_key(version.node))
