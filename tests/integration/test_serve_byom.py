"""Bring your own model, served: registered models answer ``POST /v1/infer`` of ``pathray serve``.

Three models are registered with ``pathray models register``: an XGBoost JSON nucleus
classifier (trained on synthetic nuclei), a WSInfer-format tile classifier folder and the ONNX
export of the same network. Each is bound by ``model: name@1`` in a pipeline YAML file, and the
three files are served by one ``pathray serve -p FILE ...`` (its own local Ray, real HTTP on
loopback). Real H&E tiles posted to ``/v1/infer`` come back with nuclei carrying the nucleus
model's class and label, and with the tile classifiers' label (the same from both runtimes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from pathray.catalog import Catalog
from pathray.config import Settings
from pathray.models import examples as ex
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

TILES = """
name: NAME
version: "1"
description: Tiles labelled by a registered tile classifier.
tiling: {mpp: 2.0, size: 64, overlap: 0, min_tissue: 0.05}
units:
  - {id: tissue, unit: tissue_mask, config: {mpp: 2.0}}
  - {id: classify, unit: tile_classifier, after: [tissue], model: NAME@1, config: {mpp: 2.0}}
"""


def _tile(mpp: float, size: int) -> str:
    """A real H&E tile at ``mpp``, as base64 PNG (what the API takes)."""
    from pathray.slides.readers import open_reader

    reader = open_reader(str(SHARED / "OS-1-detail.ome.tif"))
    return encode_tile(reader.read_region(282, 282, size, size, downsample=mpp / 0.227))


def _register(env: dict[str, str], *args: str) -> str:
    """Run ``pathray models register ARGS``; its output."""
    command = [sys.executable, "-m", "pathray", "models", "register", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _sources(tmp_path: Path) -> dict[str, list[str]]:
    """Model name -> ``register`` arguments: nucleus XGBoost, WSInfer folder, ONNX export."""
    cells = write_object_classifier(tmp_path / "cells", tiles=2)
    wsinfer = ex.write_wsinfer_folder(tmp_path / "wsinfer", patch=128, size=64, spacing=1.0)
    onnx = ex.save_onnx(ex.tile_net(), tmp_path / "export" / "tiles.onnx", 64)
    card = tmp_path / "export" / "card.json"
    card.write_text(json.dumps(ex.tile_card("onnx", onnx.name, size=64, mpp=2.0)))
    return {
        "cells": [str(cells)],
        "tiles-ts": [str(wsinfer)],
        "tiles-onnx": [str(onnx), "--card", str(card)],
    }


def test_registered_models_answer_through_pathray_serve(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "PATHRAY_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    env["RAY_raylet_start_wait_time_s"] = "120"
    sources = _sources(tmp_path)
    classes = json.loads((tmp_path / "cells" / "card.json").read_text())["class_names"]
    assert "registered cells@1: xgboost_json object_classification" in _register(
        env, "cells", *sources["cells"]
    )
    assert "tiles-ts@1: torchscript tile_classification" in _register(
        env, "tiles-ts", *sources["tiles-ts"]
    )
    assert "tiles-onnx@1: onnx tile_classification" in _register(
        env, "tiles-onnx", *sources["tiles-onnx"]
    )
    with Catalog.open(Settings.from_env(home).catalog_url) as catalog:
        token = catalog.create_api_token("client", "service").token
    command = [sys.executable, "-m", "pathray", "serve"]
    for name in ("cells", "tiles-ts", "tiles-onnx"):
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(PIPELINE if name == "cells" else TILES.replace("NAME", name))
        command += ["-p", str(spec)]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    command += ["--port", str(port)]
    with log.open("w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_healthy(proc, url, 600)
        headers = {"Authorization": f"Bearer {token}"}

        def infer(pipeline: str, image: str) -> dict[str, Any]:
            request = {"image": image, "pipeline": pipeline}
            answer = httpx.post(f"{url}/v1/infer", json=request, headers=headers, timeout=120)
            assert answer.status_code == 200, answer.text
            body: dict[str, Any] = answer.json()
            return body

        body = infer("cells", _tile(0.5, 256))
        assert body["pipeline"] == "cells"
        nuclei = body["objects"]
        assert len(nuclei) > 5, body
        for nucleus in nuclei:
            props = nucleus["properties"]
            assert props["object_label"] == classes[props["object_class"]]
            assert nucleus["geometry"]["type"] == "Polygon"
        small = _tile(2.0, 64)
        by_torch, by_onnx = infer("tiles-ts", small)["tile"], infer("tiles-onnx", small)["tile"]
        assert by_torch["tile_label"] in ex.CLASSES
        assert by_torch["tile_label"] == ex.CLASSES[by_torch["tile_class"]]
        assert (by_onnx["tile_class"], by_onnx["tile_label"]) == (
            by_torch["tile_class"],
            by_torch["tile_label"],
        )
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-4000:]
