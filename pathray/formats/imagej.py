"""ImageJ / Fiji ROI files (``.roi``) and ROI sets (``RoiSet.zip``), read without dependencies.

The binary layout is ImageJ's ``RoiDecoder``: a 64-byte big-endian header (``Iout`` magic,
version, type, bounds, coordinate count, stroke colour, options, offset of a second header that
holds the name), then the coordinates. Supported types: polygon, freehand and traced outlines
(polygons), rectangle and oval (an oval becomes a 64-vertex polygon), straight line, polyline,
freeline and angle (lines), and point ROIs (points). Composite (shape) ROIs and text or image
overlays are skipped with a :class:`~pathray.formats.base.FormatWarning`.

ImageJ's integer coordinates lie on pixel corners and its masks take the pixels whose centre is
inside, which is PathRay's convention, so coordinates are used as they are.
"""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from shapely.geometry import LineString, MultiPoint, Point, box
from shapely.geometry.base import BaseGeometry

from pathray.errors import FormatError
from pathray.formats.base import (
    AnnotationRecord,
    FormatWarning,
    PathLikeStr,
    check_geometry,
    packed_rgb_to_hex,
    polygon_from_points,
    read_input_bytes,
    source_name,
    warn_repaired,
)

POLYGON, RECT, OVAL, LINE, FREELINE, POLYLINE, NOROI, FREEHAND, TRACED, ANGLE, POINT = range(11)
TYPE_NAMES = [
    "POLYGON",
    "RECT",
    "OVAL",
    "LINE",
    "FREELINE",
    "POLYLINE",
    "NOROI",
    "FREEHAND",
    "TRACED",
    "ANGLE",
    "POINT",
]
_SUB_PIXEL = 128
_OVAL_VERTICES = 64


class _SkipError(Exception):
    """A ROI of a kind PathRay does not read; the message says which."""


def read_imagej_roiset(zip_path: PathLikeStr, label: str | None = None) -> list[AnnotationRecord]:
    """Read every ROI of an ImageJ ``RoiSet.zip`` (or a single ``.roi`` file).

    Args:
        zip_path: The ``.zip`` (or ``.roi``) file.
        label: The class label given to every record.

    Returns:
        One record per ROI in archive order; ``properties`` holds ``name`` (the ROI name, else
        the entry name without ``.roi``) and ``roi_type`` (e.g. ``"FREEHAND"``).

    Raises:
        FormatError: Missing, empty or corrupt file, or an entry that is not an ImageJ ROI.

    Example:
        >>> nuclei = read_imagej_roiset("RoiSet.zip", label="nucleus")  # doctest: +SKIP
    """
    name = source_name(zip_path)
    data = read_input_bytes(zip_path)
    if Path(zip_path).suffix.lower() == ".roi" or data[:4] == b"Iout":
        entries = [(Path(zip_path).name, data)]
    else:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                entries = [
                    (info.filename, zf.read(info))
                    for info in zf.infolist()
                    if not info.is_dir() and info.filename.lower().endswith(".roi")
                ]
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise FormatError(f"{name}: is not a readable zip archive ({exc}).") from exc
        if not entries:
            raise FormatError(f"{name}: the archive holds no .roi entries.")
    records = []
    repaired: list[str] = []
    for entry, blob in entries:
        where = f"{name}: entry {entry!r}"
        try:
            geom, props, color = _decode(blob, where)
        except _SkipError as exc:
            warnings.warn(f"{where}: {exc}; skipped.", FormatWarning, stacklevel=2)
            continue
        props.setdefault("name", Path(entry).name.removesuffix(".roi"))
        geom = check_geometry(geom, where, repaired)
        records.append(AnnotationRecord(geom, label, color, props))
    warn_repaired(name, repaired)
    return records


def _decode(b: bytes, where: str) -> tuple[BaseGeometry, dict[str, Any], str | None]:
    if len(b) < 64 or b[:4] != b"Iout":
        raise FormatError(f"{where}: is not an ImageJ ROI (no 'Iout' header).")

    def short(off: int) -> int:
        return int(struct.unpack_from(">h", b, off)[0])

    def ushort(off: int) -> int:
        return int(struct.unpack_from(">H", b, off)[0])

    def i32(off: int) -> int:
        return int(struct.unpack_from(">i", b, off)[0])

    def f32(off: int) -> float:
        return float(struct.unpack_from(">f", b, off)[0])

    version, kind = ushort(4), b[6]
    top, left, bottom, right = short(8), short(10), short(12), short(14)
    n = ushort(16)
    options = ushort(50)
    props: dict[str, Any] = {"roi_type": TYPE_NAMES[kind] if kind < len(TYPE_NAMES) else str(kind)}
    stroke = i32(40)
    color = packed_rgb_to_hex(stroke) if stroke != 0 else None
    props.update(_name(b, i32(60), version))
    if kind >= len(TYPE_NAMES) or kind == NOROI:
        raise _SkipError(f"ROI type {kind} is not an outline")
    if i32(36) > 0:
        raise _SkipError("composite (shape) ROIs are not supported")
    sub_pixel = bool(options & _SUB_PIXEL) and version >= 222

    if kind in (RECT, OVAL):
        if sub_pixel and version >= 223:
            x0, y0, w, h = f32(18), f32(22), f32(26), f32(30)
        else:
            x0, y0, w, h = left, top, right - left, bottom - top
        if kind == RECT:
            return box(x0, y0, x0 + w, y0 + h), props, color
        t = np.linspace(0.0, 2.0 * np.pi, _OVAL_VERTICES, endpoint=False)
        xy = np.c_[x0 + w / 2 * (1 + np.cos(t)), y0 + h / 2 * (1 + np.sin(t))]
        return polygon_from_points(xy, where), props, color
    if kind == LINE:
        return LineString([(f32(18), f32(22)), (f32(26), f32(30))]), props, color

    if n == 0 and len(b) >= 22:
        n = i32(18)  # ImageJ stores counts above 65535 here
    need = 64 + 4 * n + (8 * n if sub_pixel else 0)
    if n <= 0 or len(b) < need:
        raise FormatError(
            f"{where}: a {props['roi_type']} ROI must hold {n} coordinates, "
            f"but the entry is only {len(b)} bytes long."
        )
    if sub_pixel:
        base = 64 + 4 * n
        xs = np.frombuffer(b, ">f4", n, base).astype(float)
        ys = np.frombuffer(b, ">f4", n, base + 4 * n).astype(float)
    else:
        xs = np.frombuffer(b, ">i2", n, 64).astype(float) + left
        ys = np.frombuffer(b, ">i2", n, 64 + 2 * n).astype(float) + top
    xy = np.c_[xs, ys]
    if kind in (POLYGON, FREEHAND, TRACED):
        return polygon_from_points(xy, where), props, color
    if kind == POINT:
        return (Point(xy[0]) if n == 1 else MultiPoint(xy)), props, color
    if n < 2:
        raise FormatError(f"{where}: a line ROI needs 2 coordinates. Got {n} instead.")
    return LineString(xy), props, color


def _name(b: bytes, header2: int, version: int) -> dict[str, Any]:
    """Return ``{"name": ...}`` from the second header, or nothing when it has none."""
    if version < 218 or header2 <= 0 or header2 + 24 > len(b):
        return {}
    offset, length = struct.unpack_from(">ii", b, header2 + 16)
    if offset <= 0 or length <= 0 or offset + 2 * length > len(b):
        return {}
    name = b[offset : offset + 2 * length].decode("utf-16-be", errors="replace")
    return {"name": name} if name else {}
