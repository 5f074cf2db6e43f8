"""ASAP XML import and export."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest
import shapely
from shapely.geometry import LineString, MultiPoint, MultiPolygon, Point, Polygon, box

from pathray.errors import FormatError
from pathray.formats import AnnotationRecord, FormatWarning, parse_asap, read_asap, write_asap


def sample_records() -> list[AnnotationRecord]:
    donut = Polygon(
        [(0, 0), (100.5, 0), (100.5, 80.25), (0, 80.25)],
        [[(10, 10), (20, 10), (20, 20), (10, 20)], [(50.125, 40), (60, 40), (55, 50)]],
    )
    multi = MultiPolygon(
        [
            Polygon(
                [(200, 200), (260, 200), (260, 260), (200, 260)],
                [[(210, 210), (220, 210), (215, 220)]],
            ),
            Polygon([(300.3333333333333, 300), (320, 300), (310, 317.1)]),
        ]
    )
    unlabelled_donut = Polygon(
        [(500, 500), (600, 500), (600, 600), (500, 600)], [[(510, 510), (520, 510), (515, 530)]]
    )
    return [
        AnnotationRecord(donut, "Tumor", "#c80000", {"name": "donut"}),
        AnnotationRecord(multi, "Tumor", "#c80000"),
        AnnotationRecord(Point(5.5, 6.5), "Lymphocyte", "#0000ff"),
        AnnotationRecord(MultiPoint([(1, 2), (3, 4)]), "Mitosis", "#00ff00"),
        AnnotationRecord(LineString([(0, 0), (10, 5)]), "Ruler", "#ffffff"),
        AnnotationRecord(unlabelled_donut, None, "#abcdef"),
        AnnotationRecord(box(700, 700, 710, 720), "Stroma", None),
    ]


def test_round_trip_keeps_geometry_labels_colours_and_holes(tmp_path):
    records = sample_records()
    path = tmp_path / "a.xml"
    write_asap(records, path)
    back = read_asap(path)
    assert len(back) == len(records)
    for a, b in zip(records, back, strict=True):
        assert shapely.equals_exact(a.geometry, b.geometry, tolerance=0), (a.geometry, b.geometry)
        assert b.label == a.label
        if a.color is not None:
            assert b.color == a.color
    assert len(back[0].geometry.interiors) == 2
    assert back[0].properties["name"] == "donut"
    assert back[1].geometry.geom_type == "MultiPolygon"
    assert len(back[5].geometry.interiors) == 1


def test_written_xml_follows_asap_layout_and_hole_convention():
    root = ET.fromstring(write_asap(sample_records()))
    assert root.tag == "ASAP_Annotations"
    anns = root.findall("./Annotations/Annotation")
    names = [a.get("Name") for a in anns]
    assert "donut" in names and "donut [hole 0]" in names and "donut [hole 1]" in names
    assert "Annotation 1 [part 0]" in names and "Annotation 1 [part 0] [hole 0]" in names
    hole = anns[names.index("donut [hole 0]")]
    assert hole.get("PartOfGroup") == "Tumor__hole" and hole.get("Type") == "Polygon"
    types = {a.get("Name"): a.get("Type") for a in anns}
    assert types["Annotation 2"] == "Dot" and types["Annotation 3"] == "PointSet"
    assert types["Annotation 4"] == "Measurement"
    groups = {g.get("Name"): g for g in root.findall("./AnnotationGroups/Group")}
    assert {"Tumor", "Tumor__hole", "None__hole", "Stroma"} <= set(groups)
    assert all(g.get("PartOfGroup") == "None" for g in groups.values())
    first = anns[0].findall("./Coordinates/Coordinate")
    assert [c.get("Order") for c in first] == ["0", "1", "2", "3"]  # no repeated closing point


CAMELYON_LIKE = """<?xml version="1.0"?>
<ASAP_Annotations>
  <Annotations>
    <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="_0" Color="#F4FA58">
      <Coordinates>
        <Coordinate Order="2" X="100" Y="100" />
        <Coordinate Order="0" X="0" Y="0" />
        <Coordinate Order="3" X="0" Y="100" />
        <Coordinate Order="1" X="100,5" Y="0" />
      </Coordinates>
    </Annotation>
    <Annotation Name="Annotation 1" Type="Rectangle" PartOfGroup="_2" Color="#64FE2E">
      <Coordinates>
        <Coordinate Order="0" X="10" Y="10" /><Coordinate Order="1" X="20" Y="10" />
        <Coordinate Order="2" X="20" Y="20" /><Coordinate Order="3" X="10" Y="20" />
      </Coordinates>
    </Annotation>
    <Annotation Name="dot" Type="Dot" PartOfGroup="Cells">
      <Coordinates><Coordinate Order="0" X="7.5" Y="8.5" /></Coordinates>
    </Annotation>
    <Annotation Name="curve" Type="Spline" PartOfGroup="None" Color="#0000FF">
      <Coordinates>
        <Coordinate Order="0" X="0" Y="0" /><Coordinate Order="1" X="4" Y="0" />
        <Coordinate Order="2" X="2" Y="3" />
      </Coordinates>
    </Annotation>
    <Annotation Name="cut" Type="Polygon" PartOfGroup="_0__hole">
      <Coordinates>
        <Coordinate Order="0" X="60" Y="60" /><Coordinate Order="1" X="70" Y="60" />
        <Coordinate Order="2" X="70" Y="70" />
      </Coordinates>
    </Annotation>
  </Annotations>
  <AnnotationGroups>
    <Group Name="_0" PartOfGroup="None" Color="#ff0000"><Attributes /></Group>
    <Group Name="_2" PartOfGroup="None" Color="#00ff00"><Attributes /></Group>
    <Group Name="Cells" PartOfGroup="None" Color="#123456"><Attributes /></Group>
  </AnnotationGroups>
