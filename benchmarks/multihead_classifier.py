"""One multi-dataset classifier against one classifier per dataset, on differently labelled nuclei.

Three training datasets of synthetic nuclei, each from its own slide and each naming the classes
its own way (as NuCLS, CoNSeP and PanNuke do): ``A`` = {tumor, lymphocyte, stroma}, ``B`` =
{epithelial, inflammatory} (no stroma nuclei), ``C`` = {connective, other}. Features are the
nucleus features of :func:`pipelines.training_data.nucleus_table` on the reference outlines.
Everything is scored on the nuclei of a fourth slide, seen through each dataset's vocabulary.

Methods: the :class:`~pipelines.classify.multihead.MultiHeadClassifier` (one MLP, one output
slice per dataset) with random and round-robin sampling; the peers are one classifier per
dataset trained on that dataset alone: the same MLP with a single slice, and XGBoost
(:class:`~pipelines.classify.object_classifier.NucleusObjectClassifier`). The table gives
accuracy, balanced accuracy and chance (the majority class) per dataset, and the CPU seconds
of fitting (process time, one thread: wall time means little on a shared machine).

Run: ``python -m benchmarks.multihead_classifier [--tiles N]``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import print_table, write_result  # noqa: E402
from pipelines.classify.multihead import MultiHeadClassifier, stack_datasets  # noqa: E402
from pipelines.classify.object_classifier import NucleusObjectClassifier  # noqa: E402
from pipelines.training_data import nucleus_table, synthetic_tiles  # noqa: E402

#: How each dataset names the synthetic classes (a class it lacks is not in it).
VOCABULARIES = {
    "A": {"tumor": "tumor", "lymphocyte": "lymphocyte", "stroma": "stroma"},
    "B": {"tumor": "epithelial", "lymphocyte": "inflammatory"},
    "C": {"stroma": "connective", "tumor": "other", "lymphocyte": "other"},
}
#: The MLP's settings (the same for the shared and the per-dataset models).
MLP = {"hidden": (32, 32), "batch": 64, "lr": 3e-3, "max_iterations": 3000}


def view(columns: dict[str, np.ndarray], classes: np.ndarray, dataset: str) -> tuple[Any, Any]:
    """A dataset's view of nuclei: its own classes only, under its own names."""
    names = VOCABULARIES[dataset]
    keep = np.isin(classes, list(names))
    return (
        {k: v[keep] for k, v in columns.items()},
        np.array([names[c] for c in classes[keep]], dtype=object),
    )


def slide_nuclei(seed: int, tiles: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Features and classes of the reference nuclei of ``tiles`` tiles of one synthetic slide."""
    data = synthetic_tiles(tiles, 192, mpp=0.5, seed=seed)
    return nucleus_table(list(data.images), list(data.instance_labels), data.class_labels, mpp=0.5)


def scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and the majority-class rate."""
    labels = sorted(set(truth))
    return {
        "accuracy": float((predicted == truth).mean()),
        "balanced": float(np.mean([(predicted[truth == c] == c).mean() for c in labels])),
        "chance": float(max((truth == c).mean() for c in labels)),
    }


def main(argv: list[str] | None = None) -> None:
    """Train every method and print the per-dataset scores."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=12, help="192 px tiles per slide")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    parts = {}
    for seed, name in zip((1, 2, 4), VOCABULARIES, strict=True):
        parts[name] = view(*slide_nuclei(seed, args.tiles), name)
    test_columns, test_classes = slide_nuclei(3, args.tiles)
    tests = {name: view(test_columns, test_classes, name) for name in VOCABULARIES}
    rows: list[dict[str, Any]] = []

    def report(method: str, seconds: float, predict: Any, extra: str = "") -> None:
        for name, (columns, truth) in tests.items():
            rows.append(
                {
                    "method": method,
                    "dataset": name,
                    "train": len(parts[name][1]),
                    "test": len(truth),
                    **scores(np.asarray(predict(name, columns)), truth),
                    "fit_cpu_s": round(seconds, 2),
                    "iterations": extra,
                }
            )

    features, pairs = stack_datasets(parts)
    # torch's first optimiser steps pay one-off set-up costs (seconds): keep them out of timings
    MultiHeadClassifier({**MLP, "max_iterations": 5}).fit(features, pairs)
    for sampling in ("random", "round_robin"):
        start = time.process_time()
        shared = MultiHeadClassifier({**MLP, "sampling": sampling}).fit(features, pairs)
        seconds = time.process_time() - start
        report(
            f"multihead-{sampling}",
            seconds,
            lambda name, columns, unit=shared: unit.predict(columns)[name],
            f"{shared.n_iter_}{'' if shared.converged_ else ' (cap)'}",
        )
    for peer in ("mlp", "xgboost"):
        models: dict[str, Any] = {}
        start = time.process_time()
        for name, (columns, labels) in parts.items():
            if peer == "mlp":
                models[name] = MultiHeadClassifier(MLP).fit(columns, labels, datasets=name)
            else:
                models[name] = NucleusObjectClassifier({"n_estimators": 100}).fit(columns, labels)
        seconds = time.process_time() - start

        def predict(name: str, columns: Any, peer: str = peer, models: Any = models) -> np.ndarray:
            model = models[name]
            if peer == "mlp":
                return np.asarray(model.predict(columns)[name])
            return np.asarray(model(columns)["class_label"])

        steps = "/".join(str(getattr(m, "n_iter_", "")) for m in models.values())
        report(f"per-dataset-{peer}", seconds, predict, steps if peer == "mlp" else "")
    print_table(rows, title="Per-dataset accuracy on a held-out slide (chance: majority class)")
    write_result("multihead_classifier", {"tiles": args.tiles, "rows": rows})


if __name__ == "__main__":
    main()
