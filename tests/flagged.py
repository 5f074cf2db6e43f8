"""A unit that breaks and recovers at a test's command (the service's health tests).

:class:`FlaggedBlobs` is the dark-blobs unit failing on every tile while the file its config
names in ``flag`` exists. It lives in an importable module, so Serve replicas rebuild it from its
``module:class`` path; :func:`register` makes pipelines able to name it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from pathray.units.base import Batch
from pathray.units.examples import DarkBlobs, DarkBlobsConfig
from pathray.units.registry import register


class FlaggedConfig(DarkBlobsConfig):
    """:class:`DarkBlobsConfig` and the file whose existence makes the unit fail."""

    flag: str = Field("", description="While this file exists, every call fails.")


class FlaggedBlobs(DarkBlobs):
    """Dark blobs, or a ``RuntimeError`` while the ``flag`` file exists."""

    name = "flagged_blobs"
    Config = FlaggedConfig

    def __call__(self, batch: Batch) -> Batch:
        """Fail while flagged, else find the dark blobs."""
        if self.config.flag and Path(self.config.flag).exists():
            raise RuntimeError(f"flagged to fail ({self.config.flag} exists)")
        return super().__call__(batch)


register(FlaggedBlobs)