</ASAP_Annotations>
"""


def test_parses_a_hand_written_asap_file():
    recs = parse_asap(CAMELYON_LIKE, source="tumor_001.xml")
    assert [r.label for r in recs] == ["_0", "_2", "Cells", None]
    tumor, exclusion, dot, curve = recs
    # coordinates sorted by Order, decimal comma accepted, hole merged by containment
    assert list(tumor.geometry.exterior.coords)[:4] == [(0, 0), (100.5, 0), (100, 100), (0, 100)]
    assert len(tumor.geometry.interiors) == 1
    assert tumor.color == "#f4fa58"
    # a CAMELYON exclusion group is a label like any other: not merged
    assert exclusion.geometry.equals(box(10, 10, 20, 20))
    assert dot.geometry.equals(Point(7.5, 8.5)) and dot.color == "#123456"  # group colour
    assert curve.geometry.geom_type == "Polygon" and curve.properties["name"] == "curve"


def test_hole_outside_every_polygon_is_kept_with_a_warning():
    xml = CAMELYON_LIKE.replace('X="60" Y="60"', 'X="600" Y="600"')
    with pytest.warns(FormatWarning, match="lies in no polygon"):
        recs = parse_asap(xml)
    assert recs[-1].label == "_0__hole"
    assert not recs[0].geometry.interiors


def test_cannot_write_open_polylines():
    with pytest.raises(FormatError, match="cannot hold a LineString of more than 2 points"):
        write_asap([AnnotationRecord(LineString([(0, 0), (1, 1), (2, 0)]), "x")])


def test_self_intersecting_polygon_is_repaired():
    xml = CAMELYON_LIKE.replace('X="100" Y="100"', 'X="100" Y="-50"').replace("_0__hole", "x")
    with pytest.warns(FormatWarning, match="repaired"):
        recs = parse_asap(xml)
    assert recs[0].geometry.is_valid and recs[0].geometry.area > 0


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("just text", "is not well-formed XML"),
        ("<Annotations><Annotation/></Annotations>", "root element must be <ASAP_Annotations>"),
        (
            "<ASAP_Annotations><Annotations>\n<Annotation Name='a' Type='Polygon'/>"
            "</Annotations></ASAP_Annotations>",
            r"element <Annotation> at line 2 has no <Coordinate>",
        ),
        (
            "<ASAP_Annotations><Annotations><Annotation Type='Polygon'><Coordinates>\n\n"
            "<Coordinate Order='0' Y='1'/></Coordinates></Annotation></Annotations>"
            "</ASAP_Annotations>",
            r"element <Coordinate> at line 3 lacks attribute X",
        ),
        (
            "<ASAP_Annotations><Annotations><Annotation Type='Dot'><Coordinates>"
            "<Coordinate Order='0' X='nan' Y='1'/></Coordinates></Annotation></Annotations>"
            "</ASAP_Annotations>",
            "must be a finite number",
        ),
        (
            "<ASAP_Annotations><Annotations><Annotation Type='Dot'><Coordinates>"
            "<Coordinate Order='0' X='abc' Y='1'/></Coordinates></Annotation></Annotations>"
            "</ASAP_Annotations>",
            "attribute X must be a number. Got 'abc' instead",
        ),
        (
            "<ASAP_Annotations><Annotations><Annotation Type='Polygon'><Coordinates>"
            "<Coordinate Order='0' X='1' Y='1'/><Coordinate Order='1' X='2' Y='1'/>"
            "</Coordinates></Annotation></Annotations></ASAP_Annotations>",
            "at least 3 points",
        ),
        (
            "<ASAP_Annotations><Annotations><Annotation Type='Circle'><Coordinates>"
            "<Coordinate Order='0' X='1' Y='1'/></Coordinates></Annotation></Annotations>"
            "</ASAP_Annotations>",
            "attribute Type must be one of",
        ),
    ],
)
def test_malformed_asap_raises_format_error(xml, message):
    with pytest.raises(FormatError, match=message) as info:
        parse_asap(xml, source="bad.xml")
    assert str(info.value).startswith("bad.xml")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.xml"
    path.write_bytes(b"")
    with pytest.raises(FormatError, match=r"empty.xml: the file is empty"):
        read_asap(path)


def test_spline_area_is_its_control_polygon():
    recs = parse_asap(CAMELYON_LIKE)
    assert math.isclose(recs[3].geometry.area, 6.0)
