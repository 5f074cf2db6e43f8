"""Connecting to Ray: a local Ray started on demand, or the cluster at ``RAY_ADDRESS``."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
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
            with _keep_signal_handlers():
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


@contextmanager
def _keep_signal_handlers() -> Iterator[None]:
    """Start the driver without Ray's fatal-signal handler, and keep the process's own SIGTERM.

    A driver's core worker installs Abseil's failure-signal handler, which counts SIGTERM as a
    crash: it prints a native stack and aborts ("Aborted", status 134), skipping every
    shutdown. The handler is installed only when ``RAY_DISABLE_FAILURE_SIGNAL_HANDLER`` (read
    from ``ray_constants`` when the core worker is made) is false, so it is switched off for
    this driver alone; Ray's own processes (raylet, GCS, workers) read their environment and
    keep their crash reports. ``ray.init`` also replaces a SIGTERM handler the process already
    set (the CLI's, :mod:`pathray.cli`); that one is put back, while a process that set none
    keeps Ray's (which stops the local Ray's processes, then exits with status 1).
    """
    disabled = ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER
    ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
    on_main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if on_main else None
    try:
        yield
    finally:
        ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = disabled
        if on_main and callable(before):
            signal.signal(signal.SIGTERM, before)


def shutdown(grace_s: float = 5.0) -> None:
    """Disconnect from Ray, stopping the local Ray this process started, if it is connected.

    Called by the CLI before the interpreter finalises, so Ray's threads stop while every other
    library (Lance, torch) is still whole, instead of from Ray's ``atexit`` hook. The local
    Ray's processes are this process's descendants (GCS, raylet, and the raylet's workers and
    agents); ``ray.shutdown`` stops the first ones, and the dashboard and runtime-env agents
    were seen to outlive it by over a minute on a loaded machine. Those still there after
    ``grace_s`` seconds are terminated, then killed: nothing of a command's own Ray outlives
    it. Processes of a cluster this process only connected to are not its descendants.

    Args:
        grace_s: Seconds the local Ray's processes get to leave by themselves.
    """
    import psutil

    try:
        mine = psutil.Process().children(recursive=True)
    except psutil.Error:
        mine = []
    if ray.is_initialized():
        ray.shutdown()
    _, alive = psutil.wait_procs(mine, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(alive, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


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
