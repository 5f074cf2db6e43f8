"""A run driver SIGKILLed mid-run, then ``pathray run --resume``: the rows of a clean run.

On each catalog backend (SQLite, PostgreSQL), ``pathray run`` drives the nucleus U-Net with its
shipped model over a synthetic slide in a child process (with the local Ray it starts); once the
first batch of tiles is staged, the whole process group is SIGKILLed, so nothing is committed
and the run stays ``running``. ``pathray run --resume`` then processes only the tiles not yet
staged and commits exactly the rows of a clean run, and the catalog's result locations agree
with the Lance datasets.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pathray.catalog import Catalog
from pathray.results.store import ColdStore
from tests.faults import (
    IMAGE_SET,
    SPEC,
    assert_locations_agree,
    assert_same_rows,
    committed_rows,
    register,
    wait_for_staged,
)

pytestmark = pytest.mark.ray


def _cli_env(catalog_url: str, store: ColdStore, home: Path) -> dict[str, str]:
    env = {**os.environ, "PATHRAY_HOME": str(home), "PATHRAY_CATALOG_URL": catalog_url}
    env["PATHRAY_COLD"] = str(store.root)
    env.pop("RAY_ADDRESS", None)  # each command starts its own local Ray
    return env


def test_killed_driver_resumes_to_the_rows_of_a_clean_run(
    catalog_url: str, fault_slide: Path, fault_reference: dict, tmp_path: Path
) -> None:
    """Killed after its first staged batch, the run resumes from the CLI to clean rows."""
    store = ColdStore(tmp_path / "cold")
    spec_file = tmp_path / "unet.yaml"
    spec_file.write_text(SPEC)
    env = _cli_env(catalog_url, store, tmp_path / "home")
    with Catalog.open(catalog_url) as catalog:
        register(catalog, fault_slide)
        proc = subprocess.Popen(
            [sys.executable, "-m", "pathray", "run", str(spec_file), "--set", IMAGE_SET],
            env=env,
            start_new_session=True,  # its own process group: the driver and its local Ray
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_staged(store, lambda: proc.poll() is None)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        (run,) = catalog.list_runs()
        done_before = len(store.done_tiles(run.id))
        total = run.progress["tiles_total"]
        assert run.status == "running"  # killed: nobody recorded an end
        assert 0 < done_before < total == fault_reference["tiles"].num_rows
        assert not store.uri(run.id, "tiles").exists()  # nothing committed
        assert_locations_agree(catalog, store, run.id)  # ... and no location recorded

        resumed = subprocess.run(
            [sys.executable, "-m", "pathray", "run", "--resume", run.id],
            env=env,
            capture_output=True,
            text=True,
            timeout=540,
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"run {run.id}: succeeded" in resumed.stdout
        assert catalog.get_run(run.id).status == "succeeded"
        # only the missing tiles were processed again (a unit worker may finish a batch while
        # the kill reaches it, so the resume may find more done than counted above)
        events = [e.message for e in catalog.run_events(run.id)]
        found = [int(m) for e in events for m in re.findall(r"; (\d+) already done$", e)]
        assert len(found) == 1 and done_before <= found[0] < total, events
        assert_same_rows(committed_rows(store, run.id), fault_reference)
        assert_locations_agree(catalog, store, run.id)
        assert fault_reference["tiles"]["nucleus_count"].to_numpy().sum() > 0  # the model ran
