"""Drawings of a pipeline's DAG: the layered text and the PNG image."""

from __future__ import annotations

from pathlib import Path

from pathray.pipeline.render import render_png, render_text
from pathray.pipeline.spec import PipelineSpec
from pipelines.presets import load_preset


def test_text_shows_order_and_parallel_branches() -> None:
    text = render_text(load_preset("nuclei_stats"))
    lines = text.splitlines()
    assert lines[0] == "pipeline nuclei_stats v1: tiles of 256 px at 0.5 mpp, overlap 40 px"
    row = next(line for line in lines if "| segment" in line)
    assert "| stats" in row  # the two branches stand side by side in one row
    assert lines.index(next(ln for ln in lines if "| tissue " in ln)) < lines.index(row)
    assert "order: tissue -> segment -> stats -> features" in lines
    assert "parallel at level 1: segment | stats" in lines
    assert "results (sinks): features, stats" in lines
    assert any(set(line.strip()) == {"+", "-"} for line in lines)  # the fan-out bus
    assert "tile -> object" in text and "after: segment" in text


def test_text_of_a_chain_keeps_boxes_aligned() -> None:
    lines = render_text(load_preset("nuclei")).splitlines()
    arrows = [line for line in lines if line.strip() in {"|", "v"}]
    assert len(arrows) == 4
    assert len({line.index(line.strip()) for line in arrows}) == 1  # one straight column


def test_text_of_a_diamond_with_a_skip_edge() -> None:
    spec = PipelineSpec.model_validate(
        {
            "name": "diamond",
            "units": [
                {"id": "t", "unit": "tissue_mask"},
                {"id": "a", "unit": "noop", "after": ["t"]},
                {"id": "b", "unit": "tile_stats", "after": ["t"]},
                {"id": "s", "unit": "nucleus_segmentation", "after": ["a", "b", "t"]},
            ],
        }
    )
    text = render_text(spec)
    assert "parallel at level 1: a | b" in text
    assert "after: a, b, t" in text  # the edge skipping a level is named in the box


def test_png_is_drawn(tmp_path: Path) -> None:
    for name in ("nuclei_stats", "tissue"):
        out = render_png(load_preset(name), tmp_path / "sub" / f"{name}.png")
        data = out.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 10_000


def test_docstring_examples_of_the_pipeline_package() -> None:
    import doctest
    import importlib

    for name in ("graph", "dag", "infer", "selection", "render"):
        module = importlib.import_module(f"pathray.pipeline.{name}")
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, name
        assert result.attempted > 0, name
