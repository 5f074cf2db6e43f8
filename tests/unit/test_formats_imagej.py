"""ImageJ ROI sets: hand-encoded ROIs of each type, and the real CryoNuSeg RoiSet.zip files."""

from __future__ import annotations

import json
import math
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import LineString, MultiPoint, Point, Polygon, box

from pathray.errors import FormatError
from pathray.formats import FormatWarning, rasterize, read_annotations, read_imagej_roiset

DATA = Path(
    os.environ.get(
        "PATHRAY_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"
    )
)
CRYO = DATA / "nuclei" / "cryonuseg-sample"
needs_data = pytest.mark.skipif(not CRYO.is_dir(), reason=f"no shared data at {CRYO}")

POLYGON, RECT, OVAL, LINE, FREELINE, POLYLINE, NOROI, FREEHAND, TRACED, ANGLE, POINT = range(11)


def encode_roi(
    kind: int,
    xs=(),
    ys=(),
    bounds=(0, 0, 0, 0),
    sub_pixel=False,
    floats=(0.0, 0.0, 0.0, 0.0),
    name: str | None = None,
    stroke: int = 0,
    shape_size: int = 0,
) -> bytes:
    """Encode one ROI the way ImageJ's RoiEncoder does (the fields PathRay reads)."""
    top, left, bottom, right = bounds
    n = len(xs)
    head = bytearray(64)
    head[0:4] = b"Iout"
    struct.pack_into(">HBxhhhhH", head, 4, 228, kind, top, left, bottom, right, n)
    struct.pack_into(">4f", head, 18, *floats)
    struct.pack_into(">ii", head, 36, shape_size, stroke)
    struct.pack_into(">H", head, 50, 128 if sub_pixel else 0)
    body = bytearray()
    if n:
        body += struct.pack(f">{n}h", *[int(x) - left if x == x else 0 for x in xs])
        body += struct.pack(f">{n}h", *[int(y) - top for y in ys])
        if sub_pixel:
            body += struct.pack(f">{n}f", *xs) + struct.pack(f">{n}f", *ys)
    blob = head + body
    if name is not None:
        header2 = len(blob)
        struct.pack_into(">i", blob, 60, header2)
        h2 = bytearray(64)
        struct.pack_into(">ii", h2, 16, header2 + 64, len(name))
        blob += h2 + name.encode("utf-16-be")
    return bytes(blob)


def write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in entries.items():
            zf.writestr(name, blob)
    return path


def test_each_roi_type_decodes(tmp_path):
    entries = {
        "poly.roi": encode_roi(
            POLYGON, [10, 20, 15], [5, 5, 12], (5, 10, 12, 20), stroke=-65536, name="cell 1"
        ),
        "traced.roi": encode_roi(TRACED, [0, 2, 2, 0], [0, 0, 2, 2], (0, 0, 2, 2)),
        "rect.roi": encode_roi(RECT, bounds=(3, 4, 7, 10)),
        "oval.roi": encode_roi(OVAL, bounds=(0, 0, 20, 40)),
        "line.roi": encode_roi(LINE, floats=(1.0, 2.0, 3.5, 4.5)),
        "polyline.roi": encode_roi(POLYLINE, [0, 5, 9], [0, 3, 0], (0, 0, 3, 9)),
        "points.roi": encode_roi(POINT, [1, 4], [2, 8], (2, 1, 8, 4)),
        "point.roi": encode_roi(POINT, [7], [9], (9, 7, 9, 7)),
        "sub.roi": encode_roi(
            FREEHAND, [1.25, 9.5, 5.0], [1.5, 2.0, 8.75], (1, 1, 8, 9), sub_pixel=True
        ),
    }
    recs = read_imagej_roiset(write_zip(tmp_path / "RoiSet.zip", entries), label="cell")
    by_name = {r.properties["name"]: r for r in recs}
    assert len(recs) == len(entries)
    poly = by_name["cell 1"]  # the name from the second header wins over the entry name
    assert poly.geometry.equals(Polygon([(10, 5), (20, 5), (15, 12)]))
    assert poly.color == "#ff0000" and poly.label == "cell"
    assert poly.properties["roi_type"] == "POLYGON"
    assert by_name["traced"].geometry.equals(box(0, 0, 2, 2))
    assert by_name["rect"].geometry.equals(box(4, 3, 10, 7))
    oval = by_name["oval"].geometry
    assert oval.bounds == pytest.approx((0, 0, 40, 20))  # bounds are (top, left, bottom, right)
    assert math.isclose(oval.area, math.pi * 10 * 20, rel_tol=0.01)
    assert by_name["line"].geometry.equals(LineString([(1, 2), (3.5, 4.5)]))
    assert isinstance(by_name["polyline"].geometry, LineString)
    assert by_name["points"].geometry.equals(MultiPoint([(1, 2), (4, 8)]))
    assert by_name["point"].geometry.equals(Point(7, 9))
    assert list(by_name["sub"].geometry.exterior.coords)[:3] == [(1.25, 1.5), (9.5, 2), (5, 8.75)]
    # a traced 2 x 2 outline covers exactly 4 pixels
    assert rasterize([by_name["traced"]], (4, 4)).sum() == 4


