"""The dependency rule of docs/architecture.md, checked on every module's imports.

Layers, lowest first: core (errors, config, units, pipeline, models) <- io (slides, formats) <-
metrics (evaluate) <- stores (catalog, results) <- engine <- services (services, iterate) <- apps
(pipelines, serve, ui, the CLI). A module imports only from its own layer or the ones below; the
two stores never import each other; the built-in units (pipelines/) never import serve/, ui/ or the
CLI. Imports under ``if TYPE_CHECKING:`` do not count (annotations only). The imports that broke
the rule before it was checked are listed in :data:`KNOWN`: the list may only shrink (a listed
import that is gone fails the test too, so the list stays true).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("pathray", "pipelines", "serve", "ui")

RANK = {
    "core": 0,
    "io": 1,
    "metrics": 2,
    "stores": 3,
    "engine": 4,
    "services": 5,
    "apps": 6,
}
#: Package (``pathray.<name>``, or a top-level folder) -> its layer.
LAYER = {
    "pathray": "core",  # pathray/__init__.py: the version
    "errors": "core",
    "config": "core",
    "units": "core",
    "pipeline": "core",
    "models": "core",
    "testing": "core",
    "slides": "io",
    "formats": "io",
    "evaluate": "metrics",
    "catalog": "stores",
    "results": "stores",
    "engine": "engine",
    "services": "services",
    "iterate": "services",
    "cli": "apps",
    "__main__": "apps",
    "pipelines": "apps",
    "serve": "apps",
    "ui": "apps",
}

#: Imports that broke the rule when it was first checked: (importing module, imported package).
#: Remove an entry when its import goes; never add one.
KNOWN = {
    ("pathray.catalog.corrections", "results"),
    ("pathray.catalog.models_registry", "results"),
    ("pathray.evaluate.run_eval", "catalog"),
    ("pathray.evaluate.run_eval", "results"),
    ("pathray.evaluate.runs", "catalog"),
    ("pathray.evaluate.runs", "results"),
    ("pathray.iterate.loop", "cli"),
    ("pathray.results.overlay", "catalog"),
    ("pathray.slides.deepzoom", "engine"),
    ("pathray.slides.register", "catalog"),
    ("pathray.units.examples", "slides"),
}


def _package(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "pathray":
        return parts[0]
    if len(parts) == 1:
        return "pathray"
    return "cli" if parts[1].startswith("cli") else parts[1]


def _modules() -> dict[str, Path]:
    found = {}
    for root in ROOTS:
        for path in (REPO / root).rglob("*.py"):
            if "node_modules" in path.parts:
                continue
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of a module but those under ``if TYPE_CHECKING:`` (annotations only)."""
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        found.append(node)
        for child in ast.iter_child_nodes(node):
            is_type_block = isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
            if is_type_block:
                stack.extend(getattr(child, "orelse", []))
                continue
            stack.append(child)
    return found


def _imports(path: Path) -> set[str]:
    """Absolute imports of the project's own packages, anywhere in the module (lazy ones too),
    except those only type checkers see."""
    out = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        out.update(n for n in names if n.split(".")[0] in ROOTS)
    return out


def _breaks_rule(importer: str, imported: str) -> bool:
    a, b = _package(importer), _package(imported)
    if a == b:
        return False
    if {a, b} == {"catalog", "results"}:
        return True
    if a == "pipelines" and LAYER[b] == "apps":
        return True
    return RANK[LAYER[b]] > RANK[LAYER[a]]


def _violations() -> set[tuple[str, str]]:
    found = set()
    for module, path in _modules().items():
        for imported in _imports(path):
            if _breaks_rule(module, imported):
                found.add((module, _package(imported)))
    return found


def test_every_package_has_a_layer() -> None:
    packages = {_package(m) for m in _modules()}
    assert packages <= set(LAYER), f"Give these packages a layer: {sorted(packages - set(LAYER))}"


def test_no_new_import_breaks_the_dependency_rule() -> None:
    new = sorted(_violations() - KNOWN)
    assert not new, (
        "These imports point up the layers or across the stores (docs/architecture.md):\n"
        + "\n".join(f"  {m} -> {p}" for m, p in new)
    )


def test_the_list_of_known_breaks_is_current() -> None:
    gone = sorted(KNOWN - _violations())
    assert not gone, f"These imports are gone: remove them from KNOWN: {gone}"


def test_imports_for_type_checkers_alone_do_not_count() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pathray.catalog import C\n"
        "else:\n    import pathray.results\ndef f():\n    from pathray.engine import runner\n"
    )
    names = {
        n.module if isinstance(n, ast.ImportFrom) else n.names[0].name
        for n in _runtime_nodes(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
    }
    assert names == {"typing", "pathray.results", "pathray.engine"}


def test_the_rule_catches_an_upward_import() -> None:
    assert _breaks_rule("pathray.slides.readers", "pathray.engine.plan")
    assert _breaks_rule("pathray.catalog.api", "pathray.results.store")
    assert _breaks_rule("pipelines.demo", "serve.app")
    assert not _breaks_rule("pathray.engine.runner", "pathray.catalog")
    assert not _breaks_rule("serve.app", "pipelines.presets")
