"""The Serve application: a typed application builder and a starter.

:func:`app_builder` takes :class:`ServeArgs` (a pydantic model, so ``serve run
serve.app:app_builder pipelines='["nuclei"]'`` and a Serve config file validate their arguments
too) and returns the application: the FastAPI :class:`~serve.ingress.Ingress` bound to one
:class:`~serve.inference.PipelineDeployment` per pipeline, each bound to its
:class:`~serve.inference.UnitDeployment` s (shared across pipelines where unit, config and
artifacts agree).

:func:`start` runs it on the local Ray (started on demand, dashboard off, everything on
loopback) or on the cluster at ``RAY_ADDRESS``, with the HTTP options (host, port, request
timeout) of the proxy.

Example:
    >>> app = app_builder(ServeArgs(pipelines=["tissue"]))  # doctest: +SKIP
    >>> start(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application
from ray.serve.config import BackpressureConfig

from pathray.config import Settings
from pathray.engine.models import ResolvedModel
from pathray.pipeline.spec import PipelineSpec
from serve.inference import NodePlan, PipelineDeployment, UnitDeployment, object_columns, plan_nodes
from serve.ingress import Ingress
from serve.jobs import JobLimits
from serve.validation import ImageLimits

APP_NAME = "pathray"
#: Pipelines served when none are named.
DEFAULT_PIPELINES: tuple[PipelineArgs | str, ...] = ("tissue", "nuclei")


class PipelineArgs(BaseModel):
    """One pipeline to serve and its load limits.

    Attributes:
        source: A preset name (``nuclei``) or a pipeline YAML file.
        batching: Gather concurrent tiles into one unit call (``@serve.batch``).
        max_batch_size: Tiles per batched call (default: the smallest unit batch size, <= 16).
        batch_wait_timeout_s: How long a batch waits to fill.
        max_ongoing_requests: Requests one pipeline replica works on at once.
        max_queued_requests: Requests waiting for a replica; past it, 503 with Retry-After.
        num_replicas: Replicas of the pipeline and of each of its units.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    source: str
    batching: bool = True
    max_batch_size: int | None = Field(None, ge=1, le=256)
    batch_wait_timeout_s: float = Field(0.005, ge=0, le=1)
    max_ongoing_requests: int = Field(16, ge=1)
    max_queued_requests: int = Field(64, ge=-1)
    num_replicas: int = Field(1, ge=1)


