"""How many CPUs and GPUs a run's unit stages take, fitted to what the cluster has free.

- :func:`stage_resources`: what one actor of each node asks for (unit, model card, node);
- :func:`fit_stages`: those requests fitted to the free CPUs (Ray Data's ``map_batches``
  arguments);
- :func:`required_resources` and :func:`await_resources`: the least a run needs to start, and
  the bounded wait for it (idle warm unit actors are released first).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ray

from pathray.engine import warm as warm_units
from pathray.engine.cluster import cluster_cpus, cluster_gpus, free_resources, largest_node_cpus
from pathray.engine.models import ResolvedModel
from pathray.errors import ResourceError
from pathray.pipeline.resources import node_resources
from pathray.pipeline.spec import PipelineSpec, UnitSpec
from pathray.units.base import Resources

#: The smallest CPU share of a stage actor or a read task: a run needs that much free for one
#: actor of every stage and a read task, or it is refused.
MIN_SHARE_CPUS = 0.05
#: Seconds a run waits for those CPUs to come free (actors of a run that just ended release
#: theirs shortly after it) before it is refused.
RESOURCE_WAIT_S = 30.0


def stage_resources(
    spec: PipelineSpec,
    order: list[UnitSpec],
    models: dict[str, ResolvedModel] | None = None,
) -> list[Resources]:
    """What one actor of each node asks for: its unit's, its model card's, its node's.

    See :func:`pathray.pipeline.resources.node_resources` for how the three combine.
    """
    models = models or {}
    return [
        node_resources(
            spec.unit_class(node).resources,
            models[node.id].resources if node.id in models else None,
            node.resources,
        )
        for node in order
    ]


def fit_stages(declared: list[Resources], free_cpus: float) -> tuple[list[dict[str, Any]], float]:
    """Ray resources of the unit stages and of a read task, fitted to the free CPUs.

    A stage's GPU share is kept where the cluster has GPUs and dropped where it has none (the
    unit then computes on CPUs).

    Actors hold their CPUs while idle, so the declared CPUs are fitted to the budget (the CPUs
    nothing else holds, less one read task's): what Serve replicas or other runs hold is never
    counted, or the run would wait forever for it.

    - a budget below the declared sum is shared in proportion (one actor of every stage must
      fit beside a read task, else the pipeline would wait forever for a read slot);
    - a budget that holds one actor of every stage but not two is split so that *two* actors
      of every CPU stage fit, and both start at once: two single-threaded actors keep both
      cores of a small machine busy, where one two-threaded actor stalls at every parallel
      region a read task or the driver interrupts (on 2 CPUs the nucleus U-Net streams 40 tiles
      a second so, against 24-31 with one actor on 1.5 CPUs). A GPU stage instead takes its
      whole share in one actor (its threads feed the GPU), never beyond what the largest node
      holds beside a read task;
    - a larger budget keeps the declared CPUs, and Ray Data adds actors while work waits.

    Args:
        declared: What one actor of each stage asks for (:func:`stage_resources`), in order.
        free_cpus: CPUs free for the run (at least what :func:`required_resources` says).

    Returns:
        The keyword arguments of each stage's ``map_batches`` (CPUs, GPUs, memory, actor pool),
        and the CPUs of one read task.
    """
    gpus = cluster_gpus()
    read_cpus = min(1.0, free_cpus * 0.25)
    budget = free_cpus - read_cpus
    wanted = sum(r.num_cpus for r in declared)
    node_cap = min(largest_node_cpus(), free_cpus) - read_cpus
    stages = []
    for resources in declared:
        on_gpu = bool(resources.num_gpus and gpus)
        cpus, initial = resources.num_cpus, 1
        # The budget is positive, so either branch implies wanted > 0.
        if budget < wanted:
            cpus = cpus * budget / wanted
        elif budget < 2 * wanted:
            if on_gpu:
                cpus = max(cpus, min(cpus * budget / wanted, node_cap))
            else:
                cpus, initial = cpus * budget / (2 * wanted), 2
        stage: dict[str, Any] = {
            "num_cpus": cpus,
            "compute": ray.data.ActorPoolStrategy(
                min_size=1,
                max_size=max(initial, int(budget // max(cpus, 0.25))),
                initial_size=initial,
            ),
        }
        if on_gpu:
            stage["num_gpus"] = resources.num_gpus
        if resources.memory_mb:
            stage["memory"] = resources.memory_mb * 2**20
        if resources.custom:
            stage["resources"] = dict(resources.custom)
        stages.append(stage)
    return stages, read_cpus


def required_resources(declared: list[Resources]) -> tuple[float, float]:
    """The free CPUs and GPUs a run needs to start: one actor of every stage and a read task.

    Each CPU share can shrink to :data:`MIN_SHARE_CPUS`; a GPU stage needs its GPUs whole
    (on a cluster that has GPUs at all; elsewhere it runs on CPUs).
    """
    gpus = sum(r.num_gpus for r in declared) if cluster_gpus() else 0.0
    return round(MIN_SHARE_CPUS * (len(declared) + 1), 6), float(gpus)


def await_resources(
    declared: list[Resources],
    cancelled: Callable[[], bool],
    wait_s: float = RESOURCE_WAIT_S,
    poll_s: float = 0.5,
    notify: Callable[[str], Any] | None = None,
    keep: Callable[[str], bool] = lambda name: False,
) -> float | None:
    """Wait until one actor of every stage fits in what the cluster has free.

    Idle warm unit actors (:mod:`pathray.engine.warm`) are released first when the CPUs are
    short, except those ``keep`` names (the run's own pools).

    Args:
        declared: What one actor of each stage asks for (:func:`stage_resources`).
        cancelled: Whether the run was cancelled meanwhile (asked at every poll).
        wait_s: Seconds to wait at most.
        poll_s: Seconds between two looks.
        notify: Told once, in words, that the run waits (the run's event log).
        keep: Whether a warm actor (by name) must be kept although idle.

    Returns:
        The free CPUs (the run's budget), or None when the run was cancelled while waiting.

    Raises:
        ResourceError: Still too few free resources after ``wait_s`` seconds.
    """
    need_cpus, need_gpus = required_resources(declared)
    deadline = time.monotonic() + wait_s
    evict = True
    while True:
        cpus, gpus = free_resources()
        if cpus >= need_cpus and gpus >= need_gpus:
            return cpus
        if cancelled():
            return None
        if evict:
            # Warm unit actors no run holds are a cache: their CPUs go to a run that needs them.
            evict = False
            if warm_units.evict_idle(keep):
                continue
        if notify is not None:
            notify(
                f"waiting for {need_cpus:.2f} free CPUs (got {cpus:.2f}) to start one actor of "
                f"each stage, at most {wait_s:g} s"
            )
            notify = None
        if time.monotonic() >= deadline:
            gpu_note = f" and {need_gpus:g} GPUs (got {gpus:g})" if need_gpus else ""
            raise ResourceError(
                f"A run must find at least {need_cpus:.2f} free CPUs{gpu_note}: one actor of "
                f"each of its {len(declared)} stages and a read task. Got {cpus:.2f} free of the "
                f"cluster's {cluster_cpus():g} after waiting {wait_s:g} s; the rest is held by "
                "Serve replicas or other runs. Give Ray more CPUs, serve the units with fewer "
                "(ServeArgs.unit_cpus), or retry when other runs have finished."
            )
        time.sleep(poll_s)
