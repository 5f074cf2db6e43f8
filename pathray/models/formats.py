"""Recognising a model file's format from its content, and refusing unsafe ones.

Loading a pickle runs arbitrary code, so PathRay accepts only formats that load as data:
TorchScript archives, ONNX, skops, and XGBoost's JSON and UBJSON. A ``torch.save`` checkpoint
or a joblib file is a pickle and is refused with the list of safe formats.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from pathray.errors import ModelFileError, NotFoundError
from pathray.models.card import Format

#: The safe formats and the file suffixes each is recognised by.
SAFE_FORMATS: dict[str, tuple[str, ...]] = {
    "torchscript": (".pt", ".pth", ".torchscript", ".jit"),
    "onnx": (".onnx",),
    "skops": (".skops",),
    "xgboost_json": (".json",),
    "xgboost_ubj": (".ubj",),
}
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".sav", ".dill", ".ckpt")
_SAFE_LIST = (
    "TorchScript (.pt, torch.jit.save), ONNX (.onnx), skops (.skops), "
    "XGBoost JSON (.json) or UBJSON (.ubj)"
)


def _refuse_pickle(path: Path, what: str) -> ModelFileError:
    return ModelFileError(
        f"Model file {path} is {what}, which runs arbitrary code when loaded; PathRay refuses "
        f"pickles. Save the model as {_SAFE_LIST} instead."
    )


def _is_pickle(head: bytes) -> bool:
    # protocol 2+ pickles start with PROTO (0x80) and the protocol number
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        raise ModelFileError(
            f"Model file {path} must be a complete zip archive. Got a corrupt or truncated file."
        ) from None


def detect_format(path: str | Path) -> Format:
    """Return the safe format of a model file, from its suffix and checked against its content.

    Args:
        path: The model file.

    Returns:
        One of ``torchscript``, ``onnx``, ``skops``, ``xgboost_json``, ``xgboost_ubj``.

    Raises:
        NotFoundError: The file does not exist.
        ModelFileError: A pickle (refused), an unknown suffix, or content that does not match
            the suffix (a truncated archive, a ``torch.save`` checkpoint, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"Model file {path} does not exist.")
    suffix = path.suffix.lower()
    with path.open("rb") as handle:
        head = handle.read(4)
    if suffix in _PICKLE_SUFFIXES or _is_pickle(head):
        raise _refuse_pickle(path, "a pickle")
    if suffix in SAFE_FORMATS["torchscript"]:
        names = _zip_names(path)
        # a TorchScript archive carries its compiled code; a torch.save checkpoint only data.pkl
        if not any("/code/" in name for name in names):
            raise _refuse_pickle(path, "a torch.save checkpoint (a pickle), not TorchScript")
        return "torchscript"
    if suffix in SAFE_FORMATS["skops"]:
        if "schema.json" not in _zip_names(path):
            raise ModelFileError(f"Model file {path} must be a skops archive. It has no schema.")
        return "skops"
    if suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            raise ModelFileError(
                f"Model file {path} must be valid JSON. Got corrupt data."
            ) from None
        if not isinstance(data, dict) or "learner" not in data:
            raise ModelFileError(
                f"A JSON model file must be an XGBoost model (with 'learner'). Got {path}."
            )
        return "xgboost_json"
    # ONNX and UBJSON have no cheap signature: loading them (at registration) checks them
    if suffix in SAFE_FORMATS["onnx"]:
        return "onnx"
    if suffix in SAFE_FORMATS["xgboost_ubj"]:
        return "xgboost_ubj"
    raise ModelFileError(f"Model file {path} must be {_SAFE_LIST}. Got suffix {suffix!r}.")


__all__ = ["SAFE_FORMATS", "detect_format"]
