"""Slide stores, slides and their replicas."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select

from pathray.catalog.base import CatalogBase, json_safe
from pathray.catalog.models import (
    MPP_SOURCES,
    ImageSetMemberRow,
    ReplicaRow,
    SlideRow,
    SlideStoreRow,
)
from pathray.catalog.records import Replica, Slide, SlideStore
from pathray.errors import ConfigError, ConflictError, NotFoundError

_CHECKSUM = re.compile(r"^[0-9a-f]{64}$")


def _normalise_root(root: str) -> str:
    if "://" in root:
        return root.rstrip("/") or root
    return os.path.abspath(os.path.expanduser(root))


def _check_relative_path(path: str) -> str:
    posix = path.replace("\\", "/")
    if not posix or posix.startswith("/") or ".." in posix.split("/"):
        raise ConfigError(
            f"A replica path must be relative to its store, without '..'. Got {path!r} instead."
        )
    return posix


def name_forms(name: str) -> set[str]:
    """The names a slide answers to: its file name and that name without trailing extensions.

    Example:
        >>> sorted(name_forms("OS-1-detail.ome.tif"))
        ['OS-1-detail', 'OS-1-detail.ome', 'OS-1-detail.ome.tif']
    """
    forms = {name}
    stem, dot, _ = name.rpartition(".")
    while dot and stem:
        forms.add(stem)
        stem, dot, _ = stem.rpartition(".")
    return forms


class SlidesMixin(CatalogBase):
    """Slide stores, slides and replicas."""

    # -- stores ----------------------------------------------------------------------------

    def add_store(self, name: str, root: str, *, actor: str = "system") -> SlideStore:
        """Register a slide store, or return it when it exists with the same root.

        Args:
            name: Unique store name.
            root: Folder (made absolute) or URI (``s3://...``) under which replicas live.
            actor: Who asks, for the audit log.

        Returns:
            The store.

        Raises:
            ConflictError: A store of that name exists with another root.
        """
        root = _normalise_root(root)
        with self.transaction() as session:
            row = session.scalar(select(SlideStoreRow).where(SlideStoreRow.name == name))
            if row is not None:
                if row.root != root:
                    raise ConflictError(
                        f"Slide store '{name}' exists with root {row.root!r}. Got {root!r} instead."
                    )
                return SlideStore.from_row(row)
            row = SlideStoreRow(name=name, root=root)
            session.add(row)
            session.flush()
            self._audit(
                session, actor, "add_store", "slide_store", row.id, {"name": name, "root": root}
            )
            return SlideStore.from_row(row)

    def get_store(self, name: str) -> SlideStore:
        """Return the store called ``name``.

        Raises:
            NotFoundError: No such store.
        """
        with self.transaction() as session:
            return SlideStore.from_row(self._store_row(session, name))

    def list_stores(self) -> list[SlideStore]:
        """Return every store, by id."""
        with self.transaction() as session:
            rows = session.scalars(select(SlideStoreRow).order_by(SlideStoreRow.id))
            return [SlideStore.from_row(row) for row in rows]

    # -- slides ----------------------------------------------------------------------------

    def register_slide(
        self,
        *,
        name: str,
        checksum: str,
        store: str,
        relative_path: str,
        width: int,
        height: int,
        level_count: int | None = None,
        level_dimensions: Sequence[Sequence[int]] | None = None,
        level_downsamples: Sequence[float] | None = None,
        mpp: float | None = None,
        mpp_source: str | None = None,
        objective_power: float | None = None,
        vendor: str | None = None,
        format: str | None = None,
        properties: Mapping[str, Any] | None = None,
        actor: str = "system",
    ) -> Slide:
        """Register a slide file found on a store, in one transaction.

        Slides are identified by content: when a slide with this checksum exists, the file is
        recorded as a further replica of it (on a store that has none yet) and the existing
        slide is returned unchanged.

        Args:
            name: Display name (usually the file name); not unique.
            checksum: SHA-256 of the file content, 64 hex digits.
            store: Name of the store holding the file.
            relative_path: Path of the file below the store's root.
            width: Level-0 width in pixels.
            height: Level-0 height in pixels.
            level_count: Number of pyramid levels; defaults to ``len(level_dimensions)``.
            level_dimensions: ``(width, height)`` per level; defaults to level 0 only.
            level_downsamples: Downsample per level; defaults to ``[1.0]``.
            mpp: Microns per pixel at level 0, or None when unknown.
            mpp_source: ``"file"`` or ``"user"``; defaults to ``"file"`` when ``mpp`` is given.
            objective_power: Scanner objective magnification, when known.
            vendor: Scanner vendor or reader name.
            format: File format (``"svs"``, ``"ndpi"``, ``"dicom"``, ...).
            properties: Further metadata; values that are not JSON are stored as strings.
            actor: Who asks, for the audit log.

        Returns:
            The new slide, or the existing slide with the same checksum.

        Raises:
            NotFoundError: The store does not exist.
            ConfigError: Inconsistent metadata (levels, mpp, checksum, path).
            ConflictError: The store already holds this slide at another path, or another
                slide at this path.
        """
        checksum = checksum.lower()
        if not _CHECKSUM.match(checksum):
            raise ConfigError(f"A checksum must be 64 hex digits (SHA-256). Got {checksum!r}.")
        path = _check_relative_path(relative_path)
        dims = [[int(w), int(h)] for w, h in (level_dimensions or [(width, height)])]
        downs = [float(d) for d in (level_downsamples or [1.0])]
        count = len(dims) if level_count is None else level_count
        if not (count == len(dims) == len(downs)) or dims[0] != [width, height]:
            raise ConfigError(
                "level_count, level_dimensions and level_downsamples must agree, and level 0 "
                f"must be width x height. Got {count}, {dims}, {downs} for {width} x {height}."
            )
        if mpp is not None and mpp_source is None:
            mpp_source = "file"
        if mpp is None and mpp_source is not None:
            raise ConfigError(f"mpp_source must be None when mpp is None. Got {mpp_source!r}.")
        if mpp is not None:
            self._check_choice("mpp_source", mpp_source, MPP_SOURCES)
            if mpp <= 0:
                raise ConfigError(f"mpp must be positive. Got {mpp} instead.")
        with self.transaction() as session:
            store_row = self._store_row(session, store)
            at_path = session.scalar(
                select(ReplicaRow).where(
                    ReplicaRow.store_id == store_row.id, ReplicaRow.relative_path == path
                )
            )
            row = session.scalar(select(SlideRow).where(SlideRow.checksum == checksum))
            if at_path is not None and (row is None or at_path.slide_id != row.id):
                raise ConflictError(
                    f"Slide store '{store}' already holds slide {at_path.slide_id} at {path!r}; "
                    f"checksum {checksum} is another content."
                )
            if row is None:
                row = SlideRow(
                    name=name,
                    checksum=checksum,
                    vendor=vendor,
                    format=format,
                    width=width,
                    height=height,
                    level_count=count,
                    level_dimensions=dims,
                    level_downsamples=downs,
                    mpp=mpp,
                    mpp_source=mpp_source,
                    objective_power=objective_power,
                    properties=json_safe(dict(properties or {})),
                )
                session.add(row)
                session.flush()
                session.add(ReplicaRow(slide_id=row.id, store_id=store_row.id, relative_path=path))
                details = {"name": name, "checksum": checksum, "store": store, "path": path}
                self._audit(session, actor, "register_slide", "slide", row.id, details)
                return Slide.from_row(row)
            replica = session.scalar(
                select(ReplicaRow).where(
                    ReplicaRow.slide_id == row.id, ReplicaRow.store_id == store_row.id
                )
            )
            if replica is None:
                session.add(ReplicaRow(slide_id=row.id, store_id=store_row.id, relative_path=path))
                details = {"store": store, "path": path}
                self._audit(session, actor, "add_replica", "slide", row.id, details)
            elif replica.relative_path != path:
                raise ConflictError(
                    f"Slide {row.id} already has a replica on store '{store}' at "
                    f"{replica.relative_path!r}. Got {path!r} instead."
                )
            return Slide.from_row(row)

    def get_slide(self, slide: int | str) -> Slide:
        """Return a slide by id (an int) or by name (a str).

        A name is the slide's file name (``OS-1-detail.ome.tif``) or that name without one or more
        of its extensions (``OS-1-detail.ome``, ``OS-1-detail``).

        Raises:
            NotFoundError: No such slide; the message names the closest slide names.
            ConflictError: Several slides have that name; ask by id.
        """
        with self.transaction() as session:
            if isinstance(slide, int):
                return Slide.from_row(self._slide_row(session, slide))
            rows = list(session.scalars(select(SlideRow).where(SlideRow.name == slide)))
            if not rows:
                rows = [
                    row
                    for row in session.scalars(select(SlideRow).order_by(SlideRow.id))
                    if slide in name_forms(row.name)
                ]
            if not rows:
                names = list(session.scalars(select(SlideRow.name)))
                close = difflib.get_close_matches(slide, names, n=3, cutoff=0.5)
                hint = f" Did you mean {', '.join(repr(n) for n in close)}?" if close else ""
                raise NotFoundError(f"Slide '{slide}' does not exist.{hint}")
            if len(rows) > 1:
                ids = ", ".join(str(r.id) for r in rows)
                raise ConflictError(f"Several slides are called '{slide}' (ids {ids}); ask by id.")
            return Slide.from_row(rows[0])

    def record_slide_export(
        self, slide_id: int, target: str, *, deidentified: bool, actor: str = "system"
    ) -> None:
        """Write the audit entry of a slide copied out of its store (``export_slide``).

        Raises:
            NotFoundError: No such slide.
        """
        with self.transaction() as session:
            self._slide_row(session, slide_id)
            details = {"to": target, "deidentified": deidentified}
            self._audit(session, actor, "export_slide", "slide", slide_id, details)

    def find_slide(self, checksum: str) -> Slide | None:
        """Return the slide with this content checksum, or None."""
        with self.transaction() as session:
            row = session.scalar(select(SlideRow).where(SlideRow.checksum == checksum.lower()))
            return None if row is None else Slide.from_row(row)

    def list_slides(self, image_set: str | None = None) -> list[Slide]:
        """Return every slide, or the members of one image set, by id.

        Raises:
            NotFoundError: The image set does not exist.
        """
        with self.transaction() as session:
            query = select(SlideRow).order_by(SlideRow.id)
            if image_set is not None:
                set_row = self._image_set_row(session, image_set)
                query = query.join(ImageSetMemberRow).where(
                    ImageSetMemberRow.image_set_id == set_row.id
                )
            return [Slide.from_row(row) for row in session.scalars(query)]

    def replicas_of(self, slide_id: int) -> list[Replica]:
        """Return where a slide's copies live, as ``(store root, relative path)`` by store id.

        Raises:
            NotFoundError: No such slide.
        """
        with self.transaction() as session:
            self._slide_row(session, slide_id)
            rows = session.execute(
                select(SlideStoreRow.root, ReplicaRow.relative_path)
                .join(SlideStoreRow, SlideStoreRow.id == ReplicaRow.store_id)
                .where(ReplicaRow.slide_id == slide_id)
                .order_by(ReplicaRow.store_id)
            )
            return [Replica(root, path) for root, path in rows]

    def set_slide_mpp(self, slide_id: int, mpp: float, *, actor: str = "system") -> Slide:
        """Set a slide's resolution by hand (``mpp_source="user"``).

        Args:
            slide_id: The slide.
            mpp: Microns per pixel at level 0.
            actor: Who asks, for the audit log.

        Returns:
            The updated slide.

        Raises:
            NotFoundError: No such slide.
            ConfigError: ``mpp`` is not positive.
        """
        if not mpp > 0:
            raise ConfigError(f"mpp must be positive. Got {mpp} instead.")
        with self.transaction() as session:
            row = self._slide_row(session, slide_id)
            details = {"old": row.mpp, "old_source": row.mpp_source, "new": mpp}
            row.mpp, row.mpp_source = float(mpp), "user"
            self._audit(session, actor, "set_mpp", "slide", slide_id, details)
            session.flush()
            return Slide.from_row(row)
