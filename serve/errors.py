"""Typed API errors: one stable code per failure, rendered as one JSON shape.

Every error the API answers has the body ``{"error": {"code": "...", "message": "..."}}``; the code
is stable (clients branch on it), the message is for people ("X must be Y. Got Z instead.").
:func:`install_handlers` maps FastAPI's request validation errors, PathRay's own errors and Ray
Serve's back-pressure onto that shape, so bad input never surfaces as a 5xx.

Example:
    >>> err = ApiError("image.not_base64", "Field image must be base64. Got 'x' instead.")
    >>> err.status, err.body()["error"]["code"]
    (422, 'image.not_base64')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pathray.errors import (
    ConflictError,
    NotFoundError,
    PathRayError,
    ProtectedError,
    SlideError,
)

#: HTTP status of each error code. Codes are part of the API: never rename one.
CODES: dict[str, int] = {
    # request shape
    "request.empty_body": 400,
    "request.invalid_json": 400,
    "request.missing_field": 422,
    "request.extra_field": 422,
    "request.invalid_field": 422,
    "request.too_large": 413,
    "request.not_found": 404,
    "request.method_not_allowed": 405,
    "request.unsupported_media_type": 415,
    # the tile image
    "image.empty": 422,
    "image.not_base64": 422,
    "image.not_an_image": 422,
    "image.unsupported_format": 415,
    "image.truncated": 422,
    "image.decompression_bomb": 413,
    "image.channels": 422,
    "image.bit_depth": 415,
    "image.too_small": 422,
    "image.too_large": 413,
    "image.resolution": 422,
    # pipelines, runs, slides
    "pipeline.unknown": 404,
    "pipeline.unknown_version": 404,
    "pipeline.invalid": 422,
    "pipeline.failed": 500,  # a unit raised on a valid tile: the service's fault, not the caller's
    "job.target": 422,
    "job.conflict": 409,
    "job.quota": 429,
    "job.rate_limited": 429,
    "slide.unreadable": 409,
    "not_found": 404,
    "conflict": 409,
    "protected": 409,
    "invalid": 422,
    # access
    "auth.missing_token": 401,
    "auth.invalid_token": 401,
    "auth.forbidden": 403,
    # load
    "overloaded": 503,
    "timeout": 504,
    "unavailable": 503,
    "internal": 500,
}

#: Warnings an answer may carry in its ``warnings`` list (``"<code>: <message>"``): the request
#: succeeded, but its result deserves a second look. Codes are part of the API too.
WARNINGS: dict[str, str] = {
    "image.blank": "The tile is uniform (no texture): whatever the pipeline found is noise.",
    "image.no_tissue": "Almost none of the tile is tissue: the pipeline's objects are unreliable.",
}


class ApiError(Exception):
    """An error answered to the client with its code's status.

    Args:
        code: A key of :data:`CODES`.
        message: What went wrong and what was expected.
        headers: Extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(self, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = CODES[code]
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body of the response."""
        return {"error": {"code": self.code, "message": self.message}}

    def response(self) -> JSONResponse:
        """The HTTP response."""
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_pathray(exc: PathRayError) -> ApiError:
    """The API error of a PathRay error (not found, conflict, invalid config...)."""
    from pathray.catalog.auth import AuthenticationError, PermissionDeniedError

    if isinstance(exc, AuthenticationError):
        return ApiError("auth.invalid_token", str(exc), {"WWW-Authenticate": "Bearer"})
    if isinstance(exc, PermissionDeniedError):
        return ApiError("auth.forbidden", str(exc))
    if isinstance(exc, NotFoundError):
        return ApiError("not_found", str(exc))
    if isinstance(exc, ProtectedError):
        return ApiError("protected", str(exc))
    if isinstance(exc, ConflictError):
        return ApiError("conflict", str(exc))
    if isinstance(exc, SlideError):
        return ApiError("slide.unreadable", str(exc))
    return ApiError("invalid", str(exc))


def _field(loc: tuple[Any, ...]) -> str:
    """``body.image`` -> ``image``; ``query.x0`` -> ``x0``."""
    parts = [str(p) for p in loc[1:]] if loc and loc[0] in ("body", "query", "path") else list(loc)
    return ".".join(str(p) for p in parts) or str(loc[0] if loc else "body")


def from_validation(exc: RequestValidationError) -> ApiError:
    """The API error of FastAPI's request validation error (its first problem decides)."""
    errors = list(exc.errors())
    if not errors:
        return ApiError("request.invalid_field", "The request is invalid.")
    first = errors[0]
    kind, loc = first.get("type", ""), tuple(first.get("loc", ()))
    if kind == "json_invalid":
        return ApiError("request.invalid_json", "The request body must be valid JSON.")
    if kind == "missing" and loc == ("body",):
        return ApiError(
            "request.empty_body", "The request body must be a JSON object. Got nothing instead."
        )
    if loc == ("body",) and kind in ("model_attributes_type", "dict_type"):
        given = first.get("input")
        if isinstance(given, bytes | str):  # sent without a JSON content type, or not JSON
            return ApiError(
                "request.invalid_json",
                "The request body must be a JSON object sent as application/json.",
            )
        shown = "null" if given is None else type(given).__name__
        return ApiError(
            "request.invalid_field", f"The request body must be a JSON object. Got {shown} instead."
        )
    if kind == "extra_forbidden":
        return ApiError(
            "request.extra_field",
            f"Field {_field(loc)!r} is not allowed. Remove it and send again.",
        )
    if kind == "missing":
        return ApiError("request.missing_field", f"Field {_field(loc)!r} is required.")
    given = first.get("input")
    shown = repr(given)[:60] if not isinstance(given, dict | list) else type(given).__name__
    return ApiError(
        "request.invalid_field",
        f"Field {_field(loc)!r}: {first.get('msg', 'invalid value')}. Got {shown} instead.",
    )


_STATUS_CODES = {404: "request.not_found", 405: "request.method_not_allowed"}


#: Called with the code of every error answered (the replica's metrics install one).
_counters: list[Callable[[str], None]] = []


def count_errors_with(counter: Callable[[str], None]) -> None:
    """Count every error answered in this process with ``counter(code)``."""
    _counters[:] = [counter]


def answer(error: ApiError) -> JSONResponse:
    """The error's response, counted by code (every error answered goes through here)."""
    for counter in _counters:
        counter(error.code)
    return error.response()


def install_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` in the JSON error shape."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return answer(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return answer(from_validation(exc))

    @app.exception_handler(PathRayError)
    async def _pathray(request: Request, exc: PathRayError) -> JSONResponse:
        return answer(from_pathray(exc))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        # a bug, not the client's fault: the same JSON shape, and no details leaked
        return answer(ApiError("internal", f"Internal error ({type(exc).__name__})."))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code)
        if code is None:
            body = {"error": {"code": f"http.{exc.status_code}", "message": str(exc.detail)}}
            return JSONResponse(body, status_code=exc.status_code)
        # keep Starlette's headers: a 405 carries the route's ``Allow``
        return answer(ApiError(code, str(exc.detail), dict(exc.headers or {})))


__all__ = [
    "CODES",
    "WARNINGS",
    "ApiError",
    "answer",
    "count_errors_with",
    "from_pathray",
    "from_validation",
    "install_handlers",
]
