"""Background work of the app: Ray, and iteration loops started from the page.

:func:`pathray.iterate.loop.iterate` blocks until the loop ends, so the app runs it on a
background thread and keeps the loop's progress events in memory for the page to show; the
loop, its iterations, runs and evaluations are recorded in the catalog as usual (the runs
appear in the Runs tab and, once done, as layers in the viewer).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from pathray.catalog import Catalog
from pathray.iterate.data import annotated_slides, split_slides
from pathray.iterate.loop import IterationEvent, iterate
from pathray.iterate.requirement import Requirement
from pathray.pipeline.spec import PipelineSpec
from pathray.results.store import ColdStore


@dataclass
class LoopProgress:
    """What the page shows of a loop started here."""

    label: str
    events: list[str] = field(default_factory=list)
    loop_id: str | None = None
    status: str = "starting"
    error: str | None = None


_LOOPS: dict[str, LoopProgress] = {}
_LOCK = threading.Lock()
_RAY_LOCK = threading.Lock()
_RAY_STARTED = threading.Event()
_RAY_KEEPER: dict[str, Any] = {}  # "thread", and "error" if the start failed


def ray_ready(timeout: float | None = None) -> None:
    """Start (or join) Ray for this process once, whichever thread asks first.

    A local Ray's GCS and raylet are started with a parent-death signal, and Linux sends it
    when the *thread* that started them exits, not the process. So Ray is started on one
    keeper thread that lives as long as the app, never on a request's or a loop's thread
    (which would take Ray down with it when it ends). Starting takes seconds, minutes on a
    busy machine: the app warms it up at start (:func:`warm_up_ray`), and a run or loop started
    meanwhile waits here instead of starting a second one.

    Args:
        timeout: Seconds to wait for Ray (None: as long as it takes).

    Raises:
        RuntimeError: Ray failed to start (the keeper's error is chained) or did not start in time.
    """
    warm_up_ray()
    if not _RAY_STARTED.wait(timeout):
        raise RuntimeError(f"Ray did not start within {timeout} s.")
    error = _RAY_KEEPER.get("error")
    if error is not None:
        raise RuntimeError(f"Ray failed to start: {error}") from error


def _keep_ray() -> None:
    from pathray.engine.cluster import ensure_ray

    try:
        ensure_ray()
    except Exception as exc:  # reported to every caller of ray_ready
        _RAY_KEEPER["error"] = exc
    finally:
        _RAY_STARTED.set()
    threading.Event().wait()  # keep this thread, and so Ray's processes, alive


def warm_up_ray() -> None:
    """Start Ray on the keeper thread (once), in the background, so the first run starts at once."""
    with _RAY_LOCK:
        if _RAY_KEEPER.get("thread") is not None:
            return
        thread = threading.Thread(target=_keep_ray, name="ray-keeper", daemon=True)
        _RAY_KEEPER["thread"] = thread
        thread.start()


def start_iteration(
    catalog: Catalog,
    store: ColdStore,
    spec: PipelineSpec,
    image_set: str,
    reference: str,
    requirement: str,
    *,
    requester: str,
    iterations: int = 3,
) -> str:
    """Check the request, start the loop on a thread, and say so (Markdown).

    Raises:
        ConfigError: The requirement does not parse, or the image set has fewer than two
            slides annotated in the reference.
        NotFoundError: The image set or the reference does not exist.
    """
    req = Requirement.parse(requirement)  # a typo fails here, in the page, not in the thread
    catalog.get_image_set(image_set)
    # The loop's own first step, done here too: a set it cannot split is refused before
    # anything starts, with the reason, instead of a loop that fails in the background.
    split_slides(annotated_slides(catalog, image_set, reference))
    label = f"{spec.name} on {image_set} until {req}"
    progress = LoopProgress(label)
    with _LOCK:
        key = f"loop-{len(_LOOPS) + 1}"
        _LOOPS[key] = progress

    def on_event(event: IterationEvent) -> None:
        with _LOCK:
            progress.loop_id = event.loop_id
            progress.status = event.stage
            progress.events.append(f"iteration {event.number} · {event.stage}: {event.message}")

    def work() -> None:
        try:
            ray_ready()
            result = iterate(
                catalog,
                store,
                spec,
                image_set,
                reference,
                req,
                budget={"iterations": iterations},
                requester=requester,
                progress=on_event,
            )
            with _LOCK:
                progress.status = result.loop.status
        except Exception as exc:  # shown on the page; the loop records its own failure
            with _LOCK:
                progress.status, progress.error = "failed", str(exc)

    threading.Thread(target=work, name=key, daemon=True).start()
    return f"Started iteration **{key}**: {label}."


def loops_markdown() -> str:
    """The loops started from this app, newest first, with their latest events."""
    with _LOCK:
        items: list[tuple[str, Any]] = list(_LOOPS.items())[::-1]
        lines = []
        for key, p in items:
            head = f"**{key}** ({p.loop_id or 'starting'}) · {p.label} · **{p.status}**"
            if p.error:
                head += f" · error: `{p.error}`"
            lines.append(head + "".join(f"\n- {e}" for e in p.events[-6:]))
    return "\n\n".join(lines) or "No iteration started from this app yet."
