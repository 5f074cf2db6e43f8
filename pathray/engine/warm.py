"""Warm units: unit actors that outlive a run, reused by the next runs of the same unit version.

A cold run (the default) builds a Ray Data pipeline whose unit stages are actor pools of its
own, so every run pays the actors' start: a worker process, PathRay's and torch's imports, the
unit's model load (several seconds each, most of a small run). A warm run instead finds a
*pool* per unit version: detached, named Ray actors (:class:`WarmUnit`) in the namespace
:data:`NAMESPACE`, keyed by :func:`pool_key` (unit import path and version, config, model
artifact, resources), each holding the loaded unit. The first warm run of a key starts its pool;
the next ones, from any process connected to the same Ray (a CLI against ``RAY_ADDRESS``, a run
driver of ``pathray serve`` or ``pathray ui``, the iteration loop), call it directly.

The run's driver feeds the pools without Ray Data (see
:func:`pathray.engine.runner.execute_run`): the first unit's actors read their tiles' pixels
themselves (tile references in, the per-process reader cache keeps slides open) and every
batch goes actor to actor as object references; the last unit's actors stage the results
exactly as a cold run's do (:class:`~pathray.engine.stages.WriteStage`, content-derived names,
tile files last), so resume and exactly-once are unchanged. A new driver would otherwise pay
Ray Data's start and a fresh worker process per read task (Ray's workers belong to one job).

A pool releases itself: each actor exits once it has had no call and no lease for
:func:`idle_seconds` (``PATHRAY_WARM_IDLE_S``, default 600). While a run uses it, it holds a
lease (renewed by every call, ended by the run); a run short of free CPUs evicts unleased warm
actors first (:func:`evict_idle`), so warm pools never starve a cold run or a Serve replica.
Per-unit progress and unit logs go to one detached :class:`WarmMonitor` keyed by run id,
since a per-run monitor actor would cost an actor start again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import ray

from pathray.engine.monitor import MonitorHandler, MonitorState
from pathray.engine.stages import UnitStage, WriteStage
from pathray.slides.source import read_tiles

log = logging.getLogger(__name__)

#: Ray namespace of the warm actors: named actors are found across jobs only in a named one.
NAMESPACE = "pathray-warm"
#: Environment variable turning warm runs on ("1") or off ("0") where the caller does not say.
WARM_ENV = "PATHRAY_WARM"
#: Environment variable of the idle time after which a warm actor releases itself.
IDLE_ENV = "PATHRAY_WARM_IDLE_S"
DEFAULT_IDLE_S = 600.0
#: Seconds a run's lease lasts without a call (a driver killed mid-run leaks no actor longer).
LEASE_S = 120.0
MONITOR_NAME = "pathray-warm-monitor"


def warm_enabled(explicit: bool | None = None) -> bool:
    """Whether a run goes warm: ``explicit`` if given, else ``PATHRAY_WARM`` (default off)."""
    if explicit is not None:
        return explicit
    value = os.environ.get(WARM_ENV, "0").strip().lower()
    if value not in {"0", "1", "false", "true", "off", "on", ""}:
        raise ValueError(f"{WARM_ENV} must be 1 or 0. Got {value!r} instead.")
    return value in {"1", "true", "on"}


def idle_seconds() -> float:
    """Idle seconds after which a warm actor releases itself (``PATHRAY_WARM_IDLE_S``)."""
    raw = os.environ.get(IDLE_ENV)
    try:
        value = float(raw) if raw else DEFAULT_IDLE_S
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ValueError(f"{IDLE_ENV} must be a positive number of seconds. Got {raw!r} instead.")
    return value


def pool_key(
    unit_path: str,
    version: str,
    config: dict[str, Any],
    artifacts: dict[str, str] | None,
    options: dict[str, Any],
) -> str:
    """The pool a unit version runs on: same key, same loaded unit (model paths are digests)."""
    text = json.dumps(
        [unit_path, version, config, artifacts or {}, options], sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _IdleRelease:
    """Exit the actor once it has had no call in flight and no lease for ``idle_s`` seconds."""

    def _start_idle_watch(self, idle_s: float) -> None:
        self._state = threading.Lock()
        self._idle_s = idle_s
        self._busy = 0
        self._last = time.monotonic()
        self._lease_until = 0.0
        self._released = False
        threading.Thread(target=self._watch, name="pathray-warm-idle", daemon=True).start()

    def _evictable(self, idle_s: float) -> bool:
        now = time.monotonic()
        return not self._busy and now >= self._lease_until and now - self._last >= idle_s

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self._idle_s / 4))
            with self._state:
                if self._released or self._evictable(self._idle_s):
                    self._released = True
                    break
        self._exit()

    def _exit(self) -> None:
        # from a thread of the actor: exit_actor() works only in a method; killing itself works
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    def _enter(self, lease: bool = True) -> None:
        with self._state:
            if self._released:
                raise RuntimeError("This warm actor was released; find or start another.")
            self._busy += 1
            self._last = time.monotonic()
            if lease:
                self._lease_until = max(self._lease_until, self._last + LEASE_S)

    def _leave(self) -> None:
        with self._state:
            self._busy -= 1
            self._last = time.monotonic()

    def end_lease(self) -> None:
        """A run no longer needs this actor: the idle time starts now."""
        with self._state:
            self._lease_until = 0.0
            self._last = time.monotonic()

    def evict(self) -> bool:
        """Release the actor now if no run uses it (a run is short of CPUs); whether it did."""
        with self._state:
            if self._released or not self._evictable(0.0):
                return False
            self._released = True
        threading.Thread(target=self._exit, daemon=True).start()
        return True


class _SwitchHandler(MonitorHandler):
    """A :class:`MonitorHandler` whose run changes with every call (silent between runs)."""

    def emit(self, record: logging.LogRecord) -> None:
        """Send the record to the current run's monitor, if any."""
        if self.monitor is not None:
            super().emit(record)


