"""The app's HTTP layer without a browser: sessions, tiles, layers, annotation CRUD, protection.

Real catalog (SQLite), real slide, real FastAPI app over HTTP (Starlette's test client); no Ray,
no Gradio (``with_gradio=False``): these run in seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import shapely
from fastapi.testclient import TestClient

from pathray.catalog import Catalog
from pathray.results.store import ColdStore
from ui.demo import prepare_demo
from ui.layers import parse_layer, style_for
from ui.server import create_app
from ui.views import selection_state, slide_cards

PASSWORD = "clinician-password"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("api")
    catalog = Catalog.open(f"sqlite:///{home / 'catalog.db'}")
    ids = prepare_demo(catalog, home / "slides", {"cara": ("clinician", PASSWORD)}, side=512)
    app = create_app(catalog, ColdStore(home / "cold"), with_gradio=False)
    with TestClient(app, base_url="http://testserver") as client:
        yield {"client": client, "catalog": catalog, "slides": ids}
    catalog.close()


@pytest.fixture(scope="module")
def client(served: dict[str, Any]) -> TestClient:
    c: TestClient = served["client"]
    response = c.post(
        "/login", data={"username": "cara", "password": PASSWORD}, follow_redirects=False
    )
    assert response.status_code == 303
    return c


def test_requests_without_a_session_are_refused(served: dict[str, Any]) -> None:
    anon = TestClient(served["client"].app)
    assert anon.get("/api/slides/1/layers").status_code == 401
    page = anon.get("/viewer?slide=1", headers={"accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/viewer%3Fslide%3D1"
    forged = TestClient(served["client"].app, cookies={"pathray_session": "prs_forged"})
    assert forged.get("/api/slides/1/layers").status_code == 401
    wrong = anon.post("/login", data={"username": "cara", "password": "nope-nope"})
    assert wrong.status_code == 401 and "wrong password" in wrong.text
    # A crafted next= never leaves the site.
    ok = anon.post(
        "/login",
        data={"username": "cara", "password": PASSWORD, "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert ok.headers["location"] == "/app/"


def test_deepzoom_thumbnail_and_layers(client: TestClient, served: dict[str, Any]) -> None:
    slide = served["slides"]["demo"]
    dzi = client.get(f"/api/slides/{slide}.dzi")
    assert dzi.status_code == 200 and 'Width="512"' in dzi.text
    tile = client.get(f"/api/slides/{slide}_files/9/0_0.jpeg")
    assert tile.status_code == 200 and tile.content[:2] == b"\xff\xd8"
    assert client.get(f"/api/slides/{slide}_files/9/9_9.jpeg").status_code == 404
    assert client.get(f"/api/slides/{slide}/thumbnail.jpg").headers["content-type"] == "image/jpeg"
    layers = {layer["id"]: layer for layer in client.get(f"/api/slides/{slide}/layers").json()}
    assert set(layers) == {"ann:demo-gt", "ann:demo-notes"}
    assert layers["ann:demo-gt"]["style"] != layers["ann:demo-notes"]["style"]
    overlay = client.get(
        f"/api/slides/{slide}/overlay/ann:demo-gt",
        params={"x0": 0, "y0": 0, "x1": 512, "y1": 512, "downsample": 1},
    ).json()
    assert overlay["mode"] == "polygons"
    assert overlay["returned"] == served["catalog"].count_annotations("demo-gt", slide) > 0
    # The viewer's packed form: the same objects, in columns.
    window = {"x0": 0, "y0": 0, "x1": 512, "y1": 512, "downsample": 1}
    packed = client.get(
        f"/api/slides/{slide}/overlay/ann:demo-gt", params={**window, "format": "packed"}
    ).json()
    assert packed["format"] == "packed" and packed["returned"] == overlay["returned"]
    assert packed["ids"] == [f["id"] for f in overlay["features"]]
    odd = client.get(f"/api/slides/{slide}/overlay/ann:demo-gt", params={**window, "format": "wkt"})
    assert odd.status_code == 400 and "format must be 'geojson' or 'packed'" in odd.text
    bad = client.get(
        f"/api/slides/{slide}/overlay/nonsense", params={"x0": 0, "y0": 0, "x1": 1, "y1": 1}
    )
    assert bad.status_code == 404 and "layer id must be" in bad.json()["detail"]


def test_annotation_crud_records_the_author(client: TestClient, served: dict[str, Any]) -> None:
    slide, catalog = served["slides"]["demo"], served["catalog"]
    square = {
        "type": "Polygon",
        "coordinates": [[[10, 10], [60, 10], [60, 60], [10, 60], [10, 10]]],
    }
    made = client.post(
        "/api/annotations",
        json={
            "annotation_set": "demo-notes",
            "slide_id": slide,
            "geometry": square,
            "label": "tumor",
        },
    )
    assert made.status_code == 201
    ann_id = made.json()["id"]
    stored = catalog.get_annotation(ann_id)
    assert (stored.author, stored.label, stored.geometry.area) == ("cara", "tumor", 2500.0)
    wrong = client.patch(f"/api/annotations/{ann_id}", json={"label": "not-a-label"})
    assert wrong.status_code == 400
    assert client.patch(f"/api/annotations/{ann_id}", json={"label": "stroma"}).status_code == 200
    assert catalog.get_annotation(ann_id).label == "stroma"
    assert client.delete(f"/api/annotations/{ann_id}").status_code == 200
    assert client.delete(f"/api/annotations/{ann_id}").status_code == 404


def test_protected_sets_are_read_only(client: TestClient, served: dict[str, Any]) -> None:
    slide, catalog = served["slides"]["locked"], served["catalog"]
    layers = client.get(f"/api/slides/{slide}/layers").json()
    assert [(x["id"], x["readonly"]) for x in layers] == [("ann:locked-gt", True)]
    point = {"type": "Point", "coordinates": [5, 5]}
    refused = client.post(
        "/api/annotations",
        json={
            "annotation_set": "locked-gt",
            "slide_id": slide,
            "geometry": point,
            "label": "tumor",
        },
    )
    assert refused.status_code == 403
    first = catalog.query_annotations("locked-gt", slide)[0]
    assert client.delete(f"/api/annotations/{first.id}").status_code == 403


def test_only_the_listed_files_are_served(client: TestClient) -> None:
    assert client.get("/vendor/openseadragon.min.js").status_code == 200
    for path in (
        "/vendor/package.json",
        "/static/viewer.html",
        "/static/login.html",
        "/api/../ui/server.py",
    ):
        assert client.get(path).status_code == 404, path


def test_styles_layers_and_model_selection() -> None:
    assert style_for("run", 0)["dash"] is False and style_for("run", 1)["dash"] is True
    assert style_for("run", 1)["color"] != style_for("run", 2)["color"]
    assert parse_layer("run:abc:segment").unit == "segment"
    listing, graph = selection_state(["nucleus_segmentation"])
    assert 'class="excluded" data-unit="nucleus_unet"' in listing
    assert "No pipeline yet" in graph or "nucleus_segmentation" in graph
    listing, graph = selection_state(["tissue_mask", "nucleus_segmentation", "nucleus_features"])
    assert (
        graph.index("tissue_mask")
        < graph.index("nucleus_segmentation")
        < graph.index("nucleus_features")
    )


def test_slide_cards_mark_protected_sets(served: dict[str, Any], tmp_path: Path) -> None:
    html = slide_cards(served["catalog"], "locked")
    assert "protected" in html and f"/api/slides/{served['slides']['locked']}/thumbnail.jpg" in html


def test_wrong_slides_and_missing_packages_get_pages(
    served: dict[str, Any], client: TestClient, tmp_path: Path
) -> None:
    html_only = {"accept": "text/html"}
    missing = client.get("/viewer?slide=999", headers=html_only)
    assert missing.status_code == 404 and "No slide 999. Open a slide from Browse." in missing.text
    bad = client.get("/viewer?slide=abc", headers=html_only)
    assert bad.status_code == 400 and "Got &#x27;abc&#x27; instead" in bad.text
    assert "detail" not in bad.text
    by_name = client.get("/viewer?slide=demo-slide.tif", headers=html_only)
    assert by_name.status_code == 200 and "openseadragon.min.js" in by_name.text
    bare = create_app(
        served["catalog"], ColdStore(tmp_path / "cold"), with_gradio=False, node_modules=tmp_path
    )
    with TestClient(bare) as other:
        other.post("/login", data={"username": "cara", "password": PASSWORD})
        page = other.get(f"/viewer?slide={served['slides']['demo']}", headers=html_only)
        assert page.status_code == 503 and "scripts/setup.sh ui" in page.text
        assert "openseadragon.min.js" not in page.text
        js = other.get("/vendor/openseadragon.min.js")
        assert js.status_code == 503 and "scripts/setup.sh ui" in js.json()["detail"]


def test_sign_in_never_returns_to_sign_out(served: dict[str, Any]) -> None:
    anon = TestClient(served["client"].app)
    out = anon.get("/logout", headers={"accept": "text/html"}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    for target in ("/logout", "/logout?x=1", "/login", "/login/"):
        ok = anon.post(
            "/login",
            data={"username": "cara", "password": PASSWORD, "next": target},
            follow_redirects=False,
        )
        assert ok.headers["location"] == "/app/", target


def test_a_clinician_cannot_delete_what_others_drew(
    client: TestClient, served: dict[str, Any]
) -> None:
    catalog, slide = served["catalog"], served["slides"]["demo"]
    catalog.add_user("erin", "engineer")
    catalog.add_annotations("demo-notes", slide, [(shapely.box(5, 5, 9, 9), "tumor", None)], "erin")
    erins = max(a.id for a in catalog.query_annotations("demo-notes", slide) if a.author == "erin")
    refused = client.delete(f"/api/annotations/{erins}")
    assert refused.status_code == 403
    assert "can be deleted by its author or an admin" in refused.json()["detail"]
    assert catalog.get_annotation(erins).author == "erin"
    reference = catalog.query_annotations("demo-gt", slide)[0].id  # nobody's: the demo's
    refused = client.delete(f"/api/annotations/{reference}")
    assert refused.status_code == 403 and "owner, an engineer or an admin" in refused.text
    added = client.post(
        "/api/annotations",
        json={
            "annotation_set": "demo-gt",
            "slide_id": slide,
            "geometry": {"type": "Point", "coordinates": [3, 3]},
        },
    )
    assert added.status_code == 403
