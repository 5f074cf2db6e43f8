"""The request guard: token, media type and body size are checked before the body is read.

FastAPI reads and parses a request's whole body before it resolves the endpoint's dependencies,
so without this guard a client without a token could make a replica read tens of megabytes (a
``Transfer-Encoding: chunked`` body has no ``Content-Length`` to refuse it by). The guard is a
plain ASGI middleware in front of the routes that take a body:

1. no valid bearer token: 401, before one body byte is read (the role is checked afterwards by
   the endpoint, as for every endpoint);
2. a body declared as anything but JSON: 415 ``request.unsupported_media_type``;
3. a ``Content-Length`` over the limit: 413 at once; a chunked body is counted while it streams
   in and refused with 413 as soon as it passes the limit, the rest left unread.

Every refusal is answered through :func:`serve.errors.answer`, so it is counted in the error
metrics like any other error. Requests to routes without a body (or to no route: 404, or to a
route with another method: 405) pass untouched.
"""

from __future__ import annotations

from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.errors import ApiError, answer
from serve.security import authenticate, bearer_token

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: This replica's limit (module state: Serve freezes a copy of the app when it is decorated).
_settings: dict[str, int] = {}


def configure_guard(max_body_bytes: int) -> None:
    """Set the largest body this process's guard lets through (0: no limit)."""
    _settings["max_body_bytes"] = int(max_body_bytes)


def _takes_body(scope: Scope) -> bool:
    """Whether the request goes to a route of this method that reads a body."""
    if scope["method"] not in _BODY_METHODS:
        return False
    app = scope.get("app")
    routes = getattr(getattr(app, "router", None), "routes", ())
    return any(route.matches(scope)[0] is Match.FULL for route in routes)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _too_large(limit: int, got: str) -> ApiError:
    return ApiError(
        "request.too_large", f"The request body must be at most {limit} bytes. Got {got} instead."
    )


async def _check_headers(headers: Headers, limit: int) -> None:
    """Refuse from the headers alone: no token, a body that is not JSON, a declared oversize.

    Raises:
        ApiError: 401, 415 or 413.
    """
    await run_in_threadpool(authenticate, bearer_token(headers.get("authorization")))
    length = headers.get("content-length", "")
    has_body = "chunked" in headers.get("transfer-encoding", "").lower() or (
        length.isdigit() and int(length) > 0
    )
    content_type = headers.get("content-type")
    if has_body and content_type is not None and not _is_json(content_type):
        raise ApiError(
            "request.unsupported_media_type",
            f"The request body must be sent as application/json. Got {content_type[:80]!r} "
            "instead.",
        )
    if limit and length.isdigit() and int(length) > limit:
        raise _too_large(limit, f"{length} (Content-Length)")


class RequestGuard:
    """ASGI middleware: see the module docstring.

    Args:
        app: The application behind the guard.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check a request to a body-taking route, then pass it on (or answer the refusal)."""
        if scope["type"] != "http" or not _takes_body(scope):
            await self.app(scope, receive, send)
            return
        limit = _settings.get("max_body_bytes", 0)
        try:
            await _check_headers(Headers(scope=scope), limit)
        except ApiError as error:
            await answer(error)(scope, receive, send)
            return
        if limit:
            await self._streamed(scope, receive, send, limit)
        else:
            await self.app(scope, receive, send)

    async def _streamed(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Run the app, counting body bytes; past the limit answer 413 and stop reading."""
        received = 0
        refused = False

        async def counted() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    await answer(_too_large(limit, f"more ({received} bytes so far)"))(
                        scope, receive, send
                    )
                    # the app sees the client gone and stops; nothing more is read
                    return {"type": "http.disconnect"}
            return message

        async def unless_refused(message: Message) -> None:
            if not refused:  # the app's own answer to the cut body is not sent
                await send(message)

        try:
            await self.app(scope, counted, unless_refused)
        except Exception:
            if not refused:
                raise


__all__ = ["RequestGuard", "configure_guard"]
