"""read_annotations / write_annotations dispatch, and the AnnotationRecord itself."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon, box

from pathray.errors import FormatError, PathRayError
from pathray.formats import (
    AnnotationRecord,
    detect_format,
    read_annotations,
    write_annotations,
    write_imagescope,
)

DONUT = Polygon([(0, 0), (10, 0), (10, 10), (0, 10)], [[(2, 2), (4, 2), (4, 4), (2, 4)]])
RECORDS = [
    AnnotationRecord(DONUT, "Tumor", "#ff0000"),
    AnnotationRecord(box(20, 20, 30, 25), "Stroma", "#00ff00"),
]


@pytest.mark.parametrize(
    ("name", "fmt", "expected"),
    [
        ("a.geojson", None, "geojson"),
        ("a.json", None, "geojson"),
        ("a.xml", None, "asap"),
        ("a.xml", "imagescope", "imagescope"),
        ("a.txt", "geojson", "geojson"),
    ],
)
def test_write_then_read_by_extension(tmp_path, name, fmt, expected):
    path = write_annotations(RECORDS, tmp_path / name, format=fmt)
    assert detect_format(path) == expected
    back = read_annotations(path)
    assert [r.label for r in back] == ["Tumor", "Stroma"]
    assert shapely.equals_exact(back[0].geometry, DONUT, tolerance=0)
    assert back[0].color == "#ff0000"


def test_xml_root_is_sniffed(tmp_path):
    scope = tmp_path / "scope.xml"
    scope.write_text(write_imagescope(RECORDS))
    assert detect_format(scope) == "imagescope"
    other = tmp_path / "other.xml"
    other.write_text("<?xml version='1.0'?>\n<svg><path/></svg>")
    with pytest.raises(FormatError, match=r"other.xml: the root element must be .* Got <svg>"):
        read_annotations(other)
    broken = tmp_path / "broken.xml"
    broken.write_text("this is not xml")
    with pytest.raises(FormatError, match=r"broken.xml: is not well-formed XML"):
        read_annotations(broken)


def test_masks_and_folders_dispatch(tmp_path):
    img = np.zeros((10, 10), np.uint16)
    img[1:4, 1:4] = 3
    cv2.imwrite(str(tmp_path / "labels.png"), img)
    (rec,) = read_annotations(tmp_path / "labels.png")
    assert rec.geometry.equals(box(1, 1, 4, 4))
    (tmp_path / "s" / "masks").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "s" / "masks" / "a.png"), (img > 0).astype(np.uint8) * 255)
    (rec,) = read_annotations(tmp_path / "s")
    assert rec.geometry.equals(box(1, 1, 4, 4))


def test_unknown_missing_and_empty_inputs(tmp_path):
    with pytest.raises(FormatError, match=r"nope.geojson: the file does not exist"):
        read_annotations(tmp_path / "nope.geojson")
    odd = tmp_path / "a.bin"
    odd.write_bytes(b"\x00\x01")
    with pytest.raises(FormatError, match="cannot tell the annotation format"):
        read_annotations(odd)
    with pytest.raises(FormatError, match="format must be one of"):
        read_annotations(odd, format="svg")  # type: ignore[arg-type]
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(FormatError, match=r"empty.json: the file is empty"):
        read_annotations(empty)
    with pytest.raises(FormatError, match="cannot tell the output format"):
        write_annotations(RECORDS, tmp_path / "out.svg")
    with pytest.raises(FormatError, match="format must be one of"):
        write_annotations(RECORDS, tmp_path / "out.svg", format="svg")  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="cannot be written"):
        write_annotations(RECORDS, tmp_path / "no" / "such" / "dir.geojson")


def test_json_without_extension_is_sniffed(tmp_path):
    path = tmp_path / "export"
    write_annotations(RECORDS, path, format="geojson")
    assert detect_format(path) == "geojson"


def test_annotation_record_validates_and_normalises():
    rec = AnnotationRecord(box(0, 0, 1, 1), "a", "#ABCDEF")
    assert rec.color == "#abcdef" and rec.properties == {}
    with pytest.raises(FormatError, match="colour must be a string '#rrggbb'"):
        AnnotationRecord(box(0, 0, 1, 1), "a", "red")
    with pytest.raises(FormatError, match="must be a shapely geometry"):
        AnnotationRecord([(0, 0)], "a")  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="label must be a string"):
        AnnotationRecord(box(0, 0, 1, 1), 3)  # type: ignore[arg-type]
    assert issubclass(FormatError, PathRayError)
    with pytest.raises(AttributeError):
        rec.label = "b"  # type: ignore[misc]
