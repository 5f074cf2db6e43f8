"""Slide probing: every real slide opens; every kind of bad file is rejected with its reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pathray.errors import SlideError
from pathray.slides.probe import checksum, find_slides, probe_slide
from tests.helpers import (
    CMU_DICOM,
    CMU_SVS,
    OME_FILES,
    REAL_SLIDES,
    TCGA_SVS,
    WSI,
    write_absurd_tiff,
)


@pytest.mark.parametrize("path", REAL_SLIDES, ids=lambda p: p.name)
def test_every_real_slide_probes(path: Path) -> None:
    info = probe_slide(path)
    assert info.width > 500 and info.height > 500
    assert info.level_count == len(info.level_dimensions) >= 1
    assert info.level_dimensions[0] == (info.width, info.height)
    assert info.level_downsamples[0] == pytest.approx(1.0)


def test_metadata_of_known_slides() -> None:
    svs = probe_slide(CMU_SVS)
    assert (svs.width, svs.height, svs.format, svs.vendor) == (2220, 2967, "svs", "aperio")
    assert svs.mpp == pytest.approx(0.499)
    dicom = probe_slide(CMU_DICOM)
    assert dicom.format == "dicom"
    assert (dicom.width, dicom.height) == (svs.width, svs.height)
    assert dicom.mpp == pytest.approx(0.499)
    tcga = probe_slide(TCGA_SVS)
    assert tcga.level_count == 2 and tcga.mpp is None  # JPEG 2000 SVS without MPP
    assert all(probe_slide(p).format == "ome-tiff" for p in OME_FILES)


def test_find_slides_treats_a_dicom_folder_as_one_slide() -> None:
    found = find_slides(WSI)
    assert CMU_DICOM in found and CMU_SVS in found and TCGA_SVS in found
    assert not any(p.suffix == ".dcm" for p in found)


def test_checksum_is_content_based(tmp_path: Path) -> None:
    copy = tmp_path / "copy.svs"
    shutil.copy(CMU_SVS, copy)
    assert checksum(copy) == checksum(CMU_SVS)
    assert checksum(CMU_DICOM) != checksum(CMU_SVS)


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    from PIL import Image

    empty = tmp / "empty.svs"
    empty.write_bytes(b"")
    truncated = tmp / "truncated.svs"
    truncated.write_bytes(CMU_SVS.read_bytes()[: CMU_SVS.stat().st_size // 2])
    noise = tmp / "noise.svs"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    png = tmp / "image.svs"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(png, format="PNG")
    absurd = write_absurd_tiff(tmp / "absurd.tif")
    folder = tmp / "not-dicom"
    folder.mkdir()
    return {
        "empty": (empty, "empty"),
        "truncated": (truncated, "truncated"),
        "noise": (noise, "neither TIFF nor DICOM"),
        "png": (png, "PNG"),
        "absurd": (absurd, "absurd dimensions"),
        "folder": (folder, "without DICOM"),
        "missing": (tmp / "missing.svs", "does not exist"),
    }


@pytest.mark.parametrize(
    "kind", ["empty", "truncated", "noise", "png", "absurd", "folder", "missing"]
)
def test_bad_file_rejected_with_reason(tmp_path: Path, kind: str) -> None:
    path, reason = _bad_files(tmp_path)[kind]
    with pytest.raises(SlideError) as info:
        probe_slide(path)
    assert info.value.path == str(path)
    assert reason in str(info.value)
