"""``pathray run`` and ``pathray ui`` stopped by SIGTERM or Ctrl-C (SIGINT) exit cleanly.

Issue 23: a driver's SIGTERM ended "Aborted" (Ray's fatal-signal handler in the driver), and
Ctrl-C left Ray to be shut down during interpreter finalisation. Each case runs the command as
a process with its own local Ray, signals it while it works (a run streaming its batches, the
app with Ray warmed up), and checks the exit status, the message, that stderr shows no crash
or traceback, and that no process of the command's session (raylet, GCS, workers) outlives it.
``pathray serve`` is covered by ``test_serve_cli.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from pathray.catalog import Catalog
from pathray.config import Settings
from pathray.slides.register import register_slides
from tests.conftest import free_port
from tests.helpers import OME_FILES, ROOT

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]
SLIDE = next(p for p in OME_FILES if "ndpi" in p.name)
CRASHES = ("Aborted", "Segmentation fault", "core dumped", "Fatal Python error", "Traceback")

SLOW_SPEC = """
name: slow-blobs
version: "1"
tiling: {mpp: 0.25, size: 128, overlap: 16, min_tissue: 0.0}
units:
  - {id: tissue, unit: tissue_mask, config: {mpp: 0.25}}
  - {id: blobs, unit: dark_blobs, after: [tissue], config: {threshold: 110, delay_s: 0.5}}
"""


def _home(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    home = tmp_path / "home"
    settings = Settings.from_env(home)
    with Catalog.open(settings.catalog_url) as catalog:
        register_slides(catalog, SLIDE, store="shared", image_set="ki67")
    env = {**os.environ, "PATHRAY_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)  # a local Ray of the command's own
    env.pop("PATHRAY_CATALOG_URL", None)
    env["RAY_raylet_start_wait_time_s"] = "120"
    return home, env


def _session_processes(session: int) -> list[str]:
    """Live processes of a session (the command was started as its leader)."""
    found = []
    for proc in psutil.process_iter(["pid", "name", "status"]):
        try:
            if os.getsid(proc.info["pid"]) == session and proc.info["status"] != "zombie":
                found.append(f"{proc.info['pid']} {proc.info['name']}")
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def _finish(proc: subprocess.Popen[str], signum: int, log: Path) -> str:
    """Signal the command, wait for it and for its session to empty; its output."""
    proc.send_signal(signum)
    try:
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 60  # Ray's processes leave within seconds of the driver
    while _session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(1)
    left = _session_processes(proc.pid)
    output = log.read_text()
    if left:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not left, f"processes outlived the command: {left}\n{output[-3000:]}"
    return output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_pathray_run_stopped_by_a_signal_records_a_cancelled_run_and_exits_cleanly(
    tmp_path: Path, signum: signal.Signals
) -> None:
    home, env = _home(tmp_path)
    spec = tmp_path / "slow.yaml"
    spec.write_text(SLOW_SPEC)
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pathray", "run", str(spec), "--set", "ki67"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    staging = home / "cold" / "staging"
    deadline = time.monotonic() + 600
    while not list(staging.glob("*/*.tiles.parquet")):  # batches are streaming
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no batch was staged in 600 s"
        time.sleep(0.2)
    output = _finish(proc, signum, log)
    assert proc.returncode == 128 + signum, output[-3000:]
    assert f"stopped by {signum.name}" in output, output[-3000:]
    assert not [c for c in CRASHES if c in output], output[-3000:]
    with Catalog.open(Settings.from_env(home).catalog_url) as catalog:
        (run,) = catalog.list_runs()
    assert run.status == "cancelled" and run.error == "interrupted"


def test_pathray_ui_stopped_by_sigterm_exits_0_after_shutting_ray_down(tmp_path: Path) -> None:
    _, env = _home(tmp_path)
    port = free_port()
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pathray", "ui", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    deadline = time.monotonic() + 600
    while True:  # the app answers and its warmed-up Ray runs (a raylet in its session)
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the app or its Ray did not start in 600 s"
        try:
            up = httpx.get(f"http://127.0.0.1:{port}/login", timeout=30).status_code == 200
        except httpx.HTTPError:
            up = False
        if up and any("raylet" in p for p in _session_processes(proc.pid)):
            break
        time.sleep(1)
    time.sleep(3)  # the driver connects to the raylet once it is up
    output = _finish(proc, signal.SIGTERM, log)
    assert proc.returncode == 0, output[-3000:]
    assert "Stopping: the app has stopped" in output, output[-3000:]
    assert not [c for c in CRASHES if c in output], output[-3000:]
