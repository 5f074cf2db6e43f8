"""The clinician app's HTTP server: sign-in, the slide viewer and its data, the Gradio app.

One FastAPI application serves, behind one PathRay session cookie:

- ``/login`` and ``/logout`` (the only routes reachable without a session);
- ``/viewer?slide=ID``: the slide viewer page (OpenSeadragon + Annotorious);
- ``/vendor/<file>``: the few npm-installed files the viewer loads, by name from a fixed list
  (never a path from the request), and ``/static/<file>`` the viewer's own files, likewise;
- ``/api/...``: DeepZoom tiles, overlay layers, annotation CRUD, corrections and exports
  (:mod:`ui.api`);
- ``/app/``: the Gradio Blocks app (:mod:`ui.gradio_app`), mounted with
  :func:`gradio.mount_gradio_app`, its user taken from the same session.

Every request without a valid session is refused by one middleware before any route runs:
pages redirect to ``/login``, everything else answers 401.

Example:
    >>> app = create_app(Catalog.open(url), ColdStore(root))  # doctest: +SKIP
    >>> uvicorn.run(app, port=7860)  # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from pathray.catalog import Catalog
from pathray.errors import NotFoundError, PathRayError
from pathray.results.store import ColdStore
from ui import session
from ui.api import build_router
from ui.layers import slide_layers

UI = Path(__file__).parent
STATIC = UI / "static"
NODE = UI / "node_modules"
COOKIE = "pathray_session"
#: The npm files the viewer needs, by the name the page asks for (nothing else is served):
#: (npm package, path inside ``node_modules``).
VENDOR: dict[str, tuple[str, str]] = {
    "openseadragon.min.js": (
        "openseadragon",
        "openseadragon/build/openseadragon/openseadragon.min.js",
    ),
    "annotorious-openseadragon.js": (
        "@annotorious/openseadragon",
        "@annotorious/openseadragon/dist/annotorious-openseadragon.js",
    ),
    "annotorious-openseadragon.css": (
        "@annotorious/openseadragon",
        "@annotorious/openseadragon/dist/annotorious-openseadragon.css",
    ),
}
#: The command that installs them (also part of ``make demo``).
VENDOR_SETUP = "scripts/setup.sh ui"
OWN_STATIC = {"viewer.js", "viewer.css"}
# /logout is open: signing out without a session just lands on the sign-in page (behind the
# session check it would become the page to return to after signing in).
OPEN_PATHS = {"/login", "/logout", "/favicon.ico"}
#: Pages never returned to after signing in (the sign-in page itself, or signing out again).
NO_RETURN = ("/login", "/logout")


def _login_page(base: str, message: str = "", next_url: str = "/app/") -> str:
    note = f'<p class="err" data-testid="login-error">{html.escape(message)}</p>' if message else ""
    page = (STATIC / "login.html").read_text().replace("__BASE__", html.escape(base))
    return page.replace("__NOTE__", note).replace("__NEXT__", html.escape(next_url))


def notice_page(base: str, title: str, body_html: str, status_code: int) -> HTMLResponse:
    """A page that tells a person what went wrong and where to go (never raw JSON).

    Args:
        base: The app's mount prefix.
        title: The headline (plain text).
        body_html: The explanation, already escaped HTML.
        status_code: The HTTP status.
    """
    page = (STATIC / "notice.html").read_text().replace("__BASE__", html.escape(base))
    page = page.replace("__TITLE__", html.escape(title)).replace("__BODY__", body_html)
    return HTMLResponse(page, status_code=status_code)


def missing_vendor_packages(node_modules: Path) -> list[str]:
    """The npm packages the viewer needs that are not installed under ``node_modules``."""
    missing = {package for package, rel in VENDOR.values() if not (node_modules / rel).is_file()}
    return sorted(missing)


def _missing_vendor_html(packages: list[str], node_modules: Path) -> str:
    names = ", ".join(f"<code>{html.escape(p)}</code>" for p in packages)
    return (
        f'<p data-testid="missing-packages">The slide viewer cannot start: its JavaScript '
        f"packages {names} are not installed (looked in <code>{html.escape(str(node_modules))}"
        f"</code>).</p><p>Install them with <code data-testid='setup-command'>{VENDOR_SETUP}"
        "</code> (<code>make demo</code> runs it too), then reload this page.</p>"
    )


def _slide_param(catalog: Catalog, value: str) -> tuple[Any, str]:
    """The slide a ``?slide=`` value names (an id or a name), or None and why not.

    Returns:
        ``(slide, "")`` when found, else ``(None, message)`` for the person who asked.
    """
    try:
        return catalog.get_slide(int(value) if value.isdigit() else value), ""
    except NotFoundError:
        if value.isdigit():
            return None, f"No slide {value}. Open a slide from Browse."
        return None, (
            f"slide must be a slide id or name. Got {value!r} instead. Open a slide from Browse."
        )
    except PathRayError as exc:  # a name several slides share
        return None, str(exc)


def _base(request: Request) -> str:
    """The prefix the app is mounted under (``/ui`` in the Serve application, else empty).

    Every URL the app hands out starts with it, so the same app works at ``/`` under uvicorn
    and behind a route prefix in Ray Serve.
    """
    return str(request.scope.get("root_path", "")).rstrip("/")


def _app_path(request: Request) -> str:
    """The request path inside the app, without the mount prefix."""
    path, base = request.url.path, _base(request)
    return (path[len(base) :] or "/") if base and path.startswith(base) else path


def _safe_next(url: str) -> str:
    """Where to go after signing in: a same-site page, never the sign-in or sign-out page.

    A crafted ``?next=`` must not send a signed-in user elsewhere, and ``/logout`` as the
    target would sign the user out again at once.
    """
    if not url.startswith("/") or url.startswith("//"):
        return "/app/"
    path = url.split("?", 1)[0].rstrip("/")
    return "/app/" if path in NO_RETURN else url


def _view_box(text: str) -> list[float] | None:
    """``x0,y0,x1,y1`` of the ``view`` query parameter, or None when absent or malformed."""
    try:
        box = [float(v) for v in text.split(",")] if text else []
    except ValueError:
        return None
    return box if len(box) == 4 and box[0] < box[2] and box[1] < box[3] else None


def create_app(
    catalog: Catalog,
    store: ColdStore,
    *,
    secure_cookies: bool = False,
    with_gradio: bool = True,
    poll_ms: int = 5000,
    start_ray: bool = False,
    node_modules: Path = NODE,
) -> FastAPI:
    """Build the app.

    Args:
        catalog: The catalog (users, sessions, slides, annotations, runs).
        store: The cold store of run results.
        secure_cookies: Mark the session cookie Secure (behind HTTPS).
        with_gradio: Mount the Gradio app at ``/app`` (off for API-only tests).
        poll_ms: How often the viewer looks for new layers (finished runs), in ms.
        start_ray: Start Ray on a background thread now, so the first run starts at once.
        node_modules: Where the viewer's npm packages are installed (``ui/node_modules``).

    Returns:
        The FastAPI application (serve it with uvicorn, or mount it in Ray Serve).
    """
    app = FastAPI(title="PathRay app", docs_url=None, redoc_url=None, openapi_url=None)
    if start_ray:
        from ui.iterate_bridge import warm_up_ray

        warm_up_ray()
    app.state.catalog = catalog
    app.state.store = store

    @app.middleware("http")
    async def require_session(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = _app_path(request)
        if path in OPEN_PATHS:
            return await call_next(request)
        user = session.user_for(catalog, request.cookies.get(COOKIE))
        if user is None:
            accept = request.headers.get("accept", "")
            if request.method == "GET" and "text/html" in accept:
                target = path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(
                    f"{_base(request)}/login?next={quote(target)}", status_code=303
                )
            return JSONResponse({"detail": "Sign in first."}, status_code=401)
        request.state.user = user
        return await call_next(request)

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/app/") -> str:
        return _login_page(_base(request), next_url=_safe_next(next))

    @app.post("/login")
    def login(
        request: Request,
        username: str = Form(...),
        password: str = Form(...),
        next: str = Form("/app/"),
    ) -> Response:
        token = session.sign_in(catalog, username, password)
        if token is None:
            page = _login_page(_base(request), "Unknown user or wrong password.", _safe_next(next))
            return HTMLResponse(page, status_code=401)
        response = RedirectResponse(_base(request) + _safe_next(next), status_code=303)
        response.set_cookie(
            COOKIE, token, httponly=True, samesite="lax", secure=secure_cookies, path="/"
        )
        return response

    @app.post("/logout")
    @app.get("/logout")
    def logout(request: Request) -> Response:
        session.sign_out(catalog, request.cookies.get(COOKIE))
        response = RedirectResponse(f"{_base(request)}/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/")
    def root(request: Request) -> Response:
        return RedirectResponse(f"{_base(request)}/app/", status_code=303)

    @app.get("/vendor/{name}")
    def vendor(name: str) -> Response:
        entry = VENDOR.get(name)
        if entry is None:
            return JSONResponse({"detail": f"No vendor file {name!r}."}, status_code=404)
        path = node_modules / entry[1]
        if not path.is_file():
            detail = f"The viewer's npm package {entry[0]} is missing: run {VENDOR_SETUP}."
            return JSONResponse({"detail": detail}, status_code=503)
        return FileResponse(path, headers={"cache-control": "private, max-age=3600"})

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in OWN_STATIC:
            return JSONResponse({"detail": f"No static file {name!r}."}, status_code=404)
        return FileResponse(STATIC / name, headers={"cache-control": "no-cache"})

    @app.get("/viewer", response_class=HTMLResponse)
    def viewer_page(request: Request, slide: str = "", edit: str = "", view: str = "") -> Response:
        base = _base(request)
        record, why = _slide_param(catalog, slide.strip())
        if record is None:
            body = f'<p data-testid="notice-message">{html.escape(why)}</p>'
            code = 404 if slide.strip().isdigit() else 400
            return notice_page(base, "Slide not found", body, code)
        missing = missing_vendor_packages(node_modules)
        if missing:  # without OpenSeadragon the page would stay black: say why instead
            body = _missing_vendor_html(missing, node_modules)
            return notice_page(base, "The slide viewer is not installed", body, 503)
        user = request.state.user
        config = {
            "slideId": record.id,
            "user": user.name,
            "role": user.role,
            "edit": edit,
            "pollMs": poll_ms,
            "view": _view_box(view),
            "base": _base(request),
            # What the page's first requests need (ui/static/prefetch.js): no round trip.
            "width": record.width,
            "height": record.height,
            "layers": [layer.as_dict() for layer in slide_layers(catalog, record.id)],
        }
        # "</" must not appear inside the inline script: escape it in the JSON.
        page = (STATIC / "viewer.html").read_text()
        page = page.replace("__CONFIG__", json.dumps(config).replace("</", "<\\/"))
        page = page.replace("__TITLE__", html.escape(record.name))
        page = page.replace("__BASE__", html.escape(_base(request)))
        page = page.replace("__VIEWER_CSS__", (STATIC / "viewer.css").read_text())
        page = page.replace("__PREFETCH_JS__", (STATIC / "prefetch.js").read_text())
        return HTMLResponse(page)

    app.include_router(build_router(catalog, store))

    if with_gradio:
        import gradio as gr

        from ui.gradio_app import build_blocks

        def gradio_user(request: Request) -> str | None:
            user = session.user_for(catalog, request.cookies.get(COOKIE))
            return None if user is None else user.name

        blocks = build_blocks(catalog, store)
        app = gr.mount_gradio_app(app, blocks, path="/app", auth_dependency=gradio_user)
    return app


def serve(
    catalog_url: str | None,
    cold_root: str | Path,
    host: str = "127.0.0.1",
    port: int = 7860,
    **kwargs: Any,
) -> None:
    """Run the app with uvicorn until interrupted (``pathray ui``)."""
    import uvicorn

    app = create_app(Catalog.open(catalog_url), ColdStore(cold_root), **kwargs)
    uvicorn.run(app, host=host, port=port, log_level="warning")
