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
from pathray.engine.runner import run_pipeline
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


class NodeKiller(threading.Thread):
    """Kill the worker node once tiles are staged, then add a replacement node."""

    def __init__(self, nodes: Any, store: ColdStore) -> None:
        super().__init__(daemon=True)
        self.nodes, self.store = nodes, store
        self.killed_node = ""
        self.units_on_it: set[str] = set()
        self.staged_at_kill = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        """Wait for staged tiles; kill the worker; start its replacement."""
        try:
            wait_for_staged(self.store, lambda: True)
            (worker,) = self.nodes.worker_nodes
            self.killed_node = worker.node_id
            self.units_on_it = _unit_nodes()
            (run_dir,) = (self.store.root / "staging").iterdir()
            self.staged_at_kill = len(self.store.done_tiles(run_dir.name))
            self.nodes.remove_node(worker, allow_graceful=False)
            time.sleep(1.0)  # the cluster notices the loss before help arrives
            self.nodes.add_node(**NODE_ARGS, num_cpus=2)
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_run_survives_the_loss_of_the_node_running_its_model(
    fault_slide: Path, fault_reference: dict, cluster: Any, tmp_path: Path
) -> None:
    """The worker node, with the U-Net's actors, dies mid-run; the run commits clean rows."""
    store = ColdStore(tmp_path / "cold")
    with Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        register(catalog, fault_slide)
        killer = NodeKiller(cluster, store)
        killer.start()
        try:
            result = run_pipeline(
                catalog, store, PipelineSpec.from_yaml(SPEC), IMAGE_SET, ray_address=cluster.address
            )
        finally:
            killer.join(timeout=300)
        assert killer.error is None, killer.error
        # the model's actors ran on the killed node (the head has no CPU), mid-run
        assert killer.units_on_it == {killer.killed_node}
        assert 0 < killer.staged_at_kill < fault_reference["tiles"].num_rows
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert killer.killed_node not in alive and len(alive) == 2
        assert result.status == "succeeded"
        assert_same_rows(committed_rows(store, result.run_id), fault_reference)
        assert_locations_agree(catalog, store, result.run_id)
