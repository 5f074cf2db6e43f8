"""Check a slide file before trusting it, then read its metadata through TIAToolbox.

Readers of slide formats are written for well-formed files; a zero-byte file, a truncated TIFF,
a PNG renamed ``.svs`` or a header declaring a 10^12-pixel image can crash or hang them. So
:func:`probe_slide` first sniffs the bytes and checks the TIFF structure (declared sizes, tile
offsets inside the file, one decodable tile per level) and only then asks TIAToolbox's
``WSIReader`` for the metadata. Every rejection is a :class:`~pathray.errors.SlideError` naming
the file and the reason.

Example:
    >>> info = probe_slide("../shared/data/wsi/CMU-1-Small-Region.svs")  # doctest: +SKIP
    >>> info.width, info.height, info.mpp  # doctest: +SKIP
    (2220, 2967, 0.499)
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pathray.errors import SlideError
from pathray.slides.deidentify import scrub_description

#: File extensions registered as single-file slides.
SLIDE_EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".scn", ".bif", ".qptiff", ".ome.tif")
#: Largest side accepted, in pixels (the largest scanners write ~250k px).
MAX_SIDE = 1_000_000
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_KNOWN_MAGICS = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"BM": "a BMP image",
    b"PK\x03\x04": "a ZIP archive",
    b"%PDF": "a PDF document",
}


@dataclass(frozen=True)
class SlideInfo:
    """What PathRay knows about a slide file.

    Attributes:
        path: The file (or DICOM folder).
        format: ``"svs"``, ``"ome-tiff"``, ``"ndpi"``, ``"tiff"`` or ``"dicom"``.
        vendor: Scanner vendor, when the file says.
        width: Level-0 width in pixels.
        height: Level-0 height in pixels.
        level_dimensions: ``(width, height)`` of each pyramid level.
        level_downsamples: Downsample of each level against level 0.
        mpp: Microns per pixel at level 0, or None when the file does not say.
        objective_power: Scanning magnification, when known.
        properties: Other metadata worth keeping.
    """

    path: str
    format: str
    vendor: str | None
    width: int
    height: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None
    objective_power: float | None
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self.level_dimensions)


class _TiaWarnings(logging.Filter):
    """Drop TIAToolbox's warnings about metadata PathRay handles itself (mpp, power)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "tiatoolbox" not in record.pathname


def _quiet_tiatoolbox() -> None:
    # TIAToolbox logs through the root logger, so filter its records rather than a named logger.
    import tiatoolbox  # noqa: F401 - installs its handlers on the root logger

    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _TiaWarnings) for f in handler.filters):
            handler.addFilter(_TiaWarnings())


def is_dicom_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding DICOM files (a DICOM WSI series)."""
    return path.is_dir() and any(p.suffix.lower() == ".dcm" for p in path.iterdir())


def find_slides(root: str | Path) -> list[Path]:
    """List the slides under a folder: slide files, and DICOM folders as one slide each.

    Args:
        root: A slide file, a DICOM folder, or a folder to search recursively.

    Returns:
        Slide paths, sorted.
    """
    root = Path(root)
    if root.is_file() or is_dicom_folder(root):
        return [root]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if any(f.lower().endswith(".dcm") for f in filenames):
            found.append(here)
            dirnames.clear()
            continue
        found += [here / f for f in filenames if f.lower().endswith(SLIDE_EXTENSIONS)]
    return sorted(found)


def checksum(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a slide's bytes (for a DICOM folder: of its files, in name order).

    Args:
        path: Slide file or DICOM folder.
        chunk: Read size in bytes.

    Returns:
        The hex digest.
    """
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        if path.is_dir():
            digest.update(file.name.encode())
        with file.open("rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def _check_tiff(path: Path) -> None:
    """Check a TIFF's structure without trusting its header; raise SlideError if bad."""
    import tifffile

    size = path.stat().st_size
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise SlideError(path, "the TIFF holds no image")
            levels = tif.series[0].levels
            for level in levels:
                page = level.keyframe
                height, width = int(level.shape[0]), int(level.shape[1])
                if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
                    raise SlideError(
                        path,
                        f"the header declares absurd dimensions {width} x {height} px "
                        f"(each side must be between 1 and {MAX_SIDE}).",
                    )
                ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=True)]
                if not ends or max(ends) > size:
                    raise SlideError(
                        path,
                        f"truncated: image data ends at byte {max(ends, default=0)} "
                        f"but the file has {size} bytes.",
                    )
                # Decode the first and the last tile: catches corrupt or unsupported codecs.
                fh = tif.filehandle
                for index in {0, len(page.dataoffsets) - 1}:
                    fh.seek(page.dataoffsets[index])
                    data = fh.read(page.databytecounts[index])
                    page.decode(data, index, jpegtables=page.jpegtables)
    except SlideError:
        raise
    except Exception as exc:
        raise SlideError(path, f"not a readable TIFF ({type(exc).__name__}: {exc})") from None


