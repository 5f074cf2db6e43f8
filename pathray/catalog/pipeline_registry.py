"""Units, unit versions (with their iteration lineage) and pipeline versions with their DAGs.

A unit version is identified by ``(unit, version, config_hash)``; it may load a model version,
and an iterated unit (retrained or reconfigured) is a new unit version whose parent is the old
one. A pipeline version (``name``, ``version``) keeps one spec for ever; its nodes pin unit
versions and its edges are the precursor relations (the output of ``src`` feeds ``dst``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pathray.catalog.base import CatalogBase, json_safe
from pathray.catalog.models import (
    ModelVersionRow,
    PipelineEdgeRow,
    PipelineNodeRow,
    PipelineRow,
    UnitRow,
    UnitVersionRow,
)
from pathray.catalog.models_registry import check_name, insert_or_ignore
from pathray.catalog.records import PipelineRecord, UnitVersion
from pathray.errors import ConfigError, ConflictError, NotFoundError


def check_dag(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Check that edges join known nodes without loops or cycles.

    Args:
        nodes: The node ids.
        edges: ``(src, dst)`` pairs.

    Returns:
        The distinct edges, sorted.

    Raises:
        ConfigError: An edge names an unknown node, joins a node to itself, or closes a cycle.
    """
    known = set(nodes)
    pairs = sorted({(str(src), str(dst)) for src, dst in edges})
    for src, dst in pairs:
        missing = [n for n in (src, dst) if n not in known]
        if missing:
            raise ConfigError(f"Edge {src} -> {dst} names unknown node(s): {', '.join(missing)}.")
        if src == dst:
            raise ConfigError(f"Edge {src} -> {dst} joins a node to itself.")
    indegree = dict.fromkeys(known, 0)
    for _, dst in pairs:
        indegree[dst] += 1
    ready = [n for n, d in indegree.items() if d == 0]
    while ready:
        node = ready.pop()
        for src, dst in pairs:
            if src == node:
                indegree[dst] -= 1
                if indegree[dst] == 0:
                    ready.append(dst)
    cyclic = sorted(n for n, d in indegree.items() if d > 0)
    if cyclic:
        raise ConfigError(f"The pipeline's edges form a cycle through {', '.join(cyclic)}.")
    return pairs


