"""``pathray ui``: start the clinician app (Gradio, slide viewer) with uvicorn.

The app lives in the top-level ``ui`` package, which depends on ``pathray`` (never the reverse):
it is imported only when the command runs.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from pathray.config import Settings


def ui(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 7860,
    secure_cookies: Annotated[
        bool, typer.Option(help="Send the session cookie over HTTPS only (behind TLS).")
    ] = False,
    warm_ray: Annotated[
        bool, typer.Option(help="Start Ray at once, so the first run from the app starts fast.")
    ] = True,
    node_modules: Annotated[
        Path | None,
        typer.Option(
            envvar="PATHRAY_UI_NODE_MODULES",
            help="Where the viewer's npm packages are installed (default: ui/node_modules).",
        ),
    ] = None,
) -> None:
    """Start the clinician app: sign in, browse, view slides, annotate, correct, iterate."""
    from ui.server import NODE, serve  # lazy: the core never imports the app at module import

    settings = Settings.from_env()
    settings.home.mkdir(parents=True, exist_ok=True)
    typer.echo(
        f"PathRay app on http://{host}:{port}/ (catalog {settings.catalog_url}); Ctrl-C stops it"
    )
    # uvicorn stops on SIGINT or SIGTERM, then raises the signal again for the handler it found
    # (the CLI's, which makes it a KeyboardInterrupt): for a server that is its normal end.
    with contextlib.suppress(KeyboardInterrupt):
        serve(
            settings.catalog_url,
            settings.cold_root,
            host=host,
            port=port,
            secure_cookies=secure_cookies,
            start_ray=warm_ray,
            node_modules=node_modules or NODE,
        )
    typer.echo("Stopping: the app has stopped; shutting Ray down")