class _Bound:
    """``method.remote(run_id, ...)`` spelled ``.remote(...)``: a monitor method of one run."""

    def __init__(self, method: Any, run_id: str) -> None:
        self.method, self.run_id = method, run_id

    def remote(self, *args: Any) -> Any:
        return self.method.remote(self.run_id, *args)


class RunChannel:
    """One run's view of the :class:`WarmMonitor`, shaped like a run's own monitor actor.

    :class:`~pathray.engine.stages.UnitStage` calls ``report``/``log`` and the run's tracker
    calls ``drain`` exactly as on a :class:`~pathray.engine.monitor.RunMonitor`.
    """

    def __init__(self, monitor: Any, run_id: str) -> None:
        self.monitor, self.run_id = monitor, run_id
        self.report = _Bound(monitor.report, run_id)
        self.log = _Bound(monitor.log, run_id)
        self.drain = _Bound(monitor.drain, run_id)


@ray.remote(num_cpus=0, max_restarts=0, max_concurrency=4)  # type: ignore[call-overload]
class WarmMonitor(_IdleRelease):
    """Per-unit counts and unit logs of every warm run, by run id (one detached actor)."""

    def __init__(self, idle_s: float) -> None:
        self._runs: dict[str, MonitorState] = {}
        self._lock = threading.Lock()
        self._start_idle_watch(idle_s)

    def _run(self, run_id: str) -> MonitorState:
        with self._lock:
            return self._runs.setdefault(run_id, MonitorState())

    def report(self, run_id: str, unit: str, tiles: int, objects: int) -> None:
        """See :meth:`~pathray.engine.monitor.MonitorState.report`."""
        self._enter(lease=False)
        try:
            self._run(run_id).report(unit, tiles, objects)
        finally:
            self._leave()

    def log(self, run_id: str, unit: str, level: str, message: str, at: float) -> None:
        """See :meth:`~pathray.engine.monitor.MonitorState.log`."""
        self._run(run_id).log(unit, level, message, at)

    def drain(self, run_id: str) -> tuple[dict[str, dict[str, int]], list[dict[str, Any]]]:
        """See :meth:`~pathray.engine.monitor.MonitorState.drain`."""
        self._enter(lease=False)
        try:
            return self._run(run_id).drain()
        finally:
            self._leave()

    def forget(self, run_id: str) -> None:
        """Drop a finished run's counts."""
        with self._lock:
            self._runs.pop(run_id, None)


