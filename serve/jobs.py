"""Slide jobs of the API: who owns a run, how many a client may start, a slide job's image set.

A job belongs to the client that submitted it: the client name its API tokens share (several
tokens of one client, for rotation, are one owner). Other clients get 404 for its status, its
cancel and its results, exactly as for a run that does not exist; an admin sees every run. Runs
started elsewhere (CLI, app, iterations) have no owner: every reader may read them, and only
engineers and admins may cancel them through the API.

Each client may have :attr:`JobLimits.max_active` jobs pending or running and submit
:attr:`JobLimits.max_per_window` jobs per :attr:`JobLimits.window_s` seconds; past either it
gets 429 with ``Retry-After``. Both are counted in the catalog, so every ingress replica agrees.

A job on one slide runs over the slide's own image set (``slide-job-<id>``: that slide alone,
protected), made at its first job and shared by the later ones, rather than a new set per job.

Example:
    >>> JobLimits().max_active
    4
"""

from __future__ import annotations

import math
import threading
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from pathray.catalog import Catalog
from pathray.catalog.auth import Principal
from pathray.catalog.models import utcnow
from pathray.catalog.records import Run, Slide
from pathray.errors import ConflictError, NotFoundError
from serve.errors import ApiError

#: Held while a submission is checked against the limits and recorded, so that concurrent
#: requests of one replica cannot all pass the same check.
SUBMIT_LOCK = threading.Lock()


class JobLimits(BaseModel):
    """How many slide jobs one client may run and submit.

    Attributes:
        max_active: Jobs of one client pending or running at once.
        max_per_window: Jobs one client may submit per ``window_s`` seconds.
        window_s: The rate window.
        busy_retry_after_s: ``Retry-After`` when a client is at ``max_active``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    max_active: int = Field(4, ge=1)
    max_per_window: int = Field(20, ge=1)
    window_s: float = Field(60.0, gt=0)
    busy_retry_after_s: int = Field(30, ge=1)


def visible_run(catalog: Catalog, who: Principal, run_id: str) -> Run:
    """The run, if ``who`` may see it: its owner, an admin, or anyone for an internal run.

    Raises:
        NotFoundError: No such run, or one of another client (the same answer: 404).
    """
    run = catalog.get_run(run_id)
    if run.owner is not None and run.owner != who.name and not who.allows("admin"):
        raise NotFoundError(f"Run '{run_id}' does not exist.")
    return run


def check_cancel(catalog: Catalog, who: Principal, run_id: str) -> None:
    """Check that ``who`` may cancel the run.

    Its owner or an admin may; for an internal run, an engineer or an admin.

    Raises:
        NotFoundError: No such run, or one of another client.
        ApiError: ``auth.forbidden`` for an internal run and a client that is no engineer.
    """
    run = visible_run(catalog, who, run_id)
    if run.owner is None and not who.allows("engineer"):
        raise ApiError(
            "auth.forbidden",
            f"Role must be engineer or admin to cancel a run started outside the API. "
            f"Got {who.role!r} instead.",
        )


def check_limits(catalog: Catalog, who: Principal, limits: JobLimits) -> None:
    """Refuse a submission past the client's rate or active-job quota.

    Call it under :data:`SUBMIT_LOCK`, before recording the run.

    Raises:
        ApiError: ``job.rate_limited`` or ``job.quota`` (429, with ``Retry-After``).
    """
    now = utcnow()
    window = timedelta(seconds=limits.window_s)
    active, created = catalog.owner_activity(who.name, since=now - window)
    if len(created) >= limits.max_per_window:
        # a slot opens when the oldest submission that still counts leaves the window
        frees_at = created[len(created) - limits.max_per_window] + window
        wait = max(1, math.ceil((frees_at - now).total_seconds()))
        raise ApiError(
            "job.rate_limited",
            f"A client may submit at most {limits.max_per_window} jobs per "
            f"{limits.window_s:g} s. Got {len(created)} in the last {limits.window_s:g} s; "
            f"retry after {wait} s.",
            {"Retry-After": str(wait)},
        )
    if active >= limits.max_active:
        raise ApiError(
            "job.quota",
            f"A client may have at most {limits.max_active} jobs pending or running. "
            f"Got {active}; retry when one has finished, or cancel one.",
            {"Retry-After": str(limits.busy_retry_after_s)},
        )


def slide_image_set(catalog: Catalog, slide: Slide, actor: str) -> str:
    """The image set of a slide's jobs: that slide alone, protected; made on first use.

    Raises:
        ConflictError: A set of that name holds other slides (one this module did not make).
    """
    name = f"slide-job-{slide.id}"
    try:
        image_set = catalog.get_image_set(name)
    except NotFoundError:
        description = f"internal: the API jobs on slide {slide.name}"
        image_set = catalog.create_image_set(name, description, actor=actor)
    members = [s.id for s in catalog.slides_in_set(name)]
    if not members:  # new, or left empty by a request that failed half-way
        catalog.add_to_image_set(name, [slide.id], actor=actor)
    elif members != [slide.id]:
        raise ConflictError(
            f"Image set {name!r} must hold slide {slide.id} alone to run slide jobs. "
            f"Got slides {members} instead."
        )
    if not image_set.protected:
        # the service's own set, frozen by the service itself (a client is no admin)
        catalog.protect(name, actor="system")
    return name


__all__ = [
    "SUBMIT_LOCK",
    "JobLimits",
    "check_cancel",
    "check_limits",
    "slide_image_set",
    "visible_run",
]
