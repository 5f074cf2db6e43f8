"""A model version's folder: the model file, its card and the SHA-256 of the file.

Layout (what the artifact store keeps, and what a unit receives as ``artifacts["model"]``)::

    <file>          the model file, named as the card's ``file`` says
    card.json       the card (:class:`~pathray.models.card.ModelCard`)
    SHA256SUMS      ``<sha256>  <file>``, checked before every load

A source to register is a model file (with a card given separately) or a folder holding one
model file and one card file (``card.yaml``/``card.json``, or WSInfer's ``config.json``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from pathray.errors import ConfigError, ModelFileError, NotFoundError
from pathray.models.card import (
    CARD_NAMES,
    ModelCard,
    card_from_mapping,
    card_from_wsinfer,
    is_wsinfer_config,
    read_card_data,
)
from pathray.models.formats import SAFE_FORMATS, detect_format

CARD_FILE = "card.json"
CHECKSUMS = "SHA256SUMS"
_MODEL_SUFFIXES = {s for suffixes in SAFE_FORMATS.values() for s in suffixes}


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file's content (hex)."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def load_source(path: str | Path, card: str | Path | None = None) -> tuple[Path, ModelCard]:
    """Find the model file and its card for a registration source.

    Args:
        path: A model file, or a folder with one model file and one card file.
        card: The card file, when ``path`` is a file (or to override the folder's card).

    Returns:
        ``(model file, card)``; the card's ``file`` is the model file's name and its format the
        detected one.

    Raises:
        NotFoundError: The path or the card does not exist.
        ConfigError: No card, several candidates, or an invalid card.
        ModelFileError: An unsafe, unknown or corrupt model file, or one whose format differs
            from the card's.
    """
    path = Path(path)
    if path.is_dir():
        model_file = _only_model_file(path)
        card_path = Path(card) if card is not None else _only_card_file(path)
    elif path.is_file():
        if card is None:
            raise ConfigError(f"A model file needs its card (--card). Got {path} alone.")
        model_file, card_path = path, Path(card)
    else:
        raise NotFoundError(f"Model source {path} does not exist.")
    fmt = detect_format(model_file)
    data = read_card_data(card_path)
    if is_wsinfer_config(data):
        parsed = card_from_wsinfer(data, model_file.name, str(card_path))
    else:
        # the format defaults to the detected one; the file is always the one registered
        parsed = card_from_mapping({"format": fmt, **data, "file": model_file.name}, str(card_path))
    if parsed.format != fmt:
        raise ModelFileError(
            f"The card's format must match the file's. Got card format {parsed.format!r} for "
            f"{model_file.name}, which is {fmt!r}."
        )
    return model_file, parsed


def _only_model_file(folder: Path) -> Path:
    candidates = [
        p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name not in CARD_NAMES and p.name not in (CHECKSUMS,)
    ]
    models = [p for p in candidates if p.suffix.lower() in _MODEL_SUFFIXES] or candidates
    if len(models) != 1:
        names = [p.name for p in models]
        raise ConfigError(
            f"A model folder must hold exactly one model file. Got {names} in {folder}."
        )
    return models[0]


def _only_card_file(folder: Path) -> Path:
    cards = [folder / name for name in CARD_NAMES if (folder / name).is_file()]
    if len(cards) != 1:
        raise ConfigError(
            f"A model folder must hold exactly one card ({', '.join(CARD_NAMES)}). "
            f"Got {[p.name for p in cards]} in {folder}."
        )
    return cards[0]


def write_model_folder(folder: str | Path, model_file: str | Path, card: ModelCard) -> Path:
    """Write a version's folder: the model file (copied), ``card.json`` and ``SHA256SUMS``.

    Args:
        folder: The folder to write (created; must be empty or absent).
        model_file: The model file to copy in, under the card's ``file`` name.
        card: Its card.

    Returns:
        The folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / card.file
    shutil.copyfile(model_file, target)
    (folder / CARD_FILE).write_text(json.dumps(card.to_json(), indent=2, sort_keys=True) + "\n")
    (folder / CHECKSUMS).write_text(f"{sha256_of(target)}  {card.file}\n")
    return folder


def read_model_folder(folder: str | Path) -> tuple[Path, ModelCard]:
    """Read a version's card and check its model file against the recorded SHA-256.

    Args:
        folder: A folder written by :func:`write_model_folder`.

    Returns:
        ``(model file, card)``.

    Raises:
        NotFoundError: The folder, its card or its model file is missing.
        ModelFileError: The model file's content does not match its recorded SHA-256.
    """
    folder = Path(folder)
    card = card_from_mapping(read_card_data(folder / CARD_FILE), str(folder / CARD_FILE))
    model_file = folder / card.file
    if not model_file.is_file():
        raise NotFoundError(f"Model file {model_file} does not exist.")
    sums = folder / CHECKSUMS
    recorded: dict[str, str] = {}
    if sums.is_file():
        for line in sums.read_text().splitlines():
            digest, _, name = line.partition("  ")
            recorded[name] = digest
    expected = recorded.get(card.file)
    if expected is None:
        raise ModelFileError(f"{sums} must record the SHA-256 of {card.file}. It does not.")
    actual = sha256_of(model_file)
    if actual != expected:
        raise ModelFileError(
            f"Model file {model_file} must hash to its recorded SHA-256 {expected}. "
            f"Got {actual} instead: the file was changed or corrupted."
        )
    return model_file, card


__all__ = [
    "CARD_FILE",
    "CHECKSUMS",
    "load_source",
    "read_model_folder",
    "sha256_of",
    "write_model_folder",
]
