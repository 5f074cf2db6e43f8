"""The multi-dataset classifier: masked loss, label space, training on synthetic nuclei, unit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from pathray.errors import ConfigError
from pathray.units.registry import unit_path
from pathray.units.trainable import read_metadata
from pipelines.classify.label_space import LabelSpace
from pipelines.classify.multihead import MultiHeadClassifier, stack_datasets
from pipelines.classify.multihead_train import DatasetSampler, masked_loss, slice_mask
from pipelines.training_data import FEATURE_COLUMNS, nucleus_table, synthetic_tiles

torch.set_num_threads(1)

#: How each training dataset names the synthetic classes (a class it lacks is not in it).
VOCABULARIES = {
    "A": {"tumor": "tumor", "lymphocyte": "lymphocyte", "stroma": "stroma"},
    "B": {"tumor": "epithelial", "lymphocyte": "inflammatory"},
    "C": {"stroma": "connective", "tumor": "other", "lymphocyte": "other"},
}
FAST = {"hidden": (32,), "batch": 64, "lr": 5e-3, "max_iterations": 1500}


def relabelled(columns, classes, vocabulary):
    """A dataset's view of synthetic nuclei: its own label names, its classes only."""
    keep = np.isin(classes, list(vocabulary))
    return (
        {name: values[keep] for name, values in columns.items()},
        np.array([vocabulary[c] for c in classes[keep]], dtype=object),
    )


@pytest.fixture(scope="module")
def datasets():
    """Three datasets of synthetic nuclei (one slide each), differently labelled."""
    parts = {}
    for seed, (name, vocabulary) in zip((1, 2, 4), VOCABULARIES.items(), strict=True):
        columns, classes = nucleus_table(*synthetic_tiles(6, 192, mpp=0.5, seed=seed), mpp=0.5)
        parts[name] = relabelled(columns, classes, vocabulary)
    return parts


@pytest.fixture(scope="module")
def held_out():
    return nucleus_table(*synthetic_tiles(6, 192, mpp=0.5, seed=3), mpp=0.5)


@pytest.fixture(scope="module")
def fitted(datasets):
    features, pairs = stack_datasets(datasets)
    return {
        sampling: MultiHeadClassifier({**FAST, "sampling": sampling}).fit(features, pairs)
        for sampling in ("random", "round_robin")
    }


# -- the masked loss ----------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
def test_loss_and_gradient_ignore_other_slices(head):
    space = LabelSpace.from_mapping({"A": ["a", "b", "c"], "B": ["x", "y"], "C": ["p", "q", "r"]})
    targets, which = space.encode(["A", "B", "C", "B"], ["c", "x", "q", "y"])
    bounds = torch.from_numpy(space.bounds[which])
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, space.size, generator=generator, requires_grad=True)
    loss = masked_loss(logits, torch.from_numpy(targets), bounds, head)
    loss.backward()
    inside = slice_mask(bounds, space.size)
    assert inside.sum(dim=1).tolist() == [3, 2, 3, 2]
    assert torch.all(logits.grad[~inside] == 0)  # exactly zero outside each sample's slice
    assert all(bool((logits.grad[i][inside[i]] != 0).all()) for i in range(4))
    # moving the other slices' logits, even to extremes, leaves the loss bit-identical
    moved = logits.detach().clone()
    moved[~inside] = torch.randn(int((~inside).sum()), generator=generator) * 1e3
    assert torch.equal(masked_loss(moved, torch.from_numpy(targets), bounds, head), loss.detach())
    if head == "softmax":
        # the same as a plain cross-entropy over the sample's own slice
        expected = torch.stack(
            [
                F.cross_entropy(logits[i, s:e][None], torch.tensor([t - s]))
                for i, (t, (s, e)) in enumerate(zip(targets, space.bounds[which], strict=True))
            ]
        ).mean()
        assert torch.allclose(loss, expected, atol=1e-6)


