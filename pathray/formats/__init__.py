"""Annotation import and export.

Formats: GeoJSON (QuPath), ASAP XML, Aperio ImageScope XML, instance masks and ImageJ ROI sets.

Every reader returns ``list[AnnotationRecord]`` and every writer takes an iterable of them; all
geometries are shapely objects in level-0 pixel coordinates (x right, y down, pixel edges on
integers). Malformed input raises :class:`~pathray.errors.FormatError` naming the file and the
problem.

Example:
    >>> from pathray.formats import read_annotations, write_annotations
    >>> records = read_annotations("tumor_001.xml")  # doctest: +SKIP
    >>> write_annotations(records, "tumor_001.geojson")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pathray.errors import FormatError
from pathray.formats._xml import sniff_root_tag
from pathray.formats.asap import parse_asap, read_asap, write_asap
from pathray.formats.base import AnnotationRecord, FormatWarning, PathLikeStr, source_name
from pathray.formats.geojson import parse_geojson, read_geojson, records_to_geojson, write_geojson
from pathray.formats.imagej import read_imagej_roiset
from pathray.formats.imagescope import parse_imagescope, read_imagescope, write_imagescope
from pathray.formats.masks import (
    load_label_image,
    mask_to_geometry,
    rasterize,
    read_instance_mask,
    read_mask_folder,
)

__all__ = [
    "AnnotationRecord",
    "FormatWarning",
    "ReadFormat",
    "WriteFormat",
    "detect_format",
    "load_label_image",
    "mask_to_geometry",
    "parse_asap",
    "parse_geojson",
    "parse_imagescope",
    "rasterize",
    "read_annotations",
    "read_asap",
    "read_geojson",
    "read_imagej_roiset",
    "read_imagescope",
    "read_instance_mask",
    "read_mask_folder",
    "records_to_geojson",
    "write_annotations",
    "write_asap",
    "write_geojson",
    "write_imagescope",
]

ReadFormat = Literal["geojson", "asap", "imagescope", "mask", "mask_folder", "imagej"]
WriteFormat = Literal["geojson", "asap", "imagescope"]
_READ_FORMATS = ("geojson", "asap", "imagescope", "mask", "mask_folder", "imagej")
_WRITE_FORMATS = ("geojson", "asap", "imagescope")


def detect_format(path: PathLikeStr) -> ReadFormat:
    """Guess an annotation file's format from its extension, and from its root element for XML.

    ``.geojson``/``.json`` -> ``"geojson"``; ``.xml`` -> ``"asap"`` (root
    ``<ASAP_Annotations>``) or ``"imagescope"`` (root ``<Annotations>``); ``.png``/``.tif``/
    ``.tiff`` -> ``"mask"``; ``.zip``/``.roi`` -> ``"imagej"``; a folder -> ``"mask_folder"``.

    Raises:
        FormatError: The file is missing, or its kind cannot be told.
    """
    p = Path(path)
    name = source_name(path)
    if p.is_dir():
        return "mask_folder"
    if not p.exists():
        raise FormatError(f"{name}: the file does not exist.")
    suffix = p.suffix.lower()
    if suffix in (".geojson", ".json"):
        return "geojson"
    if suffix in (".png", ".tif", ".tiff"):
        return "mask"
    if suffix in (".zip", ".roi"):
        return "imagej"
    with p.open("rb") as fh:
        head = fh.read(65536)
    if suffix == ".xml" or head.lstrip().startswith(b"<"):
        tag = sniff_root_tag(head)
        if tag == "ASAP_Annotations":
            return "asap"
        if tag == "Annotations":
            return "imagescope"
        if tag is None:
            raise FormatError(f"{name}: is not well-formed XML.")
        raise FormatError(
            f"{name}: the root element must be <ASAP_Annotations> (ASAP) or <Annotations> "
            f"(ImageScope). Got <{tag}> instead."
        )
    if head.lstrip()[:1] in (b"{", b"["):
        return "geojson"
    raise FormatError(
        f"{name}: cannot tell the annotation format from the extension {suffix or '(none)'!r}; "
        f"pass format= one of {', '.join(_READ_FORMATS)}."
    )


def read_annotations(path: PathLikeStr, format: ReadFormat | None = None) -> list[AnnotationRecord]:
    """Read an annotation file of any supported format.

    Args:
        path: The file (or, for ``"mask_folder"``, the folder).
        format: One of ``"geojson"``, ``"asap"``, ``"imagescope"``, ``"mask"``,
            ``"mask_folder"``, ``"imagej"``; ``None`` detects it (see :func:`detect_format`).

    Returns:
        The records, in file order.

    Raises:
        FormatError: Unknown format, or a malformed file.
    """
    fmt = format or detect_format(path)
    if fmt == "geojson":
        return read_geojson(path)
    if fmt == "asap":
        return read_asap(path)
    if fmt == "imagescope":
        return read_imagescope(path)
    if fmt == "mask":
        return read_instance_mask(path)
    if fmt == "mask_folder":
        return read_mask_folder(path)
    if fmt == "imagej":
        return read_imagej_roiset(path)
    raise FormatError(f"format must be one of {', '.join(_READ_FORMATS)}. Got {fmt!r} instead.")


def write_annotations(
    records: Iterable[AnnotationRecord],
    path: PathLikeStr,
    format: WriteFormat | None = None,
) -> Path:
    """Write records to ``path`` as GeoJSON, ASAP XML or ImageScope XML.

    Args:
        records: The records to write.
        path: The output file.
        format: ``"geojson"``, ``"asap"`` or ``"imagescope"``; ``None`` picks from the
            extension: ``.geojson``/``.json`` -> GeoJSON, ``.xml`` -> ASAP.

    Returns:
        The path written.

    Raises:
        FormatError: Unknown format, or a geometry the format cannot hold.
    """
    p = Path(path)
    fmt = format
    if fmt is None:
        suffix = p.suffix.lower()
        if suffix in (".geojson", ".json"):
            fmt = "geojson"
        elif suffix == ".xml":
            fmt = "asap"
        else:
            raise FormatError(
                f"{source_name(path)}: cannot tell the output format from the extension "
                f"{suffix or '(none)'!r}; pass format= one of {', '.join(_WRITE_FORMATS)}."
            )
    if fmt == "geojson":
        write_geojson(records, p)
    elif fmt == "asap":
        write_asap(records, p)
    elif fmt == "imagescope":
        write_imagescope(records, p)
    else:
        raise FormatError(
            f"format must be one of {', '.join(_WRITE_FORMATS)}. Got {fmt!r} instead."
        )
    return p
