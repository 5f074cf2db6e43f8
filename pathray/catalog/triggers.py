"""Database backstops: triggers that enforce protection and the append-only audit log.

The service API refuses forbidden changes first, with a clear message; these triggers make
the same rules hold for every other door (raw SQL, another client, a bug). Each trigger fails
with a message that starts with a marker, so the API can turn the driver's error back into a
:class:`~pathray.errors.ProtectedError`.

The statements here belong to migration ``0001``: they are frozen. A later migration that
changes a trigger adds its own statements (a new function here, named after its revision)
and never edits these.
"""

from __future__ import annotations

PROTECTED_MARKER = "PATHRAY_PROTECTED:"
APPEND_ONLY_MARKER = "PATHRAY_APPEND_ONLY:"

# ---------------------------------------------------------------------------------------------
# SQLite: RAISE takes a literal message only, so these messages cannot name the set.
# ---------------------------------------------------------------------------------------------


def _sqlite_guard(name: str, when: str, table: str, condition: str, message: str) -> str:
    return (
        f"CREATE TRIGGER {name} BEFORE {when} ON {table} FOR EACH ROW WHEN {condition} "
        f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
    )


def _sqlite_set_protected(ref: str) -> str:
    return f"EXISTS (SELECT 1 FROM image_sets WHERE id = {ref} AND protected)"


def _sqlite_annotation_set_protected(ref: str) -> str:
    return (
        "EXISTS (SELECT 1 FROM annotation_sets a JOIN image_sets s ON s.id = a.image_set_id "
        f"WHERE a.id = {ref} AND s.protected)"
    )


_MEMBERS_MSG = f"{PROTECTED_MARKER} The image set is protected; its membership cannot change."
_ANNOTATIONS_MSG = (
    f"{PROTECTED_MARKER} The annotation set belongs to a protected image set; "
    "its annotations cannot change."
)
_ANNOTATION_SETS_MSG = (
    f"{PROTECTED_MARKER} The annotation set belongs to a protected image set; "
    "it cannot be changed, rebound or deleted."
)
_IMAGE_SETS_MSG = f"{PROTECTED_MARKER} A protected image set cannot be deleted."
_AUDIT_MSG = f"{APPEND_ONLY_MARKER} The audit log is append-only; rows cannot change or go."


def _sqlite_upgrade_0001() -> list[str]:
    new_or_old = "({old}) OR ({new})"
    return [
        _sqlite_guard(
            "pathray_members_insert",
            "INSERT",
            "image_set_members",
            _sqlite_set_protected("NEW.image_set_id"),
            _MEMBERS_MSG,
        ),
        _sqlite_guard(
            "pathray_members_update",
            "UPDATE",
            "image_set_members",
            new_or_old.format(
                old=_sqlite_set_protected("OLD.image_set_id"),
                new=_sqlite_set_protected("NEW.image_set_id"),
            ),
            _MEMBERS_MSG,
        ),
        _sqlite_guard(
            "pathray_members_delete",
            "DELETE",
            "image_set_members",
            _sqlite_set_protected("OLD.image_set_id"),
            _MEMBERS_MSG,
        ),
        _sqlite_guard(
            "pathray_annotations_insert",
            "INSERT",
            "annotations",
            _sqlite_annotation_set_protected("NEW.annotation_set_id"),
            _ANNOTATIONS_MSG,
        ),
        _sqlite_guard(
            "pathray_annotations_update",
            "UPDATE",
            "annotations",
            new_or_old.format(
                old=_sqlite_annotation_set_protected("OLD.annotation_set_id"),
                new=_sqlite_annotation_set_protected("NEW.annotation_set_id"),
            ),
            _ANNOTATIONS_MSG,
        ),
        _sqlite_guard(
            "pathray_annotations_delete",
            "DELETE",
            "annotations",
            _sqlite_annotation_set_protected("OLD.annotation_set_id"),
            _ANNOTATIONS_MSG,
        ),
        _sqlite_guard(
            "pathray_annotation_sets_update",
            "UPDATE",
            "annotation_sets",
            new_or_old.format(
                old=_sqlite_set_protected("OLD.image_set_id"),
                new=f"NEW.image_set_id IS NOT OLD.image_set_id AND "
                f"{_sqlite_set_protected('NEW.image_set_id')}",
            ),
            _ANNOTATION_SETS_MSG,
        ),
        _sqlite_guard(
            "pathray_annotation_sets_delete",
            "DELETE",
            "annotation_sets",
            _sqlite_set_protected("OLD.image_set_id"),
            _ANNOTATION_SETS_MSG,
        ),
        _sqlite_guard(
            "pathray_image_sets_delete", "DELETE", "image_sets", "OLD.protected", _IMAGE_SETS_MSG
        ),
        _sqlite_guard("pathray_audit_log_update", "UPDATE", "audit_log", "1", _AUDIT_MSG),
        _sqlite_guard("pathray_audit_log_delete", "DELETE", "audit_log", "1", _AUDIT_MSG),
    ]


