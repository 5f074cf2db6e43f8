"""Aperio ImageScope XML annotations (also used by MoNuSeg and other nucleus datasets).

Layout::

    <Annotations MicronsPerPixel="0.25">
      <Annotation Id="1" Name="Tumor" LineColor="65280">
        <Attributes><Attribute Name="Description" Id="0" Value=""/></Attributes>
        <Regions>
          <Region Id="1" Type="0" NegativeROI="0" Text="">
            <Attributes/>
            <Vertices><Vertex X="10" Y="20" Z="0"/>...</Vertices>
          </Region>
        </Regions>
      </Annotation>
    </Annotations>

Each ``<Region>`` becomes one record (MoNuSeg stores one nucleus per region).

- **Label** precedence, first non-empty wins: the Region's ``Text``, the first ``Value`` of the
  Region's ``<Attribute>`` elements, the first ``Value`` of the Annotation's ``<Attribute>``
  elements, the Annotation's ``Name``; else ``None``.
- **Colour**: the Annotation's ``LineColor``, a BGR integer (``255`` is red, ``65280`` green).
- **Region types**: ``0`` free-form -> polygon; ``1`` rectangle -> polygon (from 4 vertices, or
  the box of 2); ``2`` ellipse -> 64-vertex polygon inscribed in the box of its 2 vertices;
  ``3`` arrow -> line; ``4`` polyline/ruler -> line, or a polygon when its first and last vertex
  coincide; any other type is read as free-form.
- **Holes**: a ``NegativeROI="1"`` region is cut out of the smallest positive polygon of the same
  Annotation that covers it (kept as an interior ring), else out of every positive polygon it
  overlaps; one overlapping nothing is dropped with a
  :class:`~pathray.formats.base.FormatWarning`.
- ``properties`` holds ``annotation_id``, ``region_id`` and ``layer`` (the Annotation's Name).

:func:`write_imagescope` writes one Annotation per (label, colour), polygons as Type 0 regions
and holes as NegativeROI regions; lines as Type 4. ImageScope has no points: writing one raises
:class:`~pathray.errors.FormatError`.
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any

import numpy as np
from shapely.geometry import LineString, Polygon, box
from shapely.geometry.base import BaseGeometry

from pathray.errors import FormatError
from pathray.formats._xml import XmlDoc
from pathray.formats.base import (
    AnnotationRecord,
    FormatWarning,
    PathLikeStr,
    check_geometry,
    hex_to_rgb,
    polygon_from_points,
    polygonal_parts,
    read_input_bytes,
    rgb_to_hex,
    source_name,
    warn_repaired,
    write_output_text,
)

ELLIPSE_VERTICES = 64


def read_imagescope(path: PathLikeStr) -> list[AnnotationRecord]:
    """Read an Aperio ImageScope XML annotation file.

    Args:
        path: The ``.xml`` file.

    Returns:
        One record per positive region, holes cut out (see the module docs).

    Raises:
        FormatError: Missing or empty file, not XML, wrong root element, a region without
            vertices, or a vertex lacking a numeric X or Y. A free-form region of one or two
            distinct vertices encloses nothing: it is skipped with one FormatWarning per file.

    Example:
        >>> nuclei = read_imagescope("TCGA-18-5592-01Z-00-DX1.xml")  # doctest: +SKIP
    """
    return parse_imagescope(read_input_bytes(path), source=source_name(path))


def parse_imagescope(data: bytes | str, source: str = "<imagescope>") -> list[AnnotationRecord]:
    """Parse ImageScope XML given as bytes or text; see :func:`read_imagescope`."""
    doc = XmlDoc(data.encode("utf-8") if isinstance(data, str) else data, source)
    if doc.root.tag != "Annotations":
        raise FormatError(
            f"{source}: the root element must be <Annotations>. Got <{doc.root.tag}> instead."
        )
    records: list[AnnotationRecord] = []
    repaired: list[str] = []
    skipped: list[str] = []
    for ann in doc.root.findall("Annotation"):
        records.extend(_read_annotation(doc, ann, repaired, skipped))
    warn_repaired(source, repaired)
    if skipped:
        # ImageScope saves a stray click or two as a free-form region; it encloses nothing,
        # and refusing the whole file for it would lose every real outline beside it.
        first = skipped[0].removeprefix(f"{source}: ")
        warnings.warn(
            f"{source}: {len(skipped)} free-form region(s) of fewer than 3 distinct vertices "
            f"skipped (they enclose no area), e.g. {first}.",
            FormatWarning,
            stacklevel=2,
        )
    return records


def _first_value(elem: ET.Element | None) -> str | None:
    if elem is None:
        return None
    for attr in elem.findall("Attribute"):
        value = (attr.get("Value") or "").strip()
        if value:
            return value
    return None


def _bgr_to_hex(doc: XmlDoc, elem: ET.Element) -> str | None:
    raw = elem.get("LineColor")
    if raw is None or not raw.strip():
        return None
    try:
        v = int(raw) & 0xFFFFFF
    except ValueError:
        raise FormatError(
            f"{doc.where(elem)}: attribute LineColor must be an integer. Got {raw!r} instead."
        ) from None
    return rgb_to_hex(v & 255, (v >> 8) & 255, (v >> 16) & 255)


def _read_annotation(
    doc: XmlDoc, ann: ET.Element, repaired: list[str], skipped: list[str]
) -> list[AnnotationRecord]:
    layer = (ann.get("Name") or "").strip()
    color = _bgr_to_hex(doc, ann)
    fallback = _first_value(ann.find("Attributes")) or layer or None
    positives: list[tuple[BaseGeometry, str | None, dict[str, Any], str]] = []
    negatives: list[tuple[Polygon, str]] = []
    for region in ann.iter("Region"):
        where = doc.where(region)
        raw = _region_geometry(doc, region)
        if raw is None:
            skipped.append(where)
            continue
        geom = check_geometry(raw, where, repaired)
        if region.get("NegativeROI", "0").strip() == "1":
            negatives.extend((p, where) for p in polygonal_parts(geom))
            continue
        text = (region.get("Text") or "").strip()
        label = text or _first_value(region.find("Attributes")) or fallback
        props: dict[str, Any] = {}
        for key, value in (("annotation_id", ann.get("Id")), ("region_id", region.get("Id"))):
            if value is not None:
                props[key] = value
        if layer:
            props["layer"] = layer
        positives.append((geom, label, props, where))

    geoms = [p[0] for p in positives]
    for neg, where in negatives:
        covering = [i for i, g in enumerate(geoms) if isinstance(g, Polygon) and g.covers(neg)]
        if covering:
            i = min(covering, key=lambda i: geoms[i].area)
            g = geoms[i]
            assert isinstance(g, Polygon)
            geoms[i] = Polygon(
                g.exterior.coords, [*(r.coords for r in g.interiors), neg.exterior.coords]
            )
            continue
        hit = [i for i, g in enumerate(geoms) if g.area > 0 and g.intersects(neg)]
        if not hit:
            warnings.warn(
                f"{where}: negative region overlaps no positive region; ignored.",
                FormatWarning,
                stacklevel=4,
            )
        for i in hit:
            geoms[i] = geoms[i].difference(neg)
    out = []
    for geom, (_, label, props, where) in zip(geoms, positives, strict=True):
        out.append(AnnotationRecord(check_geometry(geom, where, repaired), label, color, props))
    return out


def _region_geometry(doc: XmlDoc, region: ET.Element) -> BaseGeometry | None:
    """The region's geometry; None for a free-form region of fewer than 3 distinct vertices."""
    where = doc.where(region)
    vertices = region.find("Vertices")
    verts = [] if vertices is None else vertices.findall("Vertex")
    if not verts:
        raise FormatError(f"{where} has no <Vertex> elements.")
    xy = [(doc.float_attr(v, "X"), doc.float_attr(v, "Y")) for v in verts]
    raw_type = (region.get("Type") or "0").strip()
    try:
        kind = int(raw_type)
    except ValueError:
        raise FormatError(
            f"{where}: attribute Type must be an integer. Got {raw_type!r} instead."
        ) from None
    if kind in (1, 2) and len(xy) >= 2:
        xs, ys = [p[0] for p in xy], [p[1] for p in xy]
        x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
        if kind == 1 and len(xy) == 2:
            return box(x0, y0, x1, y1)
        if kind == 2:
            t = np.linspace(0.0, 2.0 * np.pi, ELLIPSE_VERTICES, endpoint=False)
            cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
            return polygon_from_points(np.c_[cx + rx * np.cos(t), cy + ry * np.sin(t)], where)
    if kind == 3 or (kind == 4 and xy[0] != xy[-1]):
        if len(xy) < 2:
            raise FormatError(f"{where}: a line needs 2 vertices. Got {len(xy)} instead.")
        return LineString(xy)
    distinct = xy[:-1] if len(xy) > 1 and xy[0] == xy[-1] else xy
    if len(distinct) < 3:
        return None
    return polygon_from_points(xy, where)


