"""The judge, the iteration loop, training jobs and the lineage of versions.

- :mod:`.requirement`: :class:`Requirement` (``"dice >= 0.85 and f1 >= 0.80"``).
- :mod:`.judge`: :func:`judge` -> :class:`Verdict`, metric by metric.
- :mod:`.loop`: :func:`iterate`: run -> evaluate -> judge -> next unit version, within a
  :class:`Budget`.
- :mod:`.strategies`, :mod:`.workspace`: config search, retraining, swapping the model kind.
- :mod:`.data`: the split by slide, labelled tiles from annotations and corrections.
- :mod:`.training`: training and search jobs as Ray tasks, models in the registry.
- :mod:`.lineage`: :func:`trace` of a run, model version or iteration.

Example:
    >>> judge({"dice": 0.9, "f1": 0.82}, "dice >= 0.85 and f1 >= 0.80").met
    True
"""

from pathray.iterate.judge import MetricCheck, RegressionCheck, Verdict, judge
from pathray.iterate.lineage import trace
from pathray.iterate.loop import Budget, IterationEvent, LoopResult, iterate
from pathray.iterate.requirement import Requirement, Threshold
from pathray.iterate.workspace import Settings

__all__ = [
    "Budget",
    "IterationEvent",
    "LoopResult",
    "MetricCheck",
    "RegressionCheck",
    "Requirement",
    "Settings",
    "Threshold",
    "Verdict",
    "iterate",
    "judge",
    "trace",
]
