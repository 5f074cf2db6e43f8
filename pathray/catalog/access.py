"""Users and the append-only audit log."""

from __future__ import annotations

from sqlalchemy import select

from pathray.catalog.base import CatalogBase
from pathray.catalog.models import USER_ROLES, AuditRow, UserRow
from pathray.catalog.records import AuditEntry, User
from pathray.errors import ConflictError, NotFoundError


class AccessMixin(CatalogBase):
    """Users, their roles, and the audit log."""

    def add_user(self, name: str, role: str = "clinician", *, actor: str = "system") -> User:
        """Register a user.

        Args:
            name: Unique user name (the ``actor`` of their changes).
            role: ``"clinician"``, ``"engineer"`` or ``"admin"``.
            actor: Who asks, for the audit log.

        Returns:
            The new user.

        Raises:
            ConflictError: A user of that name exists.
            ConfigError: Unknown role.
        """
        self._check_choice("role", role, USER_ROLES)
        with self.transaction() as session:
            if session.scalar(select(UserRow.id).where(UserRow.name == name)) is not None:
                raise ConflictError(f"User '{name}' exists already.")
            row = UserRow(name=name, role=role)
            session.add(row)
            session.flush()
            self._audit(session, actor, "create", "user", row.id, {"name": name, "role": role})
            return User.from_row(row)

    def get_user(self, name: str) -> User:
        """Return the user called ``name``.

        Raises:
            NotFoundError: No such user.
        """
        with self.transaction() as session:
            row = session.scalar(select(UserRow).where(UserRow.name == name))
            if row is None:
                raise NotFoundError(f"User '{name}' does not exist.")
            return User.from_row(row)

    def list_users(self) -> list[User]:
        """Return every user, by id."""
        with self.transaction() as session:
            return [User.from_row(r) for r in session.scalars(select(UserRow).order_by(UserRow.id))]

    def audit_entries(
        self,
        entity: str | None = None,
        entity_id: str | int | None = None,
        *,
        actor: str | None = None,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """Return audit entries, oldest first.

        Args:
            entity: Only entries about this kind of entity (``"image_set"``, ``"run"``, ...).
            entity_id: Only entries about this entity id.
            actor: Only entries by this actor.
            limit: At most this many entries (the newest ones).

        Returns:
            The entries.
        """
        with self.transaction() as session:
            query = select(AuditRow).order_by(AuditRow.id.desc())
            if entity is not None:
                query = query.where(AuditRow.entity == entity)
            if entity_id is not None:
                query = query.where(AuditRow.entity_id == str(entity_id))
            if actor is not None:
                query = query.where(AuditRow.actor == actor)
            if limit is not None:
                query = query.limit(limit)
            return [AuditEntry.from_row(row) for row in reversed(list(session.scalars(query)))]
