"""The iteration loop: run -> evaluate -> judge -> next unit version -> run again.

:func:`iterate` splits the annotated slides of an image set by slide into training and
validation slides, runs the pipeline on the validation slides, evaluates the run against the
reference and judges the metrics. Until the requirement holds or the budget is spent, a strategy
(:mod:`pathray.iterate.strategies`) makes the next version of the iterated node from the
training slides only, and the loop runs again. Every iteration is recorded in the catalog with
its unit version (whose parent is the previous version of that unit), model version, run,
evaluation and verdict.

Example:
    >>> result = iterate(catalog, store, "nuclei", "synthetic", "synthetic-gt",
    ...                  "f1 >= 0.85", budget=Budget(iterations=3))  # doctest: +SKIP
    >>> result.met, [it.evaluation["f1"] for it in result.iterations]  # doctest: +SKIP
    (True, [0.41, 0.9])
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pathray.catalog import Catalog, ModelVersion
from pathray.catalog.iterations import Iteration, IterationLoop
from pathray.engine.models import parse_model_ref
from pathray.engine.runner import code_version, run_pipeline
from pathray.errors import ConfigError, ConflictError
from pathray.evaluate.run_eval import evaluate_run
from pathray.iterate.data import Split, annotated_slides, split_slides
from pathray.iterate.judge import Verdict, judge
from pathray.iterate.requirement import Requirement
from pathray.iterate.scoring import label_output
from pathray.iterate.strategies import STRATEGIES, Version, objective
from pathray.iterate.workspace import Settings, Workspace
from pathray.pipeline.spec import PipelineSpec, UnitSpec
from pathray.results.store import ColdStore

log = logging.getLogger(__name__)


class Budget(BaseModel):
    """How much a loop may spend.

    Attributes:
        iterations: Iterations in all, the starting version included (so 3 allows two new
            versions).
        seconds: Wall time after which no new iteration starts (None: no limit).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    iterations: int = Field(3, ge=1, le=100)
    seconds: float | None = Field(None, gt=0)


@dataclass(frozen=True)
class IterationEvent:
    """Progress of a loop, as passed to the ``progress`` callback.

    Attributes:
        loop_id: The loop.
        number: The iteration (0 is the starting version).
        stage: ``data``, ``search``, ``train``, ``run``, ``evaluate``, ``verdict`` or ``done``.
        message: What happens, in words.
        metrics: The evaluation's metrics (``verdict`` and ``done`` only).
        verdict: The verdict (``verdict`` only).
    """

    loop_id: str
    number: int
    stage: str
    message: str
    metrics: dict[str, Any] | None = None
    verdict: Verdict | None = None


@dataclass
class LoopResult:
    """What a loop did.

    Attributes:
        loop: The loop as recorded (status ``met``, ``exhausted``, ``failed``...).
        iterations: Its iterations, in order.
        validation_set: Image set of the held-out slides the versions were judged on.
        training_set: Image set of the slides the versions learnt from.
    """

    loop: IterationLoop
    iterations: list[Iteration] = field(default_factory=list)
    validation_set: str = ""
    training_set: str = ""

    @property
    def met(self) -> bool:
        """Whether the requirement was met."""
        return self.loop.status == "met"

    @property
    def best(self) -> Iteration | None:
        """The best iteration (the loop's ``best_number``)."""
        return next((i for i in self.iterations if i.number == self.loop.best_number), None)


def resolve_spec(spec_or_preset: PipelineSpec | str) -> PipelineSpec:
    """A spec given as itself, a preset name or a YAML path."""
    if isinstance(spec_or_preset, PipelineSpec):
        return spec_or_preset
    from pathray.cli.pipelines import load_spec  # presets live with the apps, loaded lazily

    return load_spec(spec_or_preset)


def iterated_node(spec: PipelineSpec, node_id: str | None) -> UnitSpec:
    """The node to iterate: the one named, else the first that outputs label images.

    Raises:
        ConfigError: No such node, or none that outputs label images.
    """
    if node_id is not None:
        node = spec.node(node_id)
        label_output(spec.unit_class(node))
        return node
    for node in spec.ordered():
        try:
            label_output(spec.unit_class(node))
            return node
        except ConfigError:
            continue
    raise ConfigError(
        f"Pipeline {spec.name!r} must have a node that outputs instance label images to "
        "iterate. Got none; name one with node=."
    )


def replace_node(spec: PipelineSpec, node: UnitSpec) -> PipelineSpec:
    """The spec with one node replaced, validated."""
    units = tuple(node if u.id == node.id else u for u in spec.units)
    new = PipelineSpec.model_validate({**spec.model_dump(mode="json"), "units": units})
    new.ordered()
    return new


