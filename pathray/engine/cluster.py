"""Connecting to Ray: a local Ray started on demand, or the cluster at ``RAY_ADDRESS``."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import ray
from ray._private import ray_constants

#: The address a local Ray (one machine) binds every one of its servers to.
LOOPBACK = "127.0.0.1"


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start or join Ray once per process.

    Args:
        address: A cluster address (``ray://...`` or ``host:port``); None joins ``RAY_ADDRESS``
            if set, else starts a local Ray.
        num_cpus: CPUs of a local Ray (default: all of this machine's).
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, object] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
        "configure_logging": True,
    }
    if address is None:
        # "local" always starts a Ray of our own, even when another one runs on this machine.
        address = "local"
        kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
        kwargs["_node_ip_address"] = LOOPBACK
    for attempt in range(4):
        try:
            if address == "local":
                with _loopback_node():
                    ray.init(address=address, **kwargs)  # type: ignore[arg-type]
            else:
                ray.init(address=address, **kwargs)  # type: ignore[arg-type]
            break
        except Exception as exc:
            # Ray gives a new local node 30 s (fixed) to register; a busy machine can miss that.
            if address != "local" or "timed out during startup" not in str(exc) or attempt == 3:
                raise
            logging.getLogger(__name__).warning("Ray did not start in time; retrying")
            ray.shutdown()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # PathRay draws its own progress
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


@contextmanager
def _loopback_node() -> Iterator[None]:
    """Keep a local Ray's node address on loopback while it starts.

    Ray's servers (GCS, raylet, workers, dashboard agent and its metrics port) listen on
    loopback only when the node address is loopback, and on every interface otherwise. But
    ``ray.init`` replaces a loopback ``_node_ip_address`` with the machine's routable address
    unless Ray clusters are disabled (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read once at
    import as ``ENABLE_RAY_CLUSTER``). The switch is flipped only while the local node starts,
    so a process that later joins a real cluster still finds its routable address.
    """
    enabled = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = enabled


def cluster_cpus() -> float:
    """CPUs of the Ray cluster."""
    return float(ray.cluster_resources().get("CPU", 1.0))


def largest_node_cpus() -> float:
    """CPUs of the cluster's largest live node: the most one actor can be given."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return max((float(n["Resources"].get("CPU", 0.0)) for n in nodes), default=cluster_cpus())


def cluster_gpus() -> float:
    """GPUs of the Ray cluster (0 on CPU-only machines such as CI)."""
    return float(ray.cluster_resources().get("GPU", 0.0))


def free_resources() -> tuple[float, float]:
    """CPUs and GPUs of the cluster that no actor or task holds now.

    What Serve replicas, other runs and idle detached actors hold is not free: a run sized
    from the cluster's total would wait forever for CPUs they keep.
    """
    free = ray.available_resources()
    return float(free.get("CPU", 0.0)), float(free.get("GPU", 0.0))
