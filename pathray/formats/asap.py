"""ASAP XML annotations (the format of ASAP and of the CAMELYON challenges).

Layout::

    <ASAP_Annotations>
      <Annotations>
        <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="Tumor" Color="#f4fa58">
          <Coordinates><Coordinate Order="0" X="10.5" Y="20.0"/>...</Coordinates>
        </Annotation>
      </Annotations>
      <AnnotationGroups><Group Name="Tumor" PartOfGroup="None" Color="#f4fa58"/></AnnotationGroups>
    </ASAP_Annotations>

Mapping: ``label`` is ``PartOfGroup`` (``"None"`` means unlabelled), ``color`` the annotation's
``Color`` (else its group's), ``properties["name"]`` the annotation ``Name``. Types: ``Polygon``
and ``Rectangle`` become polygons, ``Spline`` a polygon through its control points (the curve is
not interpolated), ``Dot`` a point, ``PointSet`` a multipoint, ``Measurement`` a two-point line.

Holes and multi-polygons (PathRay's convention; ASAP has neither natively):

- each part ``k`` of a MultiPolygon is written as its own ``Polygon`` annotation named
  ``"<name> [part k]"``; on reading, annotations whose names differ only by that suffix (and
  share a group) are merged back into one MultiPolygon;
- each hole ``j`` of a polygon (or part) is written as a ``Polygon`` annotation named
  ``"<owner name> [hole j]"`` in the group ``"<label>__hole"`` (``"None__hole"`` when
  unlabelled), like ASAP's exclusion groups. On reading, an annotation of a ``*__hole`` group is
  subtracted from the annotation it names, or, failing a name match, from the smallest polygon of
  the base group that covers it; a hole that fits nowhere is kept as an ordinary record and a
  :class:`~pathray.formats.base.FormatWarning` is emitted. A round trip therefore keeps holes.
"""

from __future__ import annotations

import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field

from shapely.geometry import LineString, MultiPoint, Point, Polygon
from shapely.geometry.base import BaseGeometry

from pathray.errors import FormatError
from pathray.formats._xml import XmlDoc
from pathray.formats.base import (
    AnnotationRecord,
    FormatWarning,
    PathLikeStr,
    check_geometry,
    merge_polygons,
    polygon_from_points,
    polygonal_parts,
    read_input_bytes,
    source_name,
    warn_repaired,
    write_output_text,
)

HOLE_SUFFIX = "__hole"
DEFAULT_COLOR = "#f4fa58"  # ASAP's default annotation colour
_PART = re.compile(r"^(?P<owner>.*) \[part (?P<k>\d+)\]$")
_HOLE = re.compile(r"^(?P<owner>.*) \[hole (?P<k>\d+)\]$")
_POLYGON_TYPES = {"Polygon", "Rectangle", "Spline"}


@dataclass
class _Item:
    name: str
    group: str
    color: str | None
    geometry: BaseGeometry
    where: str
    holes: list[Polygon] = field(default_factory=list)


def read_asap(path: PathLikeStr) -> list[AnnotationRecord]:
    """Read an ASAP XML annotation file.

    Args:
        path: The ``.xml`` file.

    Returns:
        One record per annotation, with ``[part k]`` annotations merged into MultiPolygons and
        ``__hole`` annotations merged back as holes (see the module docs).

    Raises:
        FormatError: Missing or empty file, not XML, wrong root element, missing or
            non-numeric coordinates, unknown annotation type.

    Example:
        >>> records = read_asap("tumor_001.xml")  # doctest: +SKIP
    """
    return parse_asap(read_input_bytes(path), source=source_name(path))


def parse_asap(data: bytes | str, source: str = "<asap>") -> list[AnnotationRecord]:
    """Parse ASAP XML given as bytes or text; see :func:`read_asap`."""
    doc = XmlDoc(data.encode("utf-8") if isinstance(data, str) else data, source)
    if doc.root.tag != "ASAP_Annotations":
        raise FormatError(
            f"{source}: the root element must be <ASAP_Annotations>. Got <{doc.root.tag}> instead."
        )
    group_colors = {
        g.get("Name", ""): g.get("Color") for g in doc.root.iter("Group") if g.get("Color")
    }
    repaired: list[str] = []
    items = [_read_item(doc, a, group_colors, repaired) for a in doc.root.iter("Annotation")]
    records = _assemble(items, repaired)
    warn_repaired(source, repaired)
    return records


