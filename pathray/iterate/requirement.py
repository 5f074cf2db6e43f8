"""Requirements: thresholds on metrics, and optionally no regression against the previous version.

A requirement is written as clauses joined by ``and``::

    dice >= 0.85 and f1 >= 0.80
    f1 > 0.9 and fp_rate < 0.05 and no regression
    pq >= 0.6 and no regression within 0.01

A threshold clause is ``<metric> <op> <number>`` with ``op`` one of ``>=``, ``>``, ``<=``, ``<``;
metric names are those of the evaluation (``f1``, ``dice``, ``precision``, ``pq``...).
``no regression`` asks every thresholded metric to be no worse than in the previous version
(higher is better for ``>=``/``>``, lower for ``<=``/``<``), allowing ``within <tolerance>``.

Example:
    >>> r = Requirement.parse("dice >= 0.85 and f1 >= 0.80 and no regression within 0.01")
    >>> [t.metric for t in r.thresholds], r.no_regression, r.tolerance
    (['dice', 'f1'], True, 0.01)
    >>> str(r)
    'dice >= 0.85 and f1 >= 0.8 and no regression within 0.01'
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pathray.errors import ConfigError

Op = Literal[">=", ">", "<=", "<"]
#: The comparison each operator makes.
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}
_FORM = "'<metric> <op> <number>' joined by 'and' (op: >=, >, <=, <), optionally 'no regression'"
_THRESHOLD = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.@-]*)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")
_REGRESSION = re.compile(
    r"^\s*no\s+regression(?:\s+(?:within|tolerance)\s+([-+0-9.eE]+))?\s*$", re.IGNORECASE
)
_AND = re.compile(r"\s+and\s+|\s*&&\s*|\s*,\s*", re.IGNORECASE)


class Threshold(BaseModel):
    """One metric threshold.

    Attributes:
        metric: Metric name, as in the evaluation's metrics.
        op: ``>=``, ``>``, ``<=`` or ``<``.
        value: The threshold.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    metric: str = Field(min_length=1)
    op: Op
    value: float

    @property
    def higher_is_better(self) -> bool:
        """Whether the metric improves upwards (``>=``, ``>``)."""
        return self.op in (">=", ">")

    def holds(self, value: float) -> bool:
        """Whether a metric value passes this threshold (NaN never does)."""
        return not math.isnan(value) and OPERATORS[self.op](value, self.value)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


class Requirement(BaseModel):
    """What the judge asks of a version: metric thresholds, and optionally no regression.

    Build it with :meth:`parse` from text, or validate a mapping; a string given where a
    requirement is expected is parsed.

    Attributes:
        thresholds: The thresholds, all of which must hold.
        no_regression: Also require no thresholded metric to be worse than in the previous
            version by more than ``tolerance``.
        tolerance: Allowed worsening under ``no_regression`` (metric units).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    thresholds: tuple[Threshold, ...] = Field(min_length=1)
    no_regression: bool = False
    tolerance: float = Field(0.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            return _parse_fields(data)
        return data

    @classmethod
    def parse(cls, text: str | Requirement) -> Requirement:
        """Parse a requirement from text (a requirement is returned as it is).

        Raises:
            ConfigError: If the text is not a requirement, naming the clause at fault.
        """
        if isinstance(text, Requirement):
            return text
        if not isinstance(text, str):
            raise ConfigError(
                f"Requirement must be text such as 'dice >= 0.85 and f1 >= 0.80'. "
                f"Got {type(text).__name__} instead."
            )
        return cls(**_parse_fields(text))

    @property
    def metrics(self) -> list[str]:
        """The metrics named by the thresholds, in order, without repeats."""
        return list(dict.fromkeys(t.metric for t in self.thresholds))

    def __str__(self) -> str:
        parts = [str(t) for t in self.thresholds]
        if self.no_regression:
            parts.append(
                "no regression" + (f" within {self.tolerance:g}" if self.tolerance else "")
            )
        return " and ".join(parts)


def _number(text: str, clause: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(
            f"Requirement must be {_FORM}. Got {clause.strip()!r} ({text!r} is not a number) "
            "instead."
        ) from None
    if not math.isfinite(value):
        raise ConfigError(f"Requirement thresholds must be finite. Got {clause.strip()!r}.")
    return value


def _parse_fields(text: str) -> dict[str, Any]:
    """The fields of a :class:`Requirement` written as text.

    Raises:
        ConfigError: An empty requirement, a clause that is neither a threshold nor ``no
            regression``, a bad number, or a negative tolerance.
    """
    if not text.strip():
        raise ConfigError(f"Requirement must be {_FORM}. Got an empty text instead.")
    thresholds: list[Threshold] = []
    no_regression, tolerance = False, 0.0
    for clause in _AND.split(text.strip()):
        found = _THRESHOLD.match(clause)
        if found:
            metric, op, number = found.groups()
            thresholds.append(Threshold(metric=metric, op=op, value=_number(number, clause)))
            continue
        regression = _REGRESSION.match(clause)
        if regression:
            no_regression = True
            if regression.group(1) is not None:
                tolerance = _number(regression.group(1), clause)
                if tolerance < 0:
                    raise ConfigError(
                        f"Requirement tolerance must be >= 0. Got {tolerance:g} instead."
                    )
            continue
        raise ConfigError(f"Requirement must be {_FORM}. Got {clause.strip()!r} instead.")
    if not thresholds:
        raise ConfigError(
            f"Requirement must hold at least one metric threshold. Got {text.strip()!r} instead."
        )
    return {"thresholds": thresholds, "no_regression": no_regression, "tolerance": tolerance}