class DriftArgs(BaseModel):
    """Drift monitoring settings (see :class:`serve.monitoring.DriftMonitor`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    reference: str | None = None
    window: int = Field(200, ge=1)
    threshold: float = Field(2.0, gt=0)
    min_tiles: int = Field(20, ge=1)


class ServeArgs(BaseModel):
    """Arguments of the application builder.

    Attributes:
        pipelines: Pipelines to serve (names of presets, YAML files, or full settings).
        catalog_url: The catalog (default: ``PATHRAY_CATALOG_URL`` / ``PATHRAY_HOME``).
        cold_root: The cold store (default: ``PATHRAY_COLD`` / ``PATHRAY_HOME``).
        limits: Accepted tile sizes.
        max_ongoing_requests: Requests the ingress replica works on at once.
        max_queued_requests: Requests waiting for the ingress; past it, 503 with Retry-After.
        retry_after_s: The ``Retry-After`` of an overload answer.
        inference_timeout_s: Longest wait for a pipeline's answer (then 504).
        max_body_bytes: Largest request body (then 413, before reading it).
        unit_cpus: CPUs per unit replica (default: the unit's own, scaled to fit the cluster).
        drift: Drift monitoring.
        jobs: Slide jobs each client may run and submit (then 429).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    pipelines: list[PipelineArgs | str] = Field(default_factory=lambda: list(DEFAULT_PIPELINES))
    catalog_url: str | None = None
    cold_root: str | None = None
    limits: ImageLimits = ImageLimits()
    max_ongoing_requests: int = Field(64, ge=1)
    max_queued_requests: int = Field(256, ge=-1)
    retry_after_s: int = Field(1, ge=1)
    inference_timeout_s: float = Field(30.0, gt=0)
    max_body_bytes: int = Field(32 * 2**20, ge=1024)
    unit_cpus: float | None = Field(None, ge=0)
    drift: DriftArgs = DriftArgs()
    jobs: JobLimits = JobLimits()

    def pipeline_args(self) -> list[PipelineArgs]:
        """Every pipeline entry as :class:`PipelineArgs`."""
        return [PipelineArgs(source=p) if isinstance(p, str) else p for p in self.pipelines]


def load_pipeline(source: str) -> PipelineSpec:
    """A preset by name, or a pipeline YAML file."""
    from pathray.cli.pipelines import load_spec

    return load_spec(source)


def _cpu_scale(
    deployments: dict[str, NodePlan], fixed: float | None, total: float
) -> dict[str, float]:
    """CPUs per unit deployment: fixed, or declared and scaled to three quarters of the cluster.

    Args:
        deployments: The unit deployments the application creates, by deployment name (one unit
            served at two batch sizes is two deployments and is counted twice).
        fixed: CPUs every unit deployment asks for, overriding the declared ones.
        total: CPUs in the cluster; 0 when unknown (no scaling).
    """
    if fixed is not None:
        return dict.fromkeys(deployments, fixed)
    declared = {key: plan.resources.num_cpus for key, plan in deployments.items()}
    need = sum(declared.values())
    scale = min(1.0, 0.75 * total / need) if total and need else 1.0
    return {key: cpus * scale for key, cpus in declared.items()}


def _cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 0)) if ray.is_initialized() else 0.0


def _cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0.0


def actor_options(plan: NodePlan, cpus: float, cluster_gpus: float) -> dict[str, Any]:
    """``ray_actor_options`` of a unit deployment's replicas.

    A unit's GPU share (its own, its model card's or its node's) is asked for only where the
    cluster has GPUs; elsewhere the replica runs on CPUs alone, as in a batch run.

    Args:
        plan: The node the deployment serves.
        cpus: CPUs per replica (see :func:`_cpu_scale`).
        cluster_gpus: GPUs in the cluster (0: none, or unknown).
    """
    options: dict[str, Any] = {"num_cpus": cpus}
    if plan.resources.num_gpus and cluster_gpus:
        options["num_gpus"] = plan.resources.num_gpus
    if plan.resources.memory_mb:
        options["memory"] = plan.resources.memory_mb * 2**20
    return options


def _batch_size(entry: PipelineArgs, plans: list[NodePlan]) -> int:
    batch = entry.max_batch_size or min(16, *(p.cls.batch_size for p in plans))
    return batch if entry.batching else 1


