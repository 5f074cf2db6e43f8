"""The FastAPI ingress: tile inference, slide jobs, results, viewer data, health and metrics.

One :class:`Ingress` replica answers HTTP; inference goes to the pipeline deployments through
their handles (bounded by their own ``max_ongoing_requests`` / ``max_queued_requests``: when they
are full the handle refuses at once and the client gets 503 with ``Retry-After``). Everything a
request can get wrong is checked here and answered with a typed 4xx error (:mod:`serve.errors`);
catalog and cold-store calls run in worker threads so the event loop keeps answering.
"""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.exceptions import BackPressureError

from pathray.catalog import Catalog
from pathray.pipeline.spec import PipelineSpec
from pathray.results.store import ColdStore
from serve.errors import ApiError, count_errors_with, install_handlers
from serve.guard import RequestGuard, configure_guard
from serve.inference import tile_batch, to_json
from serve.jobs import (
    SUBMIT_LOCK,
    JobLimits,
    check_cancel,
    check_limits,
    slide_image_set,
    visible_run,
)
from serve.monitoring import DriftMonitor, Reference, ServiceMetrics, tile_features
from serve.schemas import (
    NAME,
    RUN_ID,
    ErrorBody,
    Health,
    InferRequest,
    InferResponse,
    JobRequest,
    JobStatus,
    PipelineInfo,
)
from serve.search_api import configure as configure_search
from serve.search_api import router as search_router
from serve.security import (
    Inferrer,
    Monitor,
    Principal,
    Reader,
    Submitter,
    TokenAuth,
    install_auth,
)
from serve.validation import ImageLimits, decode_tile, tile_warnings

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 415, 422)
}
_JOB_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    429: {"model": ErrorBody, "description": "Past the client's job quota or rate."},
}
_INFER_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    503: {"model": ErrorBody, "description": "Overloaded: retry after Retry-After seconds."},
    504: {"model": ErrorBody, "description": "The pipeline did not answer in time."},
    500: {"model": ErrorBody, "description": "A unit of the pipeline failed on a valid tile."},
}
SlideId = Annotated[int, Path(ge=1, le=2**31 - 1)]
RunId = Annotated[str, Path(pattern=RUN_ID)]
Coord = Annotated[float, Query(ge=-1e9, le=1e9, allow_inf_nan=False)]

api = FastAPI(
    title="PathRay",
    version="1",
    description="Tile inference, slide jobs, results and viewer data for digital pathology. "
    "Errors answer {'error': {'code', 'message'}} with a stable code.",
)
install_handlers(api)
# added before _measure, so _measure (outermost) times and counts the guard's refusals too
api.add_middleware(RequestGuard)
api.include_router(search_router)


#: This replica's state, read by the middleware. Serve freezes a copy of ``api`` when the
#: deployment is defined, so ``api.state`` set in the replica would not reach the served app.
_runtime: dict[str, Any] = {}


def _configure(stats: ServiceMetrics, max_body_bytes: int) -> None:
    """Set this replica's state (a module function, so it reaches the module's own dict)."""
    _runtime.update(stats=stats)
    configure_guard(max_body_bytes)


@api.middleware("http")
async def _measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Any:
    """Time and count every answer (the guard's refusals included)."""
    metrics: ServiceMetrics | None = _runtime.get("stats")
    start = time.perf_counter()
    if metrics:
        metrics.inflight.inc()
    try:
        response = await call_next(request)
    finally:
        if metrics:
            metrics.inflight.dec()
    if metrics is not None:
        route = request.scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        metrics.observe(endpoint, request.method, response.status_code, time.perf_counter() - start)
    return response


@dataclass(frozen=True)
class Deployed:
    """A pipeline version served by this application."""

    spec: PipelineSpec
    handle: Any
    objects: frozenset[str]
    batching: bool


def _overloaded(exc: BaseException) -> bool:
    """Whether an error is Serve's back-pressure refusal (direct or from a chained call)."""
    return isinstance(exc, BackPressureError) or isinstance(
        getattr(exc, "cause", None), BackPressureError
    )


def _root_cause(exc: BaseException) -> BaseException:
    """The error a unit raised, out of the Ray task errors that carried it through the chain."""
    while isinstance(getattr(exc, "cause", None), BaseException):
        exc = exc.cause  # type: ignore[attr-defined]
    return exc


#: Consecutive failures on valid tiles after which a pipeline counts as unable to infer.
FAILURE_STREAK = 3
#: Shortest time between two probes of a failing pipeline by ``/health``.
PROBE_INTERVAL_S = 5.0


