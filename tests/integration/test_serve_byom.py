"""Bring your own model, served: a registered model answers ``POST /v1/infer`` of ``pathray serve``.

An XGBoost JSON nucleus classifier (trained on synthetic nuclei) is registered with
``pathray models register``, bound by ``model: cells@1`` in a pipeline YAML file, and that file
is served by ``pathray serve -p FILE`` (its own local Ray, real HTTP on loopback). A real H&E
tile posted to ``/v1/infer`` comes back with nuclei that carry the model's class and label.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from pathray.catalog import Catalog
from pathray.config import Settings
from pipelines.training_data import write_object_classifier
from serve.validation import encode_tile
from tests.helpers import ROOT, SHARED
from tests.integration.test_serve_cli import _free_port, _wait_healthy

pytestmark = [pytest.mark.ray, pytest.mark.timeout(1200)]

PIPELINE = """
name: cells
version: "1"
description: Classical nuclei labelled by a registered XGBoost classifier.
tiling: {mpp: 0.5, size: 256, overlap: 40, min_tissue: 0.05}
units:
  - {id: tissue, unit: tissue_mask, config: {mpp: 0.5}}
  - {id: segment, unit: nucleus_segmentation, after: [tissue], config: {mpp: 0.5}}
  - {id: features, unit: nucleus_features, after: [segment], config: {mpp: 0.5}}
  - {id: classify, unit: object_classifier, after: [features], model: cells@1}
"""


def _tile() -> str:
    """A real H&E tile of nuclei at 0.5 um/px, as base64 PNG (what the API takes)."""
    from pathray.slides.readers import open_reader

    reader = open_reader(str(SHARED / "OS-1-detail.ome.tif"))
    tile = reader.read_region(282, 282, 256, 256, downsample=0.5 / 0.227)
    return encode_tile(tile)


def test_a_registered_object_classifier_answers_through_pathray_serve(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "PATHRAY_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    env["RAY_raylet_start_wait_time_s"] = "120"
    source = write_object_classifier(tmp_path / "cells", tiles=2)
    classes = json.loads((source / "card.json").read_text())["class_names"]
    registered = subprocess.run(
        [sys.executable, "-m", "pathray", "models", "register", "cells", str(source)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert registered.returncode == 0, registered.stderr
    assert "registered cells@1: xgboost_json object_classification" in registered.stdout
    with Catalog.open(Settings.from_env(home).catalog_url) as catalog:
        token = catalog.create_api_token("client", "service").token
    spec = tmp_path / "cells.yaml"
    spec.write_text(PIPELINE)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "pathray", "serve", "-p", str(spec), "--port", str(port)]
    with log.open("w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_healthy(proc, url, 600)
        answer = httpx.post(
            f"{url}/v1/infer",
            json={"image": _tile(), "pipeline": "cells"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["pipeline"] == "cells"
        nuclei = body["objects"]
        assert len(nuclei) > 5, body
        for nucleus in nuclei:
            props = nucleus["properties"]
            assert props["object_label"] == classes[props["object_class"]]
            assert nucleus["geometry"]["type"] == "Polygon"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-4000:]
