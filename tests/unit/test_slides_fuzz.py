"""Fuzzed slides: the real sample files, truncated, bit-flipped and given absurd tags, are
registered and read in a worker process. Each must be registered and read, or refused with a
clear :class:`~pathray.errors.SlideError`: never a crash, never another exception, never a hang
over :data:`LIMIT_S`, never more than :data:`PEAK_MB` of memory.

Mutations come from Hypothesis (derandomised, so every run tries the same cases; a failure
shrinks to the smallest mutation that shows it).
"""

from __future__ import annotations

import itertools
import json
import os
import select
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import CMU_SVS, OME_FILES

REPO = Path(__file__).resolve().parents[2]
#: Seconds one mutated slide may take to register and read.
LIMIT_S = 20.0
#: Peak resident memory of the worker (it holds TIAToolbox, torch and the readers: ~1 GiB idle).
PEAK_MB = 3072.0
SOURCES = {"svs": CMU_SVS, "ome": OME_FILES[0]}
DICOM = CMU_SVS.parent / "CMU-1-Small-Region-dicom"


class Worker:
    """The worker process, restarted after it dies or hangs."""

    def __init__(self, catalog_url: str) -> None:
        self.catalog_url = catalog_url
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz_slide_worker", self.catalog_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
            env=env,
        )
        assert self._line(proc, 180.0) == {"ready": True}
        return proc

    @staticmethod
    def _line(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any] | None:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        return json.loads(line) if line else None

    def run(self, path: Path) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        answer = self._line(self.proc, LIMIT_S)
        if answer is None:
            code = self.proc.poll()
            self.close()
            return {"outcome": "crash" if code is not None else "hang", "detail": f"exit {code}"}
        return answer

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'catalog.db'}"
    w = Worker(url)
    yield w
    w.close()


def check(answer: dict[str, Any], what: str) -> None:
    assert answer["outcome"] in ("ok", "rejected"), f"{what}: {answer}"
    assert "Slide store" not in str(answer.get("detail")), answer  # refused for the file itself
    assert answer["seconds"] < LIMIT_S, f"{what}: {answer}"
    assert answer["peak_mb"] < PEAK_MB, f"{what}: {answer}"


FUZZ = settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


_CASES = itertools.count()


def _case_folder(tmp_path: Path) -> Path:
    """A new folder per example: the worker caches one reader per path, as every process does."""
    return tmp_path / f"case-{next(_CASES)}"


def _copy(source: Path, tmp_path: Path) -> Path:
    folder = _case_folder(tmp_path)
    folder.mkdir(parents=True)
    out = folder / source.name
    shutil.copyfile(source, out)
    return out


def test_the_intact_files_register_and_read(worker: Worker) -> None:
    for path in (*SOURCES.values(), DICOM):
        answer = worker.run(path)
        assert answer["outcome"] == "ok", answer


@FUZZ
@given(kind=st.sampled_from(sorted(SOURCES)), fraction=st.floats(0.0, 0.999))
def test_truncated_slides(worker: Worker, tmp_path: Path, kind: str, fraction: float) -> None:
    path = _copy(SOURCES[kind], tmp_path)
    with path.open("r+b") as handle:
        handle.truncate(int(path.stat().st_size * fraction))
    answer = worker.run(path)
    check(answer, f"{kind} cut at {fraction:.3f}")
    if fraction < 0.5:  # (the last bytes of a file may be padding that nothing references)
        assert answer["outcome"] == "rejected", answer


@FUZZ
@given(
    kind=st.sampled_from(sorted(SOURCES)),
    flips=st.lists(st.tuples(st.floats(0.0, 0.999), st.integers(1, 255)), min_size=1, max_size=8),
)
def test_bit_flipped_slides(
    worker: Worker, tmp_path: Path, kind: str, flips: list[tuple[float, int]]
) -> None:
    path = _copy(SOURCES[kind], tmp_path)
    data = bytearray(path.read_bytes())
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    path.write_bytes(bytes(data))
    check(worker.run(path), f"{kind} flips {flips}")


#: Tags of the first page and values no real slide has.
ABSURD_TAGS = (
    "ImageWidth",
    "ImageLength",
    "TileWidth",
    "TileLength",
    "TileOffsets",
    "TileByteCounts",
    "SamplesPerPixel",
    "BitsPerSample",
    "Compression",
)
ABSURD_VALUES = (0, 1, 3, 65535, 2**31 - 1, 2**32 - 1)


def _poke_tag(path: Path, tag_name: str, value: int) -> bool:
    """Overwrite the first value of a tag of the first page in place; False if it has none."""
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages.first.tags.get(tag_name)
        if tag is None:
            return False
        fmt = tif.byteorder + {3: "H", 4: "I", 16: "Q"}.get(tag.dtype, "I")
        offset = tag.valueoffset
    size = struct.calcsize(fmt)
    with path.open("r+b") as handle:
        handle.seek(offset)
        handle.write(struct.pack(fmt, value % (1 << (8 * size))))
    return True


@FUZZ
@given(
    kind=st.sampled_from(sorted(SOURCES)),
    tag=st.sampled_from(ABSURD_TAGS),
    value=st.sampled_from(ABSURD_VALUES),
)
def test_slides_with_absurd_tags(
    worker: Worker, tmp_path: Path, kind: str, tag: str, value: int
) -> None:
    path = _copy(SOURCES[kind], tmp_path)
    if _poke_tag(path, tag, value):
        check(worker.run(path), f"{kind} {tag}={value}")


@FUZZ
@given(fraction=st.floats(0.0, 0.999), flip=st.booleans())
def test_damaged_dicom_folders(worker: Worker, tmp_path: Path, fraction: float, flip: bool) -> None:
    folder = _case_folder(tmp_path) / DICOM.name
    shutil.copytree(DICOM, folder)
    victim = max(folder.glob("*.dcm"), key=lambda p: p.stat().st_size)  # the level-0 file
    data = bytearray(victim.read_bytes())
    at = int(len(data) * fraction)
    if flip:
        data[at : at + 16] = bytes(b ^ 0xA5 for b in data[at : at + 16])
    else:
        del data[at:]
    victim.write_bytes(bytes(data))
    check(worker.run(folder), f"dicom {'flip' if flip else 'cut'} at {fraction:.3f}")
