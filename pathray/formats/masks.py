"""Instance-mask images to polygons, and polygons back to label images.

A label image holds one distinct positive integer per object (nucleus) and 0 for background,
typically a 16-bit PNG. :func:`read_instance_mask` outlines each label along pixel edges, so
``rasterize(read_instance_mask(img), img.shape)`` gives back ``img`` up to renumbering.

Conventions:

- holes are kept as interior rings;
- pixels that touch only at a corner are separate (4-connectivity), so a label whose pixels form
  several 4-connected parts becomes a MultiPolygon, largest part first (``parts="all"``, the
  default, exact); ``parts="largest"`` keeps only the largest part, which loses the other pixels;
- ``min_area`` (in pixels) drops smaller labels.

ImageJ ROI sets are read by :func:`pathray.formats.imagej.read_imagej_roiset`, re-exported here.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import shapely
from shapely.geometry import MultiPoint, MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

from pathray.errors import FormatError
from pathray.formats._trace import fill_polygon, trace_mask
from pathray.formats.base import (
    AnnotationRecord,
    FormatWarning,
    PathLikeStr,
    merge_polygons,
    polygonal_parts,
    read_input_bytes,
    source_name,
)
from pathray.formats.imagej import read_imagej_roiset

__all__ = [
    "load_label_image",
    "mask_to_geometry",
    "rasterize",
    "read_imagej_roiset",
    "read_instance_mask",
    "read_mask_folder",
]

Parts = Literal["all", "largest"]
_IMAGE_SUFFIXES = {".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg"}


def load_label_image(source: PathLikeStr | np.ndarray) -> np.ndarray:
    """Return a 2-D non-negative integer label image from a file or an array.

    Args:
        source: A PNG/TIFF/BMP file or a 2-D array (boolean or integer). A 3- or 4-channel image
            is accepted only when its colour channels are equal (a grey image saved as RGB).

    Raises:
        FormatError: Not decodable, not 2-D, negative or non-integer values.
    """
    if isinstance(source, np.ndarray):
        arr, name = source, "label image"
    else:
        name = source_name(source)
        data = read_input_bytes(source)
        if Path(source).suffix.lower() in (".tif", ".tiff"):
            import tifffile  # imported here: slow to import, needed only for TIFF labels

            try:
                arr = tifffile.imread(io.BytesIO(data))
            except Exception as exc:  # tifffile raises several types for corrupt files
                raise FormatError(f"{name}: cannot be decoded as a TIFF image ({exc}).") from exc
        else:
            import cv2

            decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            if decoded is None:
                raise FormatError(f"{name}: cannot be decoded as an image.")
            arr = decoded
    arr = np.squeeze(arr)
    if arr.size == 0:
        raise FormatError(f"{name}: the image holds no pixels.")
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        if not (
            np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])
        ):
            raise FormatError(
                f"{name}: a label image must have one channel. Got {arr.shape[-1]} channels "
                "with different values instead."
            )
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise FormatError(f"{name}: a label image must be 2-D. Got shape {arr.shape} instead.")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise FormatError(f"{name}: a label image must hold integers. Got {arr.dtype} values.")
        arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise FormatError(f"{name}: labels must be >= 0. Got {arr.min()} instead.")
    return arr


def mask_to_geometry(mask: np.ndarray, parts: Parts = "all") -> Polygon | MultiPolygon | None:
    """Outline the ``True`` pixels of a binary mask along pixel edges.

    Args:
        mask: A 2-D boolean array.
        parts: ``"all"`` returns every 4-connected part (a MultiPolygon when several);
            ``"largest"`` only the largest.

    Returns:
        The outline, or ``None`` when the mask is empty.

    Example:
        >>> import numpy as np
        >>> mask_to_geometry(np.array([[1, 1], [0, 1]], bool)).wkt
        'POLYGON ((0 0, 2 0, 2 2, 1 2, 1 1, 0 1, 0 0))'
    """
    polys = trace_mask(mask)
    if not polys:
        return None
    return polys[0] if parts == "largest" else merge_polygons(polys)


def read_instance_mask(
    source: PathLikeStr | np.ndarray,
    label: str | None = None,
    offset: tuple[float, float] = (0, 0),
    min_area: int = 1,
    parts: Parts = "all",
) -> list[AnnotationRecord]:
    """Turn a label image into one polygon record per instance.

    Args:
        source: The label image (file or array); 0 is background.
        label: The class label given to every record.
        offset: ``(x, y)`` added to every coordinate (the image's position on the slide).
        min_area: Instances with fewer pixels are skipped.
        parts: See :func:`mask_to_geometry`.

    Returns:
        Records in increasing label order; ``properties`` holds ``instance_id`` and ``area_px``.

    Example:
        >>> import numpy as np
        >>> img = np.zeros((8, 8), np.uint16); img[1:3, 1:4] = 7
        >>> rec = read_instance_mask(img, label="nucleus")[0]
        >>> rec.geometry.bounds, rec.properties["instance_id"]
        ((1.0, 1.0, 4.0, 3.0), 7)
    """
    from scipy import ndimage  # imported here: slow to import

    arr = load_label_image(source)
    ids: np.ndarray | None = None
    if arr.size and int(arr.max()) > max(65535, arr.size):  # sparse huge ids: renumber first
        ids, inverse = np.unique(arr, return_inverse=True)
        if ids[0] != 0:  # no background: keep index 0 free for it
            ids, inverse = np.concatenate([[0], ids]), inverse + 1
        arr = inverse.reshape(arr.shape)
    records: list[AnnotationRecord] = []
    for idx, sl in enumerate(ndimage.find_objects(arr), start=1):
        if sl is None:
            continue
        crop = arr[sl] == idx
        area = int(crop.sum())
        if area < min_area:
            continue
        geom = mask_to_geometry(crop, parts)
        if geom is None:  # pragma: no cover - find_objects only lists present labels
            continue
        dx, dy = sl[1].start + offset[0], sl[0].start + offset[1]
        geom = shapely.transform(geom, lambda xy, dx=dx, dy=dy: xy + np.array([dx, dy]))
        instance_id = idx if ids is None else int(ids[idx])
        props = {"instance_id": instance_id, "area_px": area}
        records.append(AnnotationRecord(geom, label, None, props))
    return records


def _natural_key(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def read_mask_folder(
    folder: PathLikeStr,
    label: str | None = None,
    offset: tuple[float, float] = (0, 0),
    min_area: int = 1,
    parts: Parts = "all",
) -> list[AnnotationRecord]:
    """Read a folder of binary masks, one object per file (the DSB 2018 ``masks/`` layout).

    Args:
        folder: The ``masks`` folder, or a sample folder that contains one.
        label: The class label given to every record.
        offset: ``(x, y)`` added to every coordinate.
        min_area: Masks with fewer pixels are skipped.
        parts: See :func:`mask_to_geometry`.

    Returns:
        One record per mask file, in natural file-name order; ``properties`` holds
        ``source_file`` and ``area_px``. Empty masks are skipped with a FormatWarning.

    Raises:
        FormatError: The folder does not exist or holds no image files.
    """
    root = Path(folder)
    if (root / "masks").is_dir():
        root = root / "masks"
    if not root.is_dir():
        raise FormatError(f"{source_name(folder)}: is not a folder.")
    files = sorted(
        (p for p in root.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES),
        key=lambda p: _natural_key(p.name),
    )
    if not files:
        raise FormatError(f"{source_name(folder)}: holds no mask images (.png, .tif).")
    records: list[AnnotationRecord] = []
    for path in files:
        mask = load_label_image(path) > 0
        area = int(mask.sum())
        if area == 0:
            warnings.warn(f"{path}: the mask is empty; skipped.", FormatWarning, stacklevel=2)
            continue
        if area < min_area:
            continue
        rows, cols = np.nonzero(mask)
        r0, c0 = int(rows.min()), int(cols.min())
        geom = mask_to_geometry(mask[r0 : rows.max() + 1, c0 : cols.max() + 1], parts)
        assert geom is not None
        dx, dy = c0 + offset[0], r0 + offset[1]
        geom = shapely.transform(geom, lambda xy, dx=dx, dy=dy: xy + np.array([dx, dy]))
        props = {"source_file": path.name, "area_px": area}
        records.append(AnnotationRecord(geom, label, None, props))
    return records


def rasterize(
    records: Iterable[AnnotationRecord | BaseGeometry],
    shape: tuple[int, int],
    offset: tuple[float, float] = (0, 0),
) -> np.ndarray:
    """Paint records into an ``int32`` label image, instance ``i`` (from 1) for the i-th record.

    A pixel belongs to a polygon when its centre lies inside it; later records overwrite earlier
    ones where they overlap. Points mark the pixel that contains them; lines have no area and
    paint nothing (their number is still used, so label ``i`` always means record ``i``).

    Args:
        records: Records (or bare shapely geometries).
        shape: ``(height, width)`` of the image.
        offset: ``(x, y)`` of the image's top-left corner in the records' coordinates.

    Returns:
        The label image, 0 where no record lies.

    Example:
        >>> from shapely.geometry import box
        >>> rasterize([box(1, 1, 3, 2)], (3, 4)).tolist()
        [[0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    """
    out = np.zeros(shape, dtype=np.int32)
    shift = np.array([offset[0], offset[1]], dtype=float)
    for i, rec in enumerate(records, start=1):
        geom = rec.geometry if isinstance(rec, AnnotationRecord) else rec
        if isinstance(geom, Point | MultiPoint):
            pts = shapely.get_coordinates(geom) - shift
            cols, rows = np.floor(pts[:, 0]).astype(int), np.floor(pts[:, 1]).astype(int)
            ok = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
            out[rows[ok], cols[ok]] = i
            continue
        rings = [
            np.asarray(ring.coords)[:-1] - shift
            for poly in polygonal_parts(geom)
            for ring in (poly.exterior, *poly.interiors)
        ]
        fill_polygon(out, rings, i)
    return out