def _pin_unit_version(
    catalog: Catalog, spec: PipelineSpec, version: Version, parent_id: int | None, actor: str
) -> None:
    """Record the node's unit version with its parent before the run records it without one.

    The config hash is the engine's (:func:`pathray.engine.lineage.register_lineage`), so the
    run finds this unit version and keeps its parent.
    """
    cls = spec.unit_class(version.node)
    config_hash = cls.config_hash(version.node.config)
    model_id = version.model_version.id if version.model_version else None
    if model_id is not None:
        config_hash = f"{config_hash[:8]}m{model_id}"
    args = (
        version.node.unit,
        cls.version,
        cls.validate_config(version.node.config).model_dump(mode="json"),
        config_hash,
        model_id,
    )
    try:
        catalog.register_unit_version(
            *args, parent_id=parent_id, role=cls.role, code_version=code_version(), actor=actor
        )
    except ConflictError:  # made before from another parent: keep that lineage
        catalog.register_unit_version(*args, role=cls.role, actor=actor)


def _model_of(catalog: Catalog, node: UnitSpec) -> ModelVersion | None:
    """The registered model version a node loads, if any."""
    if node.model is None:
        return None
    name, version = parse_model_ref(node.model)
    return catalog.get_model_version(name, int(version) if version.isdigit() else version)


def held_out_sets(loop_id: str) -> tuple[str, str]:
    """Names of a loop's training and validation image sets."""
    return f"iterate-{loop_id[:12]}-training", f"iterate-{loop_id[:12]}-validation"


_HELD_OUT = re.compile(r"iterate-[0-9a-f]{1,12}-(training|validation)")


def is_held_out_set(name: str) -> bool:
    """Whether an image set is a loop's own training or validation set (:func:`held_out_sets`).

    People browse and run on the image sets they made; these are the loop's bookkeeping.
    """
    return _HELD_OUT.fullmatch(name) is not None


def _make_sets(catalog: Catalog, loop_id: str, split: Split, actor: str) -> tuple[str, str]:
    names = held_out_sets(loop_id)
    for name, slides in zip(names, (split.training, split.validation), strict=True):
        catalog.create_image_set(name, f"iteration loop {loop_id}", actor=actor)
        catalog.add_to_image_set(name, list(slides), actor=actor)
    return names


