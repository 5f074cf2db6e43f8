"""What every command group of the ``pathray`` CLI shares: consoles, errors, catalog access.

- :data:`console` (stdout, wide enough for metric tables in a pipe or a CI log) and :data:`err`;
- :func:`friendly`: a user's mistake (any :class:`~pathray.errors.PathRayError`) prints one red
  line and exits with status 2; only bugs show a traceback;
- :func:`open_catalog` and :func:`open_store`: the hot catalog and the cold store of the
  settings in the environment (``PATHRAY_HOME``, ``PATHRAY_CATALOG``, ``PATHRAY_COLD``);
- :data:`Actor` / :data:`ME`: who acts, recorded in the audit log;
- :data:`JsonFlag` and :func:`print_json`: ``--json`` of the list commands, for scripts;
- :func:`slide_id_of`: a slide named by id, name, file name or stem.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from pathray.config import Settings
from pathray.errors import PathRayError

if TYPE_CHECKING:
    from pathray.catalog import Catalog
    from pathray.results.store import ColdStore

# Wide enough for the metric tables when the output is a pipe or a CI log.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
Actor = Annotated[str, typer.Option(help="Who acts (recorded in the audit log).")]
ME = getpass.getuser()


def friendly(fn: F) -> F:
    """Turn PathRayError into one red line (never wrapped, never read as markup) and exit 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PathRayError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def open_catalog() -> Catalog:
    """The catalog of the environment's settings (its home folder made if missing)."""
    from pathray.catalog import Catalog

    settings = Settings.from_env()
    settings.home.mkdir(parents=True, exist_ok=True)
    return Catalog.open(settings.catalog_url)


def open_store() -> ColdStore:
    """The cold store of the environment's settings."""
    from pathray.results.store import ColdStore

    return ColdStore.open(Settings.from_env().cold_root)


def slide_id_of(catalog: Any, ref: str) -> int:
    """A slide's id from its id, name, file name or stem (suggestions when unknown)."""
    return int(catalog.get_slide(int(ref) if ref.isdigit() else ref).id)


def jsonable(record: Any) -> dict[str, Any]:
    """A catalog record (a dataclass) as JSON data (dates and paths as text)."""
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(record), default=str))


#: ``--json`` of the list commands: one JSON array on stdout, for scripts.
JsonFlag = Annotated[bool, typer.Option("--json", help="Print a JSON array (for scripts).")]


def print_json(records: list[Any]) -> None:
    """Print records as one JSON array on stdout (never wrapped or coloured)."""
    sys.stdout.write(json.dumps([jsonable(r) for r in records], indent=1) + "\n")


def progress_bar() -> Progress:
    """A progress bar on stderr that disappears when done."""
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    return Progress(*columns, console=err, transient=True)


__all__ = [
    "ME",
    "Actor",
    "JsonFlag",
    "console",
    "err",
    "friendly",
    "jsonable",
    "open_catalog",
    "open_store",
    "print_json",
    "progress_bar",
    "slide_id_of",
]
