"""The model registry: models, their numbered versions, lineage and aliases.

A model (a name and a framework) has versions 1, 2, 3, ...; each version points at a
content-addressed artifact in the cold store (:mod:`pathray.results.artifacts`) and records the
training run that made it, its metrics, the version it was derived from, the container image and
the resources it needs. Aliases (``champion``, ``staging``) name one version each and move when a
version is promoted.

Example:
    >>> cat.register_model("nuclei-rf", "sklearn", task="nucleus segmentation")  # doctest: +SKIP
    >>> v1 = cat.add_model_version("nuclei-rf", artifact=art)  # doctest: +SKIP
    >>> cat.set_alias("nuclei-rf", "champion", v1.version)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pathray.catalog.base import CatalogBase, json_safe
from pathray.catalog.models import (
    MODEL_FRAMEWORKS,
    Base,
    ModelAliasRow,
    ModelRow,
    ModelVersionRow,
)
from pathray.catalog.records import Model, ModelVersion
from pathray.errors import ConfigError, ConflictError, NotFoundError
from pathray.results.artifacts import Artifact, check_digest

LATEST = "latest"
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_RESOURCE_DEFAULTS: dict[str, Any] = {"cpus": 1.0, "gpus": 0.0, "memory_mb": None}


def insert_or_ignore(
    session: Session, entity: type[Base], values: Mapping[str, Any], keys: Sequence[str]
) -> int | None:
    """Insert a row unless one with the same unique key exists (race-free on both dialects).

    Args:
        session: The open session.
        entity: An ORM class whose table has an integer ``id`` primary key.
        values: Column values of the new row.
        keys: Columns of the unique constraint that may conflict.

    Returns:
        The new row's id, or None when a row with that key existed.
    """
    table = cast(Table, entity.__table__)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (
        insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=list(keys))
        .returning(table.c.id)
    )
    return session.execute(stmt).scalar_one_or_none()


def check_name(what: str, name: str) -> str:
    """Check a registry name: not empty, no surrounding blanks, no ``@``.

    Raises:
        ConfigError: The name is unusable.
    """
    if not name or name != name.strip() or "@" in name:
        raise ConfigError(
            f"A {what} name must be non-empty, without surrounding blanks or '@'. Got {name!r}."
        )
    return name


def normalise_resources(resources: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a model's resource needs and fill in the defaults.

    Args:
        resources: Any of ``cpus`` (default 1), ``gpus`` (default 0) and ``memory_mb``
            (default None, unknown).

    Returns:
        ``{"cpus": float, "gpus": float, "memory_mb": int | None}``.

    Raises:
        ConfigError: An unknown key, or a value that is not a finite number >= 0.
    """
    given = dict(resources or {})
    unknown = sorted(set(given) - set(_RESOURCE_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"Resources may name only cpus, gpus and memory_mb. Got {', '.join(unknown)} instead."
        )
    out = {**_RESOURCE_DEFAULTS, **given}
    for key, value in out.items():
        if value is None and key == "memory_mb":
            continue
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value < 0:
            raise ConfigError(f"Resource {key} must be a number >= 0. Got {value!r} instead.")
    out["cpus"], out["gpus"] = float(out["cpus"]), float(out["gpus"])
    if out["memory_mb"] is not None:
        out["memory_mb"] = int(out["memory_mb"])
    return out


def _artifact_fields(
    artifact: Artifact | None, digest: str | None, uri: str | None
) -> tuple[str, str, int | None]:
    """``(digest, uri, size)`` of a version's artifact, given as an Artifact or digest and uri."""
    if artifact is not None:
        if digest is not None or uri is not None:
            raise ConfigError("Give either artifact or artifact_digest and artifact_uri.")
        return check_digest(artifact.digest), artifact.uri, artifact.size
    if digest is not None and uri:
        return check_digest(digest), uri, None
    raise ConfigError("A model version needs its artifact (or its digest and uri).")


def check_alias(alias: str) -> str:
    """Check an alias: a letter, then letters, digits, ``_``, ``.`` or ``-``; not ``latest``.

    Raises:
        ConfigError: The alias is unusable.
    """
    if not _ALIAS.match(alias) or alias == LATEST:
        raise ConfigError(
            "An alias must be a letter then up to 63 letters, digits, '_', '.' or '-', and not "
            f"{LATEST!r}. Got {alias!r} instead."
        )
    return alias


class ModelRegistryMixin(CatalogBase):
    """Models, model versions (with lineage) and aliases."""

    # -- look-ups --------------------------------------------------------------------------

    @staticmethod
    def _model_row(session: Session, name: str, *, lock: bool = False) -> ModelRow:
        query = select(ModelRow).where(ModelRow.name == name)
        if lock:  # FOR UPDATE on PostgreSQL: version numbers and aliases change one at a time
            query = query.with_for_update()
        row = session.scalar(query)
        if row is None:
            raise NotFoundError(f"Model '{name}' does not exist.")
        return row

    @staticmethod
    def _model_version_row(
        session: Session, model: ModelRow, version: int | str
    ) -> ModelVersionRow:
        query = select(ModelVersionRow).where(ModelVersionRow.model_id == model.id)
        if isinstance(version, str) and version.isdigit():
            version = int(version)
        if isinstance(version, int):
            query = query.where(ModelVersionRow.version == version)
        elif version == LATEST:
            query = query.order_by(ModelVersionRow.version.desc()).limit(1)
        else:
            query = query.join(ModelAliasRow, ModelAliasRow.version_id == ModelVersionRow.id).where(
                ModelAliasRow.model_id == model.id, ModelAliasRow.alias == version
            )
        row = session.scalar(query)
        if row is None:
            what = "has no versions" if version == LATEST else f"has no version {version!r}"
            raise NotFoundError(f"Model '{model.name}' {what}.")
        return row

    @staticmethod
    def _model_record(session: Session, row: ModelRow) -> Model:
        latest = session.scalar(
            select(func.max(ModelVersionRow.version)).where(ModelVersionRow.model_id == row.id)
        )
        aliases = session.execute(
            select(ModelAliasRow.alias, ModelVersionRow.version)
            .join(ModelVersionRow, ModelVersionRow.id == ModelAliasRow.version_id)
            .where(ModelAliasRow.model_id == row.id)
            .order_by(ModelAliasRow.alias)
        )
        return Model.from_row(row, latest, {alias: number for alias, number in aliases})

    @staticmethod
    def _model_version_record(session: Session, row: ModelVersionRow) -> ModelVersion:
        name = session.scalar(select(ModelRow.name).where(ModelRow.id == row.model_id)) or ""
        parent = None
        if row.parent_version_id is not None:
            parent = session.scalar(
                select(ModelVersionRow.version).where(ModelVersionRow.id == row.parent_version_id)
            )
        aliases = session.scalars(
            select(ModelAliasRow.alias).where(ModelAliasRow.version_id == row.id)
        )
        return ModelVersion.from_row(row, name, parent, tuple(aliases))

    # -- models ----------------------------------------------------------------------------

    def register_model(
        self,
        name: str,
        framework: str,
        task: str = "",
        description: str = "",
        *,
        actor: str = "system",
    ) -> Model:
        """Register a model, or return it when it exists with the same framework.

        The task and description of an existing model are kept as they are.

        Args:
            name: Unique model name (no ``@``).
            framework: ``"classical"``, ``"sklearn"``, ``"xgboost"`` or ``"torch"``.
            task: What the model does, free text.
            description: Longer description.
            actor: Who asks, for the audit log.

        Returns:
            The model.

        Raises:
            ConfigError: Unknown framework or unusable name.
            ConflictError: A model of that name exists with another framework.
        """
        check_name("model", name)
        self._check_choice("framework", framework, MODEL_FRAMEWORKS)
        values = {"name": name, "framework": framework, "task": task, "description": description}
        with self.transaction() as session:
            new_id = insert_or_ignore(session, ModelRow, values, ["name"])
            if new_id is not None:
                details = {"name": name, "framework": framework, "task": task}
                self._audit(session, actor, "create", "model", new_id, details)
            row = self._model_row(session, name)
            if row.framework != framework:
                raise ConflictError(
                    f"Model '{name}' exists with framework '{row.framework}'. "
                    f"Got '{framework}' instead."
                )
            return self._model_record(session, row)

    def get_model(self, name: str) -> Model:
        """Return the model called ``name``.

        Raises:
            NotFoundError: No such model.
        """
        with self.transaction() as session:
            return self._model_record(session, self._model_row(session, name))

    def list_models(self) -> list[Model]:
        """Return every model, by name."""
        with self.transaction() as session:
            rows = session.scalars(select(ModelRow).order_by(ModelRow.name))
            return [self._model_record(session, row) for row in rows]

    # -- versions --------------------------------------------------------------------------

    def add_model_version(
        self,
        model: str,
        *,
        artifact: Artifact | None = None,
        artifact_digest: str | None = None,
        artifact_uri: str | None = None,
        training_run: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        parent_version: int | str | None = None,
        container_image: str | None = None,
        resources: Mapping[str, Any] | None = None,
        card: Mapping[str, Any] | None = None,
        created_by: str = "system",
    ) -> ModelVersion:
        """Record a new version of a model; it gets the next number (1, 2, 3, ...).

        Give the artifact either as the :class:`~pathray.results.artifacts.Artifact` that
        :meth:`ArtifactStore.put` returned, or as ``artifact_digest`` and ``artifact_uri``.

        Args:
            model: Name of a registered model.
            artifact: The stored artifact.
            artifact_digest: SHA-256 of the artifact (instead of ``artifact``).
            artifact_uri: Where the artifact lives (instead of ``artifact``).
            training_run: How it was trained: ``image_set``, ``annotation_set``, ``config``,
                ``code_version``, ``seed`` (and anything else worth keeping).
            metrics: Its metrics (NumPy values are converted; NaN is stored as null).
            parent_version: The version (number or alias) of this model it derives from.
            container_image: Image to run it in, if any.
            resources: ``cpus``, ``gpus``, ``memory_mb`` it needs (see
                :func:`normalise_resources`).
            card: Its model card as JSON data (validated by the caller, see
                :mod:`pathray.services.models`).
            created_by: Who made it; also the actor in the audit log.

        Returns:
            The new version.

        Raises:
            NotFoundError: The model or the parent version does not exist.
            ConfigError: The artifact is missing or given twice, a malformed digest, bad
                resources.
        """
        digest, uri, size = _artifact_fields(artifact, artifact_digest, artifact_uri)
        with self.transaction() as session:
            model_row = self._model_row(session, model, lock=True)
            return self._insert_version(
                session,
                model_row,
                digest=digest,
                uri=uri,
                size=size,
                parent_version=parent_version,
                training_run=training_run,
                metrics=metrics,
                container_image=container_image,
                resources=resources,
                card=card,
                created_by=created_by,
            )

    def _insert_version(
        self,
        session: Session,
        model_row: ModelRow,
        *,
        digest: str,
        uri: str,
        size: int | None,
        parent_version: int | str | None,
        training_run: Mapping[str, Any] | None,
        metrics: Mapping[str, Any] | None,
        container_image: str | None,
        resources: Mapping[str, Any] | None,
        card: Mapping[str, Any] | None,
        created_by: str,
    ) -> ModelVersion:
        """Insert the next version of a (locked) model in the open transaction."""
        needs = normalise_resources(resources)
        parent = None
        if parent_version is not None:
            parent = self._model_version_row(session, model_row, parent_version)
        # the next number is computed inside the INSERT: atomic under SQLite's write lock
        # (and under the model's row lock on PostgreSQL)
        next_version = (
            select(func.coalesce(func.max(ModelVersionRow.version), 0) + 1)
            .where(ModelVersionRow.model_id == model_row.id)
            .scalar_subquery()
        )
        new_id = session.execute(
            insert(ModelVersionRow)
            .values(
                model_id=model_row.id,
                version=next_version,
                artifact_digest=digest,
                artifact_uri=uri,
                artifact_size=size,
                parent_version_id=None if parent is None else parent.id,
                training_run=json_safe(dict(training_run or {})),
                metrics=json_safe(dict(metrics or {})),
                container_image=container_image,
                resources=needs,
                card=json_safe(dict(card or {})),
                created_by=created_by,
            )
            .returning(ModelVersionRow.id)
        ).scalar_one()
        row = session.get_one(ModelVersionRow, new_id)
        parent_number = None if parent is None else parent.version
        details = {
            "model": model_row.name,
            "version": row.version,
            "artifact": digest,
            "parent_version": parent_number,
        }
        self._audit(session, created_by, "create", "model_version", row.id, details)
        return ModelVersion.from_row(row, model_row.name, parent_number)

    def register_model_version(
        self,
        name: str,
        framework: str,
        *,
        artifact: Artifact,
        card: Mapping[str, Any],
        task: str = "",
        alias: str | None = None,
        container_image: str | None = None,
        resources: Mapping[str, Any] | None = None,
        created_by: str = "system",
    ) -> ModelVersion:
        """Record a model (created if new), its next version with a card, and an alias, at once.

        Everything happens in one transaction: on any error nothing is recorded.

        Args:
            name: The model's name (created with ``framework`` and ``task`` if new).
            framework: ``"sklearn"``, ``"xgboost"``, ``"torch"``, ...
            artifact: The stored version folder.
            card: The model card as JSON data.
            task: What the model does (kept as it is for an existing model).
            alias: An alias to point at the new version, if any.
            container_image: Image to run it in, if any.
            resources: ``cpus``, ``gpus``, ``memory_mb`` it needs.
            created_by: Who registers it; also the actor in the audit log.

        Returns:
            The new version (with its alias).

        Raises:
            ConfigError: An unusable name or alias, unknown framework, bad resources.
            ConflictError: The model exists with another framework.
        """
        check_name("model", name)
        self._check_choice("framework", framework, MODEL_FRAMEWORKS)
        if alias is not None:
            check_alias(alias)
        values = {"name": name, "framework": framework, "task": task, "description": ""}
        with self.transaction() as session:
            new_id = insert_or_ignore(session, ModelRow, values, ["name"])
            if new_id is not None:
                details = {"name": name, "framework": framework, "task": task}
                self._audit(session, created_by, "create", "model", new_id, details)
            model_row = self._model_row(session, name, lock=True)
            if model_row.framework != framework:
                raise ConflictError(
                    f"Model '{name}' exists with framework '{model_row.framework}'. "
                    f"Got '{framework}' instead."
                )
            version = self._insert_version(
                session,
                model_row,
                digest=artifact.digest,
                uri=artifact.uri,
                size=artifact.size,
                parent_version=None,
                training_run=None,
                metrics=None,
                container_image=container_image,
                resources=resources,
                card=card,
                created_by=created_by,
            )
            if alias is not None:
                target = self._model_version_row(session, model_row, version.version)
                self._point_alias(session, model_row, alias, target, created_by)
            row = self._model_version_row(session, model_row, version.version)
            return self._model_version_record(session, row)

    def get_model_version(self, model: str, version: int | str = LATEST) -> ModelVersion:
        """Return a version of a model by number, alias, or ``"latest"``.

        Raises:
            NotFoundError: No such model or version.
        """
        with self.transaction() as session:
            row = self._model_version_row(session, self._model_row(session, model), version)
            return self._model_version_record(session, row)

    def list_model_versions(self, model: str) -> list[ModelVersion]:
        """Return a model's versions, oldest first.

        Raises:
            NotFoundError: No such model.
        """
        with self.transaction() as session:
            model_row = self._model_row(session, model)
            rows = list(
                session.scalars(
                    select(ModelVersionRow)
                    .where(ModelVersionRow.model_id == model_row.id)
                    .order_by(ModelVersionRow.version)
                )
            )
            numbers = {row.id: row.version for row in rows}
            aliases: dict[int, list[str]] = {}
            for alias, version_id in session.execute(
                select(ModelAliasRow.alias, ModelAliasRow.version_id).where(
                    ModelAliasRow.model_id == model_row.id
                )
            ):
                aliases.setdefault(version_id, []).append(alias)
            return [
                ModelVersion.from_row(
                    row,
                    model_row.name,
                    None if row.parent_version_id is None else numbers.get(row.parent_version_id),
                    tuple(aliases.get(row.id, ())),
                )
                for row in rows
            ]

    def model_lineage(self, model: str, version: int | str = LATEST) -> list[ModelVersion]:
        """Return a version, its parent, its parent's parent, ... up to the root.

        Raises:
            NotFoundError: No such model or version.
        """
        with self.transaction() as session:
            row: ModelVersionRow | None = self._model_version_row(
                session, self._model_row(session, model), version
            )
            chain: list[ModelVersion] = []
            seen: set[int] = set()
            while row is not None and row.id not in seen:
                seen.add(row.id)
                chain.append(self._model_version_record(session, row))
                parent_id = row.parent_version_id
                row = None if parent_id is None else session.get(ModelVersionRow, parent_id)
            return chain

    # -- aliases ---------------------------------------------------------------------------

    def set_alias(
        self, model: str, alias: str, version: int | str, *, actor: str = "system"
    ) -> ModelVersion:
        """Point an alias (e.g. ``champion``) at a version, moving it from any other version.

        Args:
            model: Name of the model.
            alias: The alias; not a number and not ``"latest"``.
            version: The version (number, or another alias) it should name.
            actor: Who asks, for the audit log.

        Returns:
            The version the alias now names.

        Raises:
            NotFoundError: No such model or version.
            ConfigError: An unusable alias.
        """
        check_alias(alias)
        with self.transaction() as session:
            model_row = self._model_row(session, model, lock=True)
            target = self._model_version_row(session, model_row, version)
            self._point_alias(session, model_row, alias, target, actor)
            return self._model_version_record(session, target)

    def _point_alias(
        self,
        session: Session,
        model_row: ModelRow,
        alias: str,
        target: ModelVersionRow,
        actor: str,
    ) -> None:
        """Point an alias at a version in the open transaction (audited when it moves)."""
        row = session.get(ModelAliasRow, (model_row.id, alias))
        previous = None
        if row is not None:
            if row.version_id == target.id:
                return
            previous = session.scalar(
                select(ModelVersionRow.version).where(ModelVersionRow.id == row.version_id)
            )
            row.version_id = target.id
        else:
            session.add(ModelAliasRow(model_id=model_row.id, alias=alias, version_id=target.id))
        session.flush()
        details = {"alias": alias, "version": target.version, "previous": previous}
        self._audit(session, actor, "set_alias", "model", model_row.id, details)

    def remove_alias(self, model: str, alias: str, *, actor: str = "system") -> None:
        """Remove an alias of a model.

        Raises:
            NotFoundError: No such model or alias.
        """
        with self.transaction() as session:
            model_row = self._model_row(session, model, lock=True)
            row = session.get(ModelAliasRow, (model_row.id, alias))
            if row is None:
                raise NotFoundError(f"Model '{model}' has no alias {alias!r}.")
            version = session.scalar(
                select(ModelVersionRow.version).where(ModelVersionRow.id == row.version_id)
            )
            session.delete(row)
            details = {"alias": alias, "version": version}
            self._audit(session, actor, "remove_alias", "model", model_row.id, details)
