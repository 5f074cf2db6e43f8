"""Aperio ImageScope XML import (and its small export)."""

from __future__ import annotations

import math
import warnings

import pytest
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

from pathray.errors import FormatError
from pathray.formats import (
    AnnotationRecord,
    FormatWarning,
    parse_imagescope,
    read_imagescope,
    write_imagescope,
)

IMAGESCOPE = """<?xml version="1.0" encoding="UTF-8"?>
<Annotations MicronsPerPixel="0.252100">
  <Annotation Id="1" Name="Tumor" ReadOnly="0" Type="4" LineColor="255" Visible="1">
    <Attributes>
      <Attribute Name="Description" Id="0" Value=""/>
    </Attributes>
    <Regions>
      <RegionAttributeHeaders>
        <AttributeHeader Id="9999" Name="Region" ColumnWidth="-1"/>
      </RegionAttributeHeaders>
      <Region Id="1" Type="0" Zoom="0.5" NegativeROI="0" Text="" DisplayId="1">
        <Attributes/>
        <Vertices>
          <Vertex X="0" Y="0" Z="0"/>
          <Vertex X="100" Y="0" Z="0"/>
          <Vertex X="100" Y="100" Z="0"/>
          <Vertex X="0" Y="100" Z="0"/>
        </Vertices>
      </Region>
      <Region Id="2" Type="0" NegativeROI="1" Text="">
        <Attributes/>
        <Vertices>
          <Vertex X="40" Y="40" Z="0"/>
          <Vertex X="60" Y="40" Z="0"/>
          <Vertex X="60" Y="60" Z="0"/>
          <Vertex X="40" Y="60" Z="0"/>
        </Vertices>
      </Region>
      <Region Id="3" Type="0" NegativeROI="0" Text="Necrosis">
        <Attributes/>
        <Vertices>
          <Vertex X="200" Y="200" Z="0"/>
          <Vertex X="210" Y="200" Z="0"/>
          <Vertex X="205" Y="210.5" Z="0"/>
        </Vertices>
      </Region>
    </Regions>
    <Plots/>
  </Annotation>
  <Annotation Id="2" Name="" LineColor="65280">
    <Attributes><Attribute Name="class" Id="0" Value="Stroma"/></Attributes>
    <Regions>
      <Region Id="4" Type="2" NegativeROI="0" Text="">
        <Attributes/>
        <Vertices><Vertex X="300" Y="300"/><Vertex X="340" Y="320"/></Vertices>
      </Region>
      <Region Id="5" Type="1" NegativeROI="0" Text="">
        <Attributes><Attribute Name="x" Id="1" Value="Fat"/></Attributes>
        <Vertices><Vertex X="400" Y="400"/><Vertex X="410" Y="400"/>
                  <Vertex X="410" Y="420"/><Vertex X="400" Y="420"/></Vertices>
      </Region>
      <Region Id="6" Type="4" NegativeROI="0" Text="">
        <Attributes/>
        <Vertices><Vertex X="0" Y="500"/><Vertex X="50" Y="510"/><Vertex X="90" Y="500"/></Vertices>
      </Region>
    </Regions>
  </Annotation>
</Annotations>
"""

MONUSEG_LIKE = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Annotations MicronsPerPixel="0.252000">
  <Annotation Id="1" Name="" ReadOnly="0" LineColor="65280" Visible="1">
    <Attributes><Attribute Name="Description" Id="0" Value=""/></Attributes>
    <Regions>
      <Region Id="1" Type="0" NegativeROI="0" Text="">
        <Attributes/>
        <Vertices><Vertex X="1.5" Y="2"/><Vertex X="9" Y="2.25"/><Vertex X="5" Y="8"/></Vertices>
      </Region>
      <Region Id="2" Type="0" NegativeROI="0" Text="">
        <Attributes/>
        <Vertices><Vertex X="21.5" Y="2"/><Vertex X="29" Y="2.25"/><Vertex X="25" Y="8"/></Vertices>
      </Region>
    </Regions>
  </Annotation>
