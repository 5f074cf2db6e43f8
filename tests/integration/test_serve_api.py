"""The Serve API over real HTTP on loopback: inference, bad input, auth, overload, drift, jobs.

One application is started for the module (real Ray, real Serve, real catalog and cold store):
the ``tissue`` and ``nuclei`` presets with batching, a deliberately slow pipeline (dark blobs
sleeping 0.8 s per call) limited to one request in flight and one queued, to show overload, and
a pipeline that fails while a flag file exists (:mod:`tests.flagged`), to show ``/health``.
Beside it, the clinician app runs as a second Serve application under ``/ui``.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from pathray.catalog import Catalog
from pathray.engine.stages import UnitStage
from pathray.slides.register import register_slides
from pipelines.presets import load_preset
from serve.errors import CODES
from serve.inference import object_columns, plan_nodes, run_in_process, tile_batch, to_json
from serve.validation import encode_tile
from tests.helpers import OME_FILES, SHARED

# Starting Ray and eight Serve replicas on a busy 2-core machine takes minutes.
pytestmark = [pytest.mark.ray, pytest.mark.timeout(1200)]
TILE_SLIDE = SHARED / "OS-1-detail.ome.tif"  # H&E, about 0.227 um/px
JOB_SLIDE = next(p for p in OME_FILES if "ndpi" in p.name)  # 2202 px square
TERMINAL = ("succeeded", "failed", "cancelled")
PIPELINES = ["flaky", "nuclei_classical", "slow", "tissue"]
UI_PASSWORD = "clinician-password"
SLOW = """
name: slow
version: "1"
description: Dark blobs, slowed down (overload tests).
tiling: {mpp: 0.25, size: 128, overlap: 16, min_tissue: 0.0}
units:
  - {id: blobs, unit: dark_blobs, config: {threshold: 110, delay_s: 0.8}}
"""

FLAKY = """
name: flaky
version: "1"
description: Dark blobs failing while a flag file exists (health tests).
tiling: {{mpp: 0.25, size: 128, overlap: 16, min_tissue: 0.0}}
units:
  - {{id: blobs, unit: flagged_blobs, config: {{threshold: 110, flag: "{flag}"}}}}
