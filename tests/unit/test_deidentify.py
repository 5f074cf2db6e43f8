"""De-identification: a slide whose label image, description and DICOM attributes carry a fake
patient name comes out of ``deidentify_slide``, ``slides add --deidentify`` and ``slides export
--deidentify`` without it, and with the same tissue pixels."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from typer.testing import CliRunner

from pathray.cli import app
from pathray.errors import SlideError
from pathray.slides.deidentify import deidentify_slide, scrub_description
from pathray.slides.probe import probe_slide
from tests.helpers import CMU_DICOM, CMU_SVS

NAME = b"Jane Doe"
LABEL_TEXT = b"JANE DOE 1970-01-01 MRN 0042 "
runner = CliRunner()


def _contains_phi(path: Path) -> bool:
    files = sorted(path.glob("*")) if path.is_dir() else [path]
    return any(NAME in f.read_bytes() or LABEL_TEXT in f.read_bytes() for f in files)


@pytest.fixture
def svs_with_phi(tmp_path: Path) -> Path:
    """The CMU SVS with a patient's name in its description and on its label image."""
    path = tmp_path / "phi" / "case-17.svs"
    path.parent.mkdir()
    shutil.copyfile(CMU_SVS, path)
    with tifffile.TiffFile(path) as tif:
        description = tif.pages.first.tags["ImageDescription"]
        raw = path.read_bytes()[description.valueoffset : description.valueoffset + 4096]
        user = re.search(rb"User = ([^|]*)", raw)
        (label,) = next(s for s in tif.series if s.name == "Label").pages
        spans = list(zip(label.dataoffsets, label.databytecounts, strict=True))
    assert user is not None
    with path.open("r+b") as handle:
        handle.seek(description.valueoffset + user.start(1))
        handle.write(NAME.ljust(len(user.group(1))))
        for offset, count in spans:
            handle.seek(offset)
            handle.write((LABEL_TEXT * (count // len(LABEL_TEXT) + 1))[:count])
    assert _contains_phi(path)
    return path


@pytest.fixture
def dicom_with_phi(tmp_path: Path) -> Path:
    folder = tmp_path / "phi" / "case-17-dicom"
    shutil.copytree(CMU_DICOM, folder)
    for path in folder.glob("*.dcm"):
        dataset = pydicom.dcmread(path)
        dataset.PatientName = NAME.decode()
        dataset.PatientID = "MRN0042"
        dataset.save_as(path)
    assert _contains_phi(folder)
    return folder


def test_an_svs_loses_its_label_macro_and_names_but_not_its_pixels(
    svs_with_phi: Path, tmp_path: Path
) -> None:
    out = tmp_path / "clean" / "case-17.svs"
    report = deidentify_slide(svs_with_phi, out)
    assert report.removed_images == ["Label", "Macro"]
    assert "description: User" in report.blanked and "description: Filename" in report.blanked
    assert not _contains_phi(out) and _contains_phi(svs_with_phi)  # the source is untouched
    with tifffile.TiffFile(out) as tif:
        assert [s.name for s in tif.series] == ["Baseline", "Thumbnail"]
        assert "MPP = 0.4990" in tif.pages.first.description  # the resolution stays
        pixels = tif.series[0].asarray()
    assert np.array_equal(pixels, tifffile.imread(CMU_SVS))
    info = probe_slide(out)
    assert info.mpp == pytest.approx(0.499) and info.format == "svs"


def test_a_dicom_slide_loses_its_label_overview_and_patient(
    dicom_with_phi: Path, tmp_path: Path
) -> None:
    out = tmp_path / "clean" / "dicom"
    report = deidentify_slide(dicom_with_phi, out)
    assert sorted(report.removed_images) == ["label", "overview"]
    assert {"PatientName", "PatientID"} <= set(report.blanked)
    assert not _contains_phi(out)
    kinds = {pydicom.dcmread(p, stop_before_pixels=True).ImageType[2] for p in out.glob("*.dcm")}
    assert kinds == {"VOLUME", "THUMBNAIL"}
    assert probe_slide(out).level_dimensions == probe_slide(CMU_DICOM).level_dimensions


def test_the_catalog_never_keeps_the_identifying_description(svs_with_phi: Path) -> None:
    info = probe_slide(svs_with_phi)
    assert NAME.decode() not in json.dumps(info.properties)
    assert "AppMag = 20" in info.properties["description"]


def test_ome_xml_names_are_blanked_in_place() -> None:
    xml = '<OME><Experimenter FirstName="Jane" LastName="Doe" ID="E:0"/><Image Name="x">'
    xml += "<AcquisitionDate>2020-01-01T10:00:00</AcquisitionDate></Image></OME>"
    clean = scrub_description(xml)
    assert len(clean) == len(xml)
    assert "Jane" not in clean and "Doe" not in clean and "2020" not in clean
    assert 'ID="E:0"' in clean


def test_bad_input_is_refused_and_nothing_is_overwritten(
    svs_with_phi: Path, tmp_path: Path
) -> None:
    with pytest.raises(SlideError, match="does not exist"):
        deidentify_slide(tmp_path / "nope.svs", tmp_path / "out.svs")
    existing = tmp_path / "existing.svs"
    existing.write_bytes(b"keep me")
    with pytest.raises(SlideError, match="already exists"):
        deidentify_slide(svs_with_phi, existing)
    assert existing.read_bytes() == b"keep me"
    not_a_slide = tmp_path / "notes.svs"
    not_a_slide.write_bytes(b"not a tiff at all")
    with pytest.raises(SlideError):
        deidentify_slide(not_a_slide, tmp_path / "out2.svs")
    assert not (tmp_path / "out2.svs").exists() and not list(tmp_path.glob(".*partial"))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATHRAY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PATHRAY_CATALOG_URL", raising=False)
    monkeypatch.delenv("PATHRAY_COLD", raising=False)
    assert runner.invoke(app, ["init"]).exit_code == 0  # the caller becomes the admin
    return tmp_path / "home"


def test_cli_add_and_export_deidentified(home: Path, svs_with_phi: Path, tmp_path: Path) -> None:
    added = runner.invoke(app, ["slides", "add", str(svs_with_phi), "--store", "s", "--deidentify"])
    assert added.exit_code == 0, added.output
    assert "Label, Macro" in added.output
    shown = runner.invoke(app, ["slides", "show", "case-17"])
    assert shown.exit_code == 0 and "deidentified" in shown.output
    assert NAME.decode() not in shown.output
    out = tmp_path / "export.svs"
    done = runner.invoke(app, ["slides", "export", "case-17", str(out), "--deidentify"])
    assert done.exit_code == 0, done.output
    assert not _contains_phi(out)


def test_cli_export_with_the_label_needs_an_admin(
    home: Path, svs_with_phi: Path, tmp_path: Path
) -> None:
    assert runner.invoke(app, ["slides", "add", str(svs_with_phi), "--store", "s"]).exit_code == 0
    assert runner.invoke(app, ["users", "add", "carol", "--role", "clinician"]).exit_code == 0
    refused = runner.invoke(
        app, ["slides", "export", "case-17", str(tmp_path / "a.svs"), "--actor", "carol"]
    )
    assert refused.exit_code == 2 and "admin" in refused.output
    assert not (tmp_path / "a.svs").exists()
    ok = runner.invoke(app, ["slides", "export", "case-17", str(tmp_path / "b.svs")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "b.svs").read_bytes() == svs_with_phi.read_bytes()
    from pathray.catalog import Catalog
    from pathray.config import Settings

    with Catalog.open(Settings.from_env().catalog_url) as catalog:
        entries = catalog.audit_entries("slide", 1)
    assert [e.details["deidentified"] for e in entries if e.action == "export_slide"] == [False]