def _probe_tile() -> np.ndarray:
    """A valid 64 px tile of H&E-like noise (deterministic), for probing a failing pipeline."""
    rng = np.random.default_rng(0)
    return rng.integers((120, 60, 110), (230, 180, 220), (64, 64, 3)).astype(np.uint8)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


# Helpers are defined before the class: Serve pickles the class (and its app) when it is
# decorated, with the module globals that exist at that moment.
async def _result(response: Any) -> Any:
    return await response


def _version_key(version: str) -> tuple[int, ...] | tuple[float, str]:
    """Order versions numerically where they are numbers ("10" after "9")."""
    parts = version.split(".")
    if all(p.isdigit() for p in parts):
        return tuple(int(p) for p in parts)
    return (float("inf"), version)


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class Ingress:
    """The HTTP front of the application.

    Args:
        pipelines: ``{name: {version: {"handle", "spec", "objects", "batching"}}}``.
        settings: Serve settings: ``catalog_url``, ``cold_root``, ``limits``,
            ``inference_timeout_s``, ``retry_after_s``, ``max_body_bytes``, ``drift``,
            ``jobs`` (:class:`~serve.jobs.JobLimits`).
    """

    def __init__(self, pipelines: dict[str, dict[str, dict[str, Any]]], settings: dict[str, Any]):
        self.pipelines = {
            name: {
                version: Deployed(
                    PipelineSpec.model_validate(d["spec"]),
                    d["handle"],
                    frozenset(d["objects"]),
                    bool(d["batching"]),
                )
                for version, d in versions.items()
            }
            for name, versions in pipelines.items()
        }
        self.limits = ImageLimits.model_validate(settings.get("limits", {}))
        self.job_limits = JobLimits.model_validate(settings.get("jobs", {}))
        self.timeout_s = float(settings.get("inference_timeout_s", 30.0))
        self.retry_after = str(int(settings.get("retry_after_s", 1)))
        self.catalog = Catalog.open(settings["catalog_url"], migrate=False)
        self.store = ColdStore(settings["cold_root"])
        configure_search(self.catalog, settings["cold_root"], self.limits)
        drift = dict(settings.get("drift") or {})
        reference_path = drift.pop("reference", None)
        reference = Reference.load(reference_path) if reference_path else None
        self.drift = DriftMonitor(reference, **drift)
        self.stats = ServiceMetrics(self.drift)
        # per "name:version": failures on valid tiles in a row, and when /health last probed it
        self.streaks: dict[str, int] = {}
        self.probed: dict[str, float] = {}
        _configure(self.stats, int(settings.get("max_body_bytes", 0)))
        install_auth(TokenAuth(self.catalog.resolve_token))
        count_errors_with(lambda code: self.stats.errors.labels(code).inc())

    # -- service ------------------------------------------------------------------------------
    @api.get(
        "/health",
        tags=["service"],
        response_model=Health,
        responses={503: {"model": Health, "description": "A pipeline cannot infer."}},
    )
    async def health(self) -> JSONResponse:
        """Whether the service can answer (no token needed): 503 while a pipeline cannot infer.

        A pipeline fails :data:`FAILURE_STREAK` valid tiles in a row: it is reported failing
        until a call succeeds; while it is, each ``/health`` (at most every
        :data:`PROBE_INTERVAL_S`) probes it with a small tile, so a pipeline that recovers is
        seen to, with or without traffic.
        """
        failing = await self._failing()
        body = Health(
            status="unhealthy" if failing else "ok",
            pipelines=sorted(self.pipelines),
            failing=failing,
        )
        return JSONResponse(body.model_dump(), status_code=503 if failing else 200)

    async def _failing(self) -> list[str]:
        """The pipelines (``name:version``) that cannot infer, probed again when due."""
        failing = []
        for versions in self.pipelines.values():
            for deployed in versions.values():
                key = f"{deployed.spec.name}:{deployed.spec.version}"
                if self.streaks.get(key, 0) < FAILURE_STREAK:
                    continue
                now = time.monotonic()
                if now - self.probed.get(key, -PROBE_INTERVAL_S) >= PROBE_INTERVAL_S:
                    self.probed[key] = now
                    with contextlib.suppress(ApiError):  # a success resets the streak
                        await self._call(deployed, tile_batch([_probe_tile()]))
                if self.streaks.get(key, 0) >= FAILURE_STREAK:
                    failing.append(key)
        return sorted(failing)

    @api.get(
        "/metrics",
        tags=["service"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}, **_ERRORS},
    )
    def metrics(self, _: Monitor) -> Response:
        """Prometheus metrics: latency and throughput per endpoint, errors, drift."""
        return Response(self.stats.render(), media_type="text/plain; version=0.0.4")

    @api.get("/v1/monitoring", tags=["service"], responses=_ERRORS)
    def monitoring(self, _: Monitor) -> dict[str, Any]:
        """Latency and throughput per endpoint over the last minute, and the drift report."""
        return {"endpoints": self.stats.endpoints(), "drift": self.drift.report()}

    # -- inference ----------------------------------------------------------------------------
    @api.get("/v1/pipelines", tags=["inference"], responses=_ERRORS)
    def list_pipelines(self, _: Reader) -> list[PipelineInfo]:
        """The pipelines this service infers with."""
        return [
            PipelineInfo(
                name=name,
                version=version,
                description=d.spec.description,
                mpp=d.spec.tiling.mpp,
                units=[node.id for node in d.spec.units],
                batching=d.batching,
            )
            for name, versions in sorted(self.pipelines.items())
            for version, d in sorted(versions.items())
        ]

    def _deployed(self, name: str, version: str | None) -> Deployed:
        versions = self.pipelines.get(name)
        if versions is None:
            raise ApiError(
                "pipeline.unknown",
                f"Pipeline must be one of {sorted(self.pipelines)}. Got {name!r} instead.",
            )
        if version is None:
            return versions[max(versions, key=_version_key)]
        if version not in versions:
            raise ApiError(
                "pipeline.unknown_version",
                f"Pipeline {name!r} version must be one of {sorted(versions)}. "
                f"Got {version!r} instead.",
            )
        return versions[version]

    @api.post("/v1/infer", tags=["inference"], responses=_INFER_ERRORS)
    async def infer(self, _: Inferrer, body: InferRequest) -> InferResponse:
        """Run a deployed pipeline on one tile (base64 image in; objects and labels out)."""
        start = time.perf_counter()
        deployed = self._deployed(body.pipeline, body.version)
        image = await run_in_threadpool(decode_tile, body.image, self.limits)
        mpp = deployed.spec.tiling.mpp
        if body.mpp is not None and not 0.8 <= body.mpp / mpp <= 1.25:
            raise ApiError(
                "image.resolution",
                f"Tile resolution must be about {mpp} um/px for pipeline {body.pipeline!r}. "
                f"Got {body.mpp} instead.",
            )
        features = await run_in_threadpool(tile_features, image)
        self.drift.observe_tile(features)
        rows = await self._call(deployed, tile_batch([image]))
        result = to_json(rows, deployed.objects)
        self.drift.observe_prediction(len(result["objects"]), result["labels"])
        self.stats.tiles.labels(body.pipeline).inc()
        for label, n in result["labels"].items():
            self.stats.objects.labels(label).inc(n)
        tile = result["tiles"][0] if result["tiles"] else {}
        tile.pop("tile", None)
        return InferResponse(
            pipeline=deployed.spec.name,
            version=deployed.spec.version,
            width=int(image.shape[1]),
            height=int(image.shape[0]),
            tile=tile,
            objects=result["objects"],
            labels=result["labels"],
            drift_warning=bool(self.drift.report()["warning"]),
            warnings=tile_warnings(image, features["tissue_fraction"]),
            elapsed_ms=(time.perf_counter() - start) * 1000,
        )

    async def _call(self, deployed: Deployed, batch: dict[str, Any]) -> dict[str, Any]:
        """Call a pipeline deployment; back-pressure -> 503, no answer in time -> 504.

        A unit's failure on the tile (500) extends the pipeline's failure streak; an answer
        ends it.
        """
        key = f"{deployed.spec.name}:{deployed.spec.version}"
        response = deployed.handle.remote(batch)
        try:
            rows = await asyncio.wait_for(_result(response), self.timeout_s)
            self.streaks[key] = 0
            return rows
        except TimeoutError:
            response.cancel()
            raise ApiError(
                "timeout",
                f"Pipeline {deployed.spec.name!r} must answer within {self.timeout_s:g} s. "
                "It did not; try again later.",
                {"Retry-After": self.retry_after},
            ) from None
        except Exception as exc:
            if _overloaded(exc):
                raise ApiError(
                    "overloaded",
                    f"Pipeline {deployed.spec.name!r} is at capacity (its queue is full). "
                    f"Retry after {self.retry_after} s.",
                    {"Retry-After": self.retry_after},
                ) from None
            self.streaks[key] = self.streaks.get(key, 0) + 1
            cause = _root_cause(exc)
            # a unit failing on a tile that passed every input check is a server fault: say
            # which pipeline and what it raised, without the replicas' tracebacks
            raise ApiError(
                "pipeline.failed",
                f"Pipeline {deployed.spec.name!r} failed on this tile: "
                f"{type(cause).__name__}: {cause}",
            ) from None

    # -- slide jobs ---------------------------------------------------------------------------
    @api.post("/v1/jobs", tags=["jobs"], status_code=202, responses=_JOB_ERRORS)
    def submit_job(self, who: Submitter, body: JobRequest) -> JobStatus:
        """Run a pipeline over an image set or one slide in the background.

        The job belongs to the calling client; past its quota of active jobs or its rate of
        submissions, 429 with ``Retry-After``.
        """
        from pathray.engine.jobs import submit_run

        if (body.image_set is None) == (body.slide is None):
            raise ApiError(
                "job.target",
                "Exactly one of 'image_set' and 'slide' must be given. Got both or neither.",
            )
        spec = self._job_spec(body.pipeline, body.version)
        with SUBMIT_LOCK:
            check_limits(self.catalog, who, self.job_limits)
            image_set = body.image_set
            if body.slide is not None:
                slide = self.catalog.get_slide(body.slide)
                image_set = slide_image_set(self.catalog, slide, actor=who.name)
            assert image_set is not None
            run_id = submit_run(
                self.catalog, self.store, spec, image_set, requester=who.name, owner=who.name
            )
        return self._status(run_id)

    def _job_spec(self, name: str, version: str | None) -> PipelineSpec:
        """A deployed pipeline, else a preset of that name."""
        if name in self.pipelines:
            return self._deployed(name, version).spec
        from pipelines.presets import load_preset, preset_names

        if name not in preset_names():
            raise ApiError(
                "pipeline.unknown",
                f"Pipeline must be one of {sorted(set(self.pipelines) | set(preset_names()))}. "
                f"Got {name!r} instead.",
            )
        spec = load_preset(name)
        if version is not None and version != spec.version:
            raise ApiError(
                "pipeline.unknown_version",
                f"Pipeline {name!r} version must be {spec.version!r}. Got {version!r} instead.",
            )
        return spec

    def _status(self, run_id: str, who: Principal | None = None) -> JobStatus:
        """A run's status; with ``who``, only a run that client may see (else 404)."""
        run = visible_run(self.catalog, who, run_id) if who else self.catalog.get_run(run_id)
        progress = run.progress or {}
        total, done = progress.get("tiles_total"), progress.get("tiles_done")
        units = progress.get("units") or {}
        return JobStatus(
            run_id=run.id,
            pipeline=run.pipeline_name,
            pipeline_version=run.pipeline_version,
            image_set=run.image_set,
            requester=run.requester,
            status=run.status,
            tiles_total=total,
            tiles_done=done,
            fraction=(done / total) if total and done is not None else None,
            units={k: v for k, v in units.items() if isinstance(v, dict)},
            error=run.error,
            cancel_requested=run.cancel_requested_at is not None,
            created_at=str(_iso(run.created_at)),
            started_at=_iso(run.started_at),
            finished_at=_iso(run.finished_at),
        )

    @api.get("/v1/jobs/{run_id}", tags=["jobs"], responses=_ERRORS)
    def job_status(self, who: Reader, run_id: RunId) -> JobStatus:
        """A run's status and its progress per unit (404 for another client's run)."""
        return self._status(run_id, who)

    @api.post("/v1/jobs/{run_id}/cancel", tags=["jobs"], status_code=202, responses=_ERRORS)
    def cancel_job(self, who: Submitter, run_id: RunId) -> JobStatus:
        """Ask a run to stop, at once or within a second or two (a finished run gets 409)."""
        check_cancel(self.catalog, who, run_id)
        self.catalog.request_cancel(run_id, actor=who.name)
        return self._status(run_id)

    # -- results and viewer data --------------------------------------------------------------
    @api.get("/v1/runs/{run_id}/slides/{slide_id}/objects", tags=["results"], responses=_ERRORS)
    def run_objects(
        self,
        who: Reader,
        run_id: RunId,
        slide_id: SlideId,
        x0: Coord = 0.0,
        y0: Coord = 0.0,
        x1: Coord = 1e9,
        y1: Coord = 1e9,
        unit: Annotated[str | None, Query(pattern=NAME)] = None,
        label: Annotated[str | None, Query(max_length=100)] = None,
        max_features: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    ) -> Any:  # the collection as JSON text (overlay_json): FastAPI's encoder is far slower
        """A run's objects on a slide within a level-0 box, as a GeoJSON FeatureCollection."""
        from pathray.results.overlay import Layer, overlay_features, overlay_json

        visible_run(self.catalog, who, run_id)
        collection = overlay_features(
            self.catalog,
            self.store,
            slide_id,
            Layer.run(run_id, unit),
            (x0, y0, x1, y1),
            max_features=max_features,
            mode="polygons",
            label=label,
        )
        return Response(overlay_json(collection), media_type="application/json")

    @api.get("/v1/slides/{slide_id}/overlay", tags=["viewer"], responses=_ERRORS)
    def overlay(
        self,
        who: Reader,
        slide_id: SlideId,
        x0: Coord,
        y0: Coord,
        x1: Coord,
        y1: Coord,
        run: Annotated[str | None, Query(pattern=RUN_ID)] = None,
        annotations: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
        unit: Annotated[str | None, Query(pattern=NAME)] = None,
        downsample: Annotated[float, Query(gt=0, le=1e6, allow_inf_nan=False)] = 1.0,
        mode: Annotated[str, Query(pattern="^(auto|polygons|centroids)$")] = "auto",
        max_features: Annotated[int, Query(ge=1, le=100_000)] = 5000,
    ) -> Any:  # the collection as JSON text (overlay_json): FastAPI's encoder is far slower
        """Overlay data for the viewer: one layer (a run or an annotation set) in a window."""
        from pathray.results.overlay import overlay_features, overlay_json

        layer = self._layer(who, run, annotations, unit)
        collection = overlay_features(
            self.catalog,
            self.store,
            slide_id,
            layer,
            (x0, y0, x1, y1),
            downsample,
            max_features=max_features,
            mode=mode,  # type: ignore[arg-type]
        )
        return Response(overlay_json(collection), media_type="application/json")

    def _layer(
        self, who: Principal, run: str | None, annotations: str | None, unit: str | None
    ) -> Any:
        """The overlay layer asked for (a run only if ``who`` may see it)."""
        from pathray.results.overlay import Layer

        if (run is None) == (annotations is None):
            raise ApiError(
                "request.invalid_field",
                "Exactly one of 'run' and 'annotations' must be given. Got both or neither.",
            )
        if run is not None:
            visible_run(self.catalog, who, run)
        return Layer.run(run, unit) if run else Layer.annotations(str(annotations))

    @api.get(
        "/v1/slides/{slide_id}/overlay/{level}/{col}_{row}.png",
        tags=["viewer"],
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, **_ERRORS},
    )
    def overlay_tile(
        self,
        who: Reader,
        slide_id: SlideId,
        level: Annotated[int, Path(ge=0, le=40)],
        col: Annotated[int, Path(ge=0, le=10**7)],
        row: Annotated[int, Path(ge=0, le=10**7)],
        run: Annotated[str | None, Query(pattern=RUN_ID)] = None,
        annotations: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
        unit: Annotated[str | None, Query(pattern=NAME)] = None,
    ) -> Response:
        """A layer rendered into a transparent PNG aligned with one DeepZoom tile."""
        from pathray.results.overlay import overlay_tile

        layer = self._layer(who, run, annotations, unit)
        png = overlay_tile(self.catalog, self.store, slide_id, layer, level, col, row)
        return Response(png, media_type="image/png")

    @api.get(
        "/v1/slides/{slide_id}.dzi",
        tags=["viewer"],
        response_class=Response,
        responses={200: {"content": {"application/xml": {}}}, **_ERRORS},
    )
    def dzi(self, _: Reader, slide_id: SlideId) -> Response:
        """The slide's DeepZoom descriptor (tiles at ``<slide>_files/<level>/<col>_<row>``)."""
        from pathray.slides.deepzoom import deepzoom_for_slide

        return Response(
            deepzoom_for_slide(self.catalog, slide_id).dzi_xml(), media_type="application/xml"
        )

    @api.get(
        "/v1/slides/{slide_id}_files/{level}/{col}_{row}.jpeg",
        tags=["viewer"],
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, **_ERRORS},
    )
    def dzi_tile(
        self,
        _: Reader,
        slide_id: SlideId,
        level: Annotated[int, Path(ge=0, le=40)],
        col: Annotated[int, Path(ge=0, le=10**7)],
        row: Annotated[int, Path(ge=0, le=10**7)],
    ) -> Response:
        """One DeepZoom tile of the slide (JPEG)."""
        from pathray.slides.deepzoom import deepzoom_for_slide

        zoom = deepzoom_for_slide(self.catalog, slide_id)
        return Response(zoom.tile(level, col, row), media_type=zoom.media_type)


__all__ = ["Deployed", "Ingress", "api"]
