"""Instance masks to polygons and back, on synthetic and real nucleus data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

from pathray.errors import FormatError
from pathray.formats import (
    AnnotationRecord,
    FormatWarning,
    load_label_image,
    mask_to_geometry,
    rasterize,
    read_instance_mask,
    read_mask_folder,
)

DATA = Path(
    os.environ.get(
        "PATHRAY_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"
    )
)
NUCLEI = DATA / "nuclei"
needs_data = pytest.mark.skipif(not NUCLEI.is_dir(), reason=f"no shared data at {NUCLEI}")


def per_instance_iou(labels: np.ndarray, records: list[AnnotationRecord]) -> np.ndarray:
    """IoU between each record (rasterised) and the label it was read from."""
    back = rasterize(records, labels.shape)
    ids = np.array([r.properties["instance_id"] for r in records])
    lut = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    lut[ids] = np.arange(1, len(ids) + 1)
    mapped = lut[labels]  # label image renumbered like the records
    n = len(records) + 1
    joint = np.bincount((mapped * n + back).ravel(), minlength=n * n).reshape(n, n)
    inter = np.diag(joint)[1:]
    union = joint.sum(axis=1)[1:] + joint.sum(axis=0)[1:] - inter
    return inter / union


def synthetic_labels() -> np.ndarray:
    img = np.zeros((40, 50), np.uint16)
    img[2:12, 2:12] = 1
    img[5:8, 5:8] = 0  # a hole
    img[20:25, 3:8] = 2
    img[30:33, 30:40] = 2  # instance 2 in two parts
    img[15:17, 20:22] = 5  # label 3 and 4 absent
    img[25, 25] = 9  # one pixel
    img[26, 26] = 9  # touching only at a corner: a separate 4-connected part
    return img


def test_synthetic_instances_holes_and_parts():
    img = synthetic_labels()
    recs = read_instance_mask(img, label="nucleus")
    assert [r.properties["instance_id"] for r in recs] == [1, 2, 5, 9]
    assert all(r.label == "nucleus" and r.geometry.is_valid for r in recs)
    donut, split, small, diagonal = (r.geometry for r in recs)
    assert isinstance(donut, Polygon) and len(donut.interiors) == 1
    assert donut.area == 100 - 9
    assert isinstance(split, MultiPolygon) and len(split.geoms) == 2
    assert split.geoms[0].area == 30  # largest part first
    assert small.equals(box(20, 15, 22, 17))
    assert isinstance(diagonal, MultiPolygon) and diagonal.area == 2
    assert np.all(per_instance_iou(img, recs) == 1.0)
    back = rasterize(recs, img.shape)
    assert np.array_equal(back > 0, img > 0)


def test_parts_largest_min_area_and_offset():
    img = synthetic_labels()
    largest = read_instance_mask(img, parts="largest")
    assert isinstance(largest[1].geometry, Polygon) and largest[1].geometry.area == 30
    big = read_instance_mask(img, min_area=10)
    assert [r.properties["instance_id"] for r in big] == [1, 2]
    moved = read_instance_mask(img, offset=(1000, 2000))
    assert moved[2].geometry.equals(box(1020, 2015, 1022, 2017))
    back = rasterize(moved, img.shape, offset=(1000, 2000))
    assert np.array_equal(back > 0, img > 0)


def test_huge_sparse_label_ids_are_kept():
    img = synthetic_labels().astype(np.int64) * 1_000_000_007
    recs = read_instance_mask(img)
    assert [r.properties["instance_id"] for r in recs] == [k * 1_000_000_007 for k in (1, 2, 5, 9)]
    assert recs[2].geometry.equals(box(20, 15, 22, 17))
    full = read_instance_mask(np.full((3, 4), 10**9))  # no background at all
    assert full[0].geometry.equals(box(0, 0, 4, 3))


def test_mask_to_geometry_traces_pixel_edges():
    assert mask_to_geometry(np.zeros((3, 3), bool)) is None
    ring = np.ones((5, 5), bool)
    ring[1:4, 1:4] = False
    ring[2, 2] = True  # an island inside the hole
    geom = mask_to_geometry(ring)
    assert isinstance(geom, MultiPolygon) and geom.area == 17
    outer = max(geom.geoms, key=lambda p: p.area)
    assert len(outer.interiors) == 1
    rng = np.random.default_rng(7)
    for _ in range(60):  # exact inverse of rasterize on random masks
        m = rng.random((9, 11)) < 0.5
        g = mask_to_geometry(m)
        assert g is not None and g.is_valid
        assert np.array_equal(rasterize([g], m.shape) > 0, m)


def test_rasterize_points_lines_order_and_bare_geometries():
    recs = [
        AnnotationRecord(box(0, 0, 4, 4), "a"),
        AnnotationRecord(LineString([(0, 0), (3, 3)]), "line"),  # no area, number 2 unused
        AnnotationRecord(Point(1.5, 2.7), "p"),
        box(2, 2, 6, 6),  # later records paint over earlier ones
    ]
    out = rasterize(recs, (8, 8))
    assert out.dtype == np.int32
    assert out[2, 1] == 3
    assert out[3, 3] == 4 and out[0, 0] == 1 and out[7, 7] == 0
    assert 2 not in out
    # a polygon partly outside the image is clipped
    assert rasterize([box(-5, -5, 2, 2)], (4, 4)).sum() == 4


def test_load_label_image_rejects_bad_images(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, 0] = (1, 2, 3)
    with pytest.raises(FormatError, match="must have one channel"):
        load_label_image(rgb)
    with pytest.raises(FormatError, match="must hold integers"):
        load_label_image(np.full((3, 3), 0.5))
    with pytest.raises(FormatError, match="must be >= 0"):
        load_label_image(np.full((3, 3), -1))
    with pytest.raises(FormatError, match="must be 2-D"):
        load_label_image(np.zeros((2, 2, 2, 2)))
    grey = np.dstack([synthetic_labels().astype(np.uint8)] * 3)
    assert np.array_equal(load_label_image(grey), synthetic_labels())
    bad = tmp_path / "labels.png"
    bad.write_text("not a png")
    with pytest.raises(FormatError, match=r"labels.png: cannot be decoded as an image"):
        read_instance_mask(bad)
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(FormatError, match="the file is empty"):
        read_instance_mask(empty)
    badtif = tmp_path / "bad.tif"
    badtif.write_bytes(b"II*\x00garbage")
    with pytest.raises(FormatError, match=r"bad.tif: (cannot be decoded|the image holds no)"):
        read_instance_mask(badtif)


def test_16_bit_png_and_mask_folder_on_disk(tmp_path):
    img = synthetic_labels()
    cv2.imwrite(str(tmp_path / "inst.png"), img)
    recs = read_instance_mask(tmp_path / "inst.png")
    assert len(recs) == 4
    masks = tmp_path / "sample" / "masks"
    masks.mkdir(parents=True)
    for k in (1, 2, 5, 9):
        cv2.imwrite(str(masks / f"m_{k}.png"), ((img == k) * 255).astype(np.uint8))
    cv2.imwrite(str(masks / "m_10.png"), np.zeros((40, 50), np.uint8))
    with pytest.warns(FormatWarning, match=r"m_10.png: the mask is empty"):
        folder = read_mask_folder(tmp_path / "sample", label="nucleus")
    assert [r.properties["source_file"] for r in folder] == [
        "m_1.png",
        "m_2.png",
        "m_5.png",
        "m_9.png",
    ]
    for a, b in zip(recs, folder, strict=True):
        assert shapely.equals_exact(a.geometry, b.geometry, tolerance=0)
    (tmp_path / "sample" / "nothing").mkdir()
    with pytest.raises(FormatError, match="holds no mask images"):
        read_mask_folder(masks.parent.parent / "sample" / "nothing")
    with pytest.raises(FormatError, match="is not a folder"):
        read_mask_folder(tmp_path / "missing")


@needs_data
@pytest.mark.parametrize(
    "path",
    sorted((NUCLEI / "dsb2018-histology").glob("*/instance_masks_derived/*_inst.png"))
    + sorted((NUCLEI / "cryonuseg-sample").glob("*/instance_mask_derived.png")),
    ids=lambda p: p.parent.parent.name[:12] + "/" + p.name[:12],
)
def test_real_instance_masks_round_trip(path):
    labels = load_label_image(path)
    recs = read_instance_mask(path, label="nucleus")
    assert len(recs) == len(np.unique(labels)) - 1
    assert all(r.geometry.is_valid for r in recs)
    iou = per_instance_iou(labels, recs)
    assert iou.min() >= 0.95
    assert iou.mean() == 1.0  # tracing along pixel edges is exact


@needs_data
def test_real_instance_counts_match_stats():
    stats = json.loads((NUCLEI / "dsb2018-histology" / "stats.json").read_text())
    for sample, info in list(stats.items())[:4]:
        path = NUCLEI / "dsb2018-histology" / info["group"] / "instance_masks_derived"
        assert len(read_instance_mask(path / f"{sample}_inst.png")) == info["n_labels"]


@needs_data
@pytest.mark.parametrize("sample", ["17b9bf43", "259b3515"])
def test_dsb_mask_folder_equals_derived_label_image(sample):
    (folder,) = (NUCLEI / "dsb2018-histology" / "he").glob(f"{sample}*")
    from_folder = read_mask_folder(folder)
    derived = folder.parent / "instance_masks_derived" / f"{folder.name}_inst.png"
    from_labels = read_instance_mask(derived)
    assert len(from_folder) == len(list((folder / "masks").glob("*.png")))

    def key(r):
        return shapely.normalize(r.geometry).wkb

    assert sorted(map(key, from_folder)) == sorted(map(key, from_labels))
