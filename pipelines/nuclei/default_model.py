"""The nucleus model shipped with PathRay, registered on first use.

The ``nuclei`` preset's segmentation node names ``nuclei-default@champion``. The model folders
are part of the repository (``pipelines/nuclei/weights``, trained by
:mod:`pipelines.nuclei.train_default`); nothing is downloaded. When the engine resolves that
reference on a catalog that does not know the model yet, it asks the node's unit
(:meth:`~pipelines.nuclei.unet.NucleusUNet.install_bundled_model`), which calls
:func:`install`: every folder of :data:`SHIPPED_VERSIONS` goes into the content-addressed
artifact store and the catalog gets the model's versions in order (with their training
records and held-out figures, so that the compare views show what each version changed) and
the alias ``champion`` on the newest. A catalog that holds the older versions only gets the
newer ones, and the alias moves to the newest; installing twice changes nothing.

Example:
    >>> install(catalog, cold_root, MODEL_NAME)  # doctest: +SKIP
    True
    >>> catalog.get_model_version(MODEL_NAME, ALIAS).version  # doctest: +SKIP
    2
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pathray.catalog import Catalog
from pathray.errors import NotFoundError
from pathray.results.artifacts import ArtifactStore
from pathray.units.trainable import read_metadata
from pipelines.nuclei.train_default import DEFAULT_FOLDER, PREVIOUS_FOLDER

#: Registry name of the shipped model, and the alias the preset loads.
MODEL_NAME = "nuclei-default"
ALIAS = "champion"
#: Reference the ``nuclei`` preset uses.
REFERENCE = f"{MODEL_NAME}@{ALIAS}"
#: Held-out figures of the first shipped model (its folder predates them and stays
#: byte-identical so that catalogs that registered it recognise it): the four held-out
#: MoNuSeg tiles of ``benchmarks/nuclei_monuseg.py``, pooled.
PREVIOUS_METRICS: dict[str, float] = {
    "monuseg_f1": 0.431,
    "monuseg_pq": 0.306,
    "monuseg_aji": 0.274,
    "monuseg_precision": 0.541,
    "monuseg_recall": 0.358,
}
#: The shipped versions, oldest first: folder and the metrics to record when its metadata
#: has none.
SHIPPED_VERSIONS: tuple[tuple[Path, dict[str, float]], ...] = (
    (PREVIOUS_FOLDER, PREVIOUS_METRICS),
    (DEFAULT_FOLDER, {}),
)


def install(
    catalog: Catalog,
    cold_root: str | Path,
    name: str = MODEL_NAME,
    *,
    versions: tuple[tuple[Path, dict[str, float]], ...] = SHIPPED_VERSIONS,
    actor: str = "system",
) -> bool:
    """Register the shipped model's versions (artifacts, model, versions, alias) unless there.

    Args:
        catalog: The catalog to register it in.
        cold_root: Root of the cold store that keeps the artifacts.
        name: The model asked for; only :data:`MODEL_NAME` is shipped.
        versions: The model folders, oldest first, with fallback metrics.
        actor: Who registers it, for the audit log.

    Returns:
        Whether ``name`` is the shipped model (now registered).

    Raises:
        NotFoundError: If a shipped folder is missing from the installation.
    """
    if name != MODEL_NAME:
        return False
    for folder, _ in versions:
        if not (folder / "model.pt").is_file():
            raise NotFoundError(f"The shipped nucleus model must be at {folder}. It is missing.")
    catalog.register_model(
        MODEL_NAME,
        "torch",
        task="nucleus segmentation",
        description="U-Net (nucleus and border maps, then watershed) shipped with PathRay.",
        actor=actor,
    )
    store = ArtifactStore(cold_root)
    added = False
    newest = 0
    for folder, fallback_metrics in versions:
        artifact = store.put(folder)
        known = catalog.list_model_versions(MODEL_NAME)
        same = [v.version for v in known if v.artifact_digest == artifact.digest]
        if same:
            newest = same[0]
            continue
        meta = read_metadata(folder)
        newest = catalog.add_model_version(
            MODEL_NAME,
            artifact=artifact,
            training_run=_training_record(meta),
            metrics=meta.get("training", {}).get("metrics") or fallback_metrics,
            parent_version=newest or None,
            resources={"cpus": 1.0, "gpus": 0.0},
            created_by=actor,
        ).version
        added = True
    known = catalog.list_model_versions(MODEL_NAME)
    if added or not any(ALIAS in v.aliases for v in known):
        catalog.set_alias(MODEL_NAME, ALIAS, newest, actor=actor)
    return True


def _training_record(meta: dict[str, Any]) -> dict[str, Any]:
    training = meta.get("training", {})
    return {
        "script": "python -m pipelines.nuclei.train_default",
        "config": meta.get("config", {}),
        "seed": meta.get("config", {}).get("seed"),
        "tiles": training.get("tiles"),
        "seconds": training.get("seconds"),
        "data": training.get(
            "data", "shared/data/nuclei training tiles (EVAL_TILES held out) + synthetic tiles"
        ),
    }
