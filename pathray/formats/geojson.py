"""GeoJSON as QuPath reads and writes it.

Reading accepts a ``FeatureCollection``, a bare list of features, a single ``Feature`` (QuPath
emits all three) and, for convenience, a bare geometry. For each feature:

- ``label`` comes from ``properties.classification.name`` (or QuPath 0.4's ``names`` list,
  joined with ``": "`` as QuPath prints derived classes);
- ``color`` from ``classification.color`` (``[r, g, b]``) or ``classification.colorRGB`` (a
  packed ARGB integer, QuPath 0.2), else from the object colour ``properties.color``;
- ``properties`` keeps every other feature property (``objectType``, ``isLocked``, ``name``,
  ``measurements`` normalised to a ``{name: value}`` dict, ``nucleusGeometry``, ...), plus the
  feature ``id`` under ``"id"`` when it is a real identifier. QuPath 0.2 wrote the object type as
  the ``id`` (``"PathAnnotationObject"``); that becomes ``objectType``.

Writing emits QuPath-compatible features: ``objectType`` (``"annotation"`` unless the record or
the ``object_type`` argument says otherwise), ``classification {name, color}``, ``isLocked``,
the remaining properties passed through, and an ``id``: the record's ``properties["id"]`` if
present, else a UUID derived from the record's content (identical records get identical ids).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable
from typing import Any, Literal

import shapely
from shapely.geometry import mapping, shape

from pathray.errors import FormatError
from pathray.formats.base import (
    AnnotationRecord,
    PathLikeStr,
    check_geometry,
    hex_to_rgb,
    normalize_color,
    packed_rgb_to_hex,
    read_input_bytes,
    rgb_to_hex,
    source_name,
    warn_repaired,
    write_output_text,
)

ObjectType = Literal["annotation", "detection", "cell", "tile"]

_QUPATH_TYPE_IDS = {
    "PathAnnotationObject": "annotation",
    "PathDetectionObject": "detection",
    "PathCellObject": "cell",
    "PathTileObject": "tile",
}
_GEOMETRY_TYPES = {
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
    "GeometryCollection",
}
# A fixed namespace so that content-derived ids are the same on every machine.
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "pathray:annotation-record")


def read_geojson(path: PathLikeStr) -> list[AnnotationRecord]:
    """Read a GeoJSON annotation file (QuPath export or any GeoJSON features).

    Args:
        path: The ``.geojson`` / ``.json`` file.

    Returns:
        One record per feature, in file order.

    Raises:
        FormatError: The file is missing, empty, not JSON, or a feature is malformed.

    Example:
        >>> records = read_geojson("slide_1.geojson")  # doctest: +SKIP
        >>> records[0].label, records[0].geometry.geom_type  # doctest: +SKIP
        ('Tumor', 'Polygon')
    """
    data = read_input_bytes(path)
    return parse_geojson(data, source=source_name(path))


def parse_geojson(text: str | bytes | Any, source: str = "<geojson>") -> list[AnnotationRecord]:
    """Parse GeoJSON given as text, bytes or an already decoded object.

    Args:
        text: JSON text or bytes, or a decoded ``dict`` / ``list``.
        source: How error messages name the input.

    Returns:
        One record per feature.

    Raises:
        FormatError: Not JSON, or not a GeoJSON feature, feature list or collection.
    """
    if isinstance(text, str | bytes | bytearray):
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FormatError(f"{source}: is not valid JSON ({exc}).") from exc
    else:
        obj = text
    features = _features_of(obj, source)
    repaired: list[str] = []
    records = [
        _record_from_feature(f, f"{source}: feature {i}", repaired) for i, f in enumerate(features)
    ]
    warn_repaired(source, repaired)
    return records


def _features_of(obj: Any, source: str) -> list[Any]:
    if isinstance(obj, list):
        return obj
    if not isinstance(obj, dict):
        raise FormatError(
            f"{source}: must hold a GeoJSON object or a list of features. "
            f"Got a JSON {type(obj).__name__} instead."
        )
    kind = obj.get("type")
    if kind == "FeatureCollection":
        features = obj.get("features")
        if not isinstance(features, list):
            raise FormatError(f"{source}: the FeatureCollection lacks a 'features' list.")
        return features
    if kind == "Feature":
        return [obj]
    if kind in _GEOMETRY_TYPES:
        return [{"type": "Feature", "geometry": obj, "properties": {}}]
    raise FormatError(
        f"{source}: the top-level 'type' must be FeatureCollection, Feature or a geometry type. "
        f"Got {kind!r} instead."
    )


def _record_from_feature(feature: Any, where: str, repaired: list[str]) -> AnnotationRecord:
    if not isinstance(feature, dict) or feature.get("type", "Feature") != "Feature":
        raise FormatError(f"{where} must be a GeoJSON Feature object.")
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict):
        raise FormatError(f"{where} lacks a 'geometry' object.")
    if geometry.get("type") not in _GEOMETRY_TYPES:
        raise FormatError(
            f"{where}: geometry type must be one of {sorted(_GEOMETRY_TYPES)}. "
            f"Got {geometry.get('type')!r} instead."
        )
    try:
        geom = shape(geometry)
    except Exception as exc:  # shapely raises several types for malformed coordinates
        raise FormatError(
            f"{where}: malformed {geometry.get('type')} coordinates ({exc})."
        ) from exc
    geom = check_geometry(geom, where, repaired)

    props_in = feature.get("properties") or {}
    if not isinstance(props_in, dict):
        raise FormatError(f"{where}: 'properties' must be an object.")
    props = dict(props_in)
    label, color = _classification(props.pop("classification", None), where)
    object_color = props.pop("color", None)
    if color is None and object_color is not None:
        color = _parse_color(object_color, where)
    if "measurements" in props:
        props["measurements"] = _measurements(props["measurements"], where)
    fid = feature.get("id")
    if isinstance(fid, str) and fid in _QUPATH_TYPE_IDS:
        props.setdefault("objectType", _QUPATH_TYPE_IDS[fid])
    elif fid is not None:
        props["id"] = fid
    return AnnotationRecord(geom, label, color, props)


def _classification(value: Any, where: str) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    if isinstance(value, str):  # some tools write the class name alone
        return value, None
    if not isinstance(value, dict):
        raise FormatError(f"{where}: 'classification' must be an object with a 'name'.")
    name = value.get("name")
    if name is None and isinstance(value.get("names"), list):
        name = ": ".join(str(n) for n in value["names"])
    if "color" in value:
        color = _parse_color(value["color"], where)
    elif "colorRGB" in value:
        color = _parse_color(value["colorRGB"], where)
    else:
        color = None
    return (str(name) if name is not None else None), color


def _parse_color(value: Any, where: str) -> str:
    if isinstance(value, bool):
        raise FormatError(f"{where}: a colour must be [r, g, b] or an integer. Got {value!r}.")
    if isinstance(value, int):
        return packed_rgb_to_hex(value)
    if isinstance(value, str) and value.startswith("#"):
        try:
            return normalize_color(value)
        except FormatError as exc:
            raise FormatError(f"{where}: {exc}") from None
    if (
        isinstance(value, list)
        and len(value) in (3, 4)
        and all(isinstance(c, int) and 0 <= c <= 255 for c in value)
    ):
        return rgb_to_hex(value[0], value[1], value[2])
    raise FormatError(
        f"{where}: a colour must be [r, g, b] with values 0-255 or a packed RGB integer. "
        f"Got {value!r} instead."
    )


def _measurements(value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):  # QuPath 0.2: [{"name": ..., "value": ...}, ...]
        out: dict[str, Any] = {}
        for m in value:
            if not isinstance(m, dict) or "name" not in m:
                raise FormatError(f"{where}: each measurement must be {{'name', 'value'}}.")
            out[str(m["name"])] = m.get("value")
        return out
    raise FormatError(f"{where}: 'measurements' must be an object or a list.")


def records_to_geojson(
    records: Iterable[AnnotationRecord], object_type: ObjectType | None = None
) -> dict[str, Any]:
    """Return a QuPath-compatible GeoJSON FeatureCollection as a dict.

    Args:
        records: The records to write.
        object_type: ``objectType`` for every feature; ``None`` keeps each record's own
            ``properties["objectType"]`` and falls back to ``"annotation"``.

    Raises:
        FormatError: A geometry has a non-finite coordinate.
    """
    features = []
    for i, rec in enumerate(records):
        coords = shapely.get_coordinates(rec.geometry)
        if not all(math.isfinite(float(v)) for v in coords.ravel()):
            raise FormatError(f"record {i}: has a non-finite coordinate (NaN or infinity).")
        props = {k: v for k, v in rec.properties.items() if k != "id"}
        props["objectType"] = object_type or props.get("objectType") or "annotation"
        props.setdefault("isLocked", False)
        if rec.label is not None:
            cls: dict[str, Any] = {"name": rec.label}
            if rec.color is not None:
                cls["color"] = list(hex_to_rgb(rec.color))
            props["classification"] = cls
        elif rec.color is not None:
            props["color"] = list(hex_to_rgb(rec.color))
        fid = rec.properties.get("id")
        if not isinstance(fid, str):
            fid = _content_id(rec)
        features.append(
            {"type": "Feature", "id": fid, "geometry": mapping(rec.geometry), "properties": props}
        )
    return {"type": "FeatureCollection", "features": features}


def _content_id(rec: AnnotationRecord) -> str:
    key = json.dumps(
        [rec.geometry.wkb_hex, rec.label, rec.color, rec.properties], sort_keys=True, default=str
    )
    return str(uuid.uuid5(_ID_NAMESPACE, key))


def write_geojson(
    records: Iterable[AnnotationRecord],
    path: PathLikeStr | None = None,
    object_type: ObjectType | None = None,
    indent: int | None = 2,
) -> str:
    """Write records as a QuPath-compatible GeoJSON FeatureCollection.

    Args:
        records: The records to write.
        path: Where to write; ``None`` only returns the text.
        object_type: See :func:`records_to_geojson`.
        indent: JSON indentation (``None`` for the most compact output).

    Returns:
        The GeoJSON text.

    Example:
        >>> from shapely.geometry import box
        >>> text = write_geojson([AnnotationRecord(box(0, 0, 4, 4), "Tumor", "#c80000")])
        >>> parse_geojson(text)[0].label
        'Tumor'
    """
    collection = records_to_geojson(records, object_type)
    try:
        text = json.dumps(collection, indent=indent, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"record properties must be JSON-serialisable ({exc}).") from exc
    if path is not None:
        write_output_text(path, text)
    return text