def _sqlite_downgrade_0001() -> list[str]:
    names = [
        "pathray_members_insert",
        "pathray_members_update",
        "pathray_members_delete",
        "pathray_annotations_insert",
        "pathray_annotations_update",
        "pathray_annotations_delete",
        "pathray_annotation_sets_update",
        "pathray_annotation_sets_delete",
        "pathray_image_sets_delete",
        "pathray_audit_log_update",
        "pathray_audit_log_delete",
    ]
    return [f"DROP TRIGGER IF EXISTS {name}" for name in names]


# ---------------------------------------------------------------------------------------------
# PostgreSQL: PL/pgSQL functions, which can name the offending set.
# ---------------------------------------------------------------------------------------------

_PG_RAISE = "USING ERRCODE = 'integrity_constraint_violation'"
_PG_MEMBERS_MSG = f"{PROTECTED_MARKER} Image set ''%'' is protected; its membership cannot change."
_PG_ANNOTATIONS_MSG = (
    f"{PROTECTED_MARKER} Annotation set ''%'' belongs to protected image set ''%''; "
    "its annotations cannot change."
)
_PG_ANNOTATION_SETS_MSG = (
    f"{PROTECTED_MARKER} Annotation set ''%'' belongs to protected image set ''%''; "
    "it cannot be changed, rebound or deleted."
)

_PG_FUNCTIONS = {
    "pathray_guard_members": f"""
DECLARE
  set_name text;
BEGIN
  IF TG_OP <> 'INSERT' THEN
    SELECT name INTO set_name FROM image_sets WHERE id = OLD.image_set_id AND protected;
  END IF;
  IF set_name IS NULL AND TG_OP <> 'DELETE' THEN
    SELECT name INTO set_name FROM image_sets WHERE id = NEW.image_set_id AND protected;
  END IF;
  IF set_name IS NOT NULL THEN
    RAISE EXCEPTION '{_PG_MEMBERS_MSG}', set_name {_PG_RAISE};
  END IF;
  IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
  RETURN NEW;
END""",
    "pathray_guard_annotations": f"""
DECLARE
  set_name text;
  ann_name text;
BEGIN
  IF TG_OP <> 'INSERT' THEN
    SELECT s.name, a.name INTO set_name, ann_name
      FROM annotation_sets a JOIN image_sets s ON s.id = a.image_set_id
      WHERE a.id = OLD.annotation_set_id AND s.protected;
  END IF;
  IF set_name IS NULL AND TG_OP <> 'DELETE' THEN
    SELECT s.name, a.name INTO set_name, ann_name
      FROM annotation_sets a JOIN image_sets s ON s.id = a.image_set_id
      WHERE a.id = NEW.annotation_set_id AND s.protected;
  END IF;
  IF set_name IS NOT NULL THEN
    RAISE EXCEPTION '{_PG_ANNOTATIONS_MSG}', ann_name, set_name {_PG_RAISE};
  END IF;
  IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
  RETURN NEW;
END""",
    "pathray_guard_annotation_sets": f"""
DECLARE
  set_name text;
BEGIN
  SELECT name INTO set_name FROM image_sets WHERE id = OLD.image_set_id AND protected;
  IF set_name IS NULL AND TG_OP = 'UPDATE'
     AND NEW.image_set_id IS DISTINCT FROM OLD.image_set_id THEN
    SELECT name INTO set_name FROM image_sets WHERE id = NEW.image_set_id AND protected;
  END IF;
  IF set_name IS NOT NULL THEN
    RAISE EXCEPTION '{_PG_ANNOTATION_SETS_MSG}', OLD.name, set_name {_PG_RAISE};
  END IF;
  IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
  RETURN NEW;
END""",
    "pathray_guard_image_sets": f"""
BEGIN
  IF OLD.protected THEN
    RAISE EXCEPTION '{PROTECTED_MARKER} Image set ''%'' is protected; it cannot be deleted.',
      OLD.name {_PG_RAISE};
  END IF;
  RETURN OLD;
END""",
    "pathray_audit_append_only": f"""
BEGIN
  RAISE EXCEPTION '{APPEND_ONLY_MARKER} The audit log is append-only; % is refused.',
    TG_OP {_PG_RAISE};
END""",
}

