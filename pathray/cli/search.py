"""``pathray search``: places that look like a given one, across the slides of an image set.

``pathray search --like SLIDE:X,Y`` prints the tiles most like the embedded tile at that level-0
point; ``pathray search index --set S`` builds (or brings up to date) the set's indexes, first
running the ``embed`` preset on the set when none of its runs embedded tiles. Mounted by
:mod:`pathray.cli` with ``app.add_typer(search_app, name="search")``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from pathray.cli.common import console, friendly, open_catalog
from pathray.config import Settings
from pathray.errors import NotFoundError

if TYPE_CHECKING:
    from pathray.services.search import SearchResult, SearchService

search_app = typer.Typer(
    help="Similarity search: where else do tissues look like this?",
    invoke_without_command=True,
)


def _service() -> SearchService:
    from pathray.services.search import SearchService

    return SearchService(open_catalog(), Settings.from_env().cold_root)


def _set_of(service: SearchService, slide: str) -> str:
    """The first image set of a slide that has a search index."""
    from pathray.services.search import slide_ref

    record = service.catalog.get_slide(slide_ref(slide))
    sets = service.catalog.image_sets_of(record.id)
    for name in sets:
        if service.indexes(name):
            return str(name)
    raise NotFoundError(
        f"None of the image sets of slide {record.name!r} ({', '.join(sets) or 'none'}) has a "
        "search index. Build one with `pathray search index --set SET`."
    )


@search_app.callback()
@friendly
def search(
    ctx: typer.Context,
    like: Annotated[
        str | None, typer.Option("--like", help="The example: SLIDE:X,Y (level-0 pixels).")
    ] = None,
    image_set: Annotated[
        str | None, typer.Option("--set", help="Image set to search (default: the slide's).")
    ] = None,
    k: Annotated[int, typer.Option("-k", help="How many places.")] = 10,
    slide: Annotated[
        list[str] | None, typer.Option("--slide", help="Only these slides (repeatable).")
    ] = None,
    run: Annotated[list[str] | None, typer.Option("--run", help="Only these runs.")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="Only these labels.")] = None,
    unit: Annotated[
        str | None, typer.Option(help="Embedding unit whose index to use (default: newest).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Print the places most like SLIDE:X,Y, nearest first."""
    if ctx.invoked_subcommand is not None:
        return
    if like is None:
        console.print(ctx.get_help())
        raise typer.Exit(0)
    from pathray.services.search import Filters, parse_place

    name, x, y = parse_place(like)
    service = _service()
    target = image_set or _set_of(service, name)
    filters = Filters(slides=slide or (), runs=run or (), labels=label or ())
    result = service.like_place(target, name, x, y, k=k, filters=filters, unit=unit)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    _print_result(result, target)


def _print_result(result: SearchResult, image_set: str) -> None:
    """The hits as a table, with the query's tile above it."""
    q = result.query
    tile = q["tile"]
    console.print(
        f"like {q['slide']} ({q['x']:g}, {q['y']:g}): tile at ({tile['x']}, {tile['y']}) "
        f"{tile['width']}x{tile['height']} px, run {tile['run_id']}; "
        f"image set {image_set}, index {result.index}"
    )
    table = Table(title=f"{len(result.hits)} most similar places")
    for column in ("#", "slide", "x", "y", "size", "run", "distance"):
        table.add_column(column, justify="right" if column in ("#", "x", "y") else "left")
    for rank, hit in enumerate(result.hits, 1):
        table.add_row(
            str(rank),
            hit.slide,
            str(hit.x),
            str(hit.y),
            f"{hit.width}x{hit.height}",
            hit.run_id[:8],
            f"{hit.distance:.4f}",
        )
    console.print(table)
    slides = {hit.slide for hit in result.hits}
    console.print(f"{len(slides)} slides: {', '.join(sorted(slides))}")


@search_app.command("index")
@friendly
def index(
    image_set: Annotated[str, typer.Option("--set", help="Image set to index.")],
    embed: Annotated[
        bool,
        typer.Option(help="Run the embed preset first when no run of the set embedded tiles."),
    ] = True,
) -> None:
    """Build or update the search indexes of an image set (only new runs are added)."""
    service = _service()
    if embed and not service.embedding_runs(image_set):
        _embed(service, image_set)
    reports = service.build(image_set)
    for r in reports:
        kind = "approximate (ANN)" if r.approximate else "exact scan"
        console.print(
            f"{r.key}: {r.rows} vectors ({r.rows_added} added from {len(r.runs_added)} new runs), "
            f"{kind}"
        )


def _embed(service: SearchService, image_set: str) -> Any:
    """Run the ``embed`` preset on an image set."""
    from pathray.engine.runner import run_pipeline
    from pathray.results.store import ColdStore
    from pipelines.presets import load_preset

    with console.status(f"running the embed preset on {image_set}..."):
        result = run_pipeline(
            service.catalog, ColdStore(Path(service.store.root)), load_preset("embed"), image_set
        )
    console.print(f"embedded {result.tiles_processed} tiles (run {result.run_id})")
    return result


__all__ = ["search_app"]