@ray.remote(max_restarts=0, max_concurrency=4)  # type: ignore[call-overload]
class WarmUnit(_IdleRelease):
    """One unit, loaded once, serving the batches of every run of its pool key.

    Args:
        unit_path: Import path of the unit class.
        config: The unit's config.
        artifacts: Named artifact paths (the model folder).
        idle_s: Idle seconds after which the actor releases itself.
    """

    def __init__(
        self,
        unit_path: str,
        config: dict[str, Any],
        artifacts: dict[str, str] | None,
        idle_s: float,
    ) -> None:
        started = time.perf_counter()
        self.stage = UnitStage(unit_path, config, artifacts)
        self._handler = _SwitchHandler(None, self.stage.node_id)
        root = logging.getLogger()
        root.addHandler(self._handler)
        root.setLevel(min(root.level, logging.INFO))
        self._calls = threading.Lock()  # one batch at a time: units need not be thread-safe
        self._writers: dict[str, WriteStage] = {}
        self._monitor: Any = None
        self._runs: list[str] = []
        self._info: dict[str, Any] = {
            "actor_id": ray.get_runtime_context().get_actor_id(),
            "pid": os.getpid(),
            "load_s": round(time.perf_counter() - started, 3),
        }
        self._start_idle_watch(idle_s)

    def lease(self, run_id: str) -> dict[str, Any]:
        """Take the actor for a run; what it is (id, pid, load time, runs it served)."""
        self._enter()
        try:
            if run_id not in self._runs:
                self._runs.append(run_id)
            return dict(self._info, runs=list(self._runs))
        finally:
            self._leave()

    def call(self, batch: pa.Table | dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
        """Run the unit on a batch of one run (tile references are read first).

        Args:
            batch: A column batch from the previous unit, or tile references (first unit).
            ctx: The run's side of the stage: ``run_id``, ``node_id``, ``tile_columns``,
                ``write`` (the last unit's :class:`WriteStage` arguments, else None).
        """
        self._enter()
        try:
            with self._calls:
                if isinstance(batch, pa.Table):
                    batch = read_tiles(batch)
                stage = self.stage
                stage.node_id = ctx["node_id"]
                stage.tile_columns = tuple(ctx["tile_columns"])
                stage.monitor = self._channel(ctx["run_id"])
                self._handler.monitor, self._handler.unit = stage.monitor, stage.node_id
                stage.writer = self._writer(ctx.get("write"))
                try:
                    return stage(batch)
                finally:
                    self._handler.monitor = None
        finally:
            self._leave()

    def _channel(self, run_id: str) -> RunChannel | None:
        if self._monitor is None:
            self._monitor = find_warm_monitor()
        return RunChannel(self._monitor, run_id) if self._monitor is not None else None

    def _writer(self, write: dict[str, Any] | None) -> WriteStage | None:
        if write is None:
            return None
        key = str(write["staging"])
        if key not in self._writers:
            if len(self._writers) > 16:
                self._writers.clear()
            self._writers[key] = WriteStage(**write)
        return self._writers[key]


def find_warm_monitor() -> Any:
    """The warm monitor, or None when there is none (a run then starts it)."""
    try:
        return ray.get_actor(MONITOR_NAME, namespace=NAMESPACE)
    except ValueError:
        return None


def warm_monitor() -> Any:
    """The warm monitor, started if needed."""
    return WarmMonitor.options(  # type: ignore[attr-defined]
        name=MONITOR_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote(idle_seconds())


@dataclass
class Pool:
    """The warm actors of one stage of a run.

    Attributes:
        key: The pool key.
        actors: Actor handles, in order.
        infos: What each actor said when leased (actor id, pid, load time, runs served).
        started: Actors this run had to start (0: the pool was warm).
    """

    key: str
    actors: list[Any]
    infos: list[dict[str, Any]]
    started: int


def actor_name(key: str, index: int) -> str:
    """Ray name of a pool's ``index``-th actor."""
    return f"pathray-warm-{key}-{index}"


def _lease(name: str, run_id: str) -> tuple[Any, dict[str, Any]] | None:
    """The named warm actor leased for the run, or None when there is none (or it is leaving)."""
    try:
        actor = ray.get_actor(name, namespace=NAMESPACE)
        ref: Any = actor.lease.remote(run_id)
        info: dict[str, Any] = ray.get(ref, timeout=30)
        return actor, info
    except Exception:  # absent, released, or dead since: the caller starts a fresh one
        return None


def _wait_name_free(name: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return
        time.sleep(0.1)


def find_pool(key: str, run_id: str, max_size: int = 8) -> list[tuple[Any, dict[str, Any]]]:
    """The leased actors of a warm pool (empty when it is cold)."""
    found = []
    for index in range(max_size):
        leased = _lease(actor_name(key, index), run_id)
        if leased is None:
            break
        found.append(leased)
    return found


def start_pool(
    key: str,
    run_id: str,
    size: int,
    unit_path: str,
    config: dict[str, Any],
    artifacts: dict[str, str] | None,
    options: dict[str, Any],
    first: int = 0,
) -> list[tuple[Any, dict[str, Any]]]:
    """Start ``size`` warm actors of a pool (named ``first``, ``first + 1``, ...), leased."""
    idle = idle_seconds()
    actors = []
    for index in range(first, first + size):
        name = actor_name(key, index)
        _wait_name_free(name)  # a released actor may still hold its name for a moment
        actors.append(
            WarmUnit.options(  # type: ignore[attr-defined]
                name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, **options
            ).remote(unit_path, config, artifacts, idle)
        )
    infos = ray.get([a.lease.remote(run_id) for a in actors])
    return list(zip(actors, infos, strict=True))


def end_leases(pools: list[Pool]) -> None:
    """Tell every actor of the run's pools that the run no longer needs it (best effort)."""
    refs = [a.end_lease.remote() for pool in pools for a in pool.actors]
    try:
        ray.get(refs, timeout=10)
    except Exception as exc:  # an actor gone meanwhile releases nothing
        log.warning("could not end every warm lease: %s", exc)


def warm_actors() -> list[str]:
    """Names of the live warm unit actors (``pathray-warm-<pool key>-<index>``)."""
    named = ray.util.list_named_actors(all_namespaces=True)
    return sorted(
        a["name"]
        for a in named
        if a.get("namespace") == NAMESPACE
        and a["name"].startswith("pathray-warm-")
        and a["name"] != MONITOR_NAME
    )


def evict_idle(keep: Callable[[str], bool] = lambda name: False) -> int:
    """Release the warm unit actors no run holds (a run needs their CPUs); how many left."""
    evicted = 0
    for name in warm_actors():
        if keep(name):
            continue
        try:
            actor = ray.get_actor(name, namespace=NAMESPACE)
            evicted += bool(ray.get(actor.evict.remote(), timeout=10))
        except Exception:  # gone meanwhile
            continue
    return evicted


__all__ = [
    "IDLE_ENV",
    "NAMESPACE",
    "WARM_ENV",
    "Pool",
    "RunChannel",
    "WarmMonitor",
    "WarmUnit",
    "end_leases",
    "evict_idle",
    "find_pool",
    "idle_seconds",
    "pool_key",
    "start_pool",
    "warm_actors",
    "warm_enabled",
    "warm_monitor",
]
