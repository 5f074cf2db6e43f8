"""The whole application composed as deployed, in Serve's local testing mode (no Ray cluster).

The ingress, the pipeline deployments and the unit deployments are built by the same
:func:`serve.app.app_builder` and chained through real deployment handles, in this process; the
HTTP layer (auth, status codes, overload) is covered by :mod:`tests.integration.test_serve_api`.
Serve's local mode has no ``@serve.batch``, so batching is off here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pathray.catalog import Catalog
from pathray.catalog.auth import Principal
from pathray.engine.stages import UnitStage
from pipelines.presets import load_preset
from serve.errors import ApiError
from serve.inference import object_columns, plan_nodes, run_in_process, tile_batch, to_json
from serve.schemas import InferRequest
from serve.validation import encode_tile
from tests.helpers import SHARED

CLIENT = Principal("client", "service", "token", 1, None)


@pytest.fixture(scope="module")
def ingress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from ray import serve

    from serve.app import PipelineArgs, ServeArgs, app_builder

    home: Path = tmp_path_factory.mktemp("serve_local")
    catalog = Catalog.open(f"sqlite:///{home / 'catalog.db'}")
    args = ServeArgs(
        pipelines=[
            PipelineArgs(source="tissue", batching=False),
            PipelineArgs(source="nuclei_classical", batching=False),
        ],
        catalog_url=catalog.url,
        cold_root=str(home / "cold"),
        unit_cpus=0.1,
    )
    yield serve.run(app_builder(args), _local_testing_mode=True)
    catalog.close()


def test_the_composed_pipeline_infers_what_the_units_give_in_process(ingress: Any) -> None:
    from pathray.slides.readers import open_reader

    reader = open_reader(str(SHARED / "OS-1-detail.ome.tif"))
    tile = reader.read_region(282, 282, 256, 256, downsample=0.5 / 0.227)
    got = ingress.infer.remote(
        CLIENT, InferRequest(image=encode_tile(tile), pipeline="nuclei_classical")
    ).result()
    plans = plan_nodes(load_preset("nuclei_classical"))
    stages = [UnitStage(**p.stage_kwargs()) for p in plans]
    want = to_json(run_in_process(stages, tile_batch([tile])), object_columns(plans))
    assert got.labels == want["labels"] and got.labels["nucleus"] > 10
    assert [o.geometry for o in got.objects] == [o["geometry"] for o in want["objects"]]
    assert got.tile["nucleus_count"] == want["tiles"][0]["nucleus_count"]
    tissue = ingress.infer.remote(
        CLIENT, InferRequest(image=encode_tile(tile), pipeline="tissue")
    ).result()
    assert tissue.objects == [] and tissue.tile["tissue_fraction"] > 0.5
    health = ingress.health.remote().result()  # the JSONResponse (503 when a pipeline fails)
    assert health.status_code == 200
    assert json.loads(health.body) == {
        "status": "ok",
        "pipelines": ["nuclei_classical", "tissue"],
        "failing": [],
    }
    assert ingress.monitoring.remote(CLIENT).result()["drift"]["tiles"] == 2


def test_bad_requests_raise_typed_errors_through_the_handles(ingress: Any) -> None:
    cases = [
        (InferRequest(image="@@", pipeline="tissue"), "image.not_base64"),
        (
            InferRequest(image=encode_tile(np.zeros((40, 40, 3), np.uint8)), pipeline="x"),
            "pipeline.unknown",
        ),
        (
            InferRequest(image="aGVsbG8=", pipeline="tissue", version="7"),
            "pipeline.unknown_version",
        ),
    ]
    for body, code in cases:
        with pytest.raises(ApiError) as info:
            ingress.infer.remote(CLIENT, body).result()
        assert info.value.code == code
