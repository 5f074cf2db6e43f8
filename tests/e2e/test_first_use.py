"""What a new user meets first, in headless Chromium (issue 22: "broken for every new user").

The app runs as ``pathray ui --no-warm-ray`` over the demo catalog (no test here starts a run),
plus, for one test, a second instance whose npm packages are missing. Before the app starts,
the catalog gets what a user would have after a while: a loop's held-out image set and a
finished run.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pathray.catalog import Catalog
from pathray.iterate.data import annotated_slides, split_slides
from tests.e2e.browser import shot, sign_in
from tests.e2e.conftest import REPO, running_app

pytestmark = [pytest.mark.slow]

HELD_OUT = "iterate-0123456789ab-validation"


@pytest.fixture(scope="module")
def finished_run(e2e_home: dict[str, Any]) -> str:
    """A succeeded run on the demo set, and a loop's held-out set (made before the app starts)."""
    with Catalog.open(e2e_home["url"], migrate=False) as catalog:
        catalog.create_image_set(HELD_OUT, "iteration loop 0123456789ab")
        catalog.add_to_image_set(HELD_OUT, [e2e_home["slides"]["demo-2"]])
        run_id = catalog.create_run(
            pipeline_name="nuclei_classical", pipeline_version="1", image_set="demo"
        )
        catalog.update_run(run_id, status="running")
        catalog.update_run(run_id, status="succeeded")
    return run_id


@pytest.fixture(scope="module")
def app_url(e2e_home: dict[str, Any], finished_run: str) -> Iterator[str]:
    with running_app(e2e_home["home"], "--no-warm-ray") as url:
        yield url


def _fresh_page(browser: Any) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 950})
    page.set_default_timeout(180_000)
    return page


