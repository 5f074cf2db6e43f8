"""The judge: does a version's evaluation meet the requirement? Metric by metric, with reasons.

Example:
    >>> verdict = judge({"dice": 0.9, "f1": 0.78}, "dice >= 0.85 and f1 >= 0.80")
    >>> verdict.met, [c.passed for c in verdict.checks]
    (False, [True, False])
    >>> verdict.reasons
    ['f1 = 0.78, needs >= 0.8']
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pathray.iterate.requirement import Requirement


@dataclass(frozen=True)
class MetricCheck:
    """One threshold checked against a metric.

    Attributes:
        metric: The metric.
        op: The comparison.
        threshold: The threshold.
        value: The metric's value (None when the evaluation lacks it).
        passed: Whether it holds.
        reason: Why it failed ("" when it passed).
    """

    metric: str
    op: str
    threshold: float
    value: float | None
    passed: bool
    reason: str = ""


@dataclass(frozen=True)
class RegressionCheck:
    """One metric compared with the previous version.

    Attributes:
        metric: The metric.
        value: Its value now.
        previous: Its value in the previous version.
        delta: ``value - previous``.
        tolerance: Allowed worsening.
        passed: Whether it got no worse than the tolerance allows.
        reason: Why it failed ("" when it passed).
    """

    metric: str
    value: float | None
    previous: float | None
    delta: float | None
    tolerance: float
    passed: bool
    reason: str = ""


@dataclass(frozen=True)
class Verdict:
    """The judge's decision.

    Attributes:
        met: Whether every check passed.
        requirement: The requirement, as text.
        checks: The threshold checks, in the requirement's order.
        regressions: The regression checks (empty unless asked, or with no previous version).
        reasons: Why it is not met, one line per failed check.
    """

    met: bool
    requirement: str
    checks: tuple[MetricCheck, ...]
    regressions: tuple[RegressionCheck, ...] = ()
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The verdict as plain JSON."""
        out = asdict(self)
        out["checks"] = [asdict(c) for c in self.checks]
        out["regressions"] = [asdict(c) for c in self.regressions]
        return out

    def summary(self) -> str:
        """One line: ``met`` or ``not met: <reasons>``."""
        return "met" if self.met else "not met: " + "; ".join(self.reasons)


def _value(metrics: Mapping[str, Any], name: str) -> float | None:
    value = metrics.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(float(value)) else float(value)


def judge(
    metrics: Mapping[str, Any],
    requirement: Requirement | str,
    previous: Mapping[str, Any] | None = None,
) -> Verdict:
    """Judge an evaluation's metrics against a requirement.

    Args:
        metrics: Metric name -> value (e.g. the ``overall`` metrics of an evaluation); a
            metric that is missing, not a number or NaN fails its check.
        requirement: The requirement (or its text).
        previous: The previous version's metrics, for ``no regression``; None: the first
            version, which has nothing to regress from.

    Returns:
        The verdict.

    Raises:
        ConfigError: If the requirement's text does not parse.
    """
    req = Requirement.parse(requirement)
    checks: list[MetricCheck] = []
    reasons: list[str] = []
    for t in req.thresholds:
        value = _value(metrics, t.metric)
        if value is None:
            reason = f"{t.metric} is missing from the evaluation"
            if metrics:
                reason += f" (it has {', '.join(sorted(metrics))})"
            checks.append(MetricCheck(t.metric, t.op, t.value, None, False, reason))
        else:
            passed = t.holds(value)
            reason = "" if passed else f"{t.metric} = {value:.4g}, needs {t.op} {t.value:g}"
            checks.append(MetricCheck(t.metric, t.op, t.value, value, passed, reason))
        if not checks[-1].passed:
            reasons.append(checks[-1].reason)
    regressions: list[RegressionCheck] = []
    if req.no_regression and previous is not None:
        seen: set[str] = set()
        for t in req.thresholds:
            if t.metric in seen:
                continue
            seen.add(t.metric)
            check = _regression(t.metric, t.higher_is_better, metrics, previous, req.tolerance)
            regressions.append(check)
            if not check.passed:
                reasons.append(check.reason)
    met = all(c.passed for c in checks) and all(r.passed for r in regressions)
    return Verdict(met, str(req), tuple(checks), tuple(regressions), reasons)


def _regression(
    metric: str,
    higher_is_better: bool,
    metrics: Mapping[str, Any],
    previous: Mapping[str, Any],
    tolerance: float,
) -> RegressionCheck:
    value, before = _value(metrics, metric), _value(previous, metric)
    if value is None:
        return RegressionCheck(
            metric, None, before, None, tolerance, False, f"{metric} is missing from the evaluation"
        )
    if before is None:  # nothing to regress from
        return RegressionCheck(metric, value, None, None, tolerance, True)
    delta = value - before
    worse = -delta if higher_is_better else delta
    passed = worse <= tolerance + 1e-12
    reason = (
        ""
        if passed
        else f"{metric} regressed from {before:.4g} to {value:.4g} (tolerance {tolerance:g})"
    )
    return RegressionCheck(metric, value, before, delta, tolerance, passed, reason)
