"""A worker node of a two-node Ray cluster killed mid-run, under a real model unit.

The cluster (:class:`ray.cluster_utils.Cluster` on this machine) has a head without CPUs and
one worker node with two, so every stage actor and read task of the run lives on the worker,
the nucleus U-Net's (with its shipped model) among them. Once the first tiles are staged, the
worker node is killed (its raylet and every worker process, no grace) and a replacement node
joins, as a cluster's autoscaler would bring one. Ray restarts the lost actors there and retries
the lost tasks: the run, driven from this process, succeeds with exactly the rows of a clean run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from pathray.catalog import Catalog
from pathray.engine.cluster import ensure_ray
from pathray.engine.runner import RunResult, run_pipeline
from pathray.pipeline.spec import PipelineSpec
from pathray.results.store import ColdStore
from tests.faults import (
    IMAGE_SET,
    SPEC,
    assert_locations_agree,
    assert_same_rows,
    committed_rows,
    register,
    wait_for_staged,
)

pytestmark = pytest.mark.ray
#: Node settings: no fixed agent port (other Ray instances on this machine hold the default).
NODE_ARGS: dict[str, Any] = {"dashboard_agent_listen_port": 0}


def _unit_nodes() -> set[str]:
    """Node ids of the cluster's live unit-stage actors, from the GCS actor table."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    nodes = set()
    for raw in state._connect_and_get_accessor().get_actor_table(None, None):
        data = gcs_pb2.ActorTableData.FromString(raw)
        alive = gcs_pb2.ActorTableData.ActorState.Name(data.state) == "ALIVE"
        if alive and "UnitStage" in (data.repr_name or data.class_name):
            nodes.add((data.address.node_id or data.node_id).hex())
    return nodes


@pytest.fixture
def cluster() -> Iterator[Any]:
    """A head node without CPUs and a worker node with two."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # a Ray left by an earlier test of this process
        ray.shutdown()
    with pytest.MonkeyPatch.context() as patch:
        # A busy machine starts a node's agents slowly; the raylet waits about 15 s by default.
        patch.setenv("RAY_raylet_start_wait_time_s", "120")
        nodes = Cluster(
            initialize_head=True,
            head_node_args={**NODE_ARGS, "num_cpus": 0, "include_dashboard": False},
        )
        try:
            nodes.add_node(**NODE_ARGS, num_cpus=2)
            nodes.wait_for_nodes()
        except BaseException:
            nodes.shutdown()
            raise
        try:
            yield nodes
        finally:
            ray.shutdown()
            nodes.shutdown()


class RunThread(threading.Thread):
    """Drive the run off the main thread: Ray starts nodes only from the main thread."""

    def __init__(self, catalog: Catalog, store: ColdStore) -> None:
        super().__init__(daemon=True)
        self.catalog, self.store = catalog, store
        self.result: RunResult | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        """Run the fault pipeline on the connected cluster."""
        try:
            spec = PipelineSpec.from_yaml(SPEC)
            self.result = run_pipeline(self.catalog, self.store, spec, IMAGE_SET)
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_run_survives_the_loss_of_the_node_running_its_model(
    fault_slide: Path, fault_reference: dict, cluster: Any, tmp_path: Path
) -> None:
    """The worker node, with the U-Net's actors, dies mid-run; the run commits clean rows."""
    store = ColdStore(tmp_path / "cold")
    with Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        register(catalog, fault_slide)
        ensure_ray(cluster.address)
        runner = RunThread(catalog, store)
        runner.start()
        wait_for_staged(store, runner.is_alive)
        (worker,) = cluster.worker_nodes
        units_on_it = _unit_nodes()
        (run_dir,) = (store.root / "staging").iterdir()
        staged_at_kill = len(store.done_tiles(run_dir.name))
        cluster.remove_node(worker, allow_graceful=False)  # raylet and workers, no grace
        time.sleep(1.0)  # the cluster notices the loss before help arrives
        cluster.add_node(**NODE_ARGS, num_cpus=2)
        runner.join(timeout=480)
        assert not runner.is_alive(), "the run did not recover from the node's loss"
        assert runner.error is None, runner.error
        # the model's actors ran on the killed node (the head has no CPU), mid-run
        assert units_on_it == {worker.node_id}
        assert 0 < staged_at_kill < fault_reference["tiles"].num_rows
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert worker.node_id not in alive and len(alive) == 2
        result = runner.result
        assert result is not None and result.status == "succeeded"
        assert_same_rows(committed_rows(store, result.run_id), fault_reference)
        assert_locations_agree(catalog, store, result.run_id)
