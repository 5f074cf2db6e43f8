"""A pipeline inferred with ``--model`` runs, and model units land on a GPU where Ray has one.

This machine has no GPU, so the local Ray is told it has one (``num_gpus=1``): Ray then hands
the GPU share to the unit actors that ask for it (visible inside them through
``get_assigned_resources`` and ``get_accelerator_ids``, which each stage logs into the run's
events), while torch, seeing no CUDA, computes on the CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray
import typer
from typer.testing import CliRunner

from pathray.catalog import Catalog
from pathray.cli.pipelines import pipelines_app
from pathray.engine.runner import run_pipeline
from pathray.pipeline.spec import PipelineSpec
from pathray.results.artifacts import ArtifactStore
from pathray.results.store import ColdStore
from pathray.slides.register import register_slides
from pathray.slides.synthetic import make_synthetic_slide
from pipelines.nuclei.train_default import DEFAULT_FOLDER

pytestmark = pytest.mark.ray

app = typer.Typer()
app.add_typer(pipelines_app, name="pipelines")


@pytest.fixture(scope="module")
def gpu_ray() -> Iterator[None]:
    """A local Ray that says it has one GPU (and two CPUs)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    yield
    ray.shutdown()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """A catalog at PATHRAY_HOME with one small synthetic slide in set 'syn' and the shipped
    U-Net registered as a model of its own, ``my-unet@prod`` (a model brought in)."""
    home = tmp_path / "home"
    monkeypatch.setenv("PATHRAY_HOME", str(home))
    monkeypatch.delenv("PATHRAY_CATALOG_URL", raising=False)
    monkeypatch.delenv("PATHRAY_COLD", raising=False)
    home.mkdir()
    catalog = Catalog.open(f"sqlite:///{home / 'catalog.db'}")
    store = ColdStore(home / "cold")
    slide = tmp_path / "syn.tif"
    make_synthetic_slide(slide, width=1024, height=1024, mpp=0.25, seed=3)
    register_slides(catalog, slide, store="synthetic", store_root=tmp_path, image_set="syn")
    catalog.register_model("my-unet", "torch", task="nucleus segmentation")
    version = catalog.add_model_version(
        "my-unet", artifact=ArtifactStore(store.root).put(DEFAULT_FOLDER), created_by="test"
    )
    catalog.set_alias("my-unet", "prod", version.version)
    try:
        yield SimpleNamespace(catalog=catalog, store=store, version=version, tmp=tmp_path)
    finally:
        catalog.close()


def _placements(catalog: Catalog, run_id: str, node: str) -> list[str]:
    return [e.message for e in catalog.run_events(run_id, unit=node) if "unit " in e.message]


def test_inferred_pipeline_with_a_bound_model_runs_on_the_gpu_share(
    gpu_ray: None, env: SimpleNamespace
) -> None:
    out = env.tmp / "p.yaml"
    result = CliRunner().invoke(
        app,
        [
            "pipelines",
            "infer",
            "tissue_mask",
            "nucleus_unet",
            "nucleus_features",
            "--model",
            "nucleus_unet=my-unet@prod",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "# model: nucleus_unet <- my-unet@prod (version 1)" in result.output
    spec = PipelineSpec.from_yaml(out)
    run = run_pipeline(env.catalog, env.store, spec, "syn")
    assert run.status == "succeeded"
    assert sum(c["objects"] for c in run.counts.values()) > 10  # the U-Net found nuclei
    record = env.catalog.get_run(run.run_id)
    nodes, _ = env.catalog.pipeline_graph(record.pipeline_name, record.pipeline_version)
    assert nodes["nucleus_unet"].model_version_id == env.version.id
    unet = _placements(env.catalog, run.run_id, "nucleus_unet")
    # the U-Net's actor holds half of the GPU (its declared share), and, with no CUDA for torch,
    # computes on the CPU
    assert any("GPU share 0.5, GPUs ['0']" in m for m in unet), unet
    assert "unit nucleus_unet computes on cpu" in unet
    tissue = _placements(env.catalog, run.run_id, "tissue_mask")
    assert tissue and all("GPU share 0, GPUs none" in m for m in tissue), tissue


def test_a_node_resources_override_sets_the_gpu_share(gpu_ray: None, env: SimpleNamespace) -> None:
    spec = PipelineSpec.from_yaml(
        "name: tissue-on-gpu\n"
        "tiling: {mpp: 2.0, size: 256, overlap: 0}\n"
        "units:\n"
        "  - {id: tissue, unit: tissue_mask, config: {mpp: 2.0}, resources: {gpus: 0.25}}\n"
    )
    run = run_pipeline(env.catalog, env.store, spec, "syn")
    assert run.status == "succeeded"
    tissue = _placements(env.catalog, run.run_id, "tissue")
    assert any("GPU share 0.25, GPUs ['0']" in m for m in tissue), tissue