def test_label_space_slices_and_errors():
    sizes = {"NuCLS": 12, "BreCaHAD": 7, "CoNSeP": 7, "MoNuSAC": 4, "PanNuke": 5}
    space = LabelSpace.from_mapping({k: [f"l{j}" for j in range(n)] for k, n in sizes.items()})
    assert space.size == 35
    assert space.slice_of("NuCLS") == slice(0, 12) and space.slice_of("PanNuke") == slice(30, 35)
    assert [s.stop - s.start for _, s in space] == list(sizes.values())
    assert space.qualified()[12] == "BreCaHAD:l0"
    targets, which = space.encode("MoNuSAC", ["l3", "l0"])
    assert targets.tolist() == [29, 26] and which.tolist() == [3, 3]
    two = LabelSpace.from_mapping({"A": ["tumor", "stroma"], "B": ["epithelial", "other"]})
    with pytest.raises(ConfigError) as info:
        two.encode(["A", "B", "B"], ["tumor", "stroma", "stroma"])
    assert str(info.value) == (
        "Label 'stroma' is not in dataset 'B''s label set ['epithelial', 'other']. "
        "Got it for 2 sample(s), the first at index 1."
    )
    with pytest.raises(ConfigError, match=r"Dataset must be one of \['A', 'B'\]. Got 'Z'"):
        two.encode(["A", "Z"], ["tumor", "other"])
    with pytest.raises(ConfigError, match="one dataset and one label"):
        two.encode(["A"], ["tumor", "stroma"])
    with pytest.raises(ConfigError, match=r"must be unique. Got \['a'\]"):
        LabelSpace.from_mapping({"A": ["a", "b", "a"]})
    with pytest.raises(ConfigError, match="start with a letter"):
        LabelSpace.from_mapping({"my dataset": ["a"]})
    with pytest.raises(ConfigError, match="at least one label"):
        LabelSpace.from_mapping({"A": []})
    with pytest.raises(ConfigError, match="list of strings"):
        LabelSpace.from_mapping({"A": "ab"})
    with pytest.raises(ConfigError, match="at least one dataset"):
        LabelSpace.from_mapping({})


def test_config_validates_label_space_and_primary():
    with pytest.raises(ConfigError, match=r"datasets: .*must be unique"):
        MultiHeadClassifier({"datasets": {"A": ["a", "a"]}})
    with pytest.raises(ConfigError, match=r"primary must be one of \['A'\]. Got 'B'"):
        MultiHeadClassifier({"datasets": {"A": ["a", "b"]}, "primary": "B"})
    with pytest.raises(ConfigError, match="sampling"):
        MultiHeadClassifier({"sampling": "sequential"})
    config = {"datasets": {"B": ["y", "x"], "A": ["a", "b"]}}
    unit = MultiHeadClassifier(config)
    assert list(unit.get_params()["datasets"]) == ["B", "A"]  # order kept
    assert MultiHeadClassifier.Config.model_validate(json.loads(json.dumps(unit.get_params())))
    names = [c.name for c in MultiHeadClassifier.declared_outputs(config)]
    assert names[-4:] == [
        "class_label_B",
        "class_probability_B",
        "class_label_A",
        "class_probability_A",
    ]


# -- training on synthetic nuclei ---------------------------------------------------------------


