"""GeoJSON (QuPath) import and export."""

from __future__ import annotations

import json
import math
import uuid

import pytest
import shapely
from shapely.geometry import LineString, MultiPoint, MultiPolygon, Point, Polygon, box

from pathray.errors import FormatError
from pathray.formats import AnnotationRecord, FormatWarning, parse_geojson, write_geojson
from pathray.formats.geojson import read_geojson

SHELL = [(0.0, 0.0), (100.5, 0.0), (100.5, 80.25), (0.0, 80.25)]
HOLE_A = [(10.0, 10.0), (20.0, 10.0), (20.0, 20.0), (10.0, 20.0)]
HOLE_B = [(50.125, 40.0), (60.0, 40.0), (55.0, 50.0)]


def sample_records() -> list[AnnotationRecord]:
    donut = Polygon(SHELL, [HOLE_A, HOLE_B])
    multi = MultiPolygon(
        [
            Polygon(
                [(200, 200), (260, 200), (260, 260), (200, 260)],
                [[(210, 210), (220, 210), (215, 220)]],
            ),
            Polygon([(300.3333333333333, 300), (320, 300), (310, 317.1)]),
        ]
    )
    return [
        AnnotationRecord(donut, "Tumor", "#C80000", {"name": "donut", "custom": [1, 2]}),
        AnnotationRecord(multi, "Stroma", "#00ff00"),
        AnnotationRecord(Point(5.5, 6.5), "Lymphocyte", "#0000ff"),
        AnnotationRecord(MultiPoint([(1, 2), (3, 4)]), None, "#123456"),
        AnnotationRecord(LineString([(0, 0), (10, 5), (20, 0)]), "Margin", None),
        AnnotationRecord(box(1, 1, 2, 2), None, None),
    ]


def test_round_trip_keeps_geometry_labels_colours_and_holes(tmp_path):
    records = sample_records()
    path = tmp_path / "a.geojson"
    write_geojson(records, path)
    back = read_geojson(path)
    assert len(back) == len(records)
    for a, b in zip(records, back, strict=True):
        assert shapely.equals_exact(a.geometry, b.geometry, tolerance=0), (a.geometry, b.geometry)
        assert b.label == a.label
        assert b.color == a.color
    assert len(back[0].geometry.interiors) == 2
    assert [len(p.interiors) for p in back[1].geometry.geoms] == [1, 0]
    assert back[0].properties["name"] == "donut"
    assert back[0].properties["custom"] == [1, 2]


def test_written_features_are_qupath_compatible():
    records = sample_records()
    doc = json.loads(write_geojson(records))
    assert doc["type"] == "FeatureCollection"
    f0 = doc["features"][0]
    assert f0["type"] == "Feature"
    uuid.UUID(f0["id"])
    assert f0["properties"]["objectType"] == "annotation"
    assert f0["properties"]["classification"] == {"name": "Tumor", "color": [200, 0, 0]}
    assert f0["properties"]["isLocked"] is False
    assert f0["geometry"]["type"] == "Polygon"
    # colour without a class goes to the object colour; no class: no classification
    f3 = doc["features"][3]["properties"]
    assert "classification" not in f3 and f3["color"] == [18, 52, 86]
    detections = json.loads(write_geojson(records, object_type="detection"))
    assert {f["properties"]["objectType"] for f in detections["features"]} == {"detection"}


def test_ids_are_stable_and_follow_content():
    records = sample_records()
    ids1 = [f["id"] for f in json.loads(write_geojson(records))["features"]]
    ids2 = [f["id"] for f in json.loads(write_geojson(sample_records()))["features"]]
    assert ids1 == ids2
    assert len(set(ids1)) == len(ids1)
    moved = AnnotationRecord(box(1, 1, 2, 3), None)
    assert json.loads(write_geojson([moved]))["features"][0]["id"] != ids1[-1]
    # an id read from a file is written back unchanged
    kept = parse_geojson(write_geojson(records))
    assert [f["id"] for f in json.loads(write_geojson(kept))["features"]] == ids1


QUPATH_04 = """
{
  "type": "FeatureCollection",
  "features": [
    {
      "type": "Feature",
      "id": "0b7b6f3c-3a0e-4c64-9a4b-1f2c2f0b9d11",
      "geometry": {"type": "Polygon",
                   "coordinates": [
                     [[1200, 800], [1400, 800], [1400, 950], [1200, 950], [1200, 800]],
                     [[1250, 850], [1300, 850], [1300, 900], [1250, 850]]]},
      "properties": {
        "objectType": "annotation",
        "name": "Region 1",
        "classification": {"name": "Tumor", "color": [200, 0, 0]},
        "isLocked": true
      }
    },
    {
      "type": "Feature",
      "id": "7d3e1a52-8f64-4c1b-bb0e-5c6a9f3e2a10",
      "geometry": {"type": "Polygon",
                   "coordinates": [[[10.5, 10.5], [14.5, 10.5], [14.5, 13.0], [10.5, 10.5]]]},
      "properties": {
        "objectType": "cell",
        "classification": {"names": ["Tumor", "Positive"], "color": [255, 0, 0]},
        "nucleusGeometry": {"type": "Polygon",
                            "coordinates": [[[11, 11], [13, 11], [13, 12], [11, 11]]]},
        "measurements": {"Nucleus: Area": 12.5, "Cell: Area": 30.0}
      }
    },
    {
      "type": "Feature",
      "id": "a3c1d5e9-0000-4000-8000-000000000001",
      "geometry": {"type": "MultiPolygon",
                   "coordinates": [[[[0, 0], [5, 0], [5, 5], [0, 0]]],
                                   [[[10, 10], [15, 10], [15, 15], [10, 10]]]]},
      "properties": {"objectType": "detection", "color": [0, 128, 255]}
    }
  ]
}
"""

