"""Training a network with one output slice per dataset: masked losses, sampling, convergence.

- :func:`slice_mask`: which outputs belong to each sample's dataset.
- :func:`masked_loss`: cross-entropy over the sample's own slice only (``"softmax"``: a
  log-softmax restricted to the slice; ``"sigmoid"``: one binary cross-entropy per output of the
  slice). Outputs outside the slice are masked before any arithmetic, so neither the loss nor
  its gradient depends on them: their gradient is exactly zero.
- :func:`slice_probabilities`: per-dataset probabilities (softmax or sigmoid within each slice).
- :class:`DatasetSampler`: the sample indices of each step, ``"random"`` (mixed batches, each
  dataset equally likely) or ``"round_robin"`` (one dataset per step, in turn).
- :class:`Plateau`: stop when the mean loss of a window of steps stops improving.
- :func:`train_until_plateau`: Adam until the plateau or the iteration cap.

Example:
    >>> import torch
    >>> logits = torch.zeros(1, 5)
    >>> bounds = torch.tensor([[2, 5]])  # the sample's dataset owns outputs 2..4
    >>> round(float(masked_loss(logits, torch.tensor([3]), bounds)), 4)  # log(3)
    1.0986
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from pathray.errors import ConfigError

Head = Literal["softmax", "sigmoid"]
Sampling = Literal["random", "round_robin"]


def slice_mask(bounds: Any, n_outputs: int) -> Any:
    """``(n, n_outputs)`` bool tensor: True on the outputs of each sample's own slice.

    Args:
        bounds: ``(n, 2)`` int tensor, ``[start, stop)`` of each sample's slice.
        n_outputs: Width of the network's output.
    """
    import torch

    columns = torch.arange(n_outputs, device=bounds.device)[None, :]
    return (columns >= bounds[:, :1]) & (columns < bounds[:, 1:2])


def masked_loss(logits: Any, targets: Any, bounds: Any, head: Head = "softmax") -> Any:
    """Mean cross-entropy of each sample over its own dataset's slice of the outputs.

    Args:
        logits: ``(n, n_outputs)`` float tensor.
        targets: ``(n,)`` int tensor, the global output index of each sample's label.
        bounds: ``(n, 2)`` int tensor, ``[start, stop)`` of each sample's slice.
        head: ``"softmax"`` (one label per sample among its slice) or ``"sigmoid"`` (each
            output of the slice a yes/no, the label's output the only yes).

    Returns:
        The scalar loss.
    """
    import torch
    import torch.nn.functional as F  # noqa: N812

    mask = slice_mask(bounds, logits.shape[1])
    if head == "softmax":
        # -inf outside the slice: exp(-inf) = 0 there, and masked_fill passes no gradient back
        inside = logits.masked_fill(~mask, float("-inf"))
        picked = torch.log_softmax(inside, dim=1).gather(1, targets[:, None])
        return -picked.mean()
    onehot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
    # zero logits outside the slice (no gradient flows through the fill), then drop their terms
    inside = logits.masked_fill(~mask, 0.0)
    terms = F.binary_cross_entropy_with_logits(inside, onehot, reduction="none") * mask
    return (terms.sum(dim=1) / mask.sum(dim=1)).mean()


def slice_probabilities(logits: np.ndarray, bounds: np.ndarray, head: Head) -> np.ndarray:
    """Probabilities of every output within its own dataset's slice.

    Args:
        logits: ``(n, n_outputs)``.
        bounds: ``(n_datasets, 2)`` slices that tile the outputs.
        head: ``"softmax"`` (each slice sums to one) or ``"sigmoid"`` (each output alone).

    Returns:
        ``(n, n_outputs)`` float32.
    """
    values = np.asarray(logits, np.float64)
    if head == "sigmoid":
        return (1.0 / (1.0 + np.exp(-values))).astype(np.float32)
    out = np.empty_like(values)
    for start, stop in bounds:
        part = values[:, start:stop]
        part = np.exp(part - part.max(axis=1, keepdims=True))
        out[:, start:stop] = part / part.sum(axis=1, keepdims=True)
    return out.astype(np.float32)


class DatasetSampler:
    """Indices of the training samples of each step.

    Args:
        datasets: ``(n,)`` dataset index of every sample.
        targets: ``(n,)`` label (global output index) of every sample.
        mode: ``"random"``: every step draws a mixed batch, each dataset equally likely (so a
            small dataset is not drowned by a large one); ``"round_robin"``: step ``t`` draws
            its whole batch from the ``t``-th dataset, cycling.
        batch: Samples per step.
        class_balanced: Within a dataset, make every label equally likely.
        seed: Seed of the draws.
    """

    def __init__(
        self,
        datasets: np.ndarray,
        targets: np.ndarray,
        *,
        mode: Sampling,
        batch: int,
        class_balanced: bool,
        seed: int,
    ) -> None:
        if mode not in ("random", "round_robin"):
            raise ConfigError(f'sampling must be "random" or "round_robin". Got {mode!r} instead.')
        self.mode = mode
        self.batch = batch
        self.rng = np.random.default_rng(seed)
        self.present = np.unique(datasets)
        weights = np.zeros(len(datasets))
        for d in self.present:
            mine = datasets == d
            if class_balanced:
                _, codes, counts = np.unique(targets[mine], return_inverse=True, return_counts=True)
                weights[mine] = 1.0 / (counts[codes] * len(counts))
            else:
                weights[mine] = 1.0 / mine.sum()
        # each dataset's weights sum to one: per-dataset draws use them directly
        self.members = [np.flatnonzero(datasets == d) for d in self.present]
        self.weights = weights
        self.pooled = weights / weights.sum()

    @property
    def cycle(self) -> int:
        """Steps after which every dataset has had its turn (1 for random sampling)."""
        return len(self.present) if self.mode == "round_robin" else 1

    def __call__(self, step: int) -> np.ndarray:
        """The sample indices of a step."""
        if self.mode == "random":
            return self.rng.choice(len(self.weights), size=self.batch, p=self.pooled)
        members = self.members[step % len(self.members)]
        return self.rng.choice(members, size=self.batch, p=self.weights[members])


@dataclass
class Plateau:
    """Stop training when the mean loss of a window of steps stops improving.

    Attributes:
        window: Steps per window.
        patience: Windows in a row without an improvement of more than ``tol`` before stopping.
        tol: Smallest decrease of the window's mean loss that counts as an improvement.
        best: Lowest window mean so far.
        stale: Windows since the last improvement.
    """

    window: int
    patience: int
    tol: float
    best: float = float("inf")
    stale: int = 0
    _losses: list[float] = field(default_factory=list)

    def update(self, loss: float) -> bool:
        """Record one step's loss; True when training should stop."""
        self._losses.append(loss)
        if len(self._losses) < self.window:
            return False
        mean = float(np.mean(self._losses))
        self._losses.clear()
        if mean < self.best - self.tol:
            self.best, self.stale = mean, 0
        else:
            self.stale += 1
        return self.stale >= self.patience


@dataclass
class TrainResult:
    """What :func:`train_until_plateau` did.

    Attributes:
        history: Loss of every step.
        converged: Whether the plateau stopped training (False: the cap did).
    """

    history: list[float]
    converged: bool


def train_until_plateau(
    model: Any,
    next_batch: Callable[[int], tuple[Any, Any, Any]],
    loss_fn: Callable[[Any, Any, Any], Any],
    *,
    max_iterations: int,
    plateau: Plateau,
    lr: float,
    device: str,
    progress: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train with Adam until the loss plateaus or ``max_iterations`` steps.

    Args:
        model: The ``torch.nn.Module`` (on ``device``).
        next_batch: ``step -> (inputs, targets, bounds)`` as tensors.
        loss_fn: ``(logits, targets, bounds) -> scalar``.
        max_iterations: Iteration cap.
        plateau: The convergence test.
        lr: Learning rate.
        device: Where to compute.
        progress: Called with ``(steps done, mean loss)`` at the end of every plateau window
            and at the last step.

    Returns:
        The :class:`TrainResult`.
    """
    import torch

    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    history: list[float] = []
    converged = False
    for step in range(max_iterations):
        inputs, targets, bounds = (t.to(device) for t in next_batch(step))
        optimiser.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), targets, bounds)
        loss.backward()
        optimiser.step()
        history.append(float(loss.detach()))
        stop = plateau.update(history[-1])
        last = stop or step + 1 == max_iterations
        if progress is not None and ((step + 1) % plateau.window == 0 or last):
            progress(step + 1, float(np.mean(history[-plateau.window :])))
        if stop:
            converged = True
            break
    model.eval()
    return TrainResult(history, converged)
