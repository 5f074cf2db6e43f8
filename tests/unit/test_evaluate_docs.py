"""The Examples in pathray.evaluate's docstrings run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "__init__",
    "assignment",
    "matching",
    "metrics",
    "raster",
    "compare",
    "pairs",
    "instance",
    "classification",
    "plots",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(
        "pathray.evaluate" + ("" if name == "__init__" else f".{name}")
    )
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0