def test_single_roi_file_and_dispatch(tmp_path):
    path = tmp_path / "one.roi"
    path.write_bytes(encode_roi(TRACED, [0, 2, 2, 0], [0, 0, 2, 2], (0, 0, 2, 2)))
    (rec,) = read_annotations(path)
    assert rec.geometry.equals(box(0, 0, 2, 2)) and rec.properties["name"] == "one"


def test_unsupported_rois_are_skipped_with_a_warning(tmp_path):
    entries = {
        "shape.roi": encode_roi(RECT, bounds=(0, 0, 5, 5), shape_size=12),
        "none.roi": encode_roi(NOROI),
        "ok.roi": encode_roi(RECT, bounds=(0, 0, 5, 5)),
    }
    with pytest.warns(FormatWarning, match="skipped"):
        recs = read_imagej_roiset(write_zip(tmp_path / "r.zip", entries))
    assert [r.properties["name"] for r in recs] == ["ok"]


def test_malformed_roi_sets(tmp_path):
    bad_zip = tmp_path / "bad.zip"
    bad_zip.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(FormatError, match=r"bad.zip: is not a readable zip archive"):
        read_imagej_roiset(bad_zip)
    no_rois = write_zip(tmp_path / "empty.zip", {"readme.txt": b"hi"})
    with pytest.raises(FormatError, match=r"holds no .roi entries"):
        read_imagej_roiset(no_rois)
    not_roi = write_zip(tmp_path / "x.zip", {"a.roi": b"hello world" * 10})
    with pytest.raises(FormatError, match=r"entry 'a.roi': is not an ImageJ ROI"):
        read_imagej_roiset(not_roi)
    truncated = encode_roi(POLYGON, [10, 20, 15], [5, 5, 12], (5, 10, 12, 20))[:70]
    with pytest.raises(FormatError, match="must hold 3 coordinates"):
        read_imagej_roiset(write_zip(tmp_path / "t.zip", {"t.roi": truncated}))
    nan = encode_roi(FREEHAND, [1.0, float("nan"), 5.0], [1, 2, 8], (1, 1, 8, 9), sub_pixel=True)
    with pytest.raises(FormatError, match="non-finite coordinate"):
        read_imagej_roiset(write_zip(tmp_path / "n.zip", {"n.roi": nan}))
    two = encode_roi(POLYGON, [1, 5], [1, 5], (1, 1, 5, 5))
    with pytest.raises(FormatError, match="at least 3 points"):
        read_imagej_roiset(write_zip(tmp_path / "2.zip", {"2.roi": two}))


@needs_data
@pytest.mark.parametrize("case", ["TCGA-DE-A4MA", "TCGA-S4-A8RO"])
def test_real_roisets_give_the_listed_number_of_rois(case):
    stats = json.loads((CRYO / "stats.json").read_text())[f"{case}/"]
    with pytest.warns(FormatWarning, match="repaired"):  # hand-drawn outlines cross themselves
        recs = read_imagej_roiset(CRYO / case / "RoiSet.zip", label="nucleus")
    assert len(recs) == stats["n_rois"]
    assert {r.properties["roi_type"] for r in recs} == set(stats["roi_types"])
    assert all(r.geometry.is_valid and r.geometry.area > 0 for r in recs)
    height, width = stats["shape"][:2]
    painted = rasterize(recs, (height, width))
    assert len(np.unique(painted)) - 1 >= stats["n_labels"] - 1