def _read_item(
    doc: XmlDoc, elem: ET.Element, group_colors: dict[str, str | None], repaired: list[str]
) -> _Item:
    where = doc.where(elem)
    kind = elem.get("Type", "Polygon")
    coords = [c for c in elem.iter("Coordinate")]
    if not coords:
        raise FormatError(f"{where} has no <Coordinate> elements.")
    points = []
    for c in coords:
        order = c.get("Order")
        if order is not None and not order.strip().lstrip("-").isdigit():
            raise FormatError(
                f"{doc.where(c)}: attribute Order must be an integer. Got {order!r} instead."
            )
        points.append((int(order) if order else 0, doc.float_attr(c, "X"), doc.float_attr(c, "Y")))
    if all(c.get("Order") is not None for c in coords):
        points.sort(key=lambda p: p[0])
    xy = [(x, y) for _, x, y in points]
    geom: BaseGeometry
    if kind in _POLYGON_TYPES:
        geom = polygon_from_points(xy, where)
    elif kind == "Dot":
        geom = Point(xy[0])
    elif kind == "PointSet":
        geom = MultiPoint(xy)
    elif kind in ("Measurement", "Line"):
        if len(xy) < 2:
            raise FormatError(f"{where}: a {kind} needs 2 coordinates. Got {len(xy)} instead.")
        geom = LineString(xy)
    else:
        raise FormatError(
            f"{where}: attribute Type must be one of Polygon, Rectangle, Spline, Dot, PointSet, "
            f"Measurement. Got {kind!r} instead."
        )
    group = elem.get("PartOfGroup", "None") or "None"
    color = elem.get("Color") or group_colors.get(group)
    return _Item(elem.get("Name", ""), group, color, check_geometry(geom, where, repaired), where)


def _assemble(items: list[_Item], repaired: list[str]) -> list[AnnotationRecord]:
    shapes = [it for it in items if not it.group.endswith(HOLE_SUFFIX)]
    holes = [it for it in items if it.group.endswith(HOLE_SUFFIX)]
    by_name = {(it.group, it.name): it for it in shapes}
    orphans: list[_Item] = []
    for hole in holes:
        base = hole.group[: -len(HOLE_SUFFIX)] or "None"
        owner = None
        m = _HOLE.match(hole.name)
        if m:
            owner = by_name.get((base, m["owner"]))
        if owner is None:
            covering = [
                it
                for it in shapes
                if it.group == base
                and isinstance(it.geometry, Polygon)
                and it.geometry.covers(hole.geometry)
            ]
            owner = min(covering, key=lambda it: it.geometry.area, default=None)
        if owner is None or not isinstance(hole.geometry, Polygon):
            warnings.warn(
                f"{hole.where}: hole annotation {hole.name!r} lies in no polygon of group "
                f"{base!r}; kept as its own annotation.",
                FormatWarning,
                stacklevel=3,
            )
            orphans.append(hole)
        else:
            owner.holes.append(hole.geometry)

    entries: dict[object, list[_Item]] = {}  # insertion-ordered: records keep file order
    for it in shapes + orphans:
        m = _PART.match(it.name)
        is_part = m is not None and isinstance(it.geometry, Polygon)
        key: object = (it.group, m["owner"]) if m is not None and is_part else id(it)
        entries.setdefault(key, []).append(it)
    records: list[AnnotationRecord] = []
    for key, parts in entries.items():
        first = parts[0]
        if isinstance(key, tuple):
            name = key[1]
            geom = check_geometry(
                merge_polygons(_with_holes(p) for p in parts), first.where, repaired
            )
        else:
            name = first.name
            geom = _with_holes(first) if isinstance(first.geometry, Polygon) else first.geometry
            geom = check_geometry(geom, first.where, repaired)
        label = None if first.group == "None" else first.group
        props = {"name": name} if name else {}
        records.append(AnnotationRecord(geom, label, first.color, props))
    return records


