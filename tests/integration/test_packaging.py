"""A real, non-editable install: build the wheel, install it into a fresh virtual environment,
run ``pathray demo`` from another directory.

The fresh environment takes its third-party packages from the running one (a ``.pth`` line to its
site-packages) rather than downloading PyTorch again; PathRay itself comes only from the wheel,
so a module or a data file that the wheel leaves out (presets, migrations, shipped weights, the
viewer's static files) fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(
    ".git", "node_modules", ".pathray", "build", "dist", "__pycache__", "*.egg-info", ".*cache"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src") / "pathray"
    shutil.copytree(REPO, src, ignore=SKIP)
    out = tmp_path_factory.mktemp("dist")
    uv = Path(sys.executable).parent / "uv"
    build = [str(uv), "build", "--wheel", "-q", "-o", str(out), str(src)]
    subprocess.run(build, check=True, timeout=600)
    (found,) = out.glob("pathray-*.whl")
    return found


def test_the_wheel_carries_the_package_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "pipelines/presets/nuclei.yaml",
        "pipelines/nuclei/weights/nuclei_default/model.pt",
        "pipelines/nuclei/weights/nuclei_default/pathray-model.json",
        "pathray/catalog/migrations/env.py",
        "ui/static/viewer.js",
        "ui/static/viewer.html",
    ):
        assert needed in names, needed


@pytest.mark.ray
@pytest.mark.slow
def test_pip_install_then_demo_from_another_directory(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    uv = Path(sys.executable).parent / "uv"
    install = [str(uv), "pip", "install", "-q", "--no-deps", "--python", str(venv / "bin/python")]
    subprocess.run([*install, str(wheel)], check=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PATHRAY_", "PYTHONPATH"))}
    env.update(PATHRAY_HOME=str(elsewhere / "home"), RAY_ADDRESS="")
    where = subprocess.run(
        [str(venv / "bin/python"), "-c", "import pathray, pipelines; print(pathray.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(venv)), where.stdout  # the wheel, not the checkout
    demo = subprocess.run(
        [str(venv / "bin/pathray"), "demo", "--quick"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "No real sample data found" in demo.stdout
    row = next(line for line in demo.stdout.splitlines() if line.startswith("│ synthetic"))
    f1 = float(row.split("│")[8])
    assert f1 > 0.8, row
    assert (elsewhere / "home" / "catalog.db").is_file()