@pytest.mark.parametrize("sampling", ["random", "round_robin"])
def test_beats_chance_on_every_dataset(sampling, fitted, held_out):
    unit = fitted[sampling]
    assert unit.label_space_.to_dict() == {
        "A": ["lymphocyte", "stroma", "tumor"],
        "B": ["epithelial", "inflammatory"],
        "C": ["connective", "other"],
    }
    assert unit.converged_ and unit.n_iter_ < FAST["max_iterations"]
    columns, classes = held_out
    predicted = unit.predict(columns)
    assert set(predicted) == {"A", "B", "C"}
    for name, vocabulary in VOCABULARIES.items():
        keep = np.isin(classes, list(vocabulary))
        truth = np.array([vocabulary[c] for c in classes[keep]])
        accuracy = float((predicted[name][keep] == truth).mean())
        balanced = np.mean([(predicted[name][keep][truth == c] == c).mean() for c in set(truth)])
        majority = max((truth == c).mean() for c in set(truth))
        # measured on 143 held-out nuclei: accuracy 0.96-1.0 (chance 0.58 / 0.66 / 0.88)
        assert accuracy > majority + 0.5 * (1 - majority), (name, accuracy, majority)
        assert balanced > 0.8, (name, balanced)
    # the per-dataset accuracy helper agrees with the direct count
    b_cols, b_labels = relabelled(columns, classes, VOCABULARIES["B"])
    scores = unit.accuracy(b_cols, b_labels, datasets="B")
    assert scores["B"] == float((unit.predict(b_cols)["B"] == b_labels).mean())
    assert np.isnan(scores["A"])


def test_sampling_modes():
    which = np.repeat([0, 1, 2], [90, 5, 5])
    targets = np.where(np.arange(100) % 2, 1, 0) + which * 2
    robin = DatasetSampler(
        which, targets, mode="round_robin", batch=8, class_balanced=False, seed=0
    )
    assert robin.cycle == 3
    assert [set(which[robin(step)].tolist()) for step in range(4)] == [{0}, {1}, {2}, {0}]
    mixed = DatasetSampler(which, targets, mode="random", batch=3000, class_balanced=True, seed=0)
    drawn = which[mixed(0)]
    # each dataset about a third of the draws although dataset 0 has 90% of the samples
    assert np.allclose(np.bincount(drawn) / len(drawn), 1 / 3, atol=0.05)
    assert np.array_equal(
        DatasetSampler(which, targets, mode="random", batch=50, class_balanced=True, seed=1)(0),
        DatasetSampler(which, targets, mode="random", batch=50, class_balanced=True, seed=1)(0),
    )


