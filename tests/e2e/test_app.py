"""The clinician app as a person uses it, in headless Chromium (tests run in file order).

Sign in, browse, open a slide, toggle layers, click an object, draw annotations and find them in
the catalog, see a protected set refuse changes, start a run and watch it finish, correct its
results and export the corrections.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import pytest

from pathray.catalog import Catalog
from tests.e2e.browser import USERS, shot

pytestmark = [pytest.mark.ray, pytest.mark.slow]

PAINTED = """() => {
  const c = document.querySelector('canvas.pr-overlay');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
  return n;
}"""

# The screen position (page pixels) of a polygon of a layer, with its id and label.
OBJECT_ON_SCREEN = """([layerId, exclude]) => {
  // A point of an on-screen polygon that lies inside it and inside no other polygon of the
  // layer, so that a click there picks that object and no other (a ring's vertex mean can fall
  // outside a concave nucleus, or inside its neighbour).
  const inside = (ring, x, y) => {
    let hit = false;
    for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      const [xi, yi] = ring[i], [xj, yj] = ring[j];
      if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) hit = !hit;
    }
    return hit;
  };
  const layer = window.pathrayLayers.get(layerId);
  const all = layer.data.features.filter((f) => f.geometry.type === 'Polygon');
  const polys = all.filter((f) => !exclude.includes(f.id)
      && !(f.properties.provenance && f.properties.provenance.status === 'rejected'));
  const rect = window.pathrayViewer.element.getBoundingClientRect();
  for (const f of polys) {
    const ring = f.geometry.coordinates[0];
    const xs = ring.map((p) => p[0]), ys = ring.map((p) => p[1]);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const candidates = [[xs.reduce((a, b) => a + b, 0) / xs.length,
                         ys.reduce((a, b) => a + b, 0) / ys.length]];
    for (let i = 1; i < 8; i++)
      for (let j = 1; j < 8; j++) candidates.push([x0 + (x1 - x0) * i / 8, y0 + (y1 - y0) * j / 8]);
    const spot = candidates.find(([x, y]) => inside(ring, x, y)
        && !all.some((g) => g !== f && inside(g.geometry.coordinates[0], x, y)));
    if (!spot) continue;
    const p = window.pathrayViewer.viewport.imageToViewerElementCoordinates(
        new OpenSeadragon.Point(spot[0], spot[1]));
    if (p.x > 20 && p.y > 20 && p.x < rect.width - 220 && p.y < rect.height - 220)
      return {x: rect.left + p.x, y: rect.top + p.y, id: f.id, label: f.properties.label};
  }
  return null;
}"""


def _catalog(e2e_home: dict[str, Any]) -> Catalog:
    return Catalog.open(e2e_home["url"], migrate=False)


def test_nothing_is_served_without_signing_in(app_url: str) -> None:
    with httpx.Client(base_url=app_url, timeout=120) as anon:
        page = anon.get("/app/", headers={"accept": "text/html"})
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        for path in (
            "/api/slides/1.dzi",
            "/api/slides/1/layers",
            "/vendor/openseadragon.min.js",
            "/app/gradio_api/info",
            "/static/viewer.js",
            "/viewer?slide=1",
        ):
            assert anon.get(path).status_code == 401, path
        bad = anon.post("/login", data={"username": "alice", "password": "wrong-password"})
        assert bad.status_code == 401
        assert anon.cookies.get("pathray_session") is None
    with httpx.Client(base_url=app_url, timeout=120) as user:
        ok = user.post("/login", data={"username": "alice", "password": USERS["alice"][1]})
        assert ok.status_code == 303
        assert str(user.cookies.get("pathray_session")).startswith("prs_")
        # Signed in, still nothing beyond what the app means to serve.
        for path in (
            "/vendor/package.json",
            "/vendor/..%2Fpackage.json",
            "/static/viewer.html",
            "/static/..%2Fserver.py",
            "/app/gradio_api/file=/etc/passwd",
        ):
            response = user.get(path)
            assert response.status_code in (400, 403, 404), (path, response.status_code)
            assert "root:" not in response.text
        assert user.get("/vendor/openseadragon.min.js").status_code == 200
        assert user.get("/logout").status_code == 303
        assert user.get("/api/slides/1/layers").status_code == 401  # the session ended


def test_sign_in_and_browse(browser: Any, app_url: str, page: Any) -> None:
    other = browser.new_page()
    other.set_default_timeout(180_000)
    other.goto(f"{app_url}/app/")
    other.fill("input[name=username]", "alice")
    other.fill("input[name=password]", "not-her-password")
    other.click("button[type=submit]")
    assert "wrong password" in other.text_content("[data-testid=login-error]")
    other.close()

    page.get_by_text("Signed in as").wait_for()
    assert "alice" in page.text_content("#pr-user")
    page.wait_for_function("() => document.body.innerText.includes('🔒 protected')")
    card = page.locator("[data-testid=slide-card]").first
    card.wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=slide-card] img')]"
        ".every((i) => i.complete && i.naturalWidth > 0)"
    )
    shot(page, "01-browse")


def test_viewer_layers_toggle_and_object_info(page: Any, app_url: str) -> None:
    page.locator("[data-testid=slide-card]").first.click()
    page.wait_for_url("**/viewer?slide=*")
    page.wait_for_selector("body[data-overlay-painted='1']")
    legend = page.text_content("[data-testid=legend]")
    assert "demo-gt" in legend and "reference annotations" in legend
    page.wait_for_timeout(500)
    assert page.evaluate(PAINTED) > 500
    # The opening view's overlays were asked for before the viewer's scripts ran, and no
    # second time once they had (ui/static/prefetch.js).
    metrics = page.evaluate("window.pathrayMetrics")
    assert metrics["prefetchedOverlays"] >= 1
    assert metrics["overlayFetches"] == metrics["prefetchedOverlays"], metrics
    toggle = page.locator("[data-testid='layer-ann:demo-gt']")
    toggle.uncheck()
    page.wait_for_timeout(300)
    assert page.evaluate(PAINTED) == 0
    toggle.check()
    page.wait_for_function(f"() => ({PAINTED})() > 500")

    target = page.evaluate(OBJECT_ON_SCREEN, ["ann:demo-gt", []])
    assert target is not None
    page.mouse.click(target["x"], target["y"])
    page.wait_for_selector("[data-testid=info]:not([hidden])")
    assert page.text_content("#info-label") == target["label"]
    assert "annotation_set: demo-gt" in page.text_content("#info-prov")
    shot(page, "02-viewer")


def test_draw_annotations_saved_to_catalog(page: Any, e2e_home: dict[str, Any]) -> None:
    page.select_option("[data-testid=editable]", "ann:demo-notes")
    page.select_option("[data-testid=label]", "stroma")
    box = page.locator("#osd").bounding_box()
    x, y = box["x"], box["y"]
    page.click("[data-tool=rectangle]")
    page.mouse.move(x + 150, y + 150)
    page.mouse.down()
    page.mouse.move(x + 200, y + 190, steps=4)
    page.mouse.move(x + 260, y + 230, steps=4)
    page.mouse.up()
    page.wait_for_function("() => document.body.dataset.lastSaved")
    first = page.evaluate("() => document.body.dataset.lastSaved")
    page.select_option("[data-testid=label]", "tumor")
    page.click("[data-tool=polygon]")
    points = [(400, 420), (480, 430), (470, 500), (410, 490)]
    for px, py in [*points, points[0]]:
        page.mouse.click(x + px, y + py)
        page.wait_for_timeout(250)
    page.wait_for_function(f"() => document.body.dataset.lastSaved !== '{first}'")
    second = page.evaluate("() => document.body.dataset.lastSaved")
    page.select_option("[data-testid=label]", "lymphocyte")
    page.click("[data-tool=point]")
    page.mouse.click(x + 620, y + 300)
    page.wait_for_function(f"() => document.body.dataset.lastSaved !== '{second}'")
    shot(page, "03-drawn")

    with _catalog(e2e_home) as catalog:
        drawn = catalog.query_annotations("demo-notes", e2e_home["slides"]["demo"])
    assert [a.author for a in drawn] == ["alice"] * 3
    assert [(a.geometry.geom_type, a.label) for a in drawn] == [
        ("Polygon", "stroma"),
        ("Polygon", "tumor"),
        ("Point", "lymphocyte"),
    ]
    rect, poly = drawn[0].geometry, drawn[1].geometry
    assert len(rect.exterior.coords) == 5 and rect.area > 100
    assert len(poly.exterior.coords) == 5 and poly.area > 100

    # Delete the point through the info panel: it leaves the catalog.
    page.click("[data-tool=pan]")
    page.evaluate("() => window.pathrayReloadLayers()")
    pt = page.evaluate(
        """() => {
          const f = window.pathrayLayers.get('ann:demo-notes').data.features
              .find((f) => f.geometry.type === 'Point');
          const p = window.pathrayViewer.viewport.imageToViewerElementCoordinates(
              new OpenSeadragon.Point(...f.geometry.coordinates));
          const r = window.pathrayViewer.element.getBoundingClientRect();
          return {x: r.left + p.x, y: r.top + p.y};
        }"""
    )
    page.mouse.click(pt["x"], pt["y"])
    page.wait_for_selector("#edit-actions:not([hidden])")
    page.click("#delete")
    page.wait_for_function(
        "() => /deleted annotation/.test(document.getElementById('status').textContent)"
    )
    with _catalog(e2e_home) as catalog:
        assert catalog.count_annotations("demo-notes") == 2


def test_protected_set_is_read_only(page: Any, app_url: str, e2e_home: dict[str, Any]) -> None:
    slide = e2e_home["slides"]["locked"]
    page.goto(f"{app_url}/viewer?slide={slide}&edit=ann:locked-gt")
    page.wait_for_selector("body[data-overlay-painted='1']")
    assert page.is_visible("#readonly")
    assert page.is_disabled("[data-tool=polygon]") and page.is_disabled("[data-tool=point]")
    refused = page.evaluate(
        """async (slide) => (await fetch('/api/annotations', {method: 'POST',
             headers: {'content-type': 'application/json'},
             body: JSON.stringify({annotation_set: 'locked-gt', slide_id: slide,
               geometry: {type: 'Point', coordinates: [10, 10]}, label: 'tumor'})})).status""",
        slide,
    )
    assert refused == 403
    shot(page, "04-protected")


def test_start_run_and_watch_it_finish(page: Any, app_url: str, e2e_home: dict[str, Any]) -> None:
    page.goto(f"{app_url}/app/")
    page.get_by_text("Signed in as").wait_for()
    page.get_by_role("tab", name="New run").click()
    # Custom selection: an exclusive unit is greyed out with its reason.
    page.locator("#pr-units label", has_text="nucleus_segmentation").click()
    page.wait_for_selector("[data-testid=unit-list] li.excluded[data-unit=nucleus_unet]")
    page.locator("#pr-units label", has_text="nucleus_segmentation").click()
    page.get_by_role("radio", name="Preset").check()
    # One-click preset: the classical one (no model to load), quick on a 2-core machine.
    page.locator("#pr-preset input").click()
    page.get_by_role("option", name="nuclei_classical").click()
    page.click("#pr-start")
    started = page.locator("#pr-started")
    started.get_by_text("Started run").wait_for(timeout=300_000)  # Ray may still be starting
    found = re.search(r"Started run (\S+)", started.text_content() or "")
    assert found is not None
    run_id = found.group(1)
    page.get_by_role("tab", name="Runs").click()
    status = page.locator("#pr-run-status")
    status.get_by_text(run_id).wait_for()
    shot(page, "05-run-started")
    status.get_by_text("succeeded").wait_for(timeout=300_000)
    shot(page, "06-run-finished")
    with _catalog(e2e_home) as catalog:
        run = catalog.get_run(run_id)
    assert run.status == "succeeded" and run.requester == "alice"
    total = int(run.progress.get("tiles_total") or 0)
    assert total > 0 and run.progress.get("tiles_done") == total
    e2e_home["run_id"] = run_id

    # Its layer appears in the viewer, with the unit version in the legend.
    page.goto(f"{app_url}/viewer?slide={e2e_home['slides']['demo']}")
    page.wait_for_selector(f"[data-testid^='layer-run:{run_id}']")
    assert re.search(r"unit \w+ v\d", page.text_content("[data-testid=legend]"))


def test_correct_results_and_export(page: Any, app_url: str, e2e_home: dict[str, Any]) -> None:
    run_id = e2e_home.get("run_id")
    if run_id is None:
        pytest.fail("needs the run of test_start_run_and_watch_it_finish")
    slide = e2e_home["slides"]["demo"]
    made = page.evaluate(
        """async ([run, slide]) => (await fetch('/api/corrections', {method: 'POST',
             headers: {'content-type': 'application/json'},
             body: JSON.stringify({run_id: run, slide_id: slide})})).json()""",
        [run_id, slide],
    )
    layer = made["layer"]
    page.goto(f"{app_url}/viewer?slide={slide}&edit={layer}")
    page.wait_for_selector("[data-testid=correction]:not([hidden])")
    page.wait_for_function(
        f"() => window.pathrayLayers.get('{layer}') && window.pathrayLayers.get('{layer}').data"
    )
    # Correction objects are drawn by Annotorious as well: hide the reference to click them.
    page.locator("[data-testid='layer-ann:demo-gt']").uncheck()
    # Three different objects (the first on screen not yet used: an index into the list could
    # name the same object twice when the first ones lie off screen).
    used: list[Any] = []
    for action in ("accept", "reject", "relabel"):
        target = page.evaluate(OBJECT_ON_SCREEN, [layer, used])
        used.append(target["id"])
        page.mouse.click(target["x"], target["y"])
        # The click picked the intended object (a wrong pick would move a decision elsewhere).
        page.wait_for_function(
            "(id) => !document.getElementById('info').hidden"
            " && document.getElementById('info').dataset.objectId === id",
            arg=str(target["id"]),
            timeout=15_000,
        )
        page.wait_for_selector("#correct-actions:not([hidden])")
        if action == "relabel":
            other = next(x for x in ("stroma", "tumor") if x != target["label"])
            page.select_option("[data-testid=label]", other)
        page.click(f"#c-{action}")
        page.wait_for_function(
            f"() => document.getElementById('status').textContent.startsWith('{action}')"
        )
        page.keyboard.press("Escape")
    box = page.locator("#osd").bounding_box()
    page.click("[data-tool=rectangle]")
    page.mouse.move(box["x"] + 60, box["y"] + 60)
    page.mouse.down()
    page.mouse.move(box["x"] + 110, box["y"] + 100, steps=4)
    page.mouse.up()
    page.wait_for_function("() => /added: 1/.test(document.getElementById('summary').textContent)")
    summary = page.text_content("[data-testid=summary]")
    assert "accepted: 1" in summary and "rejected: 1" in summary and "modified: 1" in summary
    shot(page, "07-correction")

    with page.expect_download() as geo:
        page.click("#export-geojson")
    exported = json.loads(Path(geo.value.path()).read_text())
    statuses = [f["properties"].get("status") for f in exported["features"]]
    assert {"accepted", "modified", "added"} <= set(statuses) and "rejected" not in statuses
    with page.expect_download() as asap:
        page.click("#export-asap")
    root = ET.parse(asap.value.path()).getroot()
    assert len(root.findall(".//Annotation")) == len(exported["features"])
    with _catalog(e2e_home) as catalog:
        counts = catalog.correction_summary(made["annotation_set"], slide).as_dict()
        assert catalog.get_annotation_set(made["annotation_set"]).parent_run_id == run_id
    assert (counts["accepted"], counts["rejected"], counts["modified"], counts["added"]) == (
        1,
        1,
        1,
        1,
    )