def app_builder(args: ServeArgs) -> Application:
    """Build the application (the typed builder Serve calls with validated arguments).

    Raises:
        ConfigError: A pipeline is invalid.
        NotFoundError: A pipeline is neither a preset nor a file, or a model is missing.
    """
    settings = Settings.from_env()
    catalog_url = args.catalog_url or settings.catalog_url
    cold_root = args.cold_root or str(settings.cold_root)
    entries = [(p, load_pipeline(p.source)) for p in args.pipeline_args()]
    planned: list[tuple[PipelineArgs, PipelineSpec, list[NodePlan]]] = []
    for entry, spec in entries:
        models = model_paths(spec, catalog_url, cold_root)
        planned.append((entry, spec, plan_nodes(spec, models)))
    deployments = {
        f"{plan.key()}-b{_batch_size(entry, plans)}": plan
        for entry, _, plans in planned
        for plan in plans
    }
    cpus = _cpu_scale(deployments, args.unit_cpus, _cluster_cpus())
    gpus = _cluster_gpus()
    units: dict[str, Application] = {}
    pipelines: dict[str, dict[str, dict[str, Any]]] = {}
    for entry, spec, plans in planned:
        batch = _batch_size(entry, plans)
        handles = []
        for plan in plans:
            key = f"{plan.key()}-b{batch}"
            if key not in units:
                units[key] = UnitDeployment.options(  # type: ignore[attr-defined]
                    name=key,
                    num_replicas=entry.num_replicas,
                    # a batching replica must take a whole batch in at once
                    max_ongoing_requests=max(entry.max_ongoing_requests, 2 * batch),
                    # its callers are bounded pipelines: a bounded queue never refuses them
                    max_queued_requests=4 * max(entry.max_ongoing_requests, 2 * batch),
                    ray_actor_options=actor_options(plan, cpus[key], gpus),
                ).bind(plan.stage_kwargs(), batch, entry.batch_wait_timeout_s)
            handles.append(units[key])
        deployment = PipelineDeployment.options(  # type: ignore[attr-defined]
            name=f"pipeline-{spec.name}-{spec.version}",
            num_replicas=entry.num_replicas,
            max_ongoing_requests=entry.max_ongoing_requests,
            max_queued_requests=entry.max_queued_requests,
        ).bind(spec.model_dump(mode="json"), handles)
        pipelines.setdefault(spec.name, {})[spec.version] = {
            "handle": deployment,
            "spec": spec.model_dump(mode="json"),
            "objects": sorted(object_columns(plans)),
            "batching": batch > 1,
        }
    ingress_settings = {
        "catalog_url": catalog_url,
        "cold_root": cold_root,
        "limits": args.limits.model_dump(),
        "inference_timeout_s": args.inference_timeout_s,
        "retry_after_s": args.retry_after_s,
        "max_body_bytes": args.max_body_bytes,
        "drift": args.drift.model_dump(),
        "jobs": args.jobs.model_dump(),
    }
    return Ingress.options(  # type: ignore[attr-defined]
        max_ongoing_requests=args.max_ongoing_requests,
        max_queued_requests=args.max_queued_requests,
        backpressure_config=BackpressureConfig(status_code=503, retry_after_s=args.retry_after_s),
    ).bind(pipelines, ingress_settings)


def model_paths(spec: PipelineSpec, catalog_url: str, cold_root: str) -> dict[str, ResolvedModel]:
    """Node id -> its checked model (artifact folder, card resources), for the model nodes."""
    if not any(node.model for node in spec.units):
        return {}
    from pathray.catalog import Catalog
    from pathray.engine.models import resolve_models

    with Catalog.open(catalog_url) as catalog:
        return resolve_models(catalog, spec, cold_root)


def start(
    app: Application,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    request_timeout_s: float | None = 60.0,
    address: str | None = None,
    blocking: bool = False,
    ui: Application | None = None,
) -> str:
    """Run the application on Ray Serve; return its base URL.

    Args:
        app: The built application.
        host: Interface the HTTP proxy listens on (loopback unless configured).
        port: HTTP port.
        request_timeout_s: End-to-end timeout of an HTTP request at the proxy.
        address: Ray cluster (None: ``RAY_ADDRESS``, else a local Ray).
        blocking: Serve until interrupted.
        ui: The clinician app (:func:`serve.clinician.clinician_app`), run beside the API at
            ``/ui``.
    """
    from pathray.engine.cluster import ensure_ray

    ensure_ray(address)
    serve.start(
        http_options={"host": host, "port": port, "request_timeout_s": request_timeout_s},
    )
    if ui is not None:
        from serve.clinician import UI_APP_NAME, UI_PREFIX

        serve.run(ui, name=UI_APP_NAME, route_prefix=UI_PREFIX)
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=blocking)
    return f"http://{host}:{port}"


__all__ = [
    "APP_NAME",
    "DriftArgs",
    "PipelineArgs",
    "ServeArgs",
    "app_builder",
    "load_pipeline",
    "start",
]
