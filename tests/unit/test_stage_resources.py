"""How a pipeline's unit stages are fitted to the free CPUs (pure policy, no Ray)."""

from __future__ import annotations

from typing import Any

import pytest

from pathray.engine import sizing
from pathray.errors import ResourceError
from pathray.units.base import Resources


def _fit(
    monkeypatch: pytest.MonkeyPatch, cpus: float, gpus: float, *resources: Resources
) -> tuple[list[dict[str, Any]], float]:
    monkeypatch.setattr(sizing, "cluster_gpus", lambda: gpus)
    monkeypatch.setattr(sizing, "largest_node_cpus", lambda: cpus)
    return sizing.fit_stages(list(resources), cpus)


def test_two_cpus_run_two_single_threaded_actors_of_one_unit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stages, read = _fit(monkeypatch, 2.0, 0.0, Resources(num_cpus=1.0))
    assert read == 0.5
    (stage,) = stages
    assert stage["num_cpus"] == 0.75  # two of them fill the 1.5 CPUs beside a read task
    assert stage["compute"].initial_size == 2
    assert stage["compute"].max_size == 2
    assert "num_gpus" not in stage


def test_a_budget_below_the_declared_cpus_is_shared_in_proportion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stages, _ = _fit(monkeypatch, 2.0, 0.0, Resources(num_cpus=1.0), Resources(num_cpus=2.0))
    assert [s["num_cpus"] for s in stages] == [0.5, 1.0]  # 1.5 CPUs shared 1:2
    assert [s["compute"].initial_size for s in stages] == [1, 1]


def test_a_gpu_stage_takes_its_share_in_one_actor(monkeypatch: pytest.MonkeyPatch) -> None:
    stages, _ = _fit(monkeypatch, 2.0, 1.0, Resources(num_cpus=1.0, num_gpus=1.0))
    (stage,) = stages
    assert stage["num_cpus"] == 1.5 and stage["num_gpus"] == 1.0
    assert stage["compute"].initial_size == 1


def test_a_large_budget_keeps_the_declared_cpus_and_grows_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stages, read = _fit(monkeypatch, 16.0, 0.0, Resources(num_cpus=1.0, memory_mb=512))
    (stage,) = stages
    assert read == 1.0
    assert stage["num_cpus"] == 1.0 and stage["memory"] == 512 * 2**20
    assert stage["compute"].initial_size == 1 and stage["compute"].max_size == 15


def test_only_the_free_cpus_are_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve replicas hold 1.5 of 2 CPUs: the actors and a read task fit in the 0.5 left."""
    monkeypatch.setattr(sizing, "cluster_gpus", lambda: 0.0)
    monkeypatch.setattr(sizing, "largest_node_cpus", lambda: 2.0)
    units = [Resources(num_cpus=0.5), Resources(num_cpus=1.0), Resources(num_cpus=1.0)]
    stages, read = sizing.fit_stages(units, 0.5)
    assert read == 0.125
    assert sum(s["num_cpus"] * s["compute"].initial_size for s in stages) + read == 0.5
    assert all(s["compute"].max_size == 1 for s in stages)  # no pool outgrows the budget


def test_a_run_waits_for_free_cpus_then_is_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sizing, "cluster_gpus", lambda: 0.0)
    monkeypatch.setattr(sizing, "cluster_cpus", lambda: 2.0)
    monkeypatch.setattr(sizing, "free_resources", lambda: (0.1, 0.0))
    units = [Resources(num_cpus=1.0), Resources(num_cpus=1.0)]
    assert sizing.required_resources(units) == (0.15, 0.0)
    told: list[str] = []
    with pytest.raises(ResourceError, match=r"at least 0.15 free CPUs.*Got 0.10 free of the "):
        sizing.await_resources(units, lambda: False, wait_s=0.2, poll_s=0.05, notify=told.append)
    assert len(told) == 1 and told[0].startswith("waiting for 0.15 free CPUs (got 0.10)")
    # a cancel ends the wait at once, without an error
    assert sizing.await_resources(units, lambda: True, wait_s=60) is None
    monkeypatch.setattr(sizing, "free_resources", lambda: (0.15, 0.0))
    assert sizing.await_resources(units, lambda: False, wait_s=0) == 0.15


def test_a_gpu_share_is_dropped_on_a_cluster_without_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    stages, _ = _fit(monkeypatch, 16.0, 0.0, Resources(num_cpus=1.0, num_gpus=0.5))
    (stage,) = stages
    assert "num_gpus" not in stage and stage["num_cpus"] == 1.0  # the unit computes on CPUs
    stages, _ = _fit(monkeypatch, 16.0, 2.0, Resources(num_cpus=1.0, num_gpus=0.5))
    assert stages[0]["num_gpus"] == 0.5
