"""Errors a user can act on.

Every error raised for bad input derives from :class:`PathRayError`; the CLI, the Serve API and
the app print its message without a traceback. Messages follow the form
"X must be Y. Got Z instead." where that reads naturally.
"""

from __future__ import annotations

from pathlib import Path


class PathRayError(Exception):
    """Base class of errors caused by input, configuration or state, not by a bug."""


class NotFoundError(PathRayError):
    """A named object (slide, image set, run, ...) does not exist."""


class ConflictError(PathRayError):
    """The object exists already, or the change conflicts with the stored state."""


class ProtectedError(PathRayError):
    """A protected image set (or its annotations) was asked to change."""


class ConfigError(PathRayError):
    """A configuration or specification is invalid."""


class ResourceError(PathRayError):
    """The cluster has too few free resources for the work asked of it."""


class StorageError(PathRayError):
    """The cold store (a folder or an object store) cannot be reached, read or written."""


class FormatError(PathRayError):
    """An annotation file cannot be parsed or written."""


class SlideError(PathRayError):
    """A slide file cannot be opened or read.

    Args:
        path: The offending file or folder.
        reason: Why it was rejected, in words a user understands.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ModelFileError(PathRayError):
    """A model file is missing, corrupt, in an unsafe format, or contradicts its model card."""


class CatalogUnavailableError(PathRayError):
    """The catalog database could not be reached (connection lost or refused) in time."""
