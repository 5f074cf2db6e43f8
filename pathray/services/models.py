"""Registering a model trained elsewhere: check it, store it, record it.

:func:`register_model` validates everything before it changes anything: the source exists, the
file is in a safe format and loads, its SHA-256 is recorded, the card is valid, and one dummy
forward pass of the card's input size gives one output per class name. Only then is the version
folder (file + ``card.json`` + ``SHA256SUMS``) put into the content-addressed artifact store and
the model, version, card and alias recorded in one catalog transaction. A failure at any step
leaves the registry as it was (a stored blob that no version references is harmless: the store is
content-addressed).

Example:
    >>> version = register_model(catalog, cold_root, "tils", "wsinfer-model/")  # doctest: +SKIP
    >>> version.card["class_names"]  # doctest: +SKIP
    ['notils', 'tils']
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pathray.catalog import Catalog
from pathray.catalog.models_registry import check_alias, check_name
from pathray.catalog.records import ModelVersion
from pathray.models.card import Format
from pathray.models.folder import load_source, write_model_folder
from pathray.models.runtime import check_against_card, load_predictor
from pathray.results.artifacts import ArtifactStore

#: The registry's framework of each file format (ONNX graphs are exported from torch models;
#: the card's ``format`` keeps the exact format).
FRAMEWORKS: dict[Format, str] = {
    "torchscript": "torch",
    "onnx": "torch",
    "skops": "sklearn",
    "xgboost_json": "xgboost",
    "xgboost_ubj": "xgboost",
}


def register_model(
    catalog: Catalog,
    cold_root: str | Path,
    name: str,
    path: str | Path,
    card: str | Path | None = None,
    *,
    alias: str | None = None,
    actor: str = "system",
) -> ModelVersion:
    """Validate a model file (or folder) and its card, store it and record a new version.

    Args:
        catalog: The catalog holding the model registry.
        cold_root: Root of the cold store (the version folder goes to its artifact store).
        name: The model's name; a new version is added when it exists.
        path: A model file, or a folder with one model file and a card (``card.yaml``,
            ``card.json`` or WSInfer's ``config.json``).
        card: The card file, for a bare model file.
        alias: An alias (e.g. ``candidate``) to point at the new version.
        actor: Who registers it, for the audit log.

    Returns:
        The new version, its card included.

    Raises:
        NotFoundError: The path or the card does not exist.
        ConfigError: Invalid card (unknown fields, ...), name or alias.
        ModelFileError: A pickle or unknown format, a corrupt or truncated file, or a model
            whose input shape or class count contradicts its card.
        ConflictError: The model exists with another framework.
    """
    check_name("model", name)
    if alias is not None:
        check_alias(alias)
    model_file, parsed = load_source(path, card)
    with tempfile.TemporaryDirectory(prefix="pathray-model-") as staging:
        folder = write_model_folder(Path(staging) / "model", model_file, parsed)
        # the same loader the units use, on the exact folder that will be stored
        check_against_card(load_predictor(folder))
        artifact = ArtifactStore(cold_root).put(folder)
    return catalog.register_model_version(
        name,
        FRAMEWORKS[parsed.format],
        artifact=artifact,
        card=parsed.to_json(),
        task=parsed.task,
        alias=alias,
        container_image=parsed.container_image,
        resources=parsed.resources.model_dump(),
        created_by=actor,
    )


__all__ = ["FRAMEWORKS", "register_model"]
