"""The nucleus model shipped with PathRay, registered on first use.

The ``nuclei`` preset's segmentation node names ``nuclei-default@champion``. The model's folder
is part of the repository (``pipelines/nuclei/weights/nuclei_default``, trained by
:mod:`pipelines.nuclei.train_default`); nothing is downloaded. When the engine resolves that
reference on a catalog that does not know the model yet, it asks the node's unit
(:meth:`~pipelines.nuclei.unet.NucleusUNet.install_bundled_model`), which calls
:func:`install`: the folder goes into the content-addressed artifact store and the catalog gets
the model, version 1 (with the training record and the held-out figures of the folder's
metadata) and the alias ``champion``. Installing twice changes nothing.

Example:
    >>> install(catalog, cold_root, MODEL_NAME)  # doctest: +SKIP
    True
    >>> catalog.get_model_version(MODEL_NAME, ALIAS).version  # doctest: +SKIP
    1
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pathray.catalog import Catalog
from pathray.errors import NotFoundError
from pathray.results.artifacts import ArtifactStore
from pathray.units.trainable import read_metadata
from pipelines.nuclei.train_default import DEFAULT_FOLDER

#: Registry name of the shipped model, and the alias the preset loads.
MODEL_NAME = "nuclei-default"
ALIAS = "champion"
#: Reference the ``nuclei`` preset uses.
REFERENCE = f"{MODEL_NAME}@{ALIAS}"


def install(
    catalog: Catalog,
    cold_root: str | Path,
    name: str = MODEL_NAME,
    *,
    folder: Path = DEFAULT_FOLDER,
    actor: str = "system",
) -> bool:
    """Register the shipped model (artifact, model, version, alias) unless it is there.

    Args:
        catalog: The catalog to register it in.
        cold_root: Root of the cold store that keeps the artifact.
        name: The model asked for; only :data:`MODEL_NAME` is shipped.
        folder: The model folder.
        actor: Who registers it, for the audit log.

    Returns:
        Whether ``name`` is the shipped model (now registered).

    Raises:
        NotFoundError: If the shipped folder is missing from the installation.
    """
    if name != MODEL_NAME:
        return False
    if not (folder / "model.pt").is_file():
        raise NotFoundError(f"The shipped nucleus model must be at {folder}. It is missing.")
    artifact = ArtifactStore(cold_root).put(folder)
    catalog.register_model(
        MODEL_NAME,
        "torch",
        task="nucleus segmentation",
        description="U-Net (nucleus and border maps, then watershed) shipped with PathRay.",
        actor=actor,
    )
    versions = catalog.list_model_versions(MODEL_NAME)
    same = [v for v in versions if v.artifact_digest == artifact.digest]
    if same:
        version = same[0].version
    else:
        meta = read_metadata(folder)
        version = catalog.add_model_version(
            MODEL_NAME,
            artifact=artifact,
            training_run=_training_record(meta),
            metrics=meta.get("training", {}).get("metrics", {}),
            resources={"cpus": 1.0, "gpus": 0.0},
            created_by=actor,
        ).version
    if not any(ALIAS in v.aliases for v in versions):
        catalog.set_alias(MODEL_NAME, ALIAS, version, actor=actor)
    return True


def _training_record(meta: dict[str, Any]) -> dict[str, Any]:
    training = meta.get("training", {})
    return {
        "script": "python -m pipelines.nuclei.train_default",
        "config": meta.get("config", {}),
        "seed": meta.get("config", {}).get("seed"),
        "tiles": training.get("tiles"),
        "seconds": training.get("seconds"),
        "data": "shared/data/nuclei training tiles (EVAL_TILES held out) + synthetic tiles",
    }
