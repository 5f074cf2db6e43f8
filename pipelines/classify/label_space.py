"""The label space of a classifier trained on several datasets: each dataset's ordered labels.

A :class:`LabelSpace` lays the label sets of several datasets end to end: dataset ``d`` owns the
output slice ``slice_of(d)`` of a network whose ``size`` outputs are all the label sets
concatenated (NuCLS 12 + BreCaHAD 7 + ... = 35 outputs). A sample labelled in dataset ``d``
trains only that slice (see :mod:`pipelines.classify.multihead_train`).

Labels are validated against their dataset's set, so a typo or a label from another dataset's
vocabulary is an error that names the dataset, its label set and the offending samples.

Example:
    >>> space = LabelSpace.from_mapping({"A": ["tumor", "stroma"], "B": ["epithelial", "other"]})
    >>> space.size, space.slice_of("B")
    (4, slice(2, 4, None))
    >>> space.encode(["B", "A"], ["other", "tumor"])[0].tolist()
    [3, 0]
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pathray.errors import ConfigError

#: What a dataset name may look like (it becomes part of output column names).
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class LabelSpace:
    """Datasets and their ordered label sets, laid end to end.

    Build it with :meth:`from_mapping` (validated) or :meth:`infer` (from training labels).

    Attributes:
        datasets: ``((name, (label, ...)), ...)`` in output order.
    """

    datasets: tuple[tuple[str, tuple[str, ...]], ...]

    def __post_init__(self) -> None:
        if not self.datasets:
            raise ConfigError("A label space must have at least one dataset. Got none instead.")
        seen: set[str] = set()
        for name, labels in self.datasets:
            if not isinstance(name, str) or not _NAME.match(name):
                raise ConfigError(
                    "Dataset names must start with a letter and hold only letters, digits and "
                    f"underscores. Got {name!r} instead."
                )
            if name in seen:
                raise ConfigError(f"Dataset names must be unique. Got {name!r} twice instead.")
            seen.add(name)
            if not labels:
                raise ConfigError(
                    f"Dataset {name!r} must have at least one label. Got none instead."
                )
            bad = [label for label in labels if not isinstance(label, str) or not label]
            if bad:
                raise ConfigError(
                    f"Labels of dataset {name!r} must be non-empty strings. Got {bad!r} instead."
                )
            repeated = sorted({label for label in labels if labels.count(label) > 1})
            if repeated:
                raise ConfigError(
                    f"Labels of dataset {name!r} must be unique. Got {repeated} more than once."
                )

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Sequence[str]] | LabelSpace) -> LabelSpace:
        """A label space from ``{dataset: [label, ...]}`` (order kept).

        Raises:
            ConfigError: If a name or a label set is invalid.
        """
        if isinstance(mapping, LabelSpace):
            return mapping
        if not isinstance(mapping, Mapping):
            raise ConfigError(
                "A label space must be a mapping {dataset: [labels]}. "
                f"Got {type(mapping).__name__} instead."
            )
        items = []
        for name, labels in mapping.items():
            if isinstance(labels, str):
                raise ConfigError(
                    f"Labels of dataset {name!r} must be a list of strings. Got {labels!r}."
                )
            items.append((name, tuple(labels)))
        return cls(tuple(items))

    @classmethod
    def infer(cls, datasets: Sequence[str], labels: Sequence[str]) -> LabelSpace:
        """The label space seen in training data: datasets and their labels, sorted.

        Args:
            datasets: The dataset of each sample.
            labels: The label of each sample.

        Returns:
            The space.
        """
        pairs = sorted({(str(d), str(y)) for d, y in zip(datasets, labels, strict=True)})
        grouped: dict[str, list[str]] = {}
        for name, label in pairs:
            grouped.setdefault(name, []).append(label)
        return cls.from_mapping(grouped)

    # -- geometry -------------------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        """Dataset names in output order."""
        return tuple(name for name, _ in self.datasets)

    @property
    def size(self) -> int:
        """Total number of outputs (all label sets concatenated)."""
        return sum(len(labels) for _, labels in self.datasets)

    @property
    def bounds(self) -> np.ndarray:
        """``(n_datasets, 2)`` int64 ``[start, stop)`` of every dataset's slice."""
        sizes = np.array([len(labels) for _, labels in self.datasets], np.int64)
        stops = np.cumsum(sizes)
        return np.stack([stops - sizes, stops], axis=1)

    def labels(self, dataset: str) -> tuple[str, ...]:
        """The ordered label set of a dataset."""
        return self.datasets[self.position(dataset)][1]

    def position(self, dataset: str) -> int:
        """Index of a dataset in output order.

        Raises:
            ConfigError: If the dataset is unknown.
        """
        for k, name in enumerate(self.names):
            if name == dataset:
                return k
        raise ConfigError(f"Dataset must be one of {list(self.names)}. Got {dataset!r} instead.")

    def slice_of(self, dataset: str) -> slice:
        """The output slice a dataset owns."""
        start, stop = self.bounds[self.position(dataset)]
        return slice(int(start), int(stop))

    def __iter__(self) -> Iterator[tuple[str, slice]]:
        """``(dataset, slice)`` in output order."""
        for name, (start, stop) in zip(self.names, self.bounds, strict=True):
            yield name, slice(int(start), int(stop))

    def qualified(self) -> list[str]:
        """Every output's name, ``dataset:label``, in output order."""
        return [f"{name}:{label}" for name, labels in self.datasets for label in labels]

    def to_dict(self) -> dict[str, list[str]]:
        """``{dataset: [label, ...]}``, JSON-ready (order kept)."""
        return {name: list(labels) for name, labels in self.datasets}

    # -- encoding -------------------------------------------------------------------------------

    def encode(self, datasets: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
        """Global output index and dataset index of every sample, validated.

        Args:
            datasets: The dataset of each sample (a sequence, or one name for all).
            labels: The label of each sample.

        Returns:
            ``(targets, dataset_index)``: int64 arrays; ``targets[i]`` lies in the slice of
            dataset ``dataset_index[i]``.

        Raises:
            ConfigError: If the lengths differ, a dataset is unknown or a label is not in its
                dataset's label set.
        """
        names = np.asarray(labels, dtype=object).astype(str).ravel()
        if isinstance(datasets, str):
            owners = np.full(len(names), datasets, dtype=object)
        else:
            owners = np.asarray(datasets, dtype=object).astype(str).ravel()
        if len(owners) != len(names):
            raise ConfigError(
                f"Every sample must have one dataset and one label. Got {len(owners)} datasets "
                f"and {len(names)} labels instead."
            )
        targets = np.full(len(names), -1, np.int64)
        which = np.full(len(names), -1, np.int64)
        for k, ((name, known), (start, _)) in enumerate(
            zip(self.datasets, self.bounds, strict=True)
        ):
            mine = owners == name
            which[mine] = k
            lookup = {label: start + j for j, label in enumerate(known)}
            targets[mine] = [lookup.get(label, -1) for label in names[mine]]
            bad = mine & (targets < 0)
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                raise ConfigError(
                    f"Label {str(names[first])!r} is not in dataset {name!r}'s label set "
                    f"{list(known)}. Got it for {int((names[bad] == names[first]).sum())} "
                    f"sample(s), the first at index {first}."
                )
        if (which < 0).any():
            first = int(np.flatnonzero(which < 0)[0])
            raise ConfigError(
                f"Dataset must be one of {list(self.names)}. Got {str(owners[first])!r} "
                f"(sample {first}) instead."
            )
        return targets, which
