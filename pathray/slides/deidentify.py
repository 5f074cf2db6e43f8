"""De-identification of slides: no label or macro image, no identifying metadata.

A slide file carries more than tissue. An Aperio SVS holds a *label* image (a photograph of the
glass slide's paper label, often with the patient's name or barcode) and a *macro* image, and its
description names the scanner's user, the file name and the scan date; a DICOM WSI has LABEL and
OVERVIEW instances and patient, accession and operator attributes. :func:`deidentify_slide` writes
a copy without any of it:

- TIFF-based slides (SVS, NDPI, OME-TIFF, generic TIFF): the pages of the label and macro series
  are unlinked from the IFD chain *and their pixel bytes are zeroed* (unlinking alone leaves them
  in the file); identifying ASCII tags (``DateTime``, ``Artist``, ``HostComputer``,
  ``DocumentName``, ``PageName``) are blanked; in an Aperio description every ``key = value``
  field not on :data:`SVS_KEEP` is blanked; in OME-XML the experimenter's names, e-mail and
  institution, acquisition dates and free-text descriptions are blanked. Everything is
  overwritten in place with spaces, so no offset moves and the pyramid reads as before.
- DICOM folders: LABEL and OVERVIEW instances are left out; in the others the attributes of
  :data:`DICOM_PHI` are emptied and private attributes removed.

Example:
    >>> report = deidentify_slide("in/CMU-1.svs", "out/CMU-1.svs")  # doctest: +SKIP
    >>> report.removed_images  # doctest: +SKIP
    ['Label', 'Macro']
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

from pathray.errors import SlideError

#: Series (tifffile's names, lower case) that picture the glass slide rather than the tissue.
ASSOCIATED = ("label", "macro", "overview")
#: Aperio description fields that say nothing about the patient, the user or the scan's origin.
SVS_KEEP = frozenset(
    {
        "AppMag",
        "MPP",
        "StripeWidth",
        "Exposure Time",
        "Exposure Scale",
        "Focus Offset",
        "Left",
        "Top",
        "LineCameraSkew",
        "LineAreaXOffset",
        "LineAreaYOffset",
        "OriginalWidth",
        "OriginalHeight",
        "Filtered",
        "ICC Profile",
        "Gamma",
    }
)
_SVS_KEEP_LOWER = frozenset(key.lower() for key in SVS_KEEP)
#: TIFF tags (code: name) whose text can identify a person, a place or a date.
TIFF_PHI_TAGS = {
    269: "DocumentName",
    285: "PageName",
    306: "DateTime",
    315: "Artist",
    316: "HostComputer",
}
#: DICOM attributes emptied in every kept instance.
DICOM_PHI = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "PatientAge",
    "OtherPatientIDs",
    "OtherPatientNames",
    "IssuerOfPatientID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "SeriesDate",
    "SeriesTime",
    "AcquisitionDateTime",
    "ContentDate",
    "ContentTime",
    "ContainerIdentifier",
    "DeviceSerialNumber",
)
_OME_ATTRIBUTES = re.compile(
    rb'\b(FirstName|MiddleName|LastName|Email|UserName|Institution)="([^"]*)"'
)
_OME_ELEMENTS = re.compile(rb"<(AcquisitionDate|Description)>([^<]*)</\1>")
_SVS_FIELD = re.compile(rb"\|([^|=\r\n]+?) = ([^|\r\n]*)")


@dataclass
class DeidReport:
    """What :func:`deidentify_slide` removed.

    Attributes:
        path: The de-identified copy.
        removed_images: Names of the associated images (series or DICOM image types) left out.
        blanked: Names of the metadata fields blanked.
    """

    path: Path
    removed_images: list[str] = field(default_factory=list)
    blanked: list[str] = field(default_factory=list)


def deidentify_slide(source: str | Path, target: str | Path) -> DeidReport:
    """Write a de-identified copy of a slide file or DICOM folder.

    Args:
        source: A TIFF-based slide file or a DICOM WSI folder; never modified.
        target: Where the copy goes (a file, or a folder for DICOM); must not exist.

    Returns:
        What was removed.

    Raises:
        SlideError: The source is not a readable slide, or the target exists.
    """
    from pathray.slides.probe import is_dicom_folder

    source, target = Path(source), Path(target)
    if target.exists():
        raise SlideError(target, "already exists; de-identified copies never overwrite a file")
    if not source.exists():
        raise SlideError(source, "does not exist")
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        if not is_dicom_folder(source):
            raise SlideError(source, "is a folder without DICOM (.dcm) files")
        return _deidentify_dicom(source, target)
    partial = target.with_name(f".{target.name}.partial")
    shutil.copyfile(source, partial)
    try:
        report = _deidentify_tiff(partial)
    except SlideError:
        partial.unlink(missing_ok=True)
        raise
    except Exception as exc:
        partial.unlink(missing_ok=True)
        raise SlideError(source, f"cannot be de-identified ({type(exc).__name__}: {exc})") from None
    os.replace(partial, target)
    report.path = target
    return report


def deidentify_tree(
    source: str | Path, into: str | Path
) -> tuple[list[DeidReport], dict[str, str]]:
    """De-identify every slide under ``source`` into ``into``, keeping their relative paths.

    A copy that exists already (from an earlier call) is kept as it is and not reported again.

    Args:
        source: A slide file, a DICOM folder, or a folder searched recursively.
        into: The folder of the copies.

    Returns:
        The reports of the new copies, and path -> reason for every slide that failed.
    """
    from pathray.slides.probe import find_slides

    source, into = Path(source), Path(into)
    base = source if source.is_dir() and find_slides(source) != [source] else source.parent
    reports, failed = [], {}
    for path in find_slides(source):
        target = into / path.relative_to(base)
        if target.exists():
            continue
        try:
            reports.append(deidentify_slide(path, target))
        except SlideError as exc:
            failed[str(path)] = exc.reason
    return reports, failed


def scrub_description(description: str) -> str:
    """An Aperio or OME description with its identifying values blanked (lengths kept)."""
    return _scrub_description(description.encode("utf-8", "surrogateescape"), []).decode(
        "utf-8", "surrogateescape"
    )


def _blank(match: re.Match[bytes], group: int) -> bytes:
    whole, start = match.group(0), match.start(group) - match.start(0)
    end = match.end(group) - match.start(0)
    return whole[:start] + b" " * (end - start) + whole[end:]


def _scrub_description(text: bytes, blanked: list[str]) -> bytes:
    def svs(match: re.Match[bytes]) -> bytes:
        key = match.group(1).decode("latin-1").strip()
        if key.lower() in _SVS_KEEP_LOWER or not match.group(2).strip():
            return match.group(0)
        if f"description: {key}" not in blanked:
            blanked.append(f"description: {key}")
        return _blank(match, 2)

    def ome(match: re.Match[bytes]) -> bytes:
        if not match.group(2).strip():
            return match.group(0)
        if f"OME-XML: {match.group(1).decode()}" not in blanked:
            blanked.append(f"OME-XML: {match.group(1).decode()}")
        return _blank(match, 2)

    if text.startswith(b"Aperio"):
        text = _SVS_FIELD.sub(svs, text)
    if b"<OME" in text[:4096]:
        text = _OME_ATTRIBUTES.sub(ome, text)
        text = _OME_ELEMENTS.sub(ome, text)
    return text


def _deidentify_tiff(path: Path) -> DeidReport:
    """De-identify a TIFF in place (a private copy): overwrite, never move, any byte."""
    import tifffile

    report = DeidReport(path)
    with tifffile.TiffFile(path) as tif:
        fmt = tif.tiff
        pages = [page for page in tif.pages if isinstance(page, tifffile.TiffPage)]
        dropped: dict[int, tifffile.TiffPage] = {}
        for series in tif.series:
            if any(word in (series.name or "").lower() for word in ASSOCIATED):
                report.removed_images.append(series.name)
                for page in series.pages:
                    if isinstance(page, tifffile.TiffPage):
                        dropped[page.offset] = page
        chain = [page.offset for page in pages]
        writes: list[tuple[int, bytes]] = []
        for page in pages:
            for tag in page.tags.values():
                if tag.code == 270:
                    raw = (
                        tag.value.encode("utf-8", "surrogateescape")
                        if isinstance(tag.value, str)
                        else bytes(tag.value)
                    )
                    scrubbed = _scrub_description(raw, report.blanked)
                    if scrubbed != raw:
                        writes.append((tag.valueoffset, scrubbed))
                elif tag.code in TIFF_PHI_TAGS and tag.count > 1:
                    if TIFF_PHI_TAGS[tag.code] not in report.blanked:
                        report.blanked.append(TIFF_PHI_TAGS[tag.code])
                    writes.append((tag.valueoffset, b" " * (tag.count - 1)))
        for page in dropped.values():
            for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
                writes.append((offset, bytes(count)))
        # Each IFD ends with the offset of the next: relink the chain around the dropped ones.
        kept = [offset for offset in chain if offset not in dropped]
        if not kept:
            raise SlideError(path, "holds only label or macro images")
        for offset in chain:
            if offset in dropped:
                continue
            tif.filehandle.seek(offset)
            count = struct.unpack(fmt.tagnoformat, tif.filehandle.read(fmt.tagnosize))[0]
            where = offset + fmt.tagnosize + count * fmt.tagsize
            after = kept.index(offset) + 1
            following = kept[after] if after < len(kept) else 0
            writes.append((where, struct.pack(fmt.offsetformat, following)))
    with path.open("r+b") as handle:
        for offset, data in writes:
            handle.seek(offset)
            handle.write(data)
    return report


def _deidentify_dicom(source: Path, target: Path) -> DeidReport:
    import pydicom

    report = DeidReport(target)
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        for path in sorted(source.glob("*.dcm")):
            dataset = pydicom.dcmread(path)
            kinds = [str(v).upper() for v in dataset.get("ImageType", [])]
            dropped = next((k for k in kinds if k in ("LABEL", "OVERVIEW")), None)
            if dropped is not None:
                report.removed_images.append(dropped.lower())
                continue
            for keyword in DICOM_PHI:
                element = dataset.data_element(keyword) if keyword in dataset else None
                if element is not None and element.value not in ("", None):
                    element.value = ""
                    if keyword not in report.blanked:
                        report.blanked.append(keyword)
            dataset.remove_private_tags()
            dataset.PatientIdentityRemoved = "YES"
            dataset.save_as(partial / path.name)
    except Exception as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise SlideError(source, f"cannot be de-identified ({type(exc).__name__}: {exc})") from None
    os.replace(partial, target)
    return report
