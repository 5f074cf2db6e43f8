"""``pathray serve``: deploy the Ray Serve application (REST API, inference, viewer data).

The application lives in the top-level ``serve`` package, which depends on ``pathray`` and
``pipelines`` (never the reverse): it is imported only when the command runs. It runs on the local
Ray (started on demand, dashboard off, all on loopback) or on the cluster at ``--address`` /
``RAY_ADDRESS``; ``serve run serve.app:app_builder`` with the same arguments works too.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from pathray.errors import ConfigError, PathRayError


def serve_command(
    pipelines: Annotated[
        list[str] | None,
        typer.Option("--pipeline", "-p", help="Preset name or YAML file to serve (repeatable)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface the HTTP proxy listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS or local).")
    ] = None,
    batching: Annotated[bool, typer.Option(help="Batch concurrent tiles per unit call.")] = True,
    max_ongoing: Annotated[int, typer.Option(help="Requests in flight per pipeline replica.")] = 16,
    max_queued: Annotated[int, typer.Option(help="Requests queued per pipeline (then 503).")] = 64,
    replicas: Annotated[int, typer.Option(help="Replicas per pipeline and unit.")] = 1,
    timeout: Annotated[float, typer.Option(help="HTTP request timeout in seconds.")] = 60.0,
    reference: Annotated[
        str | None, typer.Option(help="Drift reference JSON (serve.monitoring.Reference).")
    ] = None,
    reference_set: Annotated[
        str | None,
        typer.Option(
            "--drift-reference-set",
            help="Build the drift reference from this image set's tissue tiles (saved under "
            "PATHRAY_HOME/drift/).",
        ),
    ] = None,
    args_json: Annotated[
        str | None, typer.Option("--args", help="Full ServeArgs as JSON (overrides the above).")
    ] = None,
    ui: Annotated[
        bool, typer.Option(help="Also serve the clinician app (viewer, Gradio) under /ui.")
    ] = False,
) -> None:
    """Serve tile inference, slide jobs, results and viewer data over HTTP (Ray Serve)."""
    try:
        if reference and reference_set:
            raise ConfigError(
                "At most one of --reference and --drift-reference-set must be given. Got both."
            )
        if reference_set:
            reference = str(_build_reference(reference_set, pipelines or ["tissue", "nuclei"]))
        _serve(pipelines, host, port, address, batching, max_ongoing, max_queued, replicas,
               timeout, reference, args_json, ui)  # fmt: skip
    except PathRayError as exc:  # a user mistake: one line, status 2 (as the rest of the CLI)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _build_reference(image_set: str, pipelines: list[str]) -> Path:
    """Build the drift reference of an image set at the first pipeline's resolution; its path."""
    from pathray.catalog import Catalog
    from pathray.config import Settings
    from serve.app import load_pipeline
    from serve.reference import reference_from_image_set

    settings = Settings.from_env()
    mpp = load_pipeline(pipelines[0]).tiling.mpp
    with Catalog.open(settings.catalog_url) as catalog:
        reference = reference_from_image_set(catalog, image_set, mpp=mpp)
    folder = settings.home / "drift"
    folder.mkdir(parents=True, exist_ok=True)
    path = reference.save(folder / f"{image_set}-{mpp:g}mpp.json")
    typer.echo(f"Drift reference: {reference.tiles} tiles of image set {image_set!r} -> {path}")
    return path


def _stop_on_signals(stop: threading.Event) -> None:
    """Make SIGTERM and SIGINT (Ctrl-C) set ``stop``.

    Called once Ray is up: its core worker installs a fatal-signal handler for SIGTERM that
    prints a stack trace and aborts the process ("Aborted", status 134), which replaced the
    default termination and skipped every shutdown.
    """
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())


def _serve(
    pipelines: list[str] | None,
    host: str,
    port: int,
    address: str | None,
    batching: bool,
    max_ongoing: int,
    max_queued: int,
    replicas: int,
    timeout: float,
    reference: str | None,
    args_json: str | None,
    ui: bool,
) -> None:
    from pydantic import ValidationError

    from serve.app import ServeArgs, app_builder, start  # lazy: the core never imports serve/

    try:
        if args_json:
            args = ServeArgs.model_validate(json.loads(args_json))
        else:
            entries = [
                {
                    "source": name,
                    "batching": batching,
                    "max_ongoing_requests": max_ongoing,
                    "max_queued_requests": max_queued,
                    "num_replicas": replicas,
                }
                for name in (pipelines or ["tissue", "nuclei"])
            ]
            args = ServeArgs.model_validate(
                {"pipelines": entries, "drift": {"reference": reference}}
            )
    except (ValidationError, json.JSONDecodeError) as exc:
        raise ConfigError(f"Serve arguments are invalid: {exc}") from None
    from pathray.engine.cluster import ensure_ray

    ensure_ray(address)  # first: the builder fits the units' CPUs to the cluster
    stop = threading.Event()
    _stop_on_signals(stop)  # a signal while the application starts stops it once started
    clinician = None
    if ui:
        from pathray.config import Settings
        from serve.clinician import clinician_app

        settings = Settings.from_env()
        clinician = clinician_app(
            args.catalog_url or settings.catalog_url, args.cold_root or str(settings.cold_root)
        )
    url = start(
        app_builder(args),
        host=host,
        port=port,
        request_timeout_s=timeout,
        address=address,
        ui=clinician,
    )
    typer.echo(f"PathRay API on {url}/ (OpenAPI: {url}/docs); Ctrl-C stops it")
    if ui:
        typer.echo(f"Clinician app on {url}/ui/ (sign in with a `pathray users` account)")
    while not stop.wait(3600):
        pass
    from ray import serve

    from pathray.engine import cluster

    typer.echo("Stopping: shutting Serve and Ray down")
    serve.shutdown()
    cluster.shutdown()  # and the local Ray's agents, which may outlive ray.shutdown
