"""Registering slides: real slides register with replicas; bad files are rejected cleanly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pathray.catalog import Catalog
from pathray.engine.plan import reachable_replica
from pathray.errors import SlideError
from pathray.slides.register import register_slides
from tests.helpers import CMU_SVS, REAL_SLIDES, TCGA_SVS, WSI, write_absurd_tiff


def test_real_slides_register_with_metadata(sqlite_catalog: Catalog) -> None:
    report = register_slides(sqlite_catalog, WSI, store="shared", image_set="wsi", mpp=0.5)
    assert not report.rejected
    names = {s.name for s in report.registered}
    ome = {p.name for p in WSI.glob("*.ome.tif")}  # the OME-TIFFs sit beside them too
    assert names == {"CMU-1-Small-Region.svs", "CMU-1-Small-Region-dicom", TCGA_SVS.name, *ome}
    tcga = sqlite_catalog.get_slide(TCGA_SVS.name)
    assert tcga.mpp == 0.5 and tcga.mpp_source == "user"  # the file declares none
    cmu = sqlite_catalog.get_slide(CMU_SVS.name)
    assert cmu.mpp == pytest.approx(0.499) and cmu.mpp_source == "file"
    assert {s.name for s in sqlite_catalog.slides_in_set("wsi")} == names


def test_bad_files_rejected_and_the_rest_registers(sqlite_catalog: Catalog, tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    shutil.copy(CMU_SVS, folder / "good.svs")
    (folder / "empty.svs").write_bytes(b"")
    (folder / "truncated.svs").write_bytes(CMU_SVS.read_bytes()[:50_000])
    (folder / "random.tif").write_bytes(bytes(range(256)) * 64)
    write_absurd_tiff(folder / "absurd.tiff")
    report = register_slides(sqlite_catalog, folder, store="batch")
    assert [s.name for s in report.registered] == ["good.svs"]
    assert set(map(lambda p: Path(p).name, report.rejected)) == {
        "empty.svs",
        "truncated.svs",
        "random.tif",
        "absurd.tiff",
    }
    assert "empty" in report.rejected[str(folder / "empty.svs")]
    assert "absurd dimensions" in report.rejected[str(folder / "absurd.tiff")]
    # nothing half-written: only the good slide and its replica exist
    assert [s.name for s in sqlite_catalog.list_slides()] == ["good.svs"]


def test_replicas_on_two_stores_open_from_the_first_reachable(
    sqlite_catalog: Catalog, tmp_path: Path
) -> None:
    a, b = tmp_path / "store-a", tmp_path / "store-b"
    a.mkdir()
    b.mkdir()
    shutil.copy(CMU_SVS, a / "cmu.svs")
    shutil.copy(CMU_SVS, b / "cmu-copy.svs")
    first = register_slides(sqlite_catalog, a, store="a").registered[0]
    second = register_slides(sqlite_catalog, b, store="b").registered[0]
    assert first.id == second.id  # same content: one slide, two replicas
    assert len(sqlite_catalog.replicas_of(first.id)) == 2
    path, missing = reachable_replica(sqlite_catalog, first.id)
    assert path.endswith("store-a/cmu.svs") and missing == []
    (a / "cmu.svs").unlink()
    path, missing = reachable_replica(sqlite_catalog, first.id)
    assert path.endswith("store-b/cmu-copy.svs") and missing[0].endswith("store-a/cmu.svs")
    (b / "cmu-copy.svs").unlink()
    with pytest.raises(SlideError, match="no replica is reachable"):
        reachable_replica(sqlite_catalog, first.id)


def test_every_real_slide_registers(sqlite_catalog: Catalog) -> None:
    for path in REAL_SLIDES:
        report = register_slides(sqlite_catalog, path, store=f"s-{path.stem}")
        assert report.registered and not report.rejected, report.rejected
