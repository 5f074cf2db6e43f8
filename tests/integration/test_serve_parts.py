"""The Serve application's parts without Ray: tile checks, shared batching, output, drift.

The HTTP tests (:mod:`tests.integration.test_serve_api`) cover the same through Serve; these
pin the pieces down on their own, on real tiles, in seconds.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from pathray.engine.stages import UnitStage
from pipelines.presets import load_preset
from serve.errors import CODES, ApiError
from serve.inference import (
    object_columns,
    plan_nodes,
    run_in_process,
    run_shared,
    tile_batch,
    to_json,
)
from serve.monitoring import DriftMonitor, Reference, ServiceMetrics, build_reference, tile_features
from serve.validation import ImageLimits, decode_tile, encode_tile
from tests.helpers import SHARED

LIMITS = ImageLimits(min_side=32, max_side=512)


@pytest.fixture(scope="module")
def tiles() -> list[np.ndarray]:
    from pathray.slides.readers import open_reader

    reader = open_reader(str(SHARED / "OS-1-detail.ome.tif"))
    down = 0.5 / 0.227
    return [reader.read_region(x, y, 128, 128, downsample=down) for x, y in ((0, 0), (282, 282))]


def _code(text: str) -> str:
    with pytest.raises(ApiError) as info:
        decode_tile(text, LIMITS)
    assert info.value.status == CODES[info.value.code] and 400 <= info.value.status < 500
    return info.value.code


def _b64(image: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return base64.b64encode(buf.getvalue()).decode()


def test_a_good_tile_decodes_to_the_same_pixels(tiles: list[np.ndarray]) -> None:
    text = encode_tile(tiles[0])
    assert np.array_equal(decode_tile(text, LIMITS), tiles[0])
    assert np.array_equal(decode_tile(f"data:image/png;base64,{text}", LIMITS), tiles[0])
    urlsafe = text.replace("+", "-").replace("/", "_").rstrip("=")
    assert np.array_equal(decode_tile(urlsafe, LIMITS), tiles[0])
    palette = Image.fromarray(tiles[0]).convert("P")
    assert decode_tile(_b64(palette), LIMITS).shape == (128, 128, 3)


def test_each_bad_tile_has_its_own_code() -> None:
    assert _code("") == "image.empty"
    assert _code("%%%") == "image.not_base64"
    assert _code(base64.b64encode(b"GIF8 but not really").decode()) == "image.not_an_image"
    png = base64.b64decode(_b64(Image.new("RGB", (64, 64), (200, 100, 150))))
    assert _code(base64.b64encode(png[:-30]).decode()) == "image.truncated"
    assert _code(_b64(Image.new("RGB", (64, 64)), "GIF")) == "image.unsupported_format"
    assert _code(_b64(Image.new("L", (64, 64)))) == "image.channels"
    assert _code(_b64(Image.new("CMYK", (64, 64)), "JPEG")) == "image.channels"
    assert _code(_b64(Image.new("RGB", (16, 64)))) == "image.too_small"
    assert _code(_b64(Image.new("RGB", (600, 64)))) == "image.too_large"
    # a few kilobytes declaring 9 times the largest tile: refused before decoding
    bomb = _b64(Image.new("RGB", (1536, 1536)))
    assert len(bomb) < 40_000 and _code(bomb) == "image.decompression_bomb"
    assert _code("A" * (LIMITS.max_base64_chars + 4)) == "image.too_large"


def test_shared_batching_gives_each_request_its_own_rows(tiles: list[np.ndarray]) -> None:
    """Requests batched into one call get exactly what separate calls give them."""
    plans = plan_nodes(load_preset("nuclei_classical"))
    stages = [UnitStage(**p.stage_kwargs()) for p in plans]
    requests = [tile_batch([tiles[0]]), tile_batch([tiles[1]]), tile_batch(tiles)]
    alone = [to_json(run_in_process(stages, dict(b)), object_columns(plans)) for b in requests]
    shared = [dict(b) for b in requests]
    for stage in stages:
        shared = run_shared(stage, shared)
    together = [to_json(b, object_columns(plans)) for b in shared]
    assert together == alone
    assert alone[0]["labels"]["nucleus"] > 5 and alone[2]["tiles"][1]["tile"] == 1
    first = alone[0]["objects"][0]
    assert first["geometry"]["type"] == "Polygon" and "area_um2" in first["properties"]
    assert "nucleus_count" in alone[0]["tiles"][0] and "area_um2" not in alone[0]["tiles"][0]


def test_drift_warns_only_past_the_threshold(tiles: list[np.ndarray]) -> None:
    reference = build_reference(tiles * 3, [{"objects": [1] * 10, "labels": {"nucleus": 10}}] * 6)
    again = Reference.model_validate_json(reference.model_dump_json())
    assert again == reference and reference.tiles == 6
    monitor = DriftMonitor(reference, window=4, threshold=2.0, min_tiles=2)
    for tile in tiles:
        monitor.observe_tile(tile_features(tile))
        monitor.observe_prediction(10, {"nucleus": 10})
    assert not monitor.report()["warning"], monitor.report()
    grey = np.full((128, 128, 3), 235, np.uint8)  # glass: no stain at all
    for _ in range(4):
        monitor.observe_tile(tile_features(grey))
        monitor.observe_prediction(0, {})
    report = monitor.report()
    assert report["warning"] and "input hematoxylin" in report["warnings"]
    assert "prediction objects_per_tile" in report["warnings"]
    text = ServiceMetrics(monitor).render().decode()
    assert "pathray_drift_warning 1.0" in text
    assert 'pathray_drift_score{kind="inputs",name="hematoxylin"}' in text


def test_sixteen_bit_rgb_is_refused_and_blank_tiles_warned(tiles: list[np.ndarray]) -> None:
    """Issue 23 item 5: PIL opens a 16-bit RGB PNG or TIFF as 8-bit RGB; refuse it instead."""
    import cv2
    import tifffile

    from serve.validation import bits_per_channel, tile_warnings

    rgb16 = tiles[0].astype(np.uint16) * 257
    png16 = cv2.imencode(".png", np.ascontiguousarray(rgb16[..., ::-1]))[1].tobytes()
    tiff16 = io.BytesIO()
    tifffile.imwrite(tiff16, rgb16, photometric="rgb")
    for data in (png16, tiff16.getvalue()):
        assert bits_per_channel(Image.open(io.BytesIO(data))) == 16
        assert _code(base64.b64encode(data).decode()) == "image.bit_depth"
    for fmt in ("PNG", "TIFF", "JPEG", "WEBP", "BMP"):  # 8-bit files of every format pass
        assert decode_tile(_b64(Image.fromarray(tiles[0]), fmt), LIMITS).shape == (128, 128, 3)
    black = np.zeros((64, 64, 3), np.uint8)
    white = np.full((64, 64, 3), 240, np.uint8)
    assert [w.split(":")[0] for w in tile_warnings(black, 1.0)] == ["image.blank"]
    assert [w.split(":")[0] for w in tile_warnings(white, 0.0)] == [
        "image.blank",
        "image.no_tissue",
    ]
    fraction = tile_features(tiles[1])["tissue_fraction"]
    assert fraction > 0.5 and tile_warnings(tiles[1], fraction) == []
    from serve.errors import WARNINGS

    assert {w.split(":")[0] for w in tile_warnings(white, 0.0)} == set(WARNINGS)
