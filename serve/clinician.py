"""The clinician app (:mod:`ui.server`) as a second application on the same Ray Serve instance.

``pathray serve --ui`` runs it beside the REST API, under :data:`UI_PREFIX` (``/ui``): sign-in,
the slide viewer, its DeepZoom tiles and overlays, and the Gradio app, all behind the app's own
session cookie (the API's bearer tokens do not open it, nor its cookie the API). The app builds
its URLs from the ASGI ``root_path`` Serve sets for the route prefix, so the same FastAPI app
runs at ``/`` under ``pathray ui`` and at ``/ui`` here.

The app is built on the replica (``__serve_build_asgi_app__``), never pickled: it holds a
catalog connection pool and the Gradio Blocks, which belong to the process that serves them.

Example:
    >>> start(app_builder(args), ui=clinician_app(catalog_url, cold_root))  # doctest: +SKIP
    >>> httpx.get("http://127.0.0.1:8000/ui/login")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

UI_APP_NAME = "pathray-ui"
UI_PREFIX = "/ui"


@serve.deployment(
    name="clinician-app",
    # page and tile requests are light and short: many at once, no CPU reserved
    max_ongoing_requests=64,
    ray_actor_options={"num_cpus": 0},
)
@serve.ingress()
class ClinicianApp:
    """One replica of the clinician app.

    Args:
        catalog_url: SQLAlchemy URL of the catalog (users, sessions, slides, annotations).
        cold_root: Root of the cold store holding run results.
        options: Keyword arguments of :func:`ui.server.create_app` (``secure_cookies``, ...).
    """

    def __init__(self, catalog_url: str, cold_root: str, options: dict[str, Any]) -> None:
        self._args = (catalog_url, cold_root, options)

    def __serve_build_asgi_app__(self) -> Any:
        from pathray.catalog import Catalog
        from pathray.results.store import ColdStore
        from ui.server import create_app

        catalog_url, cold_root, options = self._args
        return create_app(Catalog.open(catalog_url), ColdStore(cold_root), **options)


def clinician_app(catalog_url: str, cold_root: str, **options: Any) -> Application:
    """The clinician app as a Serve application (run it with :func:`serve.app.start`)."""
    return ClinicianApp.bind(catalog_url, cold_root, options)  # type: ignore[attr-defined]


__all__ = ["UI_APP_NAME", "UI_PREFIX", "ClinicianApp", "clinician_app"]