def iterate(
    catalog: Catalog,
    store: ColdStore,
    spec_or_preset: PipelineSpec | str,
    image_set: str,
    reference: str,
    requirement: Requirement | str,
    *,
    strategy: str = "auto",
    budget: Budget | Mapping[str, Any] | None = None,
    node: str | None = None,
    validation: float = 0.5,
    validation_slides: Sequence[int] | None = None,
    settings: Settings | None = None,
    requester: str = "system",
    progress: Callable[[IterationEvent], None] | None = None,
) -> LoopResult:
    """Iterate a pipeline node until the requirement holds on held-out slides or the budget ends.

    Args:
        catalog: The catalog.
        store: The cold store.
        spec_or_preset: The starting pipeline (a spec, a preset name or a YAML path).
        image_set: The image set whose annotated slides are split into training and
            validation slides.
        reference: The reference annotation set.
        requirement: What the versions must meet (see :class:`Requirement`).
        strategy: ``auto`` (default policy), ``config_search``, ``retrain`` or ``swap``.
        budget: Iterations (starting version included) and seconds.
        node: Id of the node to iterate (default: the first that outputs label images).
        validation: Fraction of the annotated slides held out for judging.
        validation_slides: Held-out slide ids chosen by hand.
        settings: Search spaces, model ladder, corrections, seed (defaults: :class:`Settings`).
        requester: Who runs the loop (runs, models and audit entries carry it).
        progress: Called with an :class:`IterationEvent` as the loop advances.

    Returns:
        The loop and its iterations.

    Raises:
        ConfigError: A bad requirement, strategy, budget, split or node.
        NotFoundError: The image set or the reference does not exist.
    """
    req = Requirement.parse(requirement)
    if strategy not in STRATEGIES:
        raise ConfigError(f"Strategy must be one of {', '.join(STRATEGIES)}. Got {strategy!r}.")
    limits = budget if isinstance(budget, Budget) else Budget.model_validate(dict(budget or {}))
    settings = settings or Settings()
    spec = resolve_spec(spec_or_preset)
    start_node = iterated_node(spec, node)
    split = split_slides(
        annotated_slides(catalog, image_set, reference),
        validation=validation,
        seed=settings.seed,
        validation_slides=validation_slides,
    )
    loop = catalog.create_iteration_loop(
        pipeline_name=spec.name,
        node_id=start_node.id,
        image_set=image_set,
        reference=reference,
        requirement=str(req),
        budget=limits.model_dump(),
        strategy=strategy,
        settings={
            **settings.to_json(),
            "training_slides": list(split.training),
            "validation_slides": list(split.validation),
        },
        requester=requester,
    )
    training_set, validation_set = _make_sets(catalog, loop.id, split, requester)
    result = LoopResult(loop, [], validation_set, training_set)

    def notify(number: int, stage: str, message: str, **extra: Any) -> None:
        log.info("loop %s iteration %d %s: %s", loop.id[:8], number, stage, message)
        if progress is not None:
            progress(IterationEvent(loop.id, number, stage, message, **extra))

    number = 0
    workspace = Workspace(
        catalog,
        store.root,
        spec,
        start_node.id,
        split,
        reference,
        req,
        training_set,
        settings,
        loop.id,
        requester,
        lambda stage, message: notify(number, stage, message),
    )
    goals = [(t.metric, t.higher_is_better) for t in req.thresholds]
    started = time.monotonic()
    current = Version(start_node, "start", _model_of(catalog, start_node))
    current_spec, previous, parent = spec, None, None
    best: tuple[float, int] | None = None
    status, error = "exhausted", None
    try:
        while True:
            iteration = catalog.add_iteration(
                loop.id,
                number,
                strategy=current.strategy,
                unit_name=current.node.unit,
                config=current.node.config,
                parent_id=None if parent is None else parent.id,
                details=current.details,
                actor=requester,
            )
            workspace.remember(current)
            try:
                done = _run_iteration(
                    catalog, store, current_spec, current, iteration, req, previous, parent, notify
                )
            except BaseException as exc:
                catalog.update_iteration(
                    iteration.id, status="failed", error=f"{type(exc).__name__}: {exc}"
                )
                raise
            result.iterations.append(done)
            score = objective(done.evaluation, goals)
            if best is None or score > best[0]:
                best = (score, number)
            if done.status == "met":
                status = "met"
                break
            spent = time.monotonic() - started
            if number + 1 >= limits.iterations or (limits.seconds and spent >= limits.seconds):
                break
            number += 1
            made = workspace.next_version(current, number, strategy)
            if made is None:
                notify(number, "done", f"strategy {strategy!r} has no new version to offer")
                break
            previous, parent = done.evaluation, done
            current = made
            current_spec = replace_node(current_spec, made.node)
    except KeyboardInterrupt:
        status, error = "cancelled", "interrupted"
        raise
    except Exception as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        result.loop = catalog.finish_iteration_loop(
            loop.id,
            status,
            best_number=None if best is None else best[1],
            error=error,
            actor=requester,
        )
    notify(number, "done", f"loop {status} after {len(result.iterations)} iteration(s)")
    return result


def _run_iteration(
    catalog: Catalog,
    store: ColdStore,
    spec: PipelineSpec,
    version: Version,
    iteration: Iteration,
    req: Requirement,
    previous: Mapping[str, Any] | None,
    parent: Iteration | None,
    notify: Callable[..., None],
) -> Iteration:
    """Run one version on the held-out slides, evaluate it, judge it, record it all."""
    number = iteration.number
    loop = catalog.get_iteration_loop(iteration.loop_id)
    requester = loop.requester
    validation_set = held_out_sets(loop.id)[1]
    parent_uv = None
    if parent is not None and parent.unit_name == version.node.unit:
        parent_uv = parent.unit_version_id
    _pin_unit_version(catalog, spec, version, parent_uv, requester)
    notify(number, "run", f"running {spec.name} ({version.node.unit}) on {validation_set}")
    run = run_pipeline(catalog, store, spec, validation_set, requester=requester)
    recorded = catalog.get_run(run.run_id)
    nodes, _ = catalog.pipeline_graph(recorded.pipeline_name, recorded.pipeline_version)
    unit_version = nodes[version.node.id]
    catalog.update_iteration(
        iteration.id,
        run_id=run.run_id,
        unit_version_id=unit_version.id,
        model_version_id=version.model_version.id if version.model_version else None,
        actor=requester,
    )
    notify(number, "evaluate", f"comparing run {run.run_id} with the reference")
    report = evaluate_run(catalog, store, run.run_id, loop.reference, actor=requester)
    metrics = dict(report["overall"])
    verdict = judge(metrics, req, previous)
    notify(number, "verdict", verdict.summary(), metrics=metrics, verdict=verdict)
    details = {**iteration.details, "per_slide": report.get("per_slide", {})}
    done = catalog.update_iteration(
        iteration.id,
        status="met" if verdict.met else "not_met",
        evaluation=metrics,
        verdict=verdict.to_dict(),
        details=details,
        actor=requester,
    )
    return done
