"""GPU requests of the unit deployments: a model unit's share where the cluster has GPUs only."""

from __future__ import annotations

from pathray.engine.models import ResolvedModel
from pathray.pipeline.infer import infer_pipeline
from pathray.pipeline.resources import NodeResources
from serve.app import actor_options
from serve.inference import plan_nodes


def test_a_model_unit_asks_for_its_gpu_share_only_where_the_cluster_has_gpus() -> None:
    spec = infer_pipeline(["tissue_mask", "nucleus_unet"])
    tissue, unet = plan_nodes(spec)
    assert unet.artifacts is None and unet.resources.num_gpus == 0.5  # the unit's declared share
    assert actor_options(unet, 0.75, cluster_gpus=1.0) == {"num_cpus": 0.75, "num_gpus": 0.5}
    assert actor_options(unet, 0.75, cluster_gpus=0.0) == {"num_cpus": 0.75}  # CPUs only
    assert actor_options(tissue, 0.75, cluster_gpus=1.0) == {"num_cpus": 0.75}


def test_the_model_card_and_the_node_set_the_share_of_a_deployment() -> None:
    card = {"cpus": 2.0, "gpus": 1.0, "memory_mb": 2048}
    spec = infer_pipeline(["tissue_mask", "nucleus_unet"])
    _, unet = plan_nodes(spec, {"nucleus_unet": ResolvedModel(7, "/models/unet", card)})
    assert unet.artifacts == {"model": "/models/unet"}
    assert actor_options(unet, 2.0, cluster_gpus=4.0) == {
        "num_cpus": 2.0,
        "num_gpus": 1.0,
        "memory": 2048 * 2**20,
    }
    node = spec.node("nucleus_unet").model_copy(update={"resources": NodeResources(gpus=0.25)})
    spec = spec.model_copy(update={"units": (spec.units[0], node)})
    _, unet = plan_nodes(spec, {"nucleus_unet": ResolvedModel(7, "/models/unet", card)})
    assert actor_options(unet, 2.0, cluster_gpus=4.0)["num_gpus"] == 0.25
