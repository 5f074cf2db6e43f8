"""The record every annotation reader returns and every writer takes, and shared helpers.

All geometries are shapely 2 objects in level-0 pixel coordinates: x to the right, y down, the
pixel in row ``r`` and column ``c`` covering the square ``[c, c + 1] x [r, r + 1]`` (so a
polygon traced along pixel edges rasterises back to exactly the same pixels).

Invalid input geometry policy (the same for every reader):

- a coordinate that is NaN or infinite, an empty geometry, or a polygon with fewer than three
  points raises :class:`~pathray.errors.FormatError`;
- a self-intersecting (or otherwise invalid) polygon is *repaired* with
  ``shapely.make_valid(method="structure")``, keeping its polygonal parts, and a
  :class:`FormatWarning` is emitted; a polygon that encloses no area after repair raises
  :class:`~pathray.errors.FormatError`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from pathray.errors import FormatError

PathLikeStr = str | PathLike[str]

_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


class FormatWarning(UserWarning):
    """Input was accepted after a repair or with a part skipped; the message says what."""


@dataclass(frozen=True)
class AnnotationRecord:
    """One annotated object: a geometry, its class label, a display colour and free properties.

    Attributes:
        geometry: A shapely geometry in level-0 pixel coordinates (x right, y down).
        label: The class name (``None`` when unclassified).
        color: Display colour as ``'#rrggbb'`` (lower-cased on construction), or ``None``.
        properties: Format-specific extras that readers keep and writers pass through
            (e.g. QuPath ``objectType``, ``measurements``, an ASAP ``name``).

    Example:
        >>> from shapely.geometry import box
        >>> AnnotationRecord(box(0, 0, 10, 10), "tumor", "#FF0000").color
        '#ff0000'
    """

    geometry: BaseGeometry
    label: str | None
    color: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.geometry, BaseGeometry):
            raise FormatError(
                "AnnotationRecord.geometry must be a shapely geometry. "
                f"Got {type(self.geometry).__name__} instead."
            )
        if self.label is not None and not isinstance(self.label, str):
            raise FormatError(
                f"AnnotationRecord.label must be a string or None. Got {self.label!r} instead."
            )
        if self.color is not None:
            object.__setattr__(self, "color", normalize_color(self.color))


def normalize_color(value: str) -> str:
    """Return ``value`` as a lower-case ``'#rrggbb'`` string.

    Raises:
        FormatError: ``value`` is not of the form ``#rrggbb``.
    """
    if not isinstance(value, str) or not _HEX_COLOR.match(value):
        raise FormatError(f"A colour must be a string '#rrggbb'. Got {value!r} instead.")
    return value.lower()


def rgb_to_hex(r: int, g: int, b: int) -> str:
    """Return ``'#rrggbb'`` for three 0-255 channel values.

    Example:
        >>> rgb_to_hex(255, 128, 0)
        '#ff8000'
    """
    for v in (r, g, b):
        if not 0 <= int(v) <= 255:
            raise FormatError(f"A colour channel must be in 0..255. Got {v!r} instead.")
    return f"#{int(r):02x}{int(g):02x}{int(b):02x}"


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """Return the ``(r, g, b)`` channels of a ``'#rrggbb'`` colour.

    Example:
        >>> hex_to_rgb("#ff8000")
        (255, 128, 0)
    """
    c = normalize_color(color)
    return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)


def packed_rgb_to_hex(value: int) -> str:
    """Return ``'#rrggbb'`` for a packed ``0xAARRGGBB`` integer (Java ``Color.getRGB()``)."""
    v = int(value) & 0xFFFFFFFF
    return rgb_to_hex((v >> 16) & 255, (v >> 8) & 255, v & 255)


def hex_to_packed_rgb(color: str) -> int:
    """Return the signed 32-bit ``0xFFRRGGBB`` integer Java would use for ``color``."""
    r, g, b = hex_to_rgb(color)
    v = 0xFF000000 | (r << 16) | (g << 8) | b
    return v - (1 << 32)


def source_name(path: PathLikeStr) -> str:
    """Return how error messages name a file (the path as the caller gave it)."""
    return str(path)


def read_input_bytes(path: PathLikeStr) -> bytes:
    """Read a whole annotation file, turning OS errors and empty files into FormatError."""
    p = Path(path)
    if not p.exists():
        raise FormatError(f"{source_name(path)}: the file does not exist.")
    if p.is_dir():
        raise FormatError(f"{source_name(path)}: is a folder, not an annotation file.")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise FormatError(f"{source_name(path)}: cannot be read ({exc.strerror}).") from exc
    if not data.strip():
        raise FormatError(f"{source_name(path)}: the file is empty.")
    return data


def write_output_text(path: PathLikeStr, text: str) -> None:
    """Write ``text`` as UTF-8, turning OS errors into FormatError."""
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise FormatError(f"{source_name(path)}: cannot be written ({exc.strerror}).") from exc


def polygon_from_points(points: Sequence[Sequence[float]], where: str) -> Polygon:
    """Build a polygon from an open or closed list of ``(x, y)`` points.

    Raises:
        FormatError: fewer than three points, or a non-finite coordinate.
    """
    arr = np.asarray(points, dtype=float).reshape(-1, 2)
    if not np.isfinite(arr).all():
        raise FormatError(f"{where} has a non-finite coordinate (NaN or infinity).")
    distinct = arr if len(arr) < 2 or not np.array_equal(arr[0], arr[-1]) else arr[:-1]
    if len(distinct) < 3:
        raise FormatError(
            f"{where} must have at least 3 points to form a polygon. Got {len(distinct)} instead."
        )
    return Polygon(arr)


def polygonal_parts(geom: BaseGeometry) -> list[Polygon]:
    """Return the non-empty polygons inside ``geom`` (a Polygon, MultiPolygon or collection)."""
    if isinstance(geom, Polygon):
        return [] if geom.is_empty else [geom]
    if isinstance(geom, MultiPolygon):
        return [p for p in geom.geoms if not p.is_empty]
    if hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in polygonal_parts(g)]
    return []


def merge_polygons(parts: Iterable[Polygon]) -> Polygon | MultiPolygon:
    """Return one polygon, or a MultiPolygon when there are several parts (kept in order)."""
    polys = list(parts)
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def check_geometry(
    geom: BaseGeometry, where: str, repaired: list[str] | None = None
) -> BaseGeometry:
    """Validate a geometry read from a file, repairing invalid polygons (see module docs).

    Args:
        geom: The geometry as read.
        where: How messages name it, e.g. ``"a.xml: <Annotation> at line 4"``.
        repaired: When given, a repair is noted here (for one summary warning per file, see
            :func:`warn_repaired`) instead of warned about at once.

    Returns:
        ``geom`` itself when valid, else its repaired polygonal part.

    Raises:
        FormatError: empty, non-finite, or a polygon enclosing no area.
    """
    if geom.is_empty:
        raise FormatError(f"{where} has no coordinates.")
    if not np.isfinite(shapely.get_coordinates(geom)).all():
        raise FormatError(f"{where} has a non-finite coordinate (NaN or infinity).")
    if geom.geom_type not in ("Polygon", "MultiPolygon") or geom.is_valid:
        return geom
    reason = shapely.is_valid_reason(geom)
    fixed = shapely.make_valid(geom, method="structure", keep_collapsed=False)
    parts = polygonal_parts(fixed)
    if not parts or sum(p.area for p in parts) == 0:
        raise FormatError(f"{where} is a polygon that encloses no area ({reason}).")
    result = merge_polygons(parts)
    if not result.is_valid:  # GEOS may leave parts that share an edge: dissolve them
        result = merge_polygons(polygonal_parts(shapely.unary_union(parts)))
    if repaired is not None:
        repaired.append(f"{where} ({reason})")
    else:
        warnings.warn(
            f"{where}: invalid polygon ({reason}) repaired with shapely.make_valid.",
            FormatWarning,
            stacklevel=3,
        )
    return result


def warn_repaired(source: str, repaired: list[str], stacklevel: int = 3) -> None:
    """Emit one FormatWarning summarising the polygons of ``source`` that were repaired."""
    if repaired:
        first = repaired[0].removeprefix(f"{source}: ")
        warnings.warn(
            f"{source}: {len(repaired)} invalid polygon(s) repaired with shapely.make_valid, "
            f"e.g. {first}.",
            FormatWarning,
            stacklevel=stacklevel,
        )
