"""Riding out a lost catalog connection: detect it, wait for the database, retry.

A PostgreSQL catalog can go away for a while (a restart, a fail-over). Every catalog
transaction waits for a connection for at most :func:`default_wait_s` seconds before it starts
(see :meth:`~pathray.catalog.base.CatalogBase.transaction`), and a connection lost inside a
transaction surfaces as :class:`~pathray.errors.CatalogUnavailableError`: the transaction was
rolled back (or, lost during COMMIT, may have been committed). :func:`retry_call` re-runs a
whole catalog call on that error until the same bound, so callers whose calls are idempotent
(the run driver's status, progress and commit writes) continue where they were.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from sqlalchemy.exc import DBAPIError, OperationalError

from pathray.errors import CatalogUnavailableError, ConfigError

T = TypeVar("T")
C = TypeVar("C")

#: Environment variable holding the seconds to wait for a lost catalog database.
WAIT_ENV = "PATHRAY_CATALOG_WAIT_S"
DEFAULT_WAIT_S = 60.0
#: SQLSTATEs of a server that is going away or not yet accepting connections.
_SERVER_GONE = frozenset({"57P01", "57P02", "57P03"})


def default_wait_s() -> float:
    """Seconds to wait for a lost catalog database: ``PATHRAY_CATALOG_WAIT_S`` or 60.

    Raises:
        ConfigError: If the variable is not a number >= 0.
    """
    raw = os.environ.get(WAIT_ENV, "")
    if not raw:
        return DEFAULT_WAIT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses NaN
        raise ConfigError(f"{WAIT_ENV} must be a number of seconds >= 0. Got {raw!r} instead.")
    return value


def is_connection_loss(exc: BaseException) -> bool:
    """Whether a database error means the server could not be reached, not a bad statement.

    True for a connection SQLAlchemy invalidated (the server closed it), a refused or failed
    connection (psycopg errors without SQLSTATE, class 08) and a server shutting down or
    starting up (57P01-57P03). SQLite errors (a locked file, a bad statement) are never a loss.
    """
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    state = getattr(exc.orig, "sqlstate", "")  # PostgreSQL (psycopg) errors only
    if not isinstance(exc, OperationalError) or state == "":
        return False
    return state is None or state.startswith("08") or state in _SERVER_GONE


def unavailable(exc: BaseException, waited_s: float) -> CatalogUnavailableError:
    """The error to raise for a connection loss, naming the database's own reason."""
    orig = getattr(exc, "orig", None) or exc
    reason = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return CatalogUnavailableError(
        f"The catalog database must be reachable. Got no connection for {waited_s:.1f} s "
        f"instead ({reason}). Raise {WAIT_ENV} to wait longer."
    )


def backoff(attempt: int) -> float:
    """Seconds to sleep before retry number ``attempt`` (0.1 s doubling, at most 2 s)."""
    return min(2.0, 0.1 * 2**attempt)


def retry_call(call: Callable[[], T], wait_s: float) -> T:
    """Run ``call``, re-running it while the catalog is unavailable, for ``wait_s`` at most.

    Only idempotent calls should be retried: a connection lost during COMMIT leaves it open
    whether the first attempt was committed.

    Args:
        call: A catalog call (no arguments; bind them with a lambda or ``functools.partial``).
        wait_s: Seconds to keep retrying after the first failure.

    Returns:
        What ``call`` returned.

    Raises:
        CatalogUnavailableError: Still unavailable after ``wait_s`` seconds.
    """
    deadline = time.monotonic() + wait_s
    attempt = 0
    while True:
        try:
            return call()
        except CatalogUnavailableError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(min(backoff(attempt), max(0.0, deadline - time.monotonic())))
        attempt += 1


class _Retrying:
    """Proxy of a catalog whose every method call goes through :func:`retry_call`."""

    def __init__(self, catalog: Any, wait_s: float) -> None:
        self._catalog = catalog
        self._wait_s = wait_s

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._catalog, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            return retry_call(lambda: attr(*args, **kwargs), self._wait_s)

        return call


def retrying(catalog: C, wait_s: float | None = None) -> C:
    """The catalog, with every method call retried while the database is unavailable.

    For a caller whose catalog calls are all idempotent (the run driver: status, progress,
    events and the final commit, which :meth:`~pathray.catalog.Catalog.complete_run` makes
    safe to repeat); an already retrying catalog is returned as it is.

    Args:
        catalog: The catalog.
        wait_s: Seconds to keep retrying one call (default: the catalog's ``wait_s``).
    """
    if isinstance(catalog, _Retrying):
        return catalog
    bound = getattr(catalog, "wait_s", DEFAULT_WAIT_S) if wait_s is None else wait_s
    return cast(C, _Retrying(catalog, float(bound)))


__all__ = [
    "DEFAULT_WAIT_S",
    "WAIT_ENV",
    "backoff",
    "default_wait_s",
    "is_connection_loss",
    "retry_call",
    "retrying",
    "unavailable",
]
