"""Classification metrics (pathray.evaluate.classification) against scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shapely.geometry import box
from sklearn import metrics as skm

from pathray.errors import ConfigError
from pathray.evaluate import compare_objects, summarize
from pathray.evaluate.classification import (
    ClassificationCounts,
    average_precision_score,
    pr_curve,
    roc_curve,
)

CLASSES = ["epithelial", "immune", "stromal"]


def sample(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    y_true = rng.choice(CLASSES, n)
    logits = rng.normal(0, 1, (n, 3)) + 1.5 * (y_true[:, None] == np.array(CLASSES))
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    prob = np.round(prob, 2)  # ties, as real scores have
    y_pred = np.array(CLASSES)[prob.argmax(1)]
    return y_true, y_pred, {c: prob[:, i] for i, c in enumerate(CLASSES)}


@pytest.mark.parametrize("seed", range(3))
def test_against_sklearn(seed: int) -> None:
    y_true, y_pred, scores = sample(seed)
    acc = ClassificationCounts().update(y_true, y_pred, scores)
    res = acc.result()
    np.testing.assert_array_equal(
        acc.confusion_matrix(), skm.confusion_matrix(y_true, y_pred, labels=CLASSES)
    )
    assert res["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert res["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert res["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    sens = skm.recall_score(y_true, y_pred, labels=CLASSES, average=None)
    prec = skm.precision_score(y_true, y_pred, labels=CLASSES, average=None)
    for i, c in enumerate(CLASSES):
        yb, pb = y_true == c, y_pred == c
        assert res[f"sensitivity[{c}]"] == pytest.approx(sens[i])
        assert res[f"precision[{c}]"] == pytest.approx(prec[i])
        # Specificity is the recall of the negative class.
        assert res[f"specificity[{c}]"] == pytest.approx(skm.recall_score(~yb, ~pb))
        assert res[f"auc[{c}]"] == pytest.approx(skm.roc_auc_score(yb, scores[c]))
        assert res[f"ap[{c}]"] == pytest.approx(skm.average_precision_score(yb, scores[c]))
        fpr, tpr, thr = acc.roc(c)
        sk_fpr, sk_tpr, sk_thr = skm.roc_curve(yb, scores[c], drop_intermediate=False)
        np.testing.assert_allclose(fpr, sk_fpr)
        np.testing.assert_allclose(tpr, sk_tpr)
        np.testing.assert_allclose(thr[1:], sk_thr[1:])
        p, r, t = acc.pr(c)
        sk_p, sk_r, sk_t = skm.precision_recall_curve(yb, scores[c])
        np.testing.assert_allclose(p, sk_p)
        np.testing.assert_allclose(r, sk_r)
        np.testing.assert_allclose(t, sk_t)
    prob = np.c_[[scores[c] for c in CLASSES]].T
    onehot = y_true[:, None] == np.array(CLASSES)  # macro one-vs-rest, as indicator columns
    assert res["auc"] == pytest.approx(skm.roc_auc_score(onehot, prob, average="macro"))
    assert res["ap"] == pytest.approx(
        np.mean([skm.average_precision_score(y_true == c, scores[c]) for c in CLASSES])
    )


def test_hand_computed_and_conventions() -> None:
    acc = ClassificationCounts().update(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    res = acc.result()
    assert res["accuracy"] == 0.75
    assert res["sensitivity[a]"] == 0.5 and res["specificity[a]"] == 1.0
    assert res["sensitivity[b]"] == 1.0 and res["specificity[b]"] == 0.5
    assert "auc" not in res
    assert ClassificationCounts().result() == {}
    # A class only predicted has no sensitivity; nothing is NaN, so JSON round-trips.
    res = ClassificationCounts().update(["a"], ["c"]).result()
    assert "sensitivity[c]" not in res and json.loads(json.dumps(res)) == res
    assert roc_curve([1, 0], [0.8, 0.2])[1].tolist() == [0.0, 1.0, 1.0]
    assert average_precision_score([0, 0], [0.1, 0.2]) == 0.0
    assert pr_curve([1], [0.5])[0].tolist() == [1.0, 1.0]
    with pytest.raises(ConfigError):
        ClassificationCounts().update(["a"], ["a", "b"])
    with pytest.raises(ConfigError):
        ClassificationCounts().update(["a"], ["a"], {"a": [0.1, 0.2]})
    with pytest.raises(ConfigError):
        ClassificationCounts().update(["a"], ["a"]).roc("a")


def test_merge_equals_one_pass_even_with_missing_score_columns() -> None:
    y_true, y_pred, scores = sample(9, n=200)
    whole = ClassificationCounts().update(y_true, y_pred, scores)
    parts = [
        ClassificationCounts().update(
            y_true[a:b], y_pred[a:b], {c: s[a:b] for c, s in scores.items()}
        )
        for a, b in ((0, 50), (50, 120), (120, 200))
    ]
    merged = parts[2] + (parts[0] + parts[1])
    ordered = parts[0].merge(parts[1]).merge(parts[2])
    assert ordered.result() == pytest.approx(whole.result())
    assert set(merged.result()) == set(whole.result())
    assert merged.result()["accuracy"] == whole.result()["accuracy"]
    # A part with no score for a class counts as probability 0 there.
    a = ClassificationCounts().update(["x"], ["x"], {"x": [0.9]})
    b = ClassificationCounts().update(["y"], ["y"], {"y": [0.8]})
    assert (a + b).scores["x"].tolist() == [0.9, 0.0]
    with pytest.raises(TypeError):
        a.merge(object())  # type: ignore[arg-type]


def test_labels_of_matched_objects_in_a_comparison() -> None:
    refs = [box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10)]
    preds = [box(0, 0, 10, 10), box(20, 0, 30, 10), box(80, 0, 90, 10)]
    c = compare_objects(
        preds,
        refs,
        pred_labels=["tumour", "immune", "tumour"],
        ref_labels=["tumour", "tumour", "immune"],
        class_scores={"tumour": [0.9, 0.4, 0.7], "immune": [0.1, 0.6, 0.3]},
    )
    m = c.metrics()
    assert c.changes() == {"matched": 2, "missed": 1, "extra": 1, "relabelled": 1}
    assert c.relabelled() == [(1, 1)]
    assert m["accuracy"] == 0.5 and m["relabelled"] == 1
    report = summarize({"a": c, "b": c})
    assert report["overall"]["relabelled"] == 2 and "relabelled" not in report["macro"]
    assert json.loads(json.dumps(report)) == report