</Annotations>
"""


def test_imports_regions_labels_colours_and_holes(tmp_path):
    path = tmp_path / "slide.xml"
    path.write_text(IMAGESCOPE)
    recs = read_imagescope(path)
    assert len(recs) == 5  # the NegativeROI region is a hole, not a record
    outer, necrosis, ellipse, rect, line = recs
    assert outer.label == "Tumor"  # Annotation Name (no Text, no attribute values)
    assert outer.color == "#ff0000"  # LineColor 255 is BGR red
    assert len(outer.geometry.interiors) == 1
    assert outer.geometry.area == 100 * 100 - 20 * 20
    assert outer.properties == {"annotation_id": "1", "region_id": "1", "layer": "Tumor"}
    assert necrosis.label == "Necrosis"  # Region Text wins
    assert ellipse.label == "Stroma"  # Annotation attribute value beats empty Name
    assert ellipse.color == "#00ff00"  # 65280 is BGR green
    assert ellipse.geometry.bounds == pytest.approx((300, 300, 340, 320))
    assert math.isclose(ellipse.geometry.area, math.pi * 20 * 10, rel_tol=0.01)
    assert rect.label == "Fat"  # Region attribute value beats the Annotation's
    assert rect.geometry.equals(box(400, 400, 410, 420))
    assert isinstance(line.geometry, LineString)


def test_monuseg_like_nuclei_are_one_record_per_region():
    recs = parse_imagescope(MONUSEG_LIKE)
    assert len(recs) == 2
    assert all(r.label is None and r.color == "#00ff00" for r in recs)
    assert recs[0].geometry.equals(Polygon([(1.5, 2), (9, 2.25), (5, 8)]))


def test_negative_region_crossing_the_border_is_subtracted():
    xml = IMAGESCOPE.replace('X="40" Y="40"', 'X="-40" Y="40"').replace(
        'X="40" Y="60"', 'X="-40" Y="60"'
    )
    outer = parse_imagescope(xml)[0]
    assert outer.geometry.area == 100 * 100 - 20 * 60
    assert not outer.geometry.interiors


def test_negative_region_outside_everything_is_ignored_with_a_warning():
    xml = IMAGESCOPE.replace('X="40" Y="40"', 'X="940" Y="940"').replace(
        'X="40" Y="60"', 'X="940" Y="960"'
    )
    xml = xml.replace('X="60" Y="40"', 'X="960" Y="940"').replace(
        'X="60" Y="60"', 'X="960" Y="960"'
    )
    with pytest.warns(FormatWarning, match="overlaps no positive region"):
        recs = parse_imagescope(xml)
    assert recs[0].geometry.area == 100 * 100


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("", "is not well-formed XML"),
        ("<Annotations><Annotation>", "is not well-formed XML"),
        ("<ASAP_Annotations/>", "root element must be <Annotations>"),
        (
            "<Annotations>\n<Annotation><Regions>\n<Region Id='1'><Vertices/></Region>"
            "</Regions></Annotation></Annotations>",
            "element <Region> at line 3 has no <Vertex> elements",
        ),
        (
            "<Annotations><Annotation><Regions><Region Id='1'><Vertices>\n"
            "<Vertex X='1' Y='1'/>\n<Vertex X='2' Y='1'/>\n<Vertex Y='3'/>\n"
            "</Vertices></Region></Regions></Annotation></Annotations>",
            r"bad.xml: element <Vertex> at line 4 lacks attribute X\.",
        ),
        (
            "<Annotations><Annotation><Regions><Region><Vertices>"
            "<Vertex X='1' Y='NaN'/><Vertex X='2' Y='1'/><Vertex X='3' Y='3'/>"
            "</Vertices></Region></Regions></Annotation></Annotations>",
            "attribute Y must be a finite number",
        ),
        (
            "<Annotations><Annotation LineColor='green'><Regions/></Annotation></Annotations>",
            "attribute LineColor must be an integer",
        ),
        (
            "<Annotations><Annotation><Regions><Region Type='free'><Vertices>"
            "<Vertex X='1' Y='1'/></Vertices></Region></Regions></Annotation></Annotations>",
            "attribute Type must be an integer",
        ),
    ],
)
def test_malformed_imagescope_raises_format_error(xml, message):
    with pytest.raises(FormatError, match=message) as info:
        parse_imagescope(xml, source="bad.xml")
    assert str(info.value).startswith("bad.xml")


def test_malformed_file_on_disk_names_the_file(tmp_path):
    path = tmp_path / "annotations.xml"
    path.write_text("<Annotations><Annotation><Regions><Region>")
    with pytest.raises(FormatError, match=r"annotations.xml: is not well-formed XML"):
        read_imagescope(path)


def test_self_intersecting_region_is_repaired():
    xml = MONUSEG_LIKE.replace(
        '<Vertex X="1.5" Y="2"/><Vertex X="9" Y="2.25"/><Vertex X="5" Y="8"/>',
        '<Vertex X="0" Y="0"/><Vertex X="10" Y="10"/><Vertex X="10" Y="0"/><Vertex X="0" Y="10"/>',
    )
    with pytest.warns(FormatWarning, match="1 invalid polygon"):
        recs = parse_imagescope(xml)
    assert isinstance(recs[0].geometry, MultiPolygon) and recs[0].geometry.is_valid


def test_export_round_trip_keeps_holes_labels_and_colours():
    donut = Polygon([(0, 0), (10, 0), (10, 10), (0, 10)], [[(2, 2), (4, 2), (4, 4), (2, 4)]])
    records = [
        AnnotationRecord(donut, "Tumor", "#ff8000"),
        AnnotationRecord(box(20, 20, 30, 25), "Stroma", "#00ff00"),
        AnnotationRecord(LineString([(0, 0), (5, 5), (9, 0)]), "Tumor", "#ff8000"),
    ]
    back = parse_imagescope(write_imagescope(records, microns_per_pixel=0.25))
    assert [r.label for r in back] == ["Tumor", "Tumor", "Stroma"]  # grouped by layer
    assert shapely.equals_exact(back[0].geometry, donut, tolerance=0)
    assert back[0].color == "#ff8000" and back[2].color == "#00ff00"
    assert isinstance(back[1].geometry, LineString)
    with pytest.raises(FormatError, match="cannot hold a Point"):
        write_imagescope([AnnotationRecord(Point(1, 1), "x")])


def test_region_of_two_vertices_is_skipped_with_one_warning_and_the_rest_kept():
    xml = MONUSEG_LIKE.replace(
        '<Vertex X="21.5" Y="2"/><Vertex X="29" Y="2.25"/><Vertex X="25" Y="8"/>',
        '<Vertex X="21.5" Y="2"/><Vertex X="29" Y="2.25"/><Vertex X="21.5" Y="2"/>',
    )
    with pytest.warns(FormatWarning, match=r"1 free-form region\(s\) of fewer than 3 distinct"):
        recs = parse_imagescope(xml, source="two.xml")
    assert len(recs) == 1 and recs[0].geometry.area > 0


def test_every_real_monuseg_outline_file_reads():
    from tests.helpers import SHARED

    files = sorted((SHARED / "nuclei" / "monuseg-train").glob("*.xml"))
    assert len(files) == 13, f"the 13 MoNuSeg training files must be in {SHARED}"
    counts = {}
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FormatWarning)  # repaired self-intersections
            counts[path.stem] = len(read_imagescope(path))
    assert min(counts.values()) > 100, counts  # hundreds of nuclei per 1000 px tile