def easy_problem(n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2 * n, len(FEATURE_COLUMNS))).astype(np.float32)
    features[n:, 0] += 8.0
    pairs = np.array(
        [("A", "low"), ("B", "no")] * (n // 2) + [("A", "high"), ("B", "yes")] * (n // 2),
        dtype=object,
    )
    return features, pairs


def test_plateau_stops_before_the_cap_and_the_cap_stops_otherwise():
    features, pairs = easy_problem()
    config = {"hidden": (8,), "max_iterations": 2000, "window": 10, "patience": 3}
    unit = MultiHeadClassifier(config).fit(features, pairs)
    assert unit.converged_ and 30 <= unit.n_iter_ < 2000
    assert unit.training_["converged"] and unit.training_["iterations"] == unit.n_iter_
    assert np.mean(unit.loss_history_[-10:]) < 0.05 < unit.loss_history_[0]
    capped = MultiHeadClassifier({**config, "max_iterations": 25, "patience": 50}).fit(
        features, pairs
    )
    assert not capped.converged_ and capped.n_iter_ == 25
    # the same data, config and seed give the same model
    again = MultiHeadClassifier(config).fit(features, pairs)
    assert again.n_iter_ == unit.n_iter_
    assert np.array_equal(again.decision_function(features), unit.decision_function(features))


def test_predictions_are_grouped_per_dataset():
    features, pairs = easy_problem()
    unit = MultiHeadClassifier({"hidden": (8,), "max_iterations": 300}).fit(features, pairs)
    proba = unit.predict_proba(features[[0, -1]])
    assert list(proba) == ["A", "B"] and proba["A"].shape == (2, 2) == proba["B"].shape
    assert np.allclose(proba["A"].sum(axis=1), 1.0) and np.allclose(proba["B"].sum(axis=1), 1.0)
    assert {k: v.tolist() for k, v in unit.predict(features[[0, -1]]).items()} == {
        "A": ["low", "high"],
        "B": ["no", "yes"],
    }
    assert unit.predict_labels(features[[0, -1]], 0.5) == {
        "A": [("low",), ("high",)],
        "B": [("no",), ("yes",)],
    }
    # labels given with datasets= are the same as pairs
    same = MultiHeadClassifier({"hidden": (8,), "max_iterations": 300}).fit(
        features, pairs[:, 1], datasets=pairs[:, 0]
    )
    assert np.array_equal(same.decision_function(features), unit.decision_function(features))
    # sigmoid heads: labels over a threshold, each output on its own
    sigmoid = MultiHeadClassifier({"hidden": (8,), "max_iterations": 300, "head": "sigmoid"})
    sigmoid.fit(features, pairs)
    hits = sigmoid.predict_labels(features[[0, -1]], 0.5)
    assert hits == {"A": [("low",), ("high",)], "B": [("no",), ("yes",)]}


def test_fit_rejects_bad_labels():
    features, pairs = easy_problem(20)
    fixed = {"datasets": {"A": ["low", "high"], "B": ["no", "yes"]}, "max_iterations": 5}
    bad = pairs.copy()
    bad[3] = ("B", "high")
    with pytest.raises(ConfigError, match=r"Label 'high' is not in dataset 'B''s label set"):
        MultiHeadClassifier(fixed).fit(features, bad)
    with pytest.raises(ConfigError, match="Dataset must be one of"):
        MultiHeadClassifier(fixed).fit(features, pairs[:, 1], datasets="Z")
    with pytest.raises(ConfigError, match=r"\(dataset, label\) pairs"):
        MultiHeadClassifier(fixed).fit(features, pairs[:, 1])
    with pytest.raises(ConfigError, match="one label per sample"):
        MultiHeadClassifier(fixed).fit(features[:5], pairs)
    with pytest.raises(ConfigError, match="not fitted"):
        MultiHeadClassifier(fixed).predict(features)


# -- the unit -----------------------------------------------------------------------------------


def object_rows(columns) -> dict[str, np.ndarray]:
    n = len(columns["area_um2"])
    return {"object_id": np.arange(n), "tile_id": np.zeros(n, np.int64), **columns}


def test_unit_outputs_every_dataset(fitted, held_out):
    unit = fitted["round_robin"]
    rows = object_rows(held_out[0])
    out = unit(rows)
    per_dataset = {c.name for name in "ABC" for c in unit.dataset_columns(name)}
    assert set(out) == {c.name for c in unit.outputs} | per_dataset
    assert out["class_label"].dtype == object and out["class_probability"].dtype == np.float32
    predicted = unit.predict(rows)
    for name in "ABC":
        assert np.array_equal(out[f"class_label_{name}"], predicted[name])
    assert np.array_equal(out["class_label"], predicted["A"])  # primary: the first dataset
    first = json.loads(out["dataset_labels"][0])
    assert first == {name: str(predicted[name][0]) for name in "ABC"}
    probabilities = json.loads(out["dataset_probabilities"][0])
    assert set(probabilities["B"]) == {"epithelial", "inflammatory"}
    assert abs(sum(probabilities["C"].values()) - 1) < 1e-4
    empty = unit({name: np.zeros(0, np.float32) for name in FEATURE_COLUMNS})
    assert all(len(v) == 0 for v in empty.values()) and set(empty) == set(out)


def test_save_load_round_trip(fitted, held_out, tmp_path):
    from pathray.engine.stages import UnitStage

    unit = fitted["random"]
    unit.save(tmp_path)
    rows = object_rows(held_out[0])
    expected = unit(rows)
    for loaded in (
        MultiHeadClassifier.load(tmp_path),
        MultiHeadClassifier(unit.config, {"model": str(tmp_path)}),
    ):
        assert loaded.label_space_ == unit.label_space_ and loaded.n_iter_ == unit.n_iter_
        out = loaded(rows)
        assert out.keys() == expected.keys()
        assert all(np.array_equal(out[k], expected[k]) for k in out)
    meta = read_metadata(tmp_path)
    assert meta["unit"] == "nucleus_multihead_classifier"
    assert meta["model"]["label_space"] == unit.label_space_.to_dict()
    assert meta["training"]["iterations"] == unit.n_iter_
    # the engine's stage builds it from its import path and the artifact
    stage = UnitStage(unit_path(MultiHeadClassifier), unit.get_params(), {"model": str(tmp_path)})
    staged = stage(rows)
    assert np.array_equal(staged["class_label_B"], expected["class_label_B"])
    # an inference-only change is allowed, a model-shaping one is not
    primary = MultiHeadClassifier.load(tmp_path, {**unit.get_params(), "primary": "B"})
    assert np.array_equal(primary(rows)["class_label"], expected["class_label_B"])
    with pytest.raises(ConfigError, match=r"'hidden' of unit .* must match"):
        MultiHeadClassifier.load(tmp_path, {**unit.get_params(), "hidden": [8]})


def test_unit_is_usable_in_a_pipeline_spec():
    from pathray.pipeline.spec import PipelineSpec
    from pathray.units import registry

    # built-ins are registered through pyproject entry points; register it where that is stale
    added = MultiHeadClassifier.name not in registry.available()
    registry.register(MultiHeadClassifier)
    try:
        spec = PipelineSpec.model_validate(
            {
                "name": "multihead",
                "units": [
                    {"id": "tissue", "unit": "tissue_mask"},
                    {"id": "segment", "unit": "nucleus_segmentation", "after": ["tissue"]},
                    {"id": "features", "unit": "nucleus_features", "after": ["segment"]},
                    {
                        "id": "classify",
                        "unit": "nucleus_multihead_classifier",
                        "after": ["features"],
                        "config": {"datasets": {"A": ["a", "b"]}},
                        "model": "multihead@champion",
                    },
                ],
            }
        )
        assert [node.id for node in spec.ordered()][-1] == "classify"
        assert registry.describe(MultiHeadClassifier)["granularity"] == {
            "in": "object",
            "out": "object",
        }
    finally:
        if added:
            registry.unregister(MultiHeadClassifier.name)


def test_set_params_and_threshold_outputs():
    features, pairs = easy_problem()
    config = {"hidden": (8,), "max_iterations": 300, "head": "sigmoid"}
    unit = MultiHeadClassifier(config).fit(features, pairs)
    rows = {name: features[[0, -1], k] for k, name in enumerate(FEATURE_COLUMNS)}
    assert unit.set_params(threshold=0.5, primary="B") is unit and unit.is_fitted
    out = unit(rows)
    assert out["class_label"].tolist() == ["no", "yes"] == out["class_label_B"].tolist()
    assert json.loads(out["dataset_labels"][1]) == {"A": ["high"], "B": ["yes"]}
    unit.set_params(threshold=1e-9)  # every label passes
    assert unit(rows)["class_label_A"].tolist() == ["high|low", "high|low"]
    with pytest.raises(ConfigError, match="threshold"):
        unit.set_params(threshold=2.0)
    unit.set_params(hidden=(4,))  # reshapes the model: the learned state goes
    assert not unit.is_fitted and unit.get_params()["hidden"] == [4]


def test_training_set_labels_the_primary_dataset():
    tiles = synthetic_tiles(2, 96, mpp=0.5, seed=0)
    columns, pairs = MultiHeadClassifier().training_set(*tiles, mpp=0.5)
    assert set(pairs[:, 0]) == {"default"} and len(pairs) == len(columns["area_um2"])
    named = MultiHeadClassifier({"datasets": {"N": ["tumor", "lymphocyte", "stroma"]}})
    columns, pairs = named.training_set(*tiles, mpp=0.5)
    assert set(pairs[:, 0]) == {"N"}
    assert set(pairs[:, 1]) <= {"tumor", "lymphocyte", "stroma"}
    fitted = named.set_params(max_iterations=20).fit(columns, pairs)
    assert fitted.label_space_.names == ("N",) and fitted.n_iter_ <= 20
