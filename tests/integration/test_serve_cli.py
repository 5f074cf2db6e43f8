"""``pathray serve`` as operators run it: a process, with a drift reference, stopped by SIGTERM.

Issue 23: input drift could never warn unless a reference JSON made in Python was passed, and
``pathray serve`` stopped with SIGTERM ended "Aborted". Here the command builds its reference
from an image set of the catalog (``--drift-reference-set``), serves real HTTP, and a SIGTERM
shuts Serve and Ray down with exit status 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pathray.catalog import Catalog
from pathray.config import Settings
from pathray.slides.register import register_slides
from tests.helpers import OME_FILES, ROOT

pytestmark = [pytest.mark.ray, pytest.mark.timeout(1200)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(proc: subprocess.Popen[str], url: str, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"pathray serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise AssertionError(f"pathray serve did not become healthy in {limit_s:g} s")


def test_pathray_serve_builds_its_drift_reference_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    settings = Settings.from_env(home)
    slide = next(p for p in OME_FILES if "ndpi" in p.name)
    with Catalog.open(settings.catalog_url) as catalog:
        register_slides(catalog, slide, store="shared", image_set="reference")
        token = catalog.create_api_token("ops", "engineer").token
    env = {**os.environ, "PATHRAY_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)  # its own local Ray, as an operator's first run
    env["RAY_raylet_start_wait_time_s"] = "120"
    port = _free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "pathray", "serve", "-p", "tissue", "--port", str(port)]
    command += ["--drift-reference-set", "reference"]
    with log.open("w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_healthy(proc, f"http://127.0.0.1:{port}", 600)
        monitoring = httpx.get(
            f"http://127.0.0.1:{port}/v1/monitoring",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        assert monitoring.status_code == 200, monitoring.text
        assert monitoring.json()["drift"]["reference"] is True
        (saved,) = (home / "drift").glob("reference-*.json")
        reference = json.loads(saved.read_text())
        assert reference["tiles"] >= 4 and reference["features"]["tissue_fraction"]["mean"] > 0.5
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    assert proc.returncode == 0, output[-4000:]
    assert "Stopping: shutting Serve and Ray down" in output, output[-4000:]
    assert "Aborted" not in output and "core dumped" not in output, output[-4000:]
