"""Placement on a two-node Ray cluster: a unit's actors run where its custom resource is.

The test starts a head node (1 CPU) and a second raylet (1 CPU and the custom resource
``gpu_node``) on this machine with :class:`ray.cluster_utils.Cluster`, runs tissue masking followed
by :class:`~pathray.units.examples.PinnedNoOp` (which asks for ``gpu_node``) through
:func:`~pathray.engine.runner.run_pipeline`, and reads the actor table from the GCS: the pinned
unit's actors ran on the second node only; the other stages could run on either node.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray

from pathray.catalog import Catalog
from pathray.engine.runner import run_pipeline
from pathray.pipeline.spec import PipelineSpec
from pathray.results.store import ColdStore
from pathray.slides.register import register_slides
from pathray.units import registry
from pathray.units.examples import PinnedNoOp
from tests.helpers import SHARED

pytestmark = pytest.mark.ray
SLIDE = SHARED / "OS-1-detail.ome.tif"
RESOURCE = "gpu_node"

SPEC = """
name: placement
version: "1"
tiling: {mpp: 0.5, size: 128, overlap: 0, min_tissue: 0.0}
units:
  - {id: tissue, unit: tissue_mask, config: {mpp: 0.5}}
  - {id: pinned, unit: pinned_noop, after: [tissue]}
"""

#: Node settings: no fixed agent port (other Ray instances on this machine hold the default).
NODE_ARGS: dict[str, Any] = {"num_cpus": 1, "dashboard_agent_listen_port": 0}


@dataclass(frozen=True)
class ActorRecord:
    """One actor of the GCS actor table."""

    repr_name: str
    node_id: str
    resources: dict[str, float]


def _actors() -> list[ActorRecord]:
    """Every actor of the cluster, dead ones included, read from the GCS actor table.

    (``ray.util.state`` needs the dashboard, which these test nodes do not start.)
    """
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    accessor = state._connect_and_get_accessor()
    records = []
    for raw in accessor.get_actor_table(None, None):
        data = gcs_pb2.ActorTableData.FromString(raw)
        records.append(
            ActorRecord(
                repr_name=data.repr_name or data.class_name,
                node_id=(data.address.node_id or data.node_id).hex(),
                resources=dict(data.required_resources),
            )
        )
    return records


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, str]]:
    """A head (1 CPU) and a second node with ``gpu_node``; yields (address, that node's id)."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # a Ray left by an earlier test module of this process
        ray.shutdown()
    with pytest.MonkeyPatch.context() as patch:
        # A busy machine starts a node's agents slowly; the raylet waits about 15 s by default.
        patch.setenv("RAY_raylet_start_wait_time_s", "120")
        nodes = Cluster(
            initialize_head=True, head_node_args={**NODE_ARGS, "include_dashboard": False}
        )
        try:
            pinned = nodes.add_node(**NODE_ARGS, resources={RESOURCE: 1})
            nodes.wait_for_nodes()
        except BaseException:
            nodes.shutdown()
            raise
    try:
        yield nodes.address, pinned.node_id
    finally:
        ray.shutdown()
        nodes.shutdown()


@pytest.fixture
def pinned_unit() -> Iterator[None]:
    """Register the pinned no-op for the test (it is not a default unit)."""
    registry.register(PinnedNoOp)
    yield
    registry.unregister(PinnedNoOp.name)


def test_unit_actors_run_on_the_node_with_their_custom_resource(
    cluster: tuple[str, str], pinned_unit: None, tmp_path: Path
) -> None:
    """The pinned unit's actors are placed on the ``gpu_node`` node; the run completes."""
    from pathray.engine.cluster import cluster_cpus

    address, pinned_node = cluster
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    store = ColdStore(tmp_path / "cold")
    report = register_slides(catalog, SLIDE, store="shared", image_set="placement")
    assert report.registered and not report.rejected
    result = run_pipeline(
        catalog, store, PipelineSpec.from_yaml(SPEC), "placement", ray_address=address
    )
    # the run used the two-node cluster, whose two single CPUs the stages were fitted to
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert pinned_node in nodes and len(nodes) == 2
    assert cluster_cpus() == 2.0
    assert result.status == "succeeded"
    tiles = store.read(result.run_id, "tiles")
    assert tiles.num_rows == result.tiles_processed > 0
    # actors: the pinned stage only on the gpu_node node, the other stages anywhere
    actors = [a for a in _actors() if "MapBatches(" in a.repr_name]
    pinned = [a for a in actors if RESOURCE in a.resources]
    others = [a for a in actors if RESOURCE not in a.resources]
    assert pinned, f"no actor asked for {RESOURCE}: {actors}"
    assert {a.node_id for a in pinned} == {pinned_node}
    assert {a.resources[RESOURCE] for a in pinned} == {1.0}
    assert any("UnitStage" in a.repr_name for a in others)  # the tissue stage
    assert {a.node_id for a in others} <= nodes
