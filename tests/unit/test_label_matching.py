"""Labels of several datasets matched by name, overridden by the user, and their cross-training."""

from __future__ import annotations

import numpy as np
import pytest

from pathray.errors import ConfigError
from pathray.units.label_matching import (
    cross_targets,
    match_labels,
    parse_pair,
    similarity,
)
from pipelines.classify.multihead import MultiHeadClassifier

SETS = {
    "A": ["tumor", "lymphocyte", "stroma"],
    "B": ["Tumour", "other"],
    "C": ["lymphocytes", "tumor_cell"],
}


def test_names_match_from_the_threshold() -> None:
    assert similarity("tumor", "Tumour") == pytest.approx(10 / 11)
    assert similarity("Non-Tumour", "non_tumour") == 1.0
    pairs = [(m.a, m.b) for m in match_labels(SETS)]
    assert pairs == [("A:tumor", "B:Tumour"), ("A:lymphocyte", "C:lymphocytes")]
    assert all(m.source == "name" and m.score >= 0.8 for m in match_labels(SETS))
    # a stricter threshold keeps only the closest pair; 0 merges everything
    assert [m.b for m in match_labels(SETS, threshold=0.95)] == ["C:lymphocytes"]
    assert len(match_labels(SETS, threshold=0.0)) == 3 * 2 + 3 * 2 + 2 * 2


def test_user_overrides_and_their_errors() -> None:
    merges = match_labels(
        SETS, same=[("B:other", "A:stroma")], distinct=[("C:lymphocytes", "A:lymphocyte")]
    )
    assert [(m.a, m.b, m.source) for m in merges] == [
        ("A:tumor", "B:Tumour", "name"),
        ("A:stroma", "B:other", "user"),  # put in the datasets' order
    ]
    with pytest.raises(ConfigError, match=r"Labels of --same must be labels of their dataset"):
        match_labels(SETS, same=[("A:tumor", "B:fibroblast")])
    with pytest.raises(ConfigError, match=r"datasets of --same must be one of \['A', 'B', 'C'\]"):
        match_labels(SETS, same=[("A:tumor", "Z:tumor")])
    with pytest.raises(ConfigError, match="two different datasets"):
        match_labels(SETS, same=[("A:tumor", "A:stroma")])
    with pytest.raises(ConfigError, match="--distinct must name labels that were matched"):
        match_labels(SETS, distinct=[("A:stroma", "B:other")])
    with pytest.raises(ConfigError, match="must be in"):
        match_labels(SETS, threshold=1.5)
    assert parse_pair("A:x = B:y") == ("A:x", "B:y")
    with pytest.raises(ConfigError, match=r"DATASET:LABEL=DATASET:LABEL\. Got 'A:x' instead"):
        parse_pair("A:x")


def test_cross_targets_only_where_the_other_label_is_certain() -> None:
    links = cross_targets([("A:lymphocyte", "B:immune"), ("A:plasma", "B:immune")])
    # each A label says which B label it is; B's immune could be either A label: no target
    assert links == {
        ("A", "lymphocyte"): [("B", "immune")],
        ("A", "plasma"): [("B", "immune")],
        ("B", "immune"): [],
    }


def test_merges_train_the_other_datasets_slice() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    x[60:, 0] += 4.0
    # dataset A labels both groups; dataset B only ever saw the first group (one class)
    y = [("A", "small")] * 30 + [("B", "round")] * 30 + [("A", "large")] * 60
    base = {
        "hidden": (8,),
        "max_iterations": 150,
        "datasets": {"A": ["large", "small"], "B": ["oval", "round"]},
    }
    plain = MultiHeadClassifier(base).fit(x, y)
    merged = MultiHeadClassifier({**base, "merges": [("A:large", "B:oval")]}).fit(x, y)
    assert plain.training_["cross_supervised"] == 0
    assert merged.training_["cross_supervised"] == 60  # every A:large sample, once more for B
    large = x[60:]
    # without the merge, B never saw an oval; with it, A's large nuclei are B's ovals
    assert (plain.predict(large)["B"] == "oval").mean() < 0.5
    assert (merged.predict(large)["B"] == "oval").mean() > 0.9
    with pytest.raises(ConfigError, match="Merged labels must be labels of the label space"):
        MultiHeadClassifier({**base, "merges": [("A:large", "B:square")]}).fit(x, y)
    with pytest.raises(ConfigError, match="DATASET:LABEL"):
        MultiHeadClassifier({"merges": [("large", "B:oval")]})
