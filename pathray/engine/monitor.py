"""Per-unit progress and unit logs of a running pipeline.

Ray Data streams every unit stage at once, so the driver only sees batches leaving the last
stage. Each :class:`~pathray.engine.stages.UnitStage` therefore reports what it finished (tiles
and objects) and forwards its log records to one small named actor per run, the
:class:`RunMonitor`; the driver drains it every second into the run's progress document and the
catalog's run events.

The monitor is best effort: a unit stage used outside a run (in a test, in Serve) has no
monitor and reports nothing, and a lost report never fails a run.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

import ray

#: Most events a monitor keeps between two drains (the rest are counted, not kept).
MAX_EVENTS = 2000


def monitor_name(run_id: str) -> str:
    """The Ray actor name of a run's monitor."""
    return f"pathray-monitor-{run_id}"


class MonitorState:
    """Per-unit counts and unit log records of one run (the state of a :class:`RunMonitor`)."""

    def __init__(self) -> None:
        self._units: dict[str, dict[str, int]] = defaultdict(lambda: {"tiles": 0, "objects": 0})
        self._events: list[dict[str, Any]] = []
        self._dropped = 0

    def report(self, unit: str, tiles: int, objects: int) -> None:
        """Add a finished batch of ``unit``: ``tiles`` tiles done, ``objects`` objects made."""
        counts = self._units[unit]
        counts["tiles"] += tiles
        counts["objects"] += objects

    def log(self, unit: str, level: str, message: str, at: float) -> None:
        """Keep one log record of ``unit`` until the next drain."""
        if len(self._events) >= MAX_EVENTS:
            self._dropped += 1
            return
        self._events.append({"unit": unit, "level": level, "message": message, "at": at})

    def drain(self) -> tuple[dict[str, dict[str, int]], list[dict[str, Any]]]:
        """Return the counts so far and the log records since the last drain."""
        events, self._events = self._events, []
        if self._dropped:
            message = f"{self._dropped} log records dropped (more than {MAX_EVENTS} per second)"
            events.append({"unit": None, "level": "warning", "message": message, "at": time.time()})
            self._dropped = 0
        return {unit: dict(counts) for unit, counts in self._units.items()}, events


@ray.remote(num_cpus=0, max_restarts=0)
class RunMonitor(MonitorState):
    """Collects per-unit counts and unit log records of one run (a Ray actor)."""


_LEVELS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
}


def level_name(levelno: int) -> str:
    """The run-event level of a :mod:`logging` level number (CRITICAL counts as error)."""
    for number in sorted(_LEVELS, reverse=True):
        if levelno >= number:
            return _LEVELS[number]
    return "debug"


class MonitorHandler(logging.Handler):
    """Forward log records of a unit's actor process to the run's monitor.

    Ray's and Ray Data's own records are left to Ray's logs: the run's events are about the
    units.
    """

    def __init__(self, monitor: Any, unit: str, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.monitor = monitor
        self.unit = unit

    def emit(self, record: logging.LogRecord) -> None:
        """Send one record (never raises: logging must not break a unit)."""
        if record.name.startswith(("ray", "urllib3", "filelock")):
            return
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            self.monitor.log.remote(self.unit, level_name(record.levelno), message, record.created)
        except Exception:  # pragma: no cover - the monitor is gone; the run goes on
            self.handleError(record)


def find_monitor(name: str | None) -> Any:
    """The named monitor actor, or None outside a run (or when it cannot be reached)."""
    if not name or not ray.is_initialized():
        return None
    try:
        return ray.get_actor(name)
    except ValueError:
        return None


__all__ = [
    "MonitorHandler",
    "MonitorState",
    "RunMonitor",
    "find_monitor",
    "level_name",
    "monitor_name",
]
