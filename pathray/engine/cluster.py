"""Connecting to Ray: a local Ray started on demand, or the cluster at ``RAY_ADDRESS``."""

from __future__ import annotations

import logging
import os

import ray


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
        # The dashboard and job API stay on loopback unless a cluster is configured.
        kwargs["_node_ip_address"] = "127.0.0.1"
    for attempt in range(4):
        try:
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