QUPATH_02 = """
[
  {
    "type": "Feature",
    "id": "PathAnnotationObject",
    "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 0]]]},
    "properties": {
      "classification": {"name": "Stroma", "colorRGB": -16744448},
      "isLocked": false,
      "measurements": [{"name": "Area px^2", "value": 50.0}]
    }
  },
  {
    "type": "Feature",
    "id": "PathDetectionObject",
    "geometry": {"type": "Point", "coordinates": [3, 4]},
    "properties": {"isLocked": false, "measurements": []}
  }
]
"""


def test_parses_qupath_04_export():
    recs = parse_geojson(QUPATH_04, source="qupath.geojson")
    assert len(recs) == 3
    tumor, cell, det = recs
    assert tumor.label == "Tumor" and tumor.color == "#c80000"
    assert tumor.properties["objectType"] == "annotation"
    assert tumor.properties["isLocked"] is True
    assert tumor.properties["name"] == "Region 1"
    assert tumor.properties["id"] == "0b7b6f3c-3a0e-4c64-9a4b-1f2c2f0b9d11"
    assert len(tumor.geometry.interiors) == 1
    assert cell.label == "Tumor: Positive"
    assert cell.properties["objectType"] == "cell"
    assert cell.properties["measurements"]["Nucleus: Area"] == 12.5
    assert cell.properties["nucleusGeometry"]["type"] == "Polygon"
    assert det.label is None and det.color == "#0080ff"
    assert det.geometry.geom_type == "MultiPolygon"


def test_parses_qupath_02_list_and_single_feature():
    recs = parse_geojson(QUPATH_02)
    assert recs[0].label == "Stroma"
    assert recs[0].color == "#008000"  # -16744448 == 0xFF008000
    assert recs[0].properties["objectType"] == "annotation"
    assert recs[0].properties["measurements"] == {"Area px^2": 50.0}
    assert recs[1].properties["objectType"] == "detection"
    assert recs[1].geometry.equals(Point(3, 4))
    single = json.dumps(json.loads(QUPATH_02)[0])
    assert len(parse_geojson(single)) == 1


def test_object_type_of_a_record_is_kept_unless_overridden():
    recs = parse_geojson(QUPATH_04)
    kinds = [f["properties"]["objectType"] for f in json.loads(write_geojson(recs))["features"]]
    assert kinds == ["annotation", "cell", "detection"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "is not valid JSON"),
        ('"a string"', "must hold a GeoJSON object"),
        ('{"type": "Topology"}', "top-level 'type'"),
        ('{"type": "FeatureCollection"}', "lacks a 'features' list"),
        ('[{"type": "Feature", "properties": {}}]', "feature 0 lacks a 'geometry'"),
        ('[{"type": "Feature", "geometry": {"type": "Circle"}}]', "geometry type must be"),
        (
            '[{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": "x"}}]',
            "malformed Polygon coordinates",
        ),
        (
            '[{"type": "Feature", "geometry": {"type": "Point", "coordinates": [NaN, 1]}}]',
            "non-finite coordinate",
        ),
        (
            '[{"type": "Feature", "geometry": {"type": "Polygon", '
            '"coordinates": [[[0, 0], [1, 1], [2, 2], [0, 0]]]}}]',
            "encloses no area",
        ),
        (
            '[{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 1]}, '
            '"properties": {"classification": {"name": "A", "color": "red"}}}]',
            "a colour must be",
        ),
    ],
)
def test_malformed_geojson_raises_format_error(text, message):
    with pytest.raises(FormatError, match=message) as info:
        parse_geojson(text, source="bad.geojson")
    assert str(info.value).startswith("bad.geojson")


def test_self_intersecting_polygon_is_repaired_with_a_warning():
    bowtie = '{"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}'
    with pytest.warns(FormatWarning, match="repaired"):
        (rec,) = parse_geojson(bowtie)
    assert rec.geometry.is_valid
    assert rec.geometry.geom_type == "MultiPolygon"
    assert math.isclose(rec.geometry.area, 50.0)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.geojson"
    empty.write_text("  \n")
    with pytest.raises(FormatError, match=r"empty.geojson: the file is empty"):
        read_geojson(empty)
    with pytest.raises(FormatError, match="does not exist"):
        read_geojson(tmp_path / "nope.geojson")


def test_write_rejects_nan_coordinates_and_unserialisable_properties():
    with pytest.raises(FormatError, match="non-finite"):
        write_geojson([AnnotationRecord(Point(float("nan"), 1), None)])
    with pytest.raises(FormatError, match="JSON-serialisable"):
        write_geojson([AnnotationRecord(Point(1, 1), None, None, {"x": object()})])
