"""Labels of several datasets matched to one another by name similarity, with user overrides.

Datasets label the same things differently (``tumor`` / ``Tumour``, ``lymphocyte`` /
``lymphocytes``). :func:`match_labels` pairs the labels of every two datasets whose names are
at least :data:`SIMILARITY` alike (:func:`similarity`: difflib's ratio on the names lower-cased,
``_`` and ``-`` read as blanks), then applies the user's word: ``distinct`` removes a pair that
was matched, ``same`` adds one that was not. Every merge says where it came from, so a trainer
can report them. A label is named ``dataset:label`` (:func:`qualify`).

Pure Python (no pipeline code), so the services that train classifiers and the classifier
units themselves share it.

Example:
    >>> sets = {"A": ["tumor", "stroma"], "B": ["Tumour", "fibroblast"]}
    >>> [m.pair for m in match_labels(sets)]
    [('A:tumor', 'B:Tumour')]
    >>> [m.source for m in match_labels(sets, same=[("A:stroma", "B:fibroblast")])]
    ['name', 'user']
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pathray.errors import ConfigError

#: Name similarity from which two labels of different datasets are taken as one (the seed's).
SIMILARITY = 0.8


def qualify(dataset: str, label: str) -> str:
    """The ``dataset:label`` name of a label."""
    return f"{dataset}:{label}"


def _normal(label: str) -> str:
    return " ".join(label.lower().replace("_", " ").replace("-", " ").split())


def similarity(a: str, b: str) -> float:
    """How alike two label names are, 0 to 1 (1: the same up to case, ``_``, ``-`` and blanks)."""
    return difflib.SequenceMatcher(None, _normal(a), _normal(b)).ratio()


@dataclass(frozen=True)
class Merge:
    """Two labels of different datasets taken as the same class.

    Attributes:
        a: ``dataset:label`` of the first (its dataset comes first in the datasets' order).
        b: ``dataset:label`` of the second.
        score: Their name similarity.
        source: ``"name"`` (matched by similarity) or ``"user"`` (asked for with ``same``).
    """

    a: str
    b: str
    score: float
    source: Literal["name", "user"]

    @property
    def pair(self) -> tuple[str, str]:
        """``(a, b)``."""
        return (self.a, self.b)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"a": self.a, "b": self.b, "score": round(self.score, 3), "source": self.source}


def parse_pair(text: str) -> tuple[str, str]:
    """``"A:tumor=B:tumour"`` -> ``("A:tumor", "B:tumour")``.

    Raises:
        ConfigError: If the text is not two ``dataset:label`` names joined by ``=``.
    """
    left, sep, right = text.partition("=")
    if not sep or ":" not in left or ":" not in right:
        raise ConfigError(
            f"A label pair must be DATASET:LABEL=DATASET:LABEL. Got {text!r} instead."
        )
    return left.strip(), right.strip()


def _resolve(name: str, label_sets: Mapping[str, Sequence[str]], what: str) -> tuple[str, str]:
    dataset, _, label = name.partition(":")
    if dataset not in label_sets:
        raise ConfigError(
            f"The datasets of {what} must be one of {list(label_sets)}. Got {name!r} instead."
        )
    if label not in label_sets[dataset]:
        raise ConfigError(
            f"Labels of {what} must be labels of their dataset ({dataset}: "
            f"{list(label_sets[dataset])}). Got {name!r} instead."
        )
    return dataset, label


def _ordered(a: str, b: str, label_sets: Mapping[str, Sequence[str]], what: str) -> tuple[str, str]:
    """The pair checked and in the datasets' order."""
    order = list(label_sets)
    (da, _), (db, _) = _resolve(a, label_sets, what), _resolve(b, label_sets, what)
    if da == db:
        raise ConfigError(
            f"The labels of {what} must belong to two different datasets. Got {a!r} and {b!r}."
        )
    return (a, b) if order.index(da) < order.index(db) else (b, a)


def match_labels(
    label_sets: Mapping[str, Sequence[str]],
    *,
    threshold: float = SIMILARITY,
    same: Iterable[tuple[str, str]] = (),
    distinct: Iterable[tuple[str, str]] = (),
) -> list[Merge]:
    """Merges between the labels of every two datasets: by name, then as the user says.

    Args:
        label_sets: ``{dataset: [label, ...]}``.
        threshold: Similarity from which two names match (0 to 1).
        same: ``(dataset:label, dataset:label)`` pairs to merge whatever their names.
        distinct: Pairs matched by name to keep apart.

    Returns:
        The merges, in the datasets' and labels' order (the user's last).

    Raises:
        ConfigError: A threshold outside [0, 1]; a pair naming an unknown dataset or label or
            two labels of one dataset; ``distinct`` naming a pair that was not matched.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"The similarity threshold must be in [0, 1]. Got {threshold!r}.")
    found: dict[tuple[str, str], Merge] = {}
    for first, second in itertools.combinations(label_sets, 2):
        for la in label_sets[first]:
            for lb in label_sets[second]:
                score = similarity(la, lb)
                if score >= threshold:
                    pair = (qualify(first, la), qualify(second, lb))
                    found[pair] = Merge(*pair, score, "name")
    for a, b in distinct:
        pair = _ordered(a, b, label_sets, "--distinct")
        if pair not in found:
            matched = [m.pair for m in found.values()] or "none"
            raise ConfigError(
                f"--distinct must name labels that were matched ({matched}). Got "
                f"{pair[0]}={pair[1]} instead."
            )
        del found[pair]
    for a, b in same:
        pair = _ordered(a, b, label_sets, "--same")
        la, lb = pair[0].split(":", 1)[1], pair[1].split(":", 1)[1]
        found.setdefault(pair, Merge(*pair, similarity(la, lb), "user"))
    return list(found.values())


def cross_targets(
    merges: Iterable[tuple[str, str]],
) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """Where each label's samples may also train: the one label it is merged with per dataset.

    A sample of ``A:lymphocyte`` merged with ``B:immune`` (and nothing else of ``B``) is an
    ``immune`` sample for ``B`` too. A label merged with several labels of one dataset
    (``B:immune`` with ``A:lymphocyte`` and ``A:plasma``) says nothing certain about that
    dataset, so it trains none of its labels.

    Args:
        merges: ``(dataset:label, dataset:label)`` pairs.

    Returns:
        ``{(dataset, label): [(other dataset, its label), ...]}``.
    """
    links: dict[tuple[str, str], dict[str, set[str]]] = {}
    for a, b in merges:
        da, la = a.split(":", 1)
        db, lb = b.split(":", 1)
        links.setdefault((da, la), {}).setdefault(db, set()).add(lb)
        links.setdefault((db, lb), {}).setdefault(da, set()).add(la)
    return {
        source: [(d, next(iter(ls))) for d, ls in sorted(others.items()) if len(ls) == 1]
        for source, others in sorted(links.items())
    }


__all__ = [
    "SIMILARITY",
    "Merge",
    "cross_targets",
    "match_labels",
    "parse_pair",
    "qualify",
    "similarity",
]