"""
#: The largest body the test service accepts (small, so an oversize body is quick to send).
MAX_BODY = 8 * 2**20


def _tiles(n: int, size: int = 256) -> list[np.ndarray]:
    """Real H&E tiles at 0.5 um/px."""
    from pathray.slides.readers import open_reader

    reader = open_reader(str(TILE_SLIDE))
    down = 0.5 / 0.227
    origins = [(x, y) for y in range(0, 1400, 280) for x in range(0, 1400, 280)][:n]
    return [reader.read_region(x, y, size, size, downsample=down) for x, y in origins]


def _png(image: Image.Image | np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buf, fmt)
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Env:
    """The running service and what the tests need to talk to it."""

    def __init__(
        self, url: str, catalog: Catalog, tokens: dict[str, str], slide_id: int, flag: Path
    ):
        self.flag = flag
        self.url = url
        self.catalog = catalog
        self.tokens = tokens
        self.slide_id = slide_id
        self.client = httpx.Client(base_url=url, timeout=60)

    def auth(self, role: str = "service") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def infer(self, payload: Any, role: str = "service", **kw: Any) -> httpx.Response:
        return self.client.post("/v1/infer", json=payload, headers=self.auth(role), **kw)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    import ray
    from ray import serve

    from pathray.engine.cluster import ensure_ray
    from serve.app import DriftArgs, PipelineArgs, ServeArgs, app_builder, start
    from serve.clinician import clinician_app
    from serve.monitoring import build_reference

    home = tmp_path_factory.mktemp("serve")
    catalog = Catalog.open(f"sqlite:///{home / 'catalog.db'}")
    report = register_slides(catalog, JOB_SLIDE, store="shared", image_set="ki67")
    assert report.registered
    tokens = {
        role: catalog.create_api_token(f"client-{role}", role).token
        for role in ("service", "clinician", "engineer")
    }
    reference = build_reference(_tiles(12)).save(home / "reference.json")
    slow = home / "slow.yaml"
    slow.write_text(SLOW)
    import tests.flagged  # noqa: F401 - registers the flagged_blobs unit

    flaky = home / "flaky.yaml"
    flaky.write_text(FLAKY.format(flag=home / "broken"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_raylet_start_wait_time_s", "120")
        for attempt in range(3):  # a raylet can die at start on a loaded machine: start again
            try:
                ensure_ray(num_cpus=2)
                break
            except Exception:
                ray.shutdown()
                if attempt == 2:
                    raise
    args = ServeArgs(
        pipelines=[
            "tissue",
            "nuclei_classical",
            PipelineArgs(
                source=str(slow), batching=False, max_ongoing_requests=1, max_queued_requests=1
            ),
            PipelineArgs(source=str(flaky), batching=False),
        ],
        max_body_bytes=MAX_BODY,
        catalog_url=catalog.url,
        cold_root=str(home / "cold"),
        unit_cpus=0.1,
        drift=DriftArgs(reference=str(reference), window=8, min_tiles=4, threshold=2.0),
    )
    catalog.add_user("cara", "clinician")
    catalog.set_password("cara", UI_PASSWORD)
    port = _free_port()
    ui = clinician_app(catalog.url, str(home / "cold"), poll_ms=60_000)
    url = start(app_builder(args), port=port, ui=ui)
    try:
        yield Env(url, catalog, tokens, report.registered[0].id, home / "broken")
    finally:
        serve.shutdown()
        ray.shutdown()
        catalog.close()


def test_health_is_open_and_the_schema_is_published(env: Env) -> None:
    health = env.client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "pipelines": PIPELINES, "failing": []}
    published = env.client.get("/openapi.json")
    schema = published.json()
    assert published.status_code == 200 and "paths" in schema, published.text[:500]
    # the error contract: every code of serve.errors is published, /health may answer 503
    code = schema["components"]["schemas"]["ErrorDetail"]["properties"]["code"]
    assert code["enum"] == sorted(CODES)
    assert {"request.unsupported_media_type", "image.bit_depth"} <= set(code["enum"])
    assert "503" in schema["paths"]["/health"]["get"]["responses"]
    assert {"/v1/infer", "/v1/jobs", "/v1/jobs/{run_id}", "/metrics"} <= set(schema["paths"])
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    listed = env.client.get("/v1/pipelines", headers=env.auth("clinician")).json()
    assert {p["name"]: p["batching"] for p in listed} == {
        "flaky": False,
        "nuclei_classical": True,
        "slow": False,
        "tissue": True,
    }


def test_inference_equals_the_pipeline_in_process(env: Env) -> None:
    """The served pipeline gives the objects the same units give in-process."""
    tile = _tiles(2)[1]
    response = env.infer({"image": encode_tile(tile), "pipeline": "nuclei_classical", "mpp": 0.5})
    assert response.status_code == 200, response.text
    got = response.json()
    spec = load_preset("nuclei_classical")
    plans = plan_nodes(spec)
    stages = [UnitStage(**p.stage_kwargs()) for p in plans]
    want = to_json(run_in_process(stages, tile_batch([tile])), object_columns(plans))
    assert got["labels"] == want["labels"] and got["labels"]["nucleus"] > 10
    assert len(got["objects"]) == len(want["objects"])
    assert [o["geometry"] for o in got["objects"]] == [o["geometry"] for o in want["objects"]]
    assert got["tile"]["nucleus_count"] == want["tiles"][0]["nucleus_count"]
    assert got["tile"]["tissue_fraction"] == pytest.approx(want["tiles"][0]["tissue_fraction"])
    assert (got["width"], got["height"], got["version"]) == (256, 256, spec.version)


def _tissue(image: str, **extra: Any) -> dict[str, Any]:
    return {"image": image, "pipeline": "tissue", **extra}


def _bad_inputs() -> list[tuple[str, Any, str, int]]:
    rgb = _tiles(1, 128)[0]
    png = _png(rgb)
    good = _b64(png)
    bomb = _png(Image.new("RGB", (6000, 6000)))  # 6000^2 > 4 * 2048^2: refused undecoded
    gif = _png(Image.new("RGB", (64, 64)), "GIF")
    return [
        ("empty body", None, "request.empty_body", 400),
        ("missing image", {"pipeline": "tissue"}, "request.missing_field", 422),
        ("extra field", _tissue(good, x=1), "request.extra_field", 422),
        ("not base64", _tissue("***not base64***"), "image.not_base64", 422),
        ("not an image", _tissue(_b64(b"%PDF-1.4 hello")), "image.not_an_image", 422),
        ("truncated", _tissue(_b64(png[: len(png) // 2])), "image.truncated", 422),
        ("bomb", _tissue(_b64(bomb)), "image.decompression_bomb", 413),
        ("grey", _tissue(_b64(_png(Image.new("L", (64, 64))))), "image.channels", 422),
        ("rgba", _tissue(_b64(_png(Image.new("RGBA", (64, 64))))), "image.channels", 422),
        ("too small", _tissue(_b64(_png(rgb[:8, :8]))), "image.too_small", 422),
        ("too large", _tissue(_b64(_png(Image.new("RGB", (2100, 40))))), "image.too_large", 413),
        ("unknown pipeline", {"image": good, "pipeline": "nope"}, "pipeline.unknown", 404),
        ("unknown version", _tissue(good, version="9"), "pipeline.unknown_version", 404),
        ("wrong mpp", _tissue(good, mpp=2.0), "image.resolution", 422),
        ("empty image", _tissue(""), "image.empty", 422),
        ("gif", _tissue(_b64(gif)), "image.unsupported_format", 415),
    ]


def test_each_bad_input_gets_its_own_code_and_the_replica_stays_healthy(env: Env) -> None:
    seen = set()
    for name, payload, code, status in _bad_inputs():
        if payload is None:
            response = env.client.post("/v1/infer", headers=env.auth())
        else:
            response = env.infer(payload)
        assert response.status_code == status, f"{name}: {response.status_code} {response.text}"
        error = response.json()["error"]
        assert error["code"] == code, f"{name}: {error}"
        assert error["message"] and len(error["message"]) < 400, name
        seen.add(code)
    assert len(seen) == len(_bad_inputs()) - 1  # one code per failure (two channel cases)
    invalid_json = env.client.post(
        "/v1/infer",
        content=b"{not json",
        headers={**env.auth(), "content-type": "application/json"},
    )
    assert invalid_json.status_code == 400
    assert invalid_json.json()["error"]["code"] == "request.invalid_json"
    # still serving
    ok = env.infer({"image": encode_tile(_tiles(1)[0]), "pipeline": "tissue"})
    assert ok.status_code == 200 and ok.json()["tile"]["tissue_fraction"] > 0.5


def test_no_token_no_answer_and_roles_are_scoped(env: Env) -> None:
    body = {"image": encode_tile(_tiles(1, 64)[0]), "pipeline": "tissue"}
    missing = env.client.post("/v1/infer", json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["code"] == "auth.missing_token"
    wrong = env.client.post("/v1/infer", json=body, headers={"Authorization": "Bearer prt_nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "auth.invalid_token"
    assert env.client.get("/v1/pipelines").status_code == 401
    assert env.client.get("/metrics").status_code == 401
    # a clinician infers and reads, but neither submits jobs nor reads the metrics
    assert env.infer(body, role="clinician").status_code == 200
    job = {"pipeline": "tissue", "image_set": "ki67"}
    forbidden = env.client.post("/v1/jobs", json=job, headers=env.auth("clinician"))
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "auth.forbidden"
    assert env.client.get("/metrics", headers=env.auth("clinician")).status_code == 403
    assert env.client.get("/metrics", headers=env.auth("engineer")).status_code == 200


def test_overload_answers_503_with_retry_after(env: Env) -> None:
    """One in flight and one queued on the slow pipeline: the rest are refused at once."""
    body = {"image": encode_tile(_tiles(1, 128)[0]), "pipeline": "slow"}

    def call(_: int) -> httpx.Response:
        with httpx.Client(base_url=env.url, timeout=60) as client:
            return client.post("/v1/infer", json=body, headers=env.auth())

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(call, range(8)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 1 and codes.count(503) >= 4, codes
    assert set(codes) <= {200, 503}, codes
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "overloaded"
    assert time.perf_counter() - start < 8 * 0.8  # refused at once, not queued behind the rest
    assert call(0).status_code == 200  # and serving again once the load is gone


def test_metrics_and_input_drift(env: Env) -> None:
    for tile in _tiles(4):
        assert env.infer({"image": encode_tile(tile), "pipeline": "tissue"}).status_code == 200
    calm = env.client.get("/v1/monitoring", headers=env.auth("engineer")).json()
    assert calm["drift"]["reference"] and not calm["drift"]["warning"], calm["drift"]
    assert calm["endpoints"]["/v1/infer"]["requests"] >= 5
    assert calm["endpoints"]["/v1/infer"]["p99_ms"] >= calm["endpoints"]["/v1/infer"]["p50_ms"]
    # blue-stained tiles: colour and stain statistics far from the H&E reference
    for tile in _tiles(8):
        blue = tile.copy()
        blue[..., 0] //= 3
        blue[..., 2] = 255 - blue[..., 2] // 4
        assert env.infer({"image": encode_tile(blue), "pipeline": "tissue"}).status_code == 200
    drifted = env.client.get("/v1/monitoring", headers=env.auth("engineer")).json()["drift"]
    assert drifted["warning"] and "input mean_r" in drifted["warnings"], drifted
    # the clinician app shows the same warning (and the latency table) from this endpoint
    from ui.service import service_markdown

    shown = service_markdown(env.url, env.tokens["engineer"])
    assert "Drift warning" in shown and "input mean_r" in shown, shown
    assert "| `/v1/infer` |" in shown, shown
    refused = service_markdown(env.url, env.tokens["clinician"])
    assert "refused the request (403)" in refused, refused
    text = env.client.get("/metrics", headers=env.auth("engineer")).text
    assert "pathray_drift_warning 1.0" in text
    assert 'pathray_request_latency_seconds_bucket{endpoint="/v1/infer"' in text
    assert 'pathray_requests_total{endpoint="/v1/infer",method="POST",status="200"}' in text
    assert "pathray_errors_total" in text or "pathray_tiles_total" in text


def test_slide_jobs_status_results_and_cancel(env: Env) -> None:
    headers = env.auth()
    bad = env.client.post("/v1/jobs", json={"pipeline": "slow"}, headers=headers)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "job.target"
    unknown = env.client.post("/v1/jobs", json={"pipeline": "zz", "slide": 1}, headers=headers)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "pipeline.unknown"
    missing = env.client.get("/v1/jobs/doesnotexist", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    submitted = env.client.post(
        "/v1/jobs", json={"pipeline": "slow", "slide": env.slide_id}, headers=headers
    )
    assert submitted.status_code == 202, submitted.text
    run_id = submitted.json()["run_id"]
    deadline = time.monotonic() + 150
    status: dict[str, Any] = submitted.json()
    while time.monotonic() < deadline and status["status"] not in TERMINAL:
        time.sleep(1)
        status = env.client.get(f"/v1/jobs/{run_id}", headers=headers).json()
    assert status["status"] == "succeeded", status
    assert status["tiles_done"] == status["tiles_total"] > 0 and status["fraction"] == 1.0
    assert status["units"]["blobs"]["tiles_done"] == status["tiles_total"]
    assert status["units"]["blobs"]["objects"] > 0
    # results by region, as GeoJSON
    box = {"x0": 0, "y0": 0, "x1": 1100, "y1": 1100}
    fc = env.client.get(
        f"/v1/runs/{run_id}/slides/{env.slide_id}/objects", params=box, headers=headers
    ).json()
    assert fc["type"] == "FeatureCollection" and fc["features"], fc
    for feature in fc["features"]:
        xs = [p[0] for p in feature["geometry"]["coordinates"][0]]
        assert max(xs) >= 0 and min(xs) <= 1100
    everything = env.client.get(
        f"/v1/runs/{run_id}/slides/{env.slide_id}/objects", headers=headers
    ).json()
    assert everything["total"] == status["units"]["blobs"]["objects"] > fc["total"]
    # cancel: a second job stops before it ends
    second = env.client.post(
        "/v1/jobs", json={"pipeline": "slow", "image_set": "ki67"}, headers=headers
    ).json()
    cancel = env.client.post(f"/v1/jobs/{second['run_id']}/cancel", headers=headers)
    assert cancel.status_code == 202 and cancel.json()["cancel_requested"]
    deadline = time.monotonic() + 120
    final = cancel.json()
    while time.monotonic() < deadline and final["status"] not in TERMINAL:
        time.sleep(1)
        final = env.client.get(f"/v1/jobs/{second['run_id']}", headers=headers).json()
    assert final["status"] == "cancelled", final


def test_viewer_deepzoom_and_overlay(env: Env) -> None:
    headers = env.auth("clinician")
    dzi = env.client.get(f"/v1/slides/{env.slide_id}.dzi", headers=headers)
    assert dzi.status_code == 200 and "<Size Width=" in dzi.text
    tile = env.client.get(f"/v1/slides/{env.slide_id}_files/8/0_0.jpeg", headers=headers)
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(tile.content)).size[0] > 0
    outside = env.client.get(f"/v1/slides/{env.slide_id}_files/8/99_99.jpeg", headers=headers)
    assert outside.status_code == 404
    neither = env.client.get(
        f"/v1/slides/{env.slide_id}/overlay",
        params={"x0": 0, "y0": 0, "x1": 9, "y1": 9},
        headers=headers,
    )
    assert neither.status_code == 422


def test_fuzzing_the_openapi_schema_finds_no_server_error(env: Env) -> None:
    """Schemathesis over every operation (a few dozen examples each): never a 5xx."""
    st = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            str(st),
            "run",
            f"{env.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--phases",
            "examples,coverage,fuzzing",
            "--workers",
            "2",
            "--request-timeout",
            "30",
            "--suppress-health-check",
            "all",
            "-H",
            f"Authorization: Bearer {env.tokens['clinician']}",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # the service answered the fuzzing and is still healthy
    assert env.client.get("/health").status_code == 200


def test_the_clinician_app_is_mounted_under_ui_behind_its_own_sign_in(env: Env) -> None:
    """Pages, viewer files, tiles and the Gradio app answer under /ui, and only after sign-in."""
    slide = env.slide_id
    with httpx.Client(base_url=env.url, timeout=60) as anon:
        page = anon.get(
            f"/ui/viewer?slide={slide}", headers={"accept": "text/html"}, follow_redirects=False
        )
        assert page.status_code == 303, page.text[:300]
        assert page.headers["location"] == f"/ui/login?next=/viewer%3Fslide%3D{slide}"
        assert anon.get(f"/ui/api/slides/{slide}.dzi").status_code == 401
        # an API token is not a session: the two doors stay separate
        assert anon.get(f"/ui/api/slides/{slide}.dzi", headers=env.auth()).status_code == 401
        login = anon.get("/ui/login")
        assert login.status_code == 200 and 'action="/ui/login"' in login.text
    with httpx.Client(base_url=env.url, timeout=60) as user:
        signed = user.post(
            "/ui/login",
            data={"username": "cara", "password": UI_PASSWORD},
            follow_redirects=False,
        )
        assert signed.status_code == 303 and signed.headers["location"] == "/ui/app/"
        viewer = user.get(f"/ui/viewer?slide={slide}")
        assert viewer.status_code == 200
        for src in ("/ui/static/viewer.js", "/ui/vendor/openseadragon.min.js"):
            assert f'src="{src}"' in viewer.text
            assert user.get(src).status_code == 200, src
        assert '"base": "/ui"' in viewer.text
        dzi = user.get(f"/ui/api/slides/{slide}.dzi")
        assert dzi.status_code == 200 and "<Image" in dzi.text
        tile = user.get(f"/ui/api/slides/{slide}_files/8/0_0.jpeg")
        assert tile.status_code == 200 and tile.content[:2] == b"\xff\xd8"
        gradio = user.get("/ui/app/")
        assert gradio.status_code == 200 and "gradio" in gradio.text.lower()
        assert user.get("/ui/logout", follow_redirects=False).headers["location"] == "/ui/login"


# -- issue 23: the tests below run last (their tiles would move the drift window above) --------


def test_sixteen_bit_tiles_are_refused_and_blank_tiles_carry_a_warning(env: Env) -> None:
    """A 16-bit RGB PNG or TIFF was silently cut to 8 bits; a black tile gave nuclei unremarked."""
    import cv2
    import tifffile

    rgb16 = _tiles(1, 128)[0].astype(np.uint16) * 257
    png16 = cv2.imencode(".png", np.ascontiguousarray(rgb16[..., ::-1]))[1].tobytes()
    tiff16 = io.BytesIO()
    tifffile.imwrite(tiff16, rgb16, photometric="rgb")
    for name, data in (("png", png16), ("tiff", tiff16.getvalue())):
        refused = env.infer(_tissue(_b64(data)))
        assert refused.status_code == 415, f"{name}: {refused.status_code} {refused.text}"
        error = refused.json()["error"]
        assert error["code"] == "image.bit_depth" and "Got 16 bits" in error["message"], error
    black = np.zeros((256, 256, 3), np.uint8)
    answered = env.infer({"image": encode_tile(black), "pipeline": "nuclei_classical"})
    assert answered.status_code == 200, answered.text
    warnings = answered.json()["warnings"]
    assert [w.split(":")[0] for w in warnings] == ["image.blank"], warnings
    white = env.infer(_tissue(encode_tile(np.full((128, 128, 3), 245, np.uint8)))).json()
    assert [w.split(":")[0] for w in white["warnings"]] == ["image.blank", "image.no_tissue"]
    ordinary = env.infer(_tissue(encode_tile(_tiles(1)[0])))
    assert ordinary.status_code == 200 and ordinary.json()["warnings"] == []


def test_405_names_the_allowed_methods_and_a_body_that_is_not_json_is_415(env: Env) -> None:
    wrong_method = env.client.delete("/v1/infer", headers=env.auth())
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert wrong_method.json()["error"]["code"] == "request.method_not_allowed"
    body = json.dumps(_tissue(encode_tile(_tiles(1, 64)[0])))
    for media in ("text/plain", "application/x-www-form-urlencoded"):
        sent = env.client.post(
            "/v1/infer", content=body, headers={**env.auth(), "content-type": media}
        )
        assert sent.status_code == 415, f"{media}: {sent.status_code} {sent.text}"
        assert sent.json()["error"]["code"] == "request.unsupported_media_type"
    as_json = env.client.post(
        "/v1/infer",
        content=body,
        headers={**env.auth(), "content-type": "application/json; charset=utf-8"},
    )
    assert as_json.status_code == 200, as_json.text


def _stream_until_answered(
    url: str, headers: dict[str, str], chunk: int, chunks: int, pause_s: float
) -> tuple[int, int, float]:
    """POST a chunked body to /v1/infer over a raw socket, one chunk at a time, until answered.

    Returns:
        The status, the body bytes sent before the answer came, and the seconds it took.
    """
    target = httpx.URL(url)
    head = "".join(
        f"{k}: {v}\r\n"
        for k, v in {
            "Host": f"{target.host}:{target.port}",
            "Transfer-Encoding": "chunked",
            "Content-Type": "application/json",
            **headers,
        }.items()
    )
    framed = f"{chunk:x}\r\n".encode() + b" " * chunk + b"\r\n"
    sent = 0
    with socket.create_connection((target.host, target.port), timeout=60) as sock:
        start = time.perf_counter()
        sock.sendall(f"POST /v1/infer HTTP/1.1\r\n{head}\r\n".encode())
        for _ in range(chunks):
            if select.select([sock], [], [], 0)[0]:  # answered: stop sending
                break
            try:
                sock.sendall(framed)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                break
            sent += chunk
            time.sleep(pause_s)
        else:  # all sent without an answer: end the body, so the server answers now
            sock.sendall(b"0\r\n\r\n")
        reply = sock.recv(65536)
        took = time.perf_counter() - start
    return int(reply.split(b" ", 2)[1]), sent, took


def test_a_chunked_body_is_refused_before_it_is_read(env: Env) -> None:
    """Without a token, or past the size limit, the answer comes while the body still streams.

    Before, a chunked body (no Content-Length) was read whole and parsed before the token or
    the size were checked: a 48 MiB body without a token was answered only once all was read.
    """
    total = 48 * 2**20
    chunk = 2**19
    status, sent, took = _stream_until_answered(env.url, {}, chunk, total // chunk, 0.03)
    print(f"no token: {status} after {sent / 2**20:.1f} MiB sent, {took:.2f} s")
    assert status == 401, (status, sent, took)
    assert sent <= total // 4, f"answered after {sent} of {total} bytes ({took:.2f} s)"
    status, sent, took = _stream_until_answered(env.url, env.auth(), chunk, total // chunk, 0.01)
    print(f"past the limit: {status} after {sent / 2**20:.1f} MiB sent, {took:.2f} s")
    assert status == 413, (status, sent, took)
    assert MAX_BODY < sent <= MAX_BODY + total // 4, f"{sent} bytes sent ({took:.2f} s)"

    def body() -> Iterator[bytes]:
        for _ in range(total // chunk):
            yield b" " * chunk

    # the same over httpx (a generator body is sent chunked), and the refusals are counted
    refused = env.client.post(
        "/v1/infer", content=body(), headers={**env.auth(), "content-type": "application/json"}
    )
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "request.too_large"
    declared = env.client.post(
        "/v1/infer",
        content=b" " * (MAX_BODY + 1),
        headers={**env.auth(), "content-type": "application/json"},
    )
    assert declared.status_code == 413, declared.text
    metrics = env.client.get("/metrics", headers=env.auth("engineer")).text
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith('pathray_errors_total{code="request.too_large"}')
    ]
    assert counted and float(counted[0].split()[-1]) >= 3, counted
    assert 'pathray_errors_total{code="auth.missing_token"}' in metrics


def test_health_is_unhealthy_while_a_pipeline_cannot_infer(env: Env) -> None:
    """Before, every inference could fail with a 500 while /health said ok."""
    body = {"image": encode_tile(_tiles(1, 128)[0]), "pipeline": "flaky"}
    assert env.infer(body).status_code == 200
    env.flag.touch()
    try:
        for _ in range(3):
            failed = env.infer(body)
            assert failed.status_code == 500, failed.text
            assert failed.json()["error"]["code"] == "pipeline.failed"
        sick = env.client.get("/health")
        assert sick.status_code == 503, sick.text
        want = {"status": "unhealthy", "pipelines": PIPELINES, "failing": ["flaky:1"]}
        assert sick.json() == want
    finally:
        env.flag.unlink(missing_ok=True)
    # mended: /health probes the failing pipeline itself, without any client traffic
    deadline = time.monotonic() + 60
    health = env.client.get("/health")
    while health.status_code != 200 and time.monotonic() < deadline:
        time.sleep(1)
        health = env.client.get("/health")
    assert health.status_code == 200, health.text
    assert health.json() == {"status": "ok", "pipelines": PIPELINES, "failing": []}