def write_imagescope(
    records: Iterable[AnnotationRecord],
    path: PathLikeStr | None = None,
    microns_per_pixel: float | None = None,
) -> str:
    """Write records as ImageScope XML (one Annotation layer per label and colour).

    Args:
        records: Polygonal or line records.
        path: Where to write; ``None`` only returns the text.
        microns_per_pixel: Written as the root's ``MicronsPerPixel`` when given.

    Returns:
        The XML text.

    Raises:
        FormatError: A record holds points or a geometry collection.
    """
    root = ET.Element("Annotations")
    if microns_per_pixel is not None:
        root.set("MicronsPerPixel", repr(float(microns_per_pixel)))
    layers: dict[tuple[str | None, str | None], ET.Element] = {}
    region_id = 0
    for i, rec in enumerate(records):
        key = (rec.label, rec.color)
        if key not in layers:
            r, g, b = hex_to_rgb(rec.color or "#ffff00")
            ann = ET.SubElement(
                root,
                "Annotation",
                Id=str(len(layers) + 1),
                Name=rec.label or "",
                LineColor=str(r | (g << 8) | (b << 16)),
                Visible="1",
            )
            ET.SubElement(ann, "Attributes")
            layers[key] = ET.SubElement(ann, "Regions")
        regions = layers[key]
        geom = rec.geometry
        rings: list[tuple[int, str, Any]] = []
        if isinstance(geom, LineString):
            rings.append((4, "0", geom.coords))
        elif geom.geom_type in ("Polygon", "MultiPolygon"):
            for part in polygonal_parts(geom):
                rings.append((0, "0", part.exterior.coords[:-1]))
                rings.extend((0, "1", hole.coords[:-1]) for hole in part.interiors)
        else:
            raise FormatError(
                f"record {i}: ImageScope XML cannot hold a {geom.geom_type}. "
                "Use GeoJSON or ASAP XML for this geometry."
            )
        for kind, negative, coords in rings:
            region_id += 1
            reg = ET.SubElement(
                regions,
                "Region",
                Id=str(region_id),
                Type=str(kind),
                NegativeROI=negative,
                Text=rec.label or "",
            )
            ET.SubElement(reg, "Attributes")
            verts = ET.SubElement(reg, "Vertices")
            for x, y in coords:
                ET.SubElement(verts, "Vertex", X=repr(float(x)), Y=repr(float(y)), Z="0")
    ET.indent(root, space="  ")
    text = '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")
    text += "\n"
    if path is not None:
        write_output_text(path, text)
    return text
