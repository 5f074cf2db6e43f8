"""The catalog service API: one class, :class:`Catalog`, over SQLite or PostgreSQL.

Every mutating method runs in one transaction and writes an audit row in it; reads return
frozen records (:mod:`pathray.catalog.records`) usable after the session is closed.

Example:
    >>> cat = Catalog.open("sqlite:///catalog.db")  # doctest: +SKIP
    >>> cat.add_store("local", "/data/slides")  # doctest: +SKIP
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from pathray.catalog.access import AccessMixin
from pathray.catalog.annotations import AnnotationsMixin
from pathray.catalog.auth import AuthMixin
from pathray.catalog.comparisons import ComparisonsMixin
from pathray.catalog.corrections import CorrectionsMixin
from pathray.catalog.engine import make_engine, upgrade
from pathray.catalog.image_sets import ImageSetsMixin
from pathray.catalog.iterations import IterationsMixin
from pathray.catalog.models_registry import ModelRegistryMixin
from pathray.catalog.pipeline_registry import PipelineRegistryMixin
from pathray.catalog.run_control import RunControlMixin
from pathray.catalog.runs import RunsMixin
from pathray.catalog.slides import SlidesMixin
from pathray.config import Settings


class Catalog(
    AccessMixin,
    SlidesMixin,
    ImageSetsMixin,
    AnnotationsMixin,
    RunsMixin,
    RunControlMixin,
    ModelRegistryMixin,
    PipelineRegistryMixin,
    IterationsMixin,
    CorrectionsMixin,
    AuthMixin,
    ComparisonsMixin,
):
    """The hot catalog: slides, image sets, annotations, runs, results, models, units, audit.

    Create it with :meth:`open`. A catalog pickles as its URL (the copy reconnects without
    migrating), so it can be handed to Ray tasks and actors.
    """

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        migrate: bool = True,
        wait_s: float | None = None,
        **engine_kwargs: Any,
    ) -> Catalog:
        """Connect to a catalog database and upgrade its schema to the newest revision.

        Args:
            url: SQLAlchemy URL (``sqlite:///path.db``, ``postgresql+psycopg://...``); by
                default ``Settings.from_env().catalog_url`` (``PATHRAY_CATALOG_URL`` or the
                SQLite file under ``PATHRAY_HOME``).
            migrate: Apply pending migrations (on by default).
            wait_s: Seconds each transaction waits for an unreachable database (default:
                ``PATHRAY_CATALOG_WAIT_S`` or 60).
            **engine_kwargs: Passed to :func:`sqlalchemy.create_engine`.

        Returns:
            The open catalog.
        """
        engine = make_engine(url or Settings.from_env().catalog_url, **engine_kwargs)
        try:
            if migrate:
                upgrade(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, wait_s)

    def close(self) -> None:
        """Release the database connections. The catalog must not be used afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self.url, self.wait_s))

    def __repr__(self) -> str:
        return f"Catalog({self._engine.url.render_as_string(hide_password=True)!r})"


def _reopen(url: str, wait_s: float | None = None) -> Catalog:
    return Catalog.open(url, migrate=False, wait_s=wait_s)
