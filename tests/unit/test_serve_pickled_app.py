"""The ingress app as a Serve replica sees it: pickled by value, unpickled in a fresh process.

Serve cloudpickles the FastAPI app into each replica. Route and dependency functions then arrive
without their module's globals, so a string annotation (``from __future__ import annotations``)
can no longer be resolved there: FastAPI takes ``_: Reader`` for a required field and the
OpenAPI schema fails to build. This test catches that without starting Ray.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import json, sys
from ray import cloudpickle
app = cloudpickle.loads(open(sys.argv[1], "rb").read())
schema = app.openapi()
params = {
    f"{method} {path}": [p["name"] for p in op.get("parameters", [])]
    for path, ops in schema["paths"].items()
    for method, op in ops.items()
}
print(json.dumps(params))
"""


def test_unpickled_app_builds_its_schema_with_only_real_parameters(tmp_path: Path) -> None:
    from ray import cloudpickle

    import serve.ingress

    pickled = tmp_path / "app.pkl"
    pickled.write_bytes(cloudpickle.dumps(serve.ingress.api))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(pickled)],
        cwd=tmp_path,  # not the checkout: nothing of serve/ is imported by name first
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    params = json.loads(done.stdout.strip().splitlines()[-1])
    assert params["get /v1/pipelines"] == []
    assert params["get /v1/jobs/{run_id}"] == ["run_id"]
    assert "post /v1/infer" in params
    assert not any("_" in names or "self" in names for names in params.values()), params