def _with_holes(it: _Item) -> Polygon:
    assert isinstance(it.geometry, Polygon)
    if not it.holes:
        return it.geometry
    return Polygon(it.geometry.exterior.coords, [h.exterior.coords for h in it.holes])


def write_asap(records: Iterable[AnnotationRecord], path: PathLikeStr | None = None) -> str:
    """Write records as ASAP XML, holes and parts encoded as described in the module docs.

    Args:
        records: The records to write.
        path: Where to write; ``None`` only returns the text.

    Returns:
        The XML text.

    Raises:
        FormatError: A geometry ASAP cannot hold (an open line of more than two points, a
            multi-line or a geometry collection).

    Example:
        >>> from shapely.geometry import box
        >>> xml = write_asap([AnnotationRecord(box(0, 0, 8, 8), "Tumor")])
        >>> parse_asap(xml)[0].label
        'Tumor'
    """
    root = ET.Element("ASAP_Annotations")
    annotations = ET.SubElement(root, "Annotations")
    groups: dict[str, str] = {}
    used: set[str] = set()
    for i, rec in enumerate(records):
        group = rec.label if rec.label is not None else "None"
        color = rec.color or groups.get(group) or DEFAULT_COLOR
        if group != "None":
            groups.setdefault(group, color)
        name = str(rec.properties.get("name") or f"Annotation {i}")
        if name in used:
            name = f"{name} #{i}"
        used.add(name)
        geom = rec.geometry
        if isinstance(geom, Point):
            _add(annotations, name, "Dot", group, color, [geom.coords[0]])
        elif isinstance(geom, MultiPoint):
            _add(annotations, name, "PointSet", group, color, [p.coords[0] for p in geom.geoms])
        elif isinstance(geom, LineString) and len(geom.coords) == 2:
            _add(annotations, name, "Measurement", group, color, list(geom.coords))
        elif geom.geom_type in ("Polygon", "MultiPolygon"):
            parts = polygonal_parts(geom)
            for k, part in enumerate(parts):
                pname = f"{name} [part {k}]" if len(parts) > 1 else name
                _add(annotations, pname, "Polygon", group, color, part.exterior.coords[:-1])
                for j, hole in enumerate(part.interiors):
                    hole_group = group + HOLE_SUFFIX
                    groups.setdefault(hole_group, color)
                    hname = f"{pname} [hole {j}]"
                    _add(annotations, hname, "Polygon", hole_group, color, hole.coords[:-1])
        else:
            raise FormatError(
                f"record {i}: ASAP XML cannot hold a {geom.geom_type}"
                + (" of more than 2 points" if geom.geom_type == "LineString" else "")
                + ". Use GeoJSON for this geometry."
            )
    group_el = ET.SubElement(root, "AnnotationGroups")
    for gname, gcolor in groups.items():
        g = ET.SubElement(group_el, "Group", Name=gname, PartOfGroup="None", Color=gcolor)
        ET.SubElement(g, "Attributes")
    ET.indent(root, space="\t")
    text = ET.tostring(root, encoding="unicode", xml_declaration=False)
    text = '<?xml version="1.0"?>\n' + text + "\n"
    if path is not None:
        write_output_text(path, text)
    return text


def _add(
    parent: ET.Element,
    name: str,
    kind: str,
    group: str,
    color: str,
    coords: Iterable[tuple[float, ...]],
) -> None:
    a = ET.SubElement(parent, "Annotation", Name=name, Type=kind, PartOfGroup=group, Color=color)
    c = ET.SubElement(a, "Coordinates")
    for k, xy in enumerate(coords):
        ET.SubElement(c, "Coordinate", Order=str(k), X=repr(float(xy[0])), Y=repr(float(xy[1])))
