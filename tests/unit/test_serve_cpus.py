"""CPU requests of the unit deployments: together they must fit the cluster, or Serve waits."""

from __future__ import annotations

import pytest

from pathray.cli.pipelines import load_spec
from serve.app import _cpu_scale
from serve.inference import plan_nodes


@pytest.fixture
def deployments() -> dict[str, object]:
    plans = plan_nodes(load_spec("nuclei_classical"))
    # the same units served batched and unbatched are separate deployments with their own actors
    return {f"{p.key()}-b{b}": p for p in plans for b in (1, 8)}


def test_requests_of_every_deployment_fit_three_quarters_of_the_cluster(
    deployments: dict[str, object],
) -> None:
    cpus = _cpu_scale(deployments, None, total=2.0)  # type: ignore[arg-type]
    assert set(cpus) == set(deployments)
    assert sum(cpus.values()) == pytest.approx(
        min(
            1.5,
            sum(
                p.cls.resources.num_cpus
                for p in deployments.values()  # type: ignore[attr-defined]
            ),
        )
    )


def test_a_large_cluster_keeps_the_declared_requests(deployments: dict[str, object]) -> None:
    cpus = _cpu_scale(deployments, None, total=1000.0)  # type: ignore[arg-type]
    for key, plan in deployments.items():
        assert cpus[key] == plan.cls.resources.num_cpus  # type: ignore[attr-defined]


def test_a_fixed_request_overrides_the_declared_ones(deployments: dict[str, object]) -> None:
    assert set(_cpu_scale(deployments, 0.25, total=2.0).values()) == {0.25}  # type: ignore[arg-type]
