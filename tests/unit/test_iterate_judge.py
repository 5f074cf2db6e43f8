"""The requirement parser and the judge's verdicts."""

from __future__ import annotations

import json
import math

import pytest

from pathray.errors import ConfigError
from pathray.iterate.judge import judge
from pathray.iterate.requirement import Requirement, Threshold


def test_parse_thresholds_and_regression() -> None:
    r = Requirement.parse("dice >= 0.85 AND f1>0.8 and fp_rate < 0.1 and no regression within 0.02")
    assert [(t.metric, t.op, t.value) for t in r.thresholds] == [
        ("dice", ">=", 0.85),
        ("f1", ">", 0.8),
        ("fp_rate", "<", 0.1),
    ]
    assert r.no_regression and r.tolerance == 0.02
    assert r.metrics == ["dice", "f1", "fp_rate"]
    # the text form parses back to the same requirement, and pydantic accepts the text too
    assert Requirement.parse(str(r)) == r
    assert Requirement.model_validate(str(r)) == r
    assert Requirement.model_validate_json(r.model_dump_json()) == r
    assert not Requirement.parse("f1 <= 1").no_regression


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "Got an empty text instead"),
        ("dice = 0.85", "Got 'dice = 0.85' instead"),
        ("dice >= high", "Got 'dice >= high' instead"),
        ("dice >= 0.8.5", "'0.8.5' is not a number"),
        ("no regression", "at least one metric threshold"),
        ("f1 >= 0.8 and no regression within -1", "tolerance must be >= 0. Got -1 instead"),
        ("f1 >= 0.8 or dice >= 0.8", "Got 'f1 >= 0.8 or dice >= 0.8' instead"),
    ],
)
def test_parse_errors_say_what_was_expected(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        Requirement.parse(text)
    message = str(info.value)
    assert message.startswith("Requirement") and fragment in message


def test_parse_refuses_non_text() -> None:
    with pytest.raises(ConfigError, match="Got int instead"):
        Requirement.parse(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("op", "value", "passed"),
    [
        (">=", 0.8, True),
        (">=", 0.79, False),
        (">", 0.8, False),
        (">", 0.81, True),
        ("<=", 0.8, True),
        ("<=", 0.81, False),
        ("<", 0.8, False),
        ("<", 0.79, True),
    ],
)
def test_each_operator(op: str, value: float, passed: bool) -> None:
    verdict = judge({"m": value}, f"m {op} 0.8")
    assert verdict.met is passed
    (check,) = verdict.checks
    assert (check.metric, check.op, check.threshold, check.value) == ("m", op, 0.8, value)
    assert check.passed is passed
    assert (check.reason == "") is passed
    if not passed:
        assert verdict.reasons == [f"m = {value:.4g}, needs {op} 0.8"]


def test_verdict_metric_by_metric() -> None:
    verdict = judge({"dice": 0.9, "f1": 0.7, "n_ref": 10}, "dice >= 0.85 and f1 >= 0.80")
    assert not verdict.met
    assert [(c.metric, c.passed) for c in verdict.checks] == [("dice", True), ("f1", False)]
    assert verdict.summary() == "not met: f1 = 0.7, needs >= 0.8"
    data = verdict.to_dict()
    assert json.loads(json.dumps(data))["checks"][1]["value"] == 0.7
    assert judge({"dice": 0.9, "f1": 0.8}, "dice >= 0.85 and f1 >= 0.80").summary() == "met"


@pytest.mark.parametrize("value", [None, math.nan, "0.9", True])
def test_missing_or_unusable_metric_fails(value: object) -> None:
    metrics = {"f1": 0.9} if value is None else {"f1": 0.9, "pq": value}
    verdict = judge(metrics, "f1 >= 0.8 and pq >= 0.5")
    assert not verdict.met
    check = verdict.checks[1]
    assert check.value is None and not check.passed
    assert check.reason.startswith("pq is missing from the evaluation")
    assert "f1" in check.reason  # names what the evaluation has


def test_no_regression_against_previous() -> None:
    req = "f1 >= 0.5 and fp_rate <= 0.5 and no regression within 0.01"
    # first version: nothing to regress from
    first = judge({"f1": 0.6, "fp_rate": 0.3}, req)
    assert first.met and first.regressions == ()
    # f1 (higher is better) dropped by 0.005, fp_rate (lower is better) rose by 0.005: tolerated
    ok = judge({"f1": 0.795, "fp_rate": 0.205}, req, previous={"f1": 0.8, "fp_rate": 0.2})
    assert ok.met
    assert [round(r.delta or 0, 3) for r in ok.regressions] == [-0.005, 0.005]
    # beyond the tolerance both ways
    bad = judge({"f1": 0.7, "fp_rate": 0.3}, req, previous={"f1": 0.8, "fp_rate": 0.2})
    assert not bad.met and all(c.passed for c in bad.checks)
    assert [r.passed for r in bad.regressions] == [False, False]
    assert bad.reasons == [
        "f1 regressed from 0.8 to 0.7 (tolerance 0.01)",
        "fp_rate regressed from 0.2 to 0.3 (tolerance 0.01)",
    ]
    # improvements pass; a metric the previous version lacked cannot regress
    better = judge({"f1": 0.9, "fp_rate": 0.1}, req, previous={"f1": 0.8})
    assert better.met and better.regressions[1].previous is None
    # without "no regression", a drop is fine as long as the thresholds hold
    assert judge({"f1": 0.6}, "f1 >= 0.5", previous={"f1": 0.9}).met


def test_threshold_model_is_strict() -> None:
    with pytest.raises(ValueError):
        Threshold.model_validate({"metric": "f1", "op": "==", "value": 1})
    assert not Threshold(metric="f1", op=">=", value=0).holds(math.nan)
