"""Image sets: creation, membership (many-to-many with slides) and protection."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, func, insert, select

from pathray.catalog.base import CatalogBase
from pathray.catalog.models import ImageSetMemberRow, ImageSetRow, SlideRow
from pathray.catalog.records import ImageSet, Slide
from pathray.errors import ConflictError, NotFoundError


def _unique_ids(slide_ids: Iterable[int]) -> list[int]:
    return sorted({int(i) for i in slide_ids})


class ImageSetsMixin(CatalogBase):
    """Image sets, their members and their protection."""

    def create_image_set(
        self, name: str, description: str = "", *, actor: str = "system"
    ) -> ImageSet:
        """Create an empty, unprotected image set.

        Args:
            name: Unique name.
            description: Free text.
            actor: Who asks, for the audit log.

        Returns:
            The new image set.

        Raises:
            ConflictError: An image set of that name exists.
        """
        with self.transaction() as session:
            exists = session.scalar(select(ImageSetRow.id).where(ImageSetRow.name == name))
            if exists is not None:
                raise ConflictError(f"Image set '{name}' exists already.")
            row = ImageSetRow(name=name, description=description, protected=False)
            session.add(row)
            session.flush()
            self._audit(session, actor, "create", "image_set", row.id, {"name": name})
            return ImageSet.from_row(row, 0)

    def get_image_set(self, name: str) -> ImageSet:
        """Return the image set called ``name``.

        Raises:
            NotFoundError: No such image set.
        """
        with self.transaction() as session:
            row = self._image_set_row(session, name)
            return ImageSet.from_row(row, self._slide_count(session, row.id))

    def list_image_sets(self) -> list[ImageSet]:
        """Return every image set with its number of slides, by id."""
        with self.transaction() as session:
            counts = (
                select(ImageSetMemberRow.image_set_id, func.count().label("n"))
                .group_by(ImageSetMemberRow.image_set_id)
                .subquery()
            )
            rows = session.execute(
                select(ImageSetRow, func.coalesce(counts.c.n, 0))
                .outerjoin(counts, counts.c.image_set_id == ImageSetRow.id)
                .order_by(ImageSetRow.id)
            )
            return [ImageSet.from_row(row, int(n)) for row, n in rows]

    def slides_in_set(self, set_name: str) -> list[Slide]:
        """Return the slides of an image set, by id.

        Raises:
            NotFoundError: No such image set.
        """
        with self.transaction() as session:
            set_row = self._image_set_row(session, set_name)
            query = (
                select(SlideRow)
                .join(ImageSetMemberRow)
                .where(ImageSetMemberRow.image_set_id == set_row.id)
                .order_by(SlideRow.id)
            )
            return [Slide.from_row(row) for row in session.scalars(query)]

    def image_sets_of(self, slide_id: int) -> list[str]:
        """Return the names of the image sets a slide belongs to, by set id.

        Raises:
            NotFoundError: No such slide.
        """
        with self.transaction() as session:
            self._slide_row(session, slide_id)
            query = (
                select(ImageSetRow.name)
                .join(ImageSetMemberRow)
                .where(ImageSetMemberRow.slide_id == slide_id)
                .order_by(ImageSetRow.id)
            )
            return list(session.scalars(query))

    def add_to_image_set(
        self, set_name: str, slide_ids: Iterable[int], *, actor: str = "system"
    ) -> int:
        """Add slides to an image set; slides already in it are left as they are.

        Args:
            set_name: The image set.
            slide_ids: Slides to add.
            actor: Who asks, for the audit log.

        Returns:
            How many slides were added.

        Raises:
            NotFoundError: The set or a slide does not exist.
            ProtectedError: The set is protected.
        """
        ids = _unique_ids(slide_ids)
        with self.transaction() as session:
            set_row = self._image_set_row(session, set_name, lock=True)
            self._refuse_if_protected(set_row)
            if not ids:
                return 0
            known = set(session.scalars(select(SlideRow.id).where(SlideRow.id.in_(ids))))
            missing = [i for i in ids if i not in known]
            if missing:
                raise NotFoundError(f"Slides {missing} do not exist.")
            present = set(
                session.scalars(
                    select(ImageSetMemberRow.slide_id).where(
                        ImageSetMemberRow.image_set_id == set_row.id,
                        ImageSetMemberRow.slide_id.in_(ids),
                    )
                )
            )
            new = [i for i in ids if i not in present]
            if new:
                session.execute(
                    insert(ImageSetMemberRow),
                    [{"image_set_id": set_row.id, "slide_id": i} for i in new],
                )
                details = {"name": set_name, "slide_ids": new}
                self._audit(session, actor, "add_slides", "image_set", set_row.id, details)
            return len(new)

    def remove_from_image_set(
        self, set_name: str, slide_ids: Iterable[int], *, actor: str = "system"
    ) -> int:
        """Remove slides from an image set; slides not in it are ignored.

        Args:
            set_name: The image set.
            slide_ids: Slides to remove.
            actor: Who asks, for the audit log.

        Returns:
            How many slides were removed.

        Raises:
            NotFoundError: The set does not exist.
            ProtectedError: The set is protected.
        """
        ids = _unique_ids(slide_ids)
        with self.transaction() as session:
            set_row = self._image_set_row(session, set_name, lock=True)
            self._refuse_if_protected(set_row)
            if not ids:
                return 0
            removed = list(
                session.scalars(
                    delete(ImageSetMemberRow)
                    .where(
                        ImageSetMemberRow.image_set_id == set_row.id,
                        ImageSetMemberRow.slide_id.in_(ids),
                    )
                    .returning(ImageSetMemberRow.slide_id)
                )
            )
            if removed:
                details = {"name": set_name, "slide_ids": sorted(removed)}
                self._audit(session, actor, "remove_slides", "image_set", set_row.id, details)
            return len(removed)

    def protect(self, set_name: str, *, actor: str = "system") -> ImageSet:
        """Freeze an image set: its membership and its bound annotations can no longer change.

        Args:
            set_name: The image set.
            actor: ``"system"`` or a registered admin.

        Returns:
            The image set, now protected.

        Raises:
            NotFoundError: No such image set.
            ProtectedError: The actor is not an admin.
        """
        return self._set_protected(set_name, True, actor)

    def unprotect(self, set_name: str, *, actor: str = "system") -> ImageSet:
        """Lift an image set's protection.

        Args:
            set_name: The image set.
            actor: ``"system"`` or a registered admin.

        Returns:
            The image set, no longer protected.

        Raises:
            NotFoundError: No such image set.
            ProtectedError: The actor is not an admin.
        """
        return self._set_protected(set_name, False, actor)

    def _set_protected(self, set_name: str, protected: bool, actor: str) -> ImageSet:
        action = "protect" if protected else "unprotect"
        with self.transaction() as session:
            self._require_admin(session, actor, f"{action} image set '{set_name}'")
            query = select(ImageSetRow).where(ImageSetRow.name == set_name).with_for_update()
            row = session.scalar(query)
            if row is None:
                raise NotFoundError(f"Image set '{set_name}' does not exist.")
            if row.protected != protected:
                row.protected = protected
                self._audit(session, actor, action, "image_set", row.id, {"name": set_name})
            session.flush()
            return ImageSet.from_row(row, self._slide_count(session, row.id))
