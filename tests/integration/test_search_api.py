"""``POST /v1/search`` over real HTTP: the router of serve/search_api.py under uvicorn on loopback.

The app is the ingress's error handlers, token auth and the search router on a real catalog and
cold store (an embedding run made by the engine's stages in-process), without Ray Serve: the route
holds no Serve-specific code, and tests/integration/test_serve_api.py covers the Serve ingress.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from pathray.catalog import Catalog
from pathray.results.store import ColdStore
from pathray.services.search import SearchService
from pathray.slides.readers import open_reader
from pathray.slides.register import register_slides
from serve.errors import install_handlers
from serve.search_api import configure, router
from serve.security import TokenAuth, install_auth
from serve.validation import ImageLimits, encode_tile
from tests.embedding_runs import OS1, OS2, run_in_process


class Env:
    """The running app, its catalog and tokens."""

    def __init__(self, url: str, catalog: Catalog, service: SearchService, tokens: dict[str, str]):
        self.client = httpx.Client(base_url=url, timeout=120)
        self.catalog, self.service, self.tokens = catalog, service, tokens

    def search(self, body: Any, role: str | None = "service") -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return self.client.post("/v1/search", json=body, headers=headers)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    home: Path = tmp_path_factory.mktemp("search-api")
    catalog = Catalog.open(f"sqlite:///{home / 'catalog.db'}")
    register_slides(catalog, OS1, store="shared", image_set="both")
    register_slides(catalog, OS2, store="shared", image_set="both")
    store = ColdStore(home / "cold")
    run_in_process(catalog, store, "both")
    service = SearchService(catalog, store.root)
    service.build("both")
    tokens = {r: catalog.create_api_token(f"c-{r}", r).token for r in ("service", "clinician")}
    app = FastAPI()
    install_handlers(app)
    app.include_router(router)
    install_auth(TokenAuth(catalog.resolve_token))
    configure(catalog, str(store.root), ImageLimits(min_side=32, max_side=1024))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield Env(f"http://127.0.0.1:{port}", catalog, service, tokens)
    server.should_exit = True
    thread.join(timeout=10)
    catalog.close()


def test_like_a_place_answers_what_the_service_answers(env: Env) -> None:
    body = {"image_set": "both", "like": {"slide": "OS-1-detail", "x": 300, "y": 300}, "k": 30}
    response = env.search(body)
    assert response.status_code == 200, response.text
    got = response.json()
    want = env.service.like_place("both", "OS-1-detail", 300, 300, k=30)
    assert [(h["slide_id"], h["tile_id"]) for h in got["hits"]] == [
        (h.slide_id, h.tile_id) for h in want.hits
    ]
    assert [h["distance"] for h in got["hits"]] == pytest.approx([h.distance for h in want.hits])
    assert got["index"] == want.index and got["query"]["tile"] == want.query["tile"]
    assert len({h["slide"] for h in got["hits"]}) == 2
    only = env.search({**body, "slides": [OS2.name]}).json()
    assert only["hits"] and {h["slide"] for h in only["hits"]} == {OS2.name}


def test_an_uploaded_tile_finds_its_own_place_first(env: Env) -> None:
    # the tile at (0, 0) of OS-1 as the run read it: 128 px at 0.5 um/px
    slide = env.catalog.get_slide(OS1.name)
    image = open_reader(str(OS1)).read_region(0, 0, 128, 128, downsample=0.5 / slide.mpp)
    response = env.search({"image_set": "both", "image": encode_tile(image), "k": 3})
    assert response.status_code == 200, response.text
    first = response.json()["hits"][0]
    assert (first["slide"], first["x"], first["y"]) == (OS1.name, 0, 0)
    assert first["distance"] < 1e-4


def test_bad_requests_get_the_api_error_contract(env: Env) -> None:
    cases = {
        "not_found": {"image_set": "both", "like": {"slide": "nope", "x": 1, "y": 1}},
        "invalid": {"image_set": "both", "vector": [0.1, 0.2, 0.3]},
    }
    for code, body in cases.items():
        response = env.search(body)
        assert response.json()["error"]["code"] == code, response.text
    outside = env.search({"image_set": "both", "like": {"slide": OS1.name, "x": -50, "y": 1}})
    assert outside.status_code == 404 and "must lie in an embedded tile" in outside.text
    assert env.search({"image_set": "nope", "vector": [0.0] * 176}).status_code == 404
    both = env.search({"image_set": "both", "vector": [0.1], "like": {"slide": 1, "x": 1, "y": 1}})
    assert both.status_code == 422 and both.json()["error"]["code"].startswith("request.")
    assert env.search({"image_set": "both", "vector": [0.1], "k": 0}).status_code == 422
    assert env.search({"image_set": "both", "image": "not base64!"}).status_code == 422
    assert env.search({"image_set": "both", "vector": [0.1]}, role=None).status_code == 401
