"""Shared machinery of the catalog API: sessions, transactions, audit rows, look-ups, guards.

:class:`CatalogBase` is the base of the topic mixins (slides, image sets, annotations, runs)
that :class:`pathray.catalog.api.Catalog` combines.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from pathray.catalog.models import (
    AnnotationSetRow,
    AuditRow,
    ImageSetMemberRow,
    ImageSetRow,
    RunRow,
    SlideRow,
    SlideStoreRow,
    UserRow,
)
from pathray.catalog.retry import backoff, default_wait_s, is_connection_loss, unavailable
from pathray.catalog.triggers import APPEND_ONLY_MARKER, PROTECTED_MARKER
from pathray.errors import ConfigError, ConflictError, NotFoundError, PathRayError, ProtectedError

SYSTEM_ACTOR = "system"


def json_safe(value: Any) -> Any:
    """Convert a value to plain JSON that both SQLite and PostgreSQL (JSONB) accept.

    NumPy scalars and arrays become numbers and lists, tuples become lists, non-finite floats
    (NaN, infinity, which JSONB refuses) become None, and anything else unknown becomes its
    ``str``.

    Args:
        value: A JSON-like value, possibly holding NumPy values.

    Returns:
        A value made of dicts (with str keys), lists, str, int, float, bool and None.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    tolist = getattr(value, "tolist", None)  # NumPy scalars and arrays
    if callable(tolist):
        return json_safe(tolist())
    return str(value)


def translate_error(exc: DBAPIError) -> PathRayError | None:
    """Turn a database error raised by a catalog rule into the matching PathRay error.

    Args:
        exc: The error SQLAlchemy raised.

    Returns:
        A :class:`ProtectedError` for a protection or append-only trigger, a
        :class:`ConflictError` for any other integrity violation, None for other errors.
    """
    text = str(exc.orig) if exc.orig is not None else str(exc)
    for marker in (PROTECTED_MARKER, APPEND_ONLY_MARKER):
        if marker in text:
            return ProtectedError(text.split(marker, 1)[1].strip().splitlines()[0])
    if isinstance(exc, IntegrityError):
        first = text.strip().splitlines()[0] if text.strip() else type(exc.orig).__name__
        return ConflictError(f"The change conflicts with the stored catalog: {first}")
    return None