_PG_TRIGGERS = [
    ("pathray_members_guard", "INSERT OR UPDATE OR DELETE", "image_set_members", "ROW",
     "pathray_guard_members"),
    ("pathray_annotations_guard", "INSERT OR UPDATE OR DELETE", "annotations", "ROW",
     "pathray_guard_annotations"),
    ("pathray_annotation_sets_guard", "UPDATE OR DELETE", "annotation_sets", "ROW",
     "pathray_guard_annotation_sets"),
    ("pathray_image_sets_guard", "DELETE", "image_sets", "ROW", "pathray_guard_image_sets"),
    ("pathray_audit_log_rows", "UPDATE OR DELETE", "audit_log", "ROW",
     "pathray_audit_append_only"),
    ("pathray_audit_log_truncate", "TRUNCATE", "audit_log", "STATEMENT",
     "pathray_audit_append_only"),
]  # fmt: skip


def _postgresql_upgrade_0001() -> list[str]:
    statements = [
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql "
        f"SET search_path FROM CURRENT AS $body${body}\n$body$"
        for name, body in _PG_FUNCTIONS.items()
    ]
    statements += [
        f"CREATE TRIGGER {name} BEFORE {events} ON {table} FOR EACH {level} "
        f"EXECUTE FUNCTION {function}()"
        for name, events, table, level, function in _PG_TRIGGERS
    ]
    return statements


def _postgresql_downgrade_0001() -> list[str]:
    statements = [
        f"DROP TRIGGER IF EXISTS {name} ON {table}" for name, _, table, _, _ in _PG_TRIGGERS
    ]
    statements += [f"DROP FUNCTION IF EXISTS {name}()" for name in _PG_FUNCTIONS]
    return statements


def upgrade_0001(dialect: str) -> list[str]:
    """Return the statements that create revision 0001's triggers.

    Args:
        dialect: SQLAlchemy dialect name, ``"sqlite"`` or ``"postgresql"``.

    Returns:
        DDL statements, in order.

    Raises:
        NotImplementedError: For any other database.
    """
    if dialect == "sqlite":
        return _sqlite_upgrade_0001()
    if dialect == "postgresql":
        return _postgresql_upgrade_0001()
    raise NotImplementedError(f"The catalog supports SQLite and PostgreSQL. Got {dialect} instead.")


def downgrade_0001(dialect: str) -> list[str]:
    """Return the statements that drop revision 0001's triggers (and PostgreSQL functions).

    Args:
        dialect: SQLAlchemy dialect name, ``"sqlite"`` or ``"postgresql"``.

    Returns:
        DDL statements, in order.

    Raises:
        NotImplementedError: For any other database.
    """
    if dialect == "sqlite":
        return _sqlite_downgrade_0001()
    if dialect == "postgresql":
        return _postgresql_downgrade_0001()
    raise NotImplementedError(f"The catalog supports SQLite and PostgreSQL. Got {dialect} instead.")


def sqlite_triggers_on_0001(table: str) -> list[str]:
    """The SQLite triggers of ``0001`` on one table, to put back after a migration rebuilds it.

    SQLite drops a table's triggers with the table, and Alembic's batch mode rebuilds a table
    (copy, drop, rename) for changes SQLite's ALTER TABLE cannot make.
    """
    # IF NOT EXISTS: whether a given ALTER rebuilt the table depends on the SQLite version.
    return [
        s.replace("CREATE TRIGGER ", "CREATE TRIGGER IF NOT EXISTS ", 1)
        for s in _sqlite_upgrade_0001()
        if f" ON {table} " in s
    ]


def sqlite_trigger_names_0001(table: str) -> list[str]:
    """Names of the SQLite triggers of ``0001`` on one table (to drop before a rebuild)."""
    return [s.split()[2] for s in _sqlite_upgrade_0001() if f" ON {table} " in s]
