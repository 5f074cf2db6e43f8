"""A local Ray started the way pathray starts it (run, serve, ui) listens on loopback only.

The check runs in a fresh interpreter, so the Ray it inspects is the one ``ensure_ray`` starts
(not one another test module left running in this process), and every Ray process is a
descendant of that interpreter: the GCS and raylet it spawns, the workers and the dashboard
agent the raylet spawns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]

# Starts Ray, makes it run an actor (a worker with its own gRPC server), then lists the
# listening sockets of every process below this one.
PROBE = """
import json, sys, time
import psutil, ray
from pathray.engine.cluster import ensure_ray

ensure_ray(num_cpus=1)

@ray.remote(num_cpus=0)
class Echo:
    def ping(self):
        return True

echo = Echo.remote()
assert ray.get(echo.ping.remote(), timeout=120)
time.sleep(3)  # let the dashboard agent open its ports
seen = []
for proc in psutil.Process().children(recursive=True):
    try:
        for conn in proc.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                seen.append([proc.name(), conn.laddr.ip, conn.laddr.port])
    except psutil.Error:
        continue
print("LISTEN " + json.dumps(seen))
ray.shutdown()
"""


def _loopback(ip: str) -> bool:
    return ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def test_local_ray_listens_on_loopback_only() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=ROOT,
        # Ray's own switch must not be what keeps it on loopback: the probe runs without it.
        env={
            **{k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"},
            "PYTHONPATH": str(ROOT),
        },
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("LISTEN ")]
    assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-4000:]
    sockets = json.loads(lines[-1].removeprefix("LISTEN "))
    names = {name for name, _, _ in sockets}
    # the probe saw Ray's own servers, not an empty list
    assert {"gcs_server", "raylet"} <= names, sockets
    exposed = [s for s in sockets if not _loopback(s[1])]
    assert not exposed, f"Ray sockets bound beyond loopback: {exposed}"
