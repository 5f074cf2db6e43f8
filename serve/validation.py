"""Hard checks of an incoming tile: base64 -> image -> RGB array, each failure with its own code.

The checks run in order, cheapest first, and never decode more pixels than the limits allow: the
declared size is read from the header before any pixel is decoded, so a decompression bomb (a few
kilobytes declaring gigapixels) is refused without allocating its pixels.

Example:
    >>> import base64, io
    >>> from PIL import Image
    >>> buf = io.BytesIO()
    >>> Image.new("RGB", (64, 64), (200, 120, 180)).save(buf, "PNG")
    >>> decode_tile(base64.b64encode(buf.getvalue()).decode(), ImageLimits()).shape
    (64, 64, 3)
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from serve.errors import ApiError

#: Formats accepted for tiles (PIL format names).
FORMATS = ("PNG", "JPEG", "TIFF", "WEBP", "BMP")
_DATA_URL = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)
_RAW_BITS = re.compile(r";(\d+)")
_CHANNELS = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "RGB": 3, "RGBA": 4, "RGBa": 4}


class ImageLimits(BaseModel):
    """What a tile may be.

    Attributes:
        min_side: Smallest width or height in pixels (units smooth and segment at some scale).
        max_side: Largest width or height in pixels.
        bomb_factor: A header declaring more than ``bomb_factor * max_side**2`` pixels is a
            decompression bomb (refused undecoded) rather than merely too large.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    min_side: int = Field(32, ge=1)
    max_side: int = Field(2048, ge=16)
    bomb_factor: float = Field(4.0, ge=1.0)

    @property
    def max_base64_chars(self) -> int:
        """Longest accepted base64 text: an uncompressed RGB tile of the largest size, plus room."""
        raw = self.max_side * self.max_side * 3 + 64 * 1024
        return (raw * 4) // 3 + 4


