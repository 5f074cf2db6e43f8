"""Users, who may change which annotations, and the append-only audit log.

Annotation permissions are decided here, in the catalog, so the API, the app and the CLI agree.
They apply to actors that are registered users, by role:

- an annotation set of kind ``correction`` (a run's results under review) may be changed by
  every user: correcting is what clinicians do;
- any other set (a reference, an import, a model's output) only by its owner (who made it:
  a user's own scratch set) or an engineer or admin;
- within a set one may change, a user may edit their own annotations, and an engineer, an
  admin or the set's owner anybody's; delete their own, and only an admin anybody's.

An actor that is no registered user is one of PathRay's own processes (an import, a pipeline,
an iteration loop, the CLI's ``system``): they are trusted, as whoever runs them has the
database anyway. A protected image set's annotations still refuse everybody. Every change is
audited by the method that makes it.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from pathray.catalog.auth import PermissionDeniedError
from pathray.catalog.base import CatalogBase
from pathray.catalog.models import USER_ROLES, AnnotationSetRow, AuditRow, UserRow
from pathray.catalog.records import AuditEntry, User
from pathray.errors import ConflictError, NotFoundError

#: Roles that may change any annotation set that is not protected.
SET_EDITOR_ROLES = frozenset({"engineer", "admin"})
#: Roles that may edit, or delete, other users' annotations.
EDITOR_ROLES = frozenset({"engineer", "admin"})
DELETER_ROLES = frozenset({"admin"})
#: Sets of this kind are open to every user.
OPEN_SET_KINDS = frozenset({"correction"})


def may_change_set(role: str | None, actor: str, kind: str, owner: str | None) -> bool:
    """Whether an actor may add to, edit in or delete from an annotation set.

    Args:
        role: The actor's role, or None for an actor that is no registered user (trusted).
        actor: The actor's name.
        kind: The set's kind.
        owner: Who made the set (None: nobody known).
    """
    return role is None or kind in OPEN_SET_KINDS or actor == owner or role in SET_EDITOR_ROLES


def may_change_annotation(
    role: str | None, actor: str, author: str, owner: str | None, action: str
) -> bool:
    """Whether an actor may ``"update"`` or ``"delete"`` one annotation of a set it may change.

    Args:
        role: The actor's role, or None for an actor that is no registered user (trusted).
        actor: The actor's name.
        author: The annotation's author.
        owner: Who made the annotation's set.
        action: ``"update"`` or ``"delete"``.
    """
    if role is None or actor == author:
        return True
    if action == "delete":
        return role in DELETER_ROLES
    return role in EDITOR_ROLES or actor == owner


def user_role(session: Session, actor: str) -> str | None:
    """The role of the user called ``actor``, or None when no user has that name."""
    return session.scalar(select(UserRow.role).where(UserRow.name == actor))


def check_annotation_change(
    session: Session,
    actor: str,
    set_row: AnnotationSetRow,
    author: str | None = None,
    action: str = "add",
) -> None:
    """Refuse an actor who may not make this change (see the module's rules).

    Args:
        session: The open transaction.
        actor: Who asks.
        set_row: The annotation set changed.
        author: The author of the annotation changed (None when adding).
        action: ``"add"``, ``"update"`` or ``"delete"``.

    Raises:
        PermissionDeniedError: The actor's role does not allow the change.
    """
    role = user_role(session, actor)
    if not may_change_set(role, actor, set_row.kind, set_row.owner):
        owner = f"'{set_row.owner}'" if set_row.owner else "nobody"
        raise PermissionDeniedError(
            f"Annotation set '{set_row.name}' ({set_row.kind}, owned by {owner}) can be "
            f"changed by its owner, an engineer or an admin. Got {actor!r} with role "
            f"{role!r} instead."
        )
    if author is not None and not may_change_annotation(role, actor, author, set_row.owner, action):
        who = "an admin" if action == "delete" else "an engineer, an admin or the set's owner"
        raise PermissionDeniedError(
            f"Another user's annotation (by {author!r}) can be {action}d by its author or "
            f"{who}. Got {actor!r} with role {role!r} instead."
        )


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

    # -- annotation permissions ---------------------------------------------------------------

    def may_change_annotation_set(self, set_name: str, actor: str) -> bool:
        """Whether ``actor`` may add to, edit in or delete from an annotation set.

        Protection is not considered here (a protected set refuses everybody).

        Raises:
            NotFoundError: No such annotation set.
        """
        with self.transaction() as session:
            set_row = self._annotation_set_row(session, set_name)
            role = user_role(session, actor)
            return may_change_set(role, actor, set_row.kind, set_row.owner)