class CatalogBase:
    """Sessions, transactions and the helpers every catalog topic uses.

    Args:
        engine: Engine of a database already migrated to head.
        wait_s: Seconds a transaction waits for an unreachable database before it gives up
            (default: ``PATHRAY_CATALOG_WAIT_S`` or 60).
    """

    def __init__(self, engine: Engine, wait_s: float | None = None) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.wait_s = default_wait_s() if wait_s is None else float(wait_s)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for tests and maintenance; prefer the methods)."""
        return self._engine

    @property
    def url(self) -> str:
        """The database URL, password included."""
        return self._engine.url.render_as_string(hide_password=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Open a session in one transaction: commit on success, roll back on any error.

        The transaction first waits up to :attr:`wait_s` seconds for a connection, so a
        database that restarts meanwhile is waited for rather than failed on. Database errors
        raised by the catalog's rules are re-raised as PathRay errors (:class:`ProtectedError`
        for protection and the audit log, :class:`ConflictError` for other integrity
        violations), a connection lost on the way as :class:`CatalogUnavailableError` (see
        :func:`pathray.catalog.retry.retry_call` to re-run an idempotent call).

        Yields:
            The session; objects loaded in it stay usable (not expired) after the commit.

        Raises:
            CatalogUnavailableError: No connection within :attr:`wait_s` seconds, or the
                connection was lost inside the transaction (rolled back, or, if lost during
                COMMIT, possibly committed).
        """
        connection = self._connect()
        session = self._sessions(bind=connection)
        try:
            with session.begin():
                yield session
        except DBAPIError as exc:
            if is_connection_loss(exc):
                raise unavailable(exc, 0.0) from exc
            translated = translate_error(exc)
            if translated is None:
                raise
            raise translated from exc
        finally:
            session.close()
            connection.close()

    def _connect(self) -> Connection:
        """Check out a live connection, waiting up to :attr:`wait_s` for the database."""
        start = time.monotonic()
        attempt = 0
        while True:
            try:
                return self._engine.connect()  # the pool pings a reused PostgreSQL connection
            except DBAPIError as exc:
                waited = time.monotonic() - start
                if not is_connection_loss(exc) or waited >= self.wait_s:
                    if is_connection_loss(exc):
                        raise unavailable(exc, waited) from exc
                    raise
            time.sleep(min(backoff(attempt), max(0.0, self.wait_s - waited)))
            attempt += 1

    # -- audit -----------------------------------------------------------------------------

    @staticmethod
    def _audit(
        session: Session,
        actor: str,
        action: str,
        entity: str,
        entity_id: object,
        details: dict[str, Any] | None = None,
    ) -> None:
        session.add(
            AuditRow(
                actor=actor,
                action=action,
                entity=entity,
                entity_id=str(entity_id),
                details=details or {},
            )
        )

    # -- look-ups --------------------------------------------------------------------------

    @staticmethod
    def _store_row(session: Session, name: str) -> SlideStoreRow:
        row = session.scalar(select(SlideStoreRow).where(SlideStoreRow.name == name))
        if row is None:
            raise NotFoundError(f"Slide store '{name}' does not exist.")
        return row

    @staticmethod
    def _slide_row(session: Session, slide_id: int) -> SlideRow:
        row = session.get(SlideRow, slide_id)
        if row is None:
            raise NotFoundError(f"Slide {slide_id} does not exist.")
        return row

    @staticmethod
    def _image_set_row(session: Session, name: str, *, lock: bool = False) -> ImageSetRow:
        query = select(ImageSetRow).where(ImageSetRow.name == name)
        if lock:  # FOR SHARE on PostgreSQL: a concurrent protect() waits for this transaction
            query = query.with_for_update(read=True)
        row = session.scalar(query)
        if row is None:
            raise NotFoundError(f"Image set '{name}' does not exist.")
        return row

    @staticmethod
    def _annotation_set_row(session: Session, name: str) -> AnnotationSetRow:
        row = session.scalar(select(AnnotationSetRow).where(AnnotationSetRow.name == name))
        if row is None:
            raise NotFoundError(f"Annotation set '{name}' does not exist.")
        return row

    @staticmethod
    def _run_row(session: Session, run_id: str) -> RunRow:
        row = session.get(RunRow, run_id)
        if row is None:
            raise NotFoundError(f"Run '{run_id}' does not exist.")
        return row

    @staticmethod
    def _image_set_name(session: Session, image_set_id: int | None) -> str | None:
        if image_set_id is None:
            return None
        return session.scalar(select(ImageSetRow.name).where(ImageSetRow.id == image_set_id))

    @staticmethod
    def _slide_count(session: Session, image_set_id: int) -> int:
        query = select(func.count()).where(ImageSetMemberRow.image_set_id == image_set_id)
        return int(session.scalar(query) or 0)

    # -- guards ----------------------------------------------------------------------------

    @staticmethod
    def _refuse_if_protected(image_set: ImageSetRow) -> None:
        if image_set.protected:
            raise ProtectedError(
                f"Image set '{image_set.name}' is protected; its membership cannot change. "
                "An admin must unprotect it first."
            )

    @staticmethod
    def _refuse_if_annotations_frozen(session: Session, annotation_set: AnnotationSetRow) -> None:
        if annotation_set.image_set_id is None:
            return
        query = (
            select(ImageSetRow)
            .where(ImageSetRow.id == annotation_set.image_set_id)
            .with_for_update(read=True)
        )
        image_set = session.scalar(query)
        if image_set is not None and image_set.protected:
            raise ProtectedError(
                f"Annotation set '{annotation_set.name}' belongs to protected image set "
                f"'{image_set.name}'; its annotations cannot change. "
                "An admin must unprotect the image set first."
            )

    @staticmethod
    def _require_admin(session: Session, actor: str, action: str) -> None:
        if actor == SYSTEM_ACTOR:
            return
        role = session.scalar(select(UserRow.role).where(UserRow.name == actor))
        if role != "admin":
            who = f"'{actor}' is a {role}" if role else f"'{actor}' is not a registered user"
            raise ProtectedError(f"Only an admin may {action}; {who}.")

    @staticmethod
    def _check_choice(what: str, value: object, choices: tuple[str, ...]) -> None:
        if value not in choices:
            options = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"{what} must be one of {options}. Got {value!r} instead.")