def decode_base64(text: str) -> bytes:
    """Strict base64 (standard or URL-safe alphabet, an optional data-URL prefix) to bytes.

    Raises:
        ApiError: ``image.empty`` or ``image.not_base64``.
    """
    text = _DATA_URL.sub("", text.strip(), count=1)
    if not text:
        raise ApiError("image.empty", "Field 'image' must hold a base64 image. Got '' instead.")
    compact = "".join(text.split())
    if "-" in compact or "_" in compact:
        compact = compact.replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4) if not compact.endswith("=") else ""
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        shown = text[:24] + ("..." if len(text) > 24 else "")
        raise ApiError(
            "image.not_base64", f"Field 'image' must be base64 text. Got {shown!r} instead."
        ) from None
    if not data:
        raise ApiError("image.empty", "Field 'image' must hold a base64 image. Got 0 bytes.")
    return data


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    """Open the image lazily and check format, size and bomb before decoding pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _bomb(None, limits) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        head = data[:8].hex()
        raise ApiError(
            "image.not_an_image",
            f"Field 'image' must be a PNG, JPEG, TIFF, WebP or BMP image. Got {len(data)} bytes "
            f"starting 0x{head} instead.",
        ) from None
    if image.format not in FORMATS:
        raise ApiError(
            "image.unsupported_format",
            f"Image format must be one of {', '.join(FORMATS)}. Got {image.format} instead.",
        )
    width, height = image.size
    if width * height > limits.bomb_factor * limits.max_side**2:
        raise _bomb((width, height), limits)
    if width > limits.max_side or height > limits.max_side:
        raise ApiError(
            "image.too_large",
            f"Image sides must be at most {limits.max_side} px. Got {width} x {height} instead.",
        )
    if width < limits.min_side or height < limits.min_side:
        raise ApiError(
            "image.too_small",
            f"Image sides must be at least {limits.min_side} px. Got {width} x {height} instead.",
        )
    return image


def _bomb(size: tuple[int, int] | None, limits: ImageLimits) -> ApiError:
    declared = f"{size[0]} x {size[1]} px" if size else "more pixels than PIL allows"
    return ApiError(
        "image.decompression_bomb",
        f"Image must decode to at most {limits.max_side} x {limits.max_side} px. Its header "
        f"declares {declared}: refused without decoding (decompression bomb).",
    )


def _channels(image: Image.Image) -> int:
    return _CHANNELS.get(image.mode, len(image.getbands()))


def bits_per_channel(image: Image.Image) -> int:
    """Bits per channel the file stores (PIL opens a 16-bit RGB PNG or TIFF as 8-bit ``RGB``).

    Read from the header (TIFF's ``BitsPerSample``) or from the decoder's raw mode
    (``RGB;16B``), before any pixel is decoded.
    """
    tags = getattr(image, "tag_v2", None)
    if tags is not None and 258 in tags:  # TIFF BitsPerSample
        bits = tags[258]
        return int(max(bits) if isinstance(bits, tuple | list) else bits)
    for tile in getattr(image, "tile", None) or ():
        args = tile.args if hasattr(tile, "args") else tile[3]
        rawmode = args if isinstance(args, str) else (args[0] if args else "")
        match = _RAW_BITS.search(str(rawmode))
        if match:
            return int(match.group(1))
    return 8


def decode_tile(text: str, limits: ImageLimits) -> np.ndarray:
    """Decode a base64 tile into an ``(H, W, 3)`` uint8 RGB array.

    A palette image is expanded to RGB (its colours are RGB); any other mode than RGB is refused
    (grey, grey + alpha, RGBA, CMYK: ``image.channels``), and so is an RGB file with more than
    8 bits per channel (``image.bit_depth``; PIL would silently keep the top 8 bits): the units
    read colour and stain, and a silent conversion would hide a wrong export.

    Args:
        text: The image file's bytes as base64 (a ``data:image/...;base64,`` prefix is allowed).
        limits: Size limits.

    Returns:
        The pixels.

    Raises:
        ApiError: With the code of the first check that fails.
    """
    if len(text) > limits.max_base64_chars:
        raise ApiError(
            "image.too_large",
            f"Field 'image' must be at most {limits.max_base64_chars} base64 characters. "
            f"Got {len(text)} instead.",
        )
    image = _open(decode_base64(text), limits)
    palette = image.mode == "P"
    if palette and "transparency" in image.info:
        raise ApiError(
            "image.channels",
            "Image must have 3 channels (RGB, 8 bits). Got a palette image with transparency "
            "(4 channels, RGBA) instead.",
        )
    if image.mode != "RGB" and not palette:
        raise ApiError(
            "image.channels",
            f"Image must have 3 channels (RGB, 8 bits). Got {_channels(image)} "
            f"({image.mode}) instead.",
        )
    bits = bits_per_channel(image)
    if bits != 8:
        raise ApiError(
            "image.bit_depth",
            f"Image must have 8 bits per channel. Got {bits} bits per channel ({image.format}) "
            "instead: convert it to 8-bit RGB before sending it.",
        )
    try:
        image.load()
        if palette:  # a palette holds RGB colours: expand it
            image = image.convert("RGB")
        pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ApiError(
            "image.truncated",
            f"Image must be a complete {image.format} file. Decoding stopped: {exc}.",
        ) from None
    except (Image.DecompressionBombError, MemoryError):
        raise _bomb(image.size, limits) from None
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ApiError(
            "image.channels",
            f"Image must have 3 channels (RGB). Got an array of shape {pixels.shape} instead.",
        )
    return np.ascontiguousarray(pixels)


#: A tile whose every channel varies by less than this (standard deviation, grey levels) is blank.
BLANK_STD = 2.0
#: A tile with less tissue than this (share of pixels, :func:`serve.monitoring.tile_features`)
#: has no tissue to speak of.
MIN_TISSUE = 0.05


def tile_warnings(image: np.ndarray, tissue_fraction: float) -> list[str]:
    """Soft checks of an accepted tile: what makes its result suspect, as ``"code: message"``.

    A uniform tile (solid black, white, any single colour: every channel's standard deviation
    under :data:`BLANK_STD`) is ``image.blank``: a pipeline may still "find" objects on it
    (thresholds relative to the tile), which are noise. A tile with under :data:`MIN_TISSUE`
    tissue is ``image.no_tissue``. Black counts as tissue by optical density, which is why
    uniformity is checked separately. The codes are :data:`serve.errors.WARNINGS`.

    Args:
        image: The decoded ``(H, W, 3)`` tile.
        tissue_fraction: Its share of tissue pixels.

    Returns:
        The warnings, empty for an ordinary tile.
    """
    std = np.asarray(image[::4, ::4], np.float32).reshape(-1, 3).std(axis=0)
    found = []
    if float(std.max()) < BLANK_STD:
        found.append(
            f"image.blank: every channel of the tile is uniform (standard deviation at most "
            f"{float(std.max()):.2f} grey levels); objects found on it are noise."
        )
    if tissue_fraction < MIN_TISSUE:
        found.append(
            f"image.no_tissue: {tissue_fraction:.1%} of the tile is tissue (under "
            f"{MIN_TISSUE:.0%}); its objects are unreliable."
        )
    return found


def encode_tile(pixels: np.ndarray, fmt: str = "PNG") -> str:
    """Encode an RGB array as base64 image text (clients, tests and benchmarks)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).save(buf, fmt)
    return base64.b64encode(buf.getvalue()).decode("ascii")


__all__ = [
    "FORMATS",
    "ImageLimits",
    "bits_per_channel",
    "decode_base64",
    "decode_tile",
    "encode_tile",
    "tile_warnings",
]
