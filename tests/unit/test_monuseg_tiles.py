"""MoNuSeg tiles: ImageScope XML outlines become instance label images; bad regions are dropped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pathray.errors import NotFoundError
from pipelines.training_data import MONUSEG_MPP, monuseg_tiles

XML = """<?xml version="1.0"?>
<Annotations MicronsPerPixel="0.25"><Annotation Id="1"><Regions>
<Region Id="1"><Vertices><Vertex X="1" Y="1"/><Vertex X="5" Y="1"/><Vertex X="5" Y="4"/>
<Vertex X="1" Y="4"/></Vertices></Region>
<Region Id="2"><Vertices><Vertex X="8" Y="8"/><Vertex X="9" Y="9"/></Vertices></Region>
<Region Id="3"><Vertices><Vertex X="6" Y="6"/><Vertex X="10" Y="6"/><Vertex X="10" Y="10"/>
<Vertex X="6" Y="10"/></Vertices></Region>
</Regions></Annotation></Annotations>
"""


def _folder(root: Path, names: tuple[str, ...]) -> Path:
    folder = root / "nuclei" / "monuseg-train"
    folder.mkdir(parents=True)
    for name in names:
        Image.fromarray(np.full((12, 12, 3), 200, np.uint8)).save(folder / f"{name}.tif")
        (folder / f"{name}.xml").write_text(XML)
    return folder


def test_outlines_become_instances_and_two_vertex_regions_are_dropped(tmp_path: Path):
    _folder(tmp_path, ("TCGA-AA-0001", "TCGA-BB-0002"))
    tiles = monuseg_tiles(tmp_path, exclude=("TCGA-BB-0002",))
    assert tiles.names == ["TCGA-AA-0001"] and tiles.mpp == [MONUSEG_MPP]
    labels = tiles.instance_labels[0]
    assert tiles.images[0].shape == (12, 12, 3) and labels.shape == (12, 12)
    # the square of region 1 (pixel centres inside 1..5 x 1..4) is instance 1, region 3 is 2
    assert np.count_nonzero(labels == 1) == 4 * 3 and np.count_nonzero(labels == 2) == 16
    assert labels.max() == 2


def test_a_missing_tile_or_folder_is_a_clear_error(tmp_path: Path):
    with pytest.raises(NotFoundError, match="No MoNuSeg tiles"):
        monuseg_tiles(tmp_path)
    _folder(tmp_path, ("TCGA-AA-0001",))
    with pytest.raises(NotFoundError, match="TCGA-ZZ"):
        monuseg_tiles(tmp_path, names=("TCGA-ZZ-0009",))
