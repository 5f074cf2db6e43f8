"""Browser tests of the clinician app: the app runs as ``pathray ui`` in a subprocess, Chromium
(Debian's, at /usr/bin/chromium) drives it through Playwright.

Fixtures (module scope, shared by the tests of a module, which run in order):

    e2e_home    a PathRay home with the demo catalog (ui.demo): image sets ``demo`` and
                ``locked`` (protected), users alice (clinician) and erin (engineer)
    app_url     the base URL of ``pathray ui`` serving that home (:func:`running_app`)
    browser     a headless Chromium
    page        a page signed in as alice

Helpers and screenshots: :mod:`tests.e2e.browser`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.browser import CHROMIUM, USERS, sign_in

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def e2e_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from pathray.catalog import Catalog
    from pathray.config import Settings
    from ui.demo import prepare_demo

    home = tmp_path_factory.mktemp("app")
    settings = Settings.from_env(home)
    with Catalog.open(settings.catalog_url) as catalog:
        ids = prepare_demo(catalog, home / "slides", USERS, side=1280)
    return {"home": home, "url": settings.catalog_url, "slides": ids, "cold": settings.cold_root}


@contextlib.contextmanager
def running_app(
    home: Path, *args: str, env: dict[str, str] | None = None, log_name: str = "server.log"
) -> Iterator[str]:
    """Run ``pathray ui`` on a free port over a PathRay home; yield its base URL.

    Args:
        home: The PathRay home (its catalog and cold store).
        *args: More ``pathray ui`` options (``--no-warm-ray`` where no test starts a run).
        env: More environment variables.
        log_name: The server's log file, in ``home``.
    """
    if not (REPO / "ui/node_modules/openseadragon").is_dir():
        pytest.fail("The viewer's npm packages are missing: run scripts/setup.sh test")
    port = _free_port()
    environ = dict(os.environ, PATHRAY_HOME=str(home), PYTHONPATH=str(REPO), **(env or {}))
    environ.pop("PATHRAY_CATALOG_URL", None)
    log_path = home / log_name
    log = open(log_path, "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pathray", "ui", "--port", str(port), *args],
        cwd=REPO,
        env=environ,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 420  # minutes on a busy 2-core machine
    try:
        while True:
            try:
                if httpx.get(f"{url}/login", timeout=30).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("pathray ui did not start:\n" + log_path.read_text())
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def app_url(e2e_home: dict[str, Any]) -> Iterator[str]:
    with running_app(e2e_home["home"]) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser: Any, app_url: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 950}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(180_000)  # a busy 2-core machine answers slowly
    page.goto(f"{app_url}/login")
    sign_in(page, app_url)
    page.wait_for_url("**/app/**")
    yield page
    context.close()