class PipelineRegistryMixin(CatalogBase):
    """Units, unit versions and pipeline versions."""

    # -- look-ups --------------------------------------------------------------------------

    @staticmethod
    def _unit_version_row(session: Session, unit_version_id: int) -> UnitVersionRow:
        row = session.get(UnitVersionRow, unit_version_id)
        if row is None:
            raise NotFoundError(f"Unit version {unit_version_id} does not exist.")
        return row

    @staticmethod
    def _unit_version_record(session: Session, row: UnitVersionRow) -> UnitVersion:
        unit = session.get_one(UnitRow, row.unit_id)
        return UnitVersion.from_row(row, unit.name, unit.role)

    @staticmethod
    def _pipeline_row(session: Session, name: str, version: str) -> PipelineRow:
        row = session.scalar(
            select(PipelineRow).where(PipelineRow.name == name, PipelineRow.version == version)
        )
        if row is None:
            raise NotFoundError(f"Pipeline '{name}' version '{version}' does not exist.")
        return row

    @staticmethod
    def _pipeline_record(session: Session, row: PipelineRow) -> PipelineRecord:
        nodes = session.execute(
            select(PipelineNodeRow.node_id, PipelineNodeRow.unit_version_id).where(
                PipelineNodeRow.pipeline_id == row.id
            )
        )
        edges = session.execute(
            select(PipelineEdgeRow.src, PipelineEdgeRow.dst).where(
                PipelineEdgeRow.pipeline_id == row.id
            )
        )
        return PipelineRecord.from_row(
            row, {n: uv for n, uv in nodes}, [(src, dst) for src, dst in edges]
        )

    def _get_or_create_unit(
        self, session: Session, name: str, role: str | None, actor: str
    ) -> UnitRow:
        new_id = insert_or_ignore(session, UnitRow, {"name": name, "role": role}, ["name"])
        if new_id is not None:
            self._audit(session, actor, "create", "unit", new_id, {"name": name, "role": role})
        row = session.scalar(select(UnitRow).where(UnitRow.name == name))
        assert row is not None, "the unit was just inserted or existed"
        if role is not None and row.role != role:
            if row.role is not None:
                raise ConflictError(f"Unit '{name}' has role '{row.role}'. Got '{role}' instead.")
            row.role = role
            self._audit(session, actor, "set_role", "unit", row.id, {"role": role})
        return row

    # -- unit versions ---------------------------------------------------------------------

    def register_unit_version(
        self,
        unit_name: str,
        version: str,
        config: Mapping[str, Any],
        config_hash: str,
        model_version_id: int | None = None,
        parent_id: int | None = None,
        role: str | None = None,
        code_version: str = "",
        *,
        actor: str = "system",
    ) -> UnitVersion:
        """Record a unit version with its config, or return it when it exists.

        A unit version is identified by ``(unit_name, version, config_hash)``; the unit is
        created on first use. The config hash should cover everything that changes the
        outputs (the model version included): an existing unit version keeps its config and
        model version, and asking for it with others is a conflict. Its code version is the one
        first recorded.

        Args:
            unit_name: Name of the unit (as registered in :mod:`pathray.units.registry`).
            version: The unit's version.
            config: The validated config (JSON).
            config_hash: Hash of the config (``Unit.config_hash``).
            model_version_id: Id of the model version the unit loads, if any.
            parent_id: Id of the unit version this one iterates on (same unit), if any.
            role: The unit's output role; set once, then fixed.
            code_version: Version of the code (package version, git commit).
            actor: Who asks, for the audit log.

        Returns:
            The unit version.

        Raises:
            NotFoundError: The model version or the parent does not exist.
            ConfigError: The parent is a version of another unit; an empty version or hash.
            ConflictError: The unit exists with another role, or the unit version exists with
                another config, model version or parent.
        """
        check_name("unit", unit_name)
        version = str(version)
        if not version or not config_hash:
            raise ConfigError(
                f"A unit version needs a version and a config hash. Got {version!r} and "
                f"{config_hash!r}."
            )
        stored_config = json_safe(dict(config))
        with self.transaction() as session:
            unit = self._get_or_create_unit(session, unit_name, role, actor)
            if (
                model_version_id is not None
                and session.get(ModelVersionRow, model_version_id) is None
            ):
                raise NotFoundError(f"Model version {model_version_id} does not exist.")
            if (
                parent_id is not None
                and self._unit_version_row(session, parent_id).unit_id != unit.id
            ):
                raise ConfigError(
                    f"The parent of a '{unit_name}' version must be a '{unit_name}' version. "
                    f"Got unit version {parent_id} of another unit."
                )
            values = {
                "unit_id": unit.id,
                "version": version,
                "config": stored_config,
                "config_hash": config_hash,
                "model_version_id": model_version_id,
                "parent_id": parent_id,
                "code_version": code_version,
            }
            keys = ["unit_id", "version", "config_hash"]
            new_id = insert_or_ignore(session, UnitVersionRow, values, keys)
            if new_id is not None:
                details = {k: values[k] for k in ("version", "config_hash", "model_version_id")}
                details.update(unit=unit_name, parent_id=parent_id)
                self._audit(session, actor, "create", "unit_version", new_id, details)
            row = session.scalar(
                select(UnitVersionRow).where(
                    UnitVersionRow.unit_id == unit.id,
                    UnitVersionRow.version == version,
                    UnitVersionRow.config_hash == config_hash,
                )
            )
            assert row is not None, "the unit version was just inserted or existed"
            self._refuse_other_unit_version(row, unit_name, values)
            return UnitVersion.from_row(row, unit.name, unit.role)

    @staticmethod
    def _refuse_other_unit_version(
        row: UnitVersionRow, unit_name: str, values: Mapping[str, Any]
    ) -> None:
        ref = f"Unit '{unit_name}' version '{row.version}' with config hash '{row.config_hash}'"
        if row.config != values["config"]:
            raise ConflictError(f"{ref} exists with another config: {row.config}.")
        if row.model_version_id != values["model_version_id"]:
            raise ConflictError(
                f"{ref} exists with model version {row.model_version_id}. Got "
                f"{values['model_version_id']} instead; a new model version needs a new config "
                "hash or unit version."
            )
        if values["parent_id"] is not None and row.parent_id != values["parent_id"]:
            raise ConflictError(
                f"{ref} exists with parent {row.parent_id}. Got {values['parent_id']} instead."
            )

    def get_unit_version(self, unit_version_id: int) -> UnitVersion:
        """Return a unit version by id.

        Raises:
            NotFoundError: No such unit version.
        """
        with self.transaction() as session:
            row = self._unit_version_row(session, unit_version_id)
            return self._unit_version_record(session, row)

    def list_unit_versions(self, unit_name: str) -> list[UnitVersion]:
        """Return a unit's versions, oldest first.

        Raises:
            NotFoundError: No such unit.
        """
        with self.transaction() as session:
            unit = session.scalar(select(UnitRow).where(UnitRow.name == unit_name))
            if unit is None:
                raise NotFoundError(f"Unit '{unit_name}' does not exist.")
            rows = session.scalars(
                select(UnitVersionRow)
                .where(UnitVersionRow.unit_id == unit.id)
                .order_by(UnitVersionRow.id)
            )
            return [UnitVersion.from_row(row, unit.name, unit.role) for row in rows]

    def unit_lineage(self, unit_version_id: int) -> list[UnitVersion]:
        """Return a unit version, the version it iterated on, and so on up to the first.

        Raises:
            NotFoundError: No such unit version.
        """
        with self.transaction() as session:
            row: UnitVersionRow | None = self._unit_version_row(session, unit_version_id)
            chain: list[UnitVersion] = []
            seen: set[int] = set()
            while row is not None and row.id not in seen:
                seen.add(row.id)
                chain.append(self._unit_version_record(session, row))
                row = None if row.parent_id is None else session.get(UnitVersionRow, row.parent_id)
            return chain

    # -- pipelines -------------------------------------------------------------------------

    def register_pipeline(
        self,
        name: str,
        version: str,
        spec: Mapping[str, Any],
        spec_hash: str,
        nodes: Mapping[str, int],
        edges: Iterable[tuple[str, str]],
        *,
        actor: str = "system",
    ) -> PipelineRecord:
        """Record a pipeline version and its DAG, or return it when it exists with this spec.

        Args:
            name: Pipeline name.
            version: Pipeline version; a name and version keep one spec for ever.
            spec: The resolved spec (JSON).
            spec_hash: Hash of the spec.
            nodes: Node id -> id of the unit version it runs.
            edges: ``(src, dst)`` precursor relations between node ids.
            actor: Who asks, for the audit log.

        Returns:
            The pipeline version.

        Raises:
            NotFoundError: A unit version does not exist.
            ConfigError: No nodes, an empty hash, or edges that name unknown nodes, loop or
                form a cycle.
            ConflictError: The name and version exist with another spec or graph.
        """
        check_name("pipeline", name)
        version = str(version)
        if not nodes or not version or not spec_hash:
            raise ConfigError(
                f"A pipeline needs a version, a spec hash and at least one node. Got version "
                f"{version!r}, hash {spec_hash!r} and {len(nodes)} node(s)."
            )
        wanted_nodes = {str(node): int(uv) for node, uv in nodes.items()}
        wanted_edges = check_dag(wanted_nodes, edges)
        with self.transaction() as session:
            existing = session.scalar(
                select(PipelineRow).where(PipelineRow.name == name, PipelineRow.version == version)
            )
            if existing is None:
                missing = set(wanted_nodes.values()) - set(
                    session.scalars(
                        select(UnitVersionRow.id).where(
                            UnitVersionRow.id.in_(set(wanted_nodes.values()))
                        )
                    )
                )
                if missing:
                    ids = ", ".join(str(i) for i in sorted(missing))
                    raise NotFoundError(f"Unit version(s) {ids} do not exist.")
                values = {
                    "name": name,
                    "version": version,
                    "spec": json_safe(dict(spec)),
                    "spec_hash": spec_hash,
                }
                new_id = insert_or_ignore(session, PipelineRow, values, ["name", "version"])
                if new_id is not None:
                    self._add_graph(session, new_id, wanted_nodes, wanted_edges)
                    details = {**values, "nodes": wanted_nodes}
                    del details["spec"]
                    self._audit(session, actor, "create", "pipeline", new_id, details)
                existing = self._pipeline_row(session, name, version)
            record = self._pipeline_record(session, existing)
            self._refuse_other_pipeline(record, spec_hash, wanted_nodes, wanted_edges)
            return record

    @staticmethod
    def _add_graph(
        session: Session, pipeline_id: int, nodes: dict[str, int], edges: list[tuple[str, str]]
    ) -> None:
        session.add_all(
            PipelineNodeRow(pipeline_id=pipeline_id, node_id=node, unit_version_id=uv)
            for node, uv in nodes.items()
        )
        session.flush()
        session.add_all(
            PipelineEdgeRow(pipeline_id=pipeline_id, src=src, dst=dst) for src, dst in edges
        )
        session.flush()

    @staticmethod
    def _refuse_other_pipeline(
        record: PipelineRecord,
        spec_hash: str,
        nodes: dict[str, int],
        edges: list[tuple[str, str]],
    ) -> None:
        ref = f"Pipeline '{record.name}' version '{record.version}'"
        if record.spec_hash != spec_hash:
            raise ConflictError(
                f"{ref} is registered with another spec (hash {record.spec_hash}). Got hash "
                f"{spec_hash} instead; give the changed pipeline a new version."
            )
        if record.nodes != nodes or list(record.edges) != edges:
            raise ConflictError(
                f"{ref} is registered with the same spec hash but another graph "
                f"(nodes {record.nodes}, edges {list(record.edges)})."
            )

    def get_pipeline(self, name: str, version: str) -> PipelineRecord:
        """Return a pipeline version.

        Raises:
            NotFoundError: No such pipeline version.
        """
        with self.transaction() as session:
            return self._pipeline_record(session, self._pipeline_row(session, name, str(version)))

    def list_pipelines(self, name: str | None = None) -> list[PipelineRecord]:
        """Return every pipeline version (or those of one name), by name then id."""
        with self.transaction() as session:
            query = select(PipelineRow).order_by(PipelineRow.name, PipelineRow.id)
            if name is not None:
                query = query.where(PipelineRow.name == name)
            return [self._pipeline_record(session, row) for row in session.scalars(query)]

    def pipeline_graph(
        self, name: str, version: str
    ) -> tuple[dict[str, UnitVersion], list[tuple[str, str]]]:
        """Return a pipeline version's DAG: its nodes' unit versions and its edges.

        Returns:
            ``(nodes, edges)``: node id -> :class:`UnitVersion`, and the sorted ``(src, dst)``.

        Raises:
            NotFoundError: No such pipeline version.
        """
        with self.transaction() as session:
            record = self._pipeline_record(session, self._pipeline_row(session, name, str(version)))
            nodes = {
                node: self._unit_version_record(session, self._unit_version_row(session, uv))
                for node, uv in record.nodes.items()
            }
            return nodes, list(record.edges)
