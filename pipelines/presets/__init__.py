"""Preset pipelines: one-click specs shipped as YAML beside this file.

Example:
    >>> load_preset("nuclei").name
    'nuclei'
"""

from __future__ import annotations

from pathlib import Path

from pathray.errors import NotFoundError
from pathray.pipeline.spec import PipelineSpec

_HERE = Path(__file__).parent


def preset_names() -> list[str]:
    """Names of the shipped presets."""
    return sorted(p.stem for p in _HERE.glob("*.yaml"))


def load_preset(name: str) -> PipelineSpec:
    """Load a preset by name.

    Raises:
        NotFoundError: If there is no such preset.
    """
    path = _HERE / f"{name}.yaml"
    if not path.is_file():
        raise NotFoundError(f"Preset must be one of {preset_names()}. Got {name!r} instead.")
    return PipelineSpec.from_yaml(path)