def test_make_demo_installs_the_viewer_packages() -> None:
    planned = subprocess.run(
        ["make", "-n", "demo"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert "scripts/setup.sh ui" in planned


def test_viewer_without_npm_packages_says_what_to_install(
    browser: Any, e2e_home: dict[str, Any], tmp_path: Path, finished_run: str
) -> None:
    empty = tmp_path / "node_modules"
    empty.mkdir()
    env = {"PATHRAY_UI_NODE_MODULES": str(empty)}
    with running_app(e2e_home["home"], "--no-warm-ray", env=env, log_name="bare.log") as url:
        page = _fresh_page(browser)
        page.goto(f"{url}/viewer?slide={e2e_home['slides']['demo']}")
        sign_in(page, url)
        page.wait_for_selector("[data-testid=notice]")
        text = page.text_content("[data-testid=missing-packages]") or ""
        assert "openseadragon" in text and "@annotorious/openseadragon" in text
        assert page.text_content("[data-testid=setup-command]") == "scripts/setup.sh ui"
        assert page.evaluate("typeof OpenSeadragon") == "undefined"
        shot(page, "first-use-01-missing-viewer-packages")
        page.close()


def test_sign_out_while_signed_out_then_sign_in_stays_signed_in(browser: Any, app_url: str) -> None:
    page = _fresh_page(browser)
    page.goto(f"{app_url}/logout")
    page.wait_for_url("**/login")
    assert "logout" not in page.url
    sign_in(page, app_url)
    page.wait_for_url("**/app/")
    page.get_by_text("Signed in as").wait_for()
    # A crafted return to the sign-out page is not followed either.
    page.context.clear_cookies()
    page.goto(f"{app_url}/login?next=/logout")
    sign_in(page, app_url)
    page.wait_for_url("**/app/")
    page.get_by_text("Signed in as").wait_for()
    page.close()


def test_viewer_explains_a_wrong_slide(page: Any, app_url: str) -> None:
    page.goto(f"{app_url}/viewer?slide=999")
    assert page.text_content("[data-testid=notice-message]") == (
        "No slide 999. Open a slide from Browse."
    )
    assert page.is_visible("text=Back to Browse")
    shot(page, "first-use-02-no-such-slide")
    page.goto(f"{app_url}/viewer?slide=abc")
    message = page.text_content("[data-testid=notice-message]") or ""
    assert message.startswith("slide must be a slide id or name. Got 'abc' instead.")
    # A slide's name opens it like its id.
    page.goto(f"{app_url}/viewer?slide=demo-slide.tif")
    page.wait_for_selector("#osd")
    assert page.text_content("#slide-name") == "demo-slide.tif"


def test_browse_hides_iteration_sets(page: Any, app_url: str) -> None:
    page.goto(f"{app_url}/app/")
    page.get_by_text("Signed in as").wait_for()
    page.wait_for_function("() => document.body.innerText.includes('🔒 protected')")
    assert "demo" in (page.text_content("#pr-sets") or "")
    assert HELD_OUT not in (page.text_content("#pr-sets") or "")
    page.locator("#pr-browse-set input").click()
    # Gradio marks the chosen option with a tick.
    options = [o.strip("✓ ") for o in page.get_by_role("option").all_text_contents()]
    assert "demo" in options and "locked" in options and HELD_OUT not in options
    page.keyboard.press("Escape")


def test_iteration_needs_two_annotated_slides(
    page: Any, app_url: str, e2e_home: dict[str, Any]
) -> None:
    # The demo data itself can be iterated on: two slides annotated in demo-gt.
    with Catalog.open(e2e_home["url"], migrate=False) as catalog:
        split = split_slides(annotated_slides(catalog, "demo", "demo-gt"))
    assert len(split.training) == len(split.validation) == 1
    # A reference with no slide of the image set is refused in the page, before anything starts.
    page.get_by_role("tab", name="New run").click()
    page.locator("#pr-reference input").click()
    page.get_by_role("option", name="locked-gt").click()
    page.get_by_role("button", name="Start iteration").click()
    started = page.locator("#pr-started")
    started.get_by_text("Not started").wait_for()
    text = started.text_content() or ""
    assert "at least two annotated slides" in text and "Got 0 instead" in text
    assert "Started iteration" not in text
    shot(page, "first-use-03-iteration-refused")
    page.get_by_role("tab", name="Runs").click()
    page.locator("#pr-loops").get_by_text("No iteration started from this app yet").wait_for()


def test_compare_without_evaluations_says_no_data(page: Any) -> None:
    page.get_by_role("tab", name="Compare").click()
    page.locator("#pr-plot").get_by_text("No data").wait_for()
    assert "no evaluated run on demo has f1 yet" in (page.text_content("#pr-plot") or "")
    shot(page, "first-use-04-compare-no-data")


def test_cancel_is_disabled_for_a_finished_run(page: Any, finished_run: str) -> None:
    page.get_by_role("tab", name="Runs").click()
    page.locator("#pr-run-pick input").click()
    page.get_by_role("option", name=finished_run).click()
    page.locator("#pr-run-status").get_by_text("succeeded").wait_for()
    page.wait_for_function("() => document.querySelector('#pr-cancel').disabled")
    shot(page, "first-use-05-cancel-disabled")
    # Clicked all the same (a page left open while the run finished): a clear answer, no error.
    page.get_by_label("Live progress").uncheck()  # keep the answer on screen
    page.evaluate(
        "() => { const b = document.querySelector('#pr-cancel'); b.disabled = false; b.click(); }"
    )
    status = page.locator("#pr-run-status")
    status.get_by_text("Not cancelled").wait_for()
    assert "must be pending or running to be cancelled" in (status.text_content() or "")
    assert page.locator(".toast-body.error").count() == 0


def test_service_tab_is_for_engineers_only(browser: Any, page: Any, app_url: str) -> None:
    page.goto(f"{app_url}/app/")
    page.get_by_text("Signed in as").wait_for()
    page.get_by_role("tab", name="Compare").wait_for()
    page.wait_for_timeout(1000)  # the load events have run
    assert page.get_by_role("tab", name="Service").count() == 0
    engineer = _fresh_page(browser)
    engineer.goto(f"{app_url}/login")
    sign_in(engineer, app_url, "erin")
    engineer.get_by_role("tab", name="Service").wait_for()
    engineer.close()
