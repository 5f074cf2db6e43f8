"""A trained model registered in the model registry runs inside a pipeline, traceably."""

from __future__ import annotations

from pathlib import Path

import pytest

from pathray.catalog import Catalog
from pathray.engine.cluster import ensure_ray
from pathray.engine.runner import run_pipeline
from pathray.errors import ConfigError
from pathray.pipeline.spec import PipelineSpec
from pathray.results.artifacts import ArtifactStore
from pathray.results.store import ColdStore
from pathray.slides.register import register_slides
from pipelines.training_data import example_model
from tests.helpers import OME_FILES

pytestmark = pytest.mark.ray

SPEC = """
name: learned-nuclei
tiling: {mpp: 0.5, size: 256, overlap: 40}
units:
  - {id: tissue, unit: tissue_mask}
  - {id: segment, unit: nucleus_pixel_classifier, after: [tissue], model: MODEL, config: CONFIG}
  - {id: features, unit: nucleus_features, after: [segment]}
"""


def test_registered_model_runs_in_a_pipeline(tmp_path: Path) -> None:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    store = ColdStore(tmp_path / "cold")
    register_slides(catalog, OME_FILES[0], store="shared", image_set="he")
    config, artifacts = example_model("nucleus_pixel_classifier", tmp_path / "model")
    artifact = ArtifactStore(store.root).put(artifacts["model"])
    catalog.register_model("nuclei-rf", "sklearn", task="nucleus segmentation")
    version = catalog.add_model_version(
        "nuclei-rf",
        artifact=artifact,
        training_run={"data": "synthetic"},
        metrics={},
        created_by="test",
    )
    catalog.set_alias("nuclei-rf", "champion", version.version)
    spec = PipelineSpec.from_yaml(
        SPEC.replace("MODEL", "nuclei-rf@champion").replace("CONFIG", str(config).replace("'", '"'))
    )
    ensure_ray(num_cpus=2)
    result = run_pipeline(catalog, store, spec, "he")
    assert store.read(result.run_id).num_rows > 20
    run = catalog.get_run(result.run_id)
    nodes, _ = catalog.pipeline_graph(run.pipeline_name, run.pipeline_version)
    assert nodes["segment"].model_version_id == version.id  # the result traces to the model
    with pytest.raises(ConfigError, match=r"unknown model 'nope' instead\. "):
        run_pipeline(
            catalog,
            store,
            PipelineSpec.from_yaml(SPEC.replace("MODEL", "nope@1").replace("CONFIG", "{}")),
            "he",
        )
    with pytest.raises(ConfigError, match=r"name@version"):
        run_pipeline(
            catalog,
            store,
            PipelineSpec.from_yaml(SPEC.replace("MODEL", "nuclei-rf").replace("CONFIG", "{}")),
            "he",
        )
