"""Engines and migrations: connect to a catalog database and bring its schema to head.

Alembic runs in code: :func:`alembic_config` builds the configuration (no ``alembic.ini`` on
disk), and :func:`upgrade` applies the migrations on an open connection. On PostgreSQL an
advisory lock serialises concurrent upgrades (several workers opening one catalog).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_PG_UPGRADE_LOCK = 0x7A7C_A7A1  # an arbitrary, fixed advisory-lock key


def alembic_config(url: str | None = None) -> Config:
    """Build the Alembic configuration of the catalog in code.

    Args:
        url: Database URL, for Alembic commands that open their own connection.

    Returns:
        A configuration whose script location is the packaged ``migrations`` folder.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """Return the newest migration revision shipped with this code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the catalog ships at least one migration"
    return head


def current_revision(engine: Engine) -> str | None:
    """Return the revision the database is at, or None if it was never migrated."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the migrations up to ``revision`` in one transaction.

    Args:
        engine: Engine of the catalog database.
        revision: Target revision; ``"head"`` for the newest.
    """
    config = alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_UPGRADE_LOCK})
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Revert the migrations down to ``revision`` (``"base"`` removes every table).

    Args:
        engine: Engine of the catalog database.
        revision: Target revision.
    """
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for a catalog URL (SQLite or PostgreSQL).

    SQLite connections enforce foreign keys, wait up to 30 s for a lock and use the WAL
    journal; the parent folder of a SQLite file is created.

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:///path/catalog.db`` or
            ``postgresql+psycopg://user@host/db``.
        **kwargs: Passed to :func:`sqlalchemy.create_engine`.

    Returns:
        The engine.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, **kwargs)