def _check_dicom_frames(path: Path, reader: Any) -> None:
    """Decode the first and the last frame of every level: catches truncated or corrupt files."""
    width, height = (int(v) for v in reader.info.slide_dimensions)
    for level, downsample in enumerate(reader.info.level_downsamples):
        corner = max(1, int(16 * downsample))
        for x, y in ((0, 0), (max(0, width - corner), max(0, height - corner))):
            try:
                reader.read_rect((x, y), (16, 16), resolution=level, units="level")
            except Exception as exc:
                raise SlideError(
                    path,
                    f"level {level} cannot be decoded near ({x}, {y}): truncated or corrupt "
                    f"({type(exc).__name__}: {exc})",
                ) from None


def _sniff(path: Path) -> str:
    """Return 'tiff' or 'dicom' for a slide file; raise SlideError for anything else."""
    if not path.exists():
        raise SlideError(path, "does not exist")
    if path.is_dir():
        if is_dicom_folder(path):
            return "dicom"
        raise SlideError(path, "is a folder without DICOM (.dcm) files")
    if path.stat().st_size == 0:
        raise SlideError(path, "is empty (0 bytes)")
    with path.open("rb") as handle:
        head = handle.read(132)
    if head[:4] in _TIFF_MAGICS:
        return "tiff"
    if head[128:132] == b"DICM":
        return "dicom"
    for magic, what in _KNOWN_MAGICS.items():
        if head.startswith(magic):
            raise SlideError(path, f"is {what}, not a slide (a TIFF-based or DICOM file)")
    raise SlideError(path, "is not a slide: its bytes are neither TIFF nor DICOM")


def _tiff_format(path: Path, description: str) -> str:
    name = path.name.lower()
    if name.endswith(".svs") or description.startswith("Aperio"):
        return "svs"
    if name.endswith(".ndpi"):
        return "ndpi"
    if ".ome." in name or "<OME" in description[:2000]:
        return "ome-tiff"
    return "tiff"


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 and number == number else None


def probe_slide(path: str | Path) -> SlideInfo:
    """Validate a slide and read its metadata through TIAToolbox.

    Args:
        path: A slide file (SVS, NDPI, OME-TIFF, generic tiled TIFF) or a DICOM WSI folder.

    Returns:
        The slide's metadata.

    Raises:
        SlideError: The file is missing, empty, not a slide, truncated, corrupt, declares
            absurd dimensions, or TIAToolbox cannot open it.
    """
    from tiatoolbox.wsicore.wsireader import DICOMWSIReader, WSIReader

    _quiet_tiatoolbox()
    path = Path(path)
    kind = _sniff(path)
    description = ""
    if kind == "tiff":
        _check_tiff(path)
        import tifffile

        with tifffile.TiffFile(path) as tif:
            tag = tif.pages.first.tags.get("ImageDescription")
            description = str(tag.value) if tag is not None else ""
    try:
        reader = DICOMWSIReader(path) if kind == "dicom" else WSIReader.open(path)
        info = reader.info
    except Exception as exc:
        raise SlideError(path, f"TIAToolbox cannot open it ({type(exc).__name__}: {exc})") from None
    if kind == "dicom":
        _check_dicom_frames(path, reader)
    mpp_pair = info.mpp if info.mpp is not None else (None, None)
    mpp = _positive(mpp_pair[0])
    fmt = "dicom" if kind == "dicom" else _tiff_format(path, description)
    vendor = info.vendor if info.vendor not in (None, "Unknown", "unknown") else None
    return SlideInfo(
        path=str(path),
        format=fmt,
        vendor=vendor or ("aperio" if fmt == "svs" else None),
        width=int(info.slide_dimensions[0]),
        height=int(info.slide_dimensions[1]),
        level_dimensions=tuple((int(w), int(h)) for w, h in info.level_dimensions),
        level_downsamples=tuple(float(d) for d in info.level_downsamples),
        mpp=mpp,
        objective_power=_positive(info.objective_power),
        # The catalog keeps the description without its identifying fields (user, file, date).
        properties={
            "reader": type(reader).__name__,
            "description": scrub_description(description)[:500],
        },
    )
