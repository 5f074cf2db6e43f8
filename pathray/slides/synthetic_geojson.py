"""Streaming GeoJSON (QuPath style) writers for the synthetic slides' ground truth.

Features are written one by one, so a slide with millions of nuclei never holds its ground
truth in memory. The output is a ``FeatureCollection`` whose features carry a deterministic
UUID ``id``, a ``Polygon`` geometry in level-0 pixel coordinates (pixel-corner convention, as
QuPath exports) and ``properties`` ``{"objectType": "annotation", "classification":
{"name": ..., "color": [r, g, b]}}``. Bytes depend only on the input: the same slide gives the
same file.

Example:
    >>> import io
    >>> out = io.StringIO()
    >>> with FeatureWriter(out) as writer:
    ...     writer.add([[[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 0.0]]], "tissue", (1, 2, 3), "a")
    >>> out.getvalue().startswith('{"type":"FeatureCollection","features":[')
    True
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import IO

import numpy as np
from numpy.typing import NDArray


def stable_uuid(key: str) -> str:
    """A UUID (version 4 layout) derived from ``key``: the same key, the same id.

    Example:
        >>> stable_uuid("a") == stable_uuid("a") != stable_uuid("b")
        True
    """
    digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest, version=4))


def ring_json(points: NDArray[np.float64] | Sequence[Sequence[float]], close: bool) -> str:
    """Format one ring as a JSON array of ``[x, y]`` pairs (closed if ``close``)."""
    pts = np.asarray(points, dtype=np.float64).tolist()
    if close and pts and pts[0] != pts[-1]:
        pts.append(pts[0])
    return "[" + ",".join(f"[{x!r},{y!r}]" for x, y in pts) + "]"


class FeatureWriter:
    """Write a GeoJSON FeatureCollection to a text stream, one feature at a time.

    Args:
        stream: An open text stream.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.count = 0
        stream.write('{"type":"FeatureCollection","features":[')

    def add(
        self,
        rings: Sequence[NDArray[np.float64] | Sequence[Sequence[float]]],
        name: str,
        color: tuple[int, int, int],
        key: str,
    ) -> None:
        """Append one polygon feature.

        Args:
            rings: Exterior ring first, then holes; each ``(n, 2)``, closed or not.
            name: Classification name.
            color: Classification colour ``(r, g, b)``.
            key: Seed of the feature's deterministic UUID.
        """
        coords = ",".join(ring_json(r, close=True) for r in rings)
        r, g, b = color
        self._stream.write(
            ("," if self.count else "")
            + '{"type":"Feature","id":"'
            + stable_uuid(key)
            + '","geometry":{"type":"Polygon","coordinates":['
            + coords
            + ']},"properties":{"objectType":"annotation","classification":{"name":"'
            + name
            + f'","color":[{r},{g},{b}]}}}}}}'
        )
        self.count += 1

    def close(self) -> None:
        """Finish the collection (the stream stays open)."""
        self._stream.write("]}\n")

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
