"""Paths and small builders shared by the tests."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PATHRAY_SHARED_DATA", ROOT.parent / "shared" / "data"))
WSI = SHARED / "wsi"
CMU_SVS = WSI / "CMU-1-Small-Region.svs"
CMU_DICOM = WSI / "CMU-1-Small-Region-dicom"
TCGA_SVS = WSI / "tcga-cr-7395-01a-01-ts1.svs"
OME_FILES = sorted(SHARED.glob("*.ome.tif"))
REAL_SLIDES = [CMU_SVS, CMU_DICOM, TCGA_SVS, *OME_FILES]


def write_absurd_tiff(path: Path, side: int = 5_000_000) -> Path:
    """A small valid tiled TIFF whose header is patched to declare ``side`` x ``side`` px."""
    import tifffile

    tifffile.imwrite(path, np.zeros((16, 16, 3), np.uint8), tile=(16, 16), photometric="rgb")
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages.first.tags
        offsets = [tags["ImageWidth"].valueoffset, tags["ImageLength"].valueoffset]
        dtypes = [tags["ImageWidth"].dtype, tags["ImageLength"].dtype]
    with path.open("r+b") as handle:
        for offset, dtype in zip(offsets, dtypes, strict=True):
            handle.seek(offset)
            # SHORT (3) cannot hold the value: write a LONG in place of the short and its pad
            handle.write(struct.pack("<H", 0xFFFF) if int(dtype) == 3 else struct.pack("<I", side))
    return path
