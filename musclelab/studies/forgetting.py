"""Continual-learning metrics of one chain, from its accuracy matrix ``R``.

``R[i, j]`` is the test performance (here mean test Dice) on task ``j`` after training stage ``i``, tasks
ordered as they were trained (``R`` is ``T x T``: row ``i`` = the model after stage ``i``, column ``j`` = the
data set trained at stage ``j``). With ``T`` stages (0-based):

* average accuracy ``ACC = 1/T sum_j R[T-1, j]`` (Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory for
  Continual Learning", NeurIPS; GEM).
* backward transfer ``BWT = 1/(T-1) sum_{j<T-1} (R[T-1, j] - R[j, j])`` (GEM): how training on later data sets
  changed the performance on earlier ones; negative = forgetting. NaN for ``T = 1``.
* forward transfer ``FWT = 1/(T-1) sum_{j>=1} (R[j-1, j] - b_j)`` (GEM), ``b_j`` the performance of a randomly
  initialised model on task ``j``: how much training on earlier data sets helps on a data set before it is
  trained on. ``R[j-1, j]`` alone is returned as the zero-shot performance.
* gain over scratch ``g_j = R[j, j] - s_j`` for ``j >= 1``, ``s_j`` the performance of a model trained from
  scratch on ``j`` alone (the single-data-set chain): what starting from the earlier stages buys when training
  on ``j`` (the usual transfer-learning comparison; not a GEM metric).
* forgetting of task ``j < T-1``: ``f_j = max_{i<T-1} R[i, j] - R[T-1, j]`` (Chaudhry et al. 2018, "Riemannian
  Walk for Incremental Learning: Understanding Forgetting and Intransigence", ECCV), the drop from the best
  performance ever reached on ``j`` to the final one; average forgetting ``F = 1/(T-1) sum_{j<T-1} f_j``.

All functions are pure NumPy and propagate NaN (an evaluation that could not be made).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

REFERENCES = {
    "GEM": "Lopez-Paz D, Ranzato M. Gradient Episodic Memory for Continual Learning. NeurIPS 2017 (ACC, BWT, FWT)",
    "RWalk": "Chaudhry A, Dokania PK, Ajanthan T, Torr PHS. Riemannian Walk for Incremental Learning: "
             "Understanding Forgetting and Intransigence. ECCV 2018 (forgetting)",
    "Yoon2024": "Yoon et al. 2024: sequential transfer of CT segmentation models across data sets/sites",
}
DEFINITIONS = {
    "acc": "mean_j R[T-1, j] over the trained data sets (GEM average accuracy)",
    "bwt": "mean_{j<T-1} (R[T-1, j] - R[j, j]) (GEM backward transfer; negative = forgetting)",
    "forgetting": "f_j = max_{j<=i<T-1} R[i, j] - R[T-1, j] for j < T-1 (Chaudhry et al. 2018; after j was learnt)",
    "avg_forgetting": "mean_{j<T-1} f_j (Chaudhry et al. 2018)",
    "zero_shot": "R[j-1, j]: performance on data set j before training on it (j >= 1)",
    "fwt": "mean_{j>=1} (R[j-1, j] - b_j), b_j the score of a randomly initialised model on j (GEM FWT)",
    "scratch_gain": "R[j, j] - s_j for j >= 1, s_j the score on j of a model trained from scratch on j alone",
}


def _square(R: Any) -> np.ndarray:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(f"R must be a non-empty square T x T matrix (stages x tasks in training order), got {R.shape}")
    return R


def average_accuracy(R: Any) -> float:
    """GEM's ACC: mean final performance over all trained tasks."""
    R = _square(R)
    return float(R[-1].mean())


def backward_transfer(R: Any) -> float:
    """GEM's BWT: mean over earlier tasks of (final - just-after-training) performance; NaN for T = 1."""
    R = _square(R)
    T = R.shape[0]
    if T < 2:
        return float("nan")
    return float(np.mean([R[T - 1, j] - R[j, j] for j in range(T - 1)]))


def forgetting(R: Any) -> np.ndarray:
    """Chaudhry et al.'s forgetting ``f_j`` of each task ``j < T-1`` (length ``T-1``; empty for T = 1): the best
    score on ``j`` once it was learnt (stages ``j .. T-2``) minus the final one. Stages before ``j`` (zero-shot,
    forward transfer) are not counted: a data set not yet trained on cannot be forgotten."""
    R = _square(R)
    T = R.shape[0]
    return np.array([R[j: T - 1, j].max() - R[T - 1, j] for j in range(T - 1)], dtype=float)


def average_forgetting(R: Any) -> float:
    """Mean of :func:`forgetting`; NaN for T = 1."""
    f = forgetting(R)
    return float(f.mean()) if f.size else float("nan")


def zero_shot(R: Any) -> np.ndarray:
    """``R[j-1, j]`` for ``j = 1..T-1``: each task's performance just before it is trained on."""
    R = _square(R)
    return np.array([R[j - 1, j] for j in range(1, R.shape[0])], dtype=float)


def forward_transfer(R: Any, baseline: Sequence[float]) -> float:
    """GEM's FWT: mean over ``j >= 1`` of ``R[j-1, j] - baseline[j]``; NaN for T = 1."""
    R = _square(R)
    b = np.asarray(baseline, dtype=float)
    if b.shape != (R.shape[0],):
        raise ValueError(f"baseline must hold one score per task ({R.shape[0]}), got shape {b.shape}")
    if R.shape[0] < 2:
        return float("nan")
    return float(np.mean(zero_shot(R) - b[1:]))


def scratch_gain(R: Any, scratch: Sequence[float]) -> np.ndarray:
    """``R[j, j] - scratch[j]`` for ``j = 1..T-1``: the gain of the chain over training on ``j`` alone."""
    R = _square(R)
    s = np.asarray(scratch, dtype=float)
    if s.shape != (R.shape[0],):
        raise ValueError(f"scratch must hold one score per task ({R.shape[0]}), got shape {s.shape}")
    return np.array([R[j, j] - s[j] for j in range(1, R.shape[0])], dtype=float)


def chain_metrics(R: Any, tasks: Sequence[str], baseline: Mapping[str, float] | None = None,
                  scratch: Mapping[str, float] | None = None, metric: str = "dice") -> dict[str, Any]:
    """Every metric above for one chain as a JSON-ready dict (the content of ``chain_metrics.json``).

    ``tasks`` names the columns of ``R`` (the data sets in training order). Optional, per task: ``baseline``
    the random-initialisation score ``b_j`` (adds ``fwt``), ``scratch`` the score of a model trained on that
    task alone (adds ``scratch_gain`` and its mean ``avg_scratch_gain``).
    """
    R = _square(R)
    tasks = list(tasks)
    if len(tasks) != R.shape[0]:
        raise ValueError(f"{len(tasks)} task names for a {R.shape[0]} x {R.shape[0]} matrix")
    out: dict[str, Any] = {
        "metric": metric,
        "tasks": tasks,
        "R": R.tolist(),
        "acc": average_accuracy(R),
        "bwt": backward_transfer(R),
        "forgetting": dict(zip(tasks[:-1], forgetting(R).tolist())),
        "avg_forgetting": average_forgetting(R),
        "zero_shot": dict(zip(tasks[1:], zero_shot(R).tolist())),
        "definitions": DEFINITIONS,
        "references": REFERENCES,
    }
    if baseline is not None and all(t in baseline for t in tasks):
        out["fwt"] = forward_transfer(R, [baseline[t] for t in tasks])
        out["fwt_baseline"] = {t: float(baseline[t]) for t in tasks}
    if scratch is not None and all(t in scratch for t in tasks):
        gain = scratch_gain(R, [scratch[t] for t in tasks])
        out["scratch"] = {t: float(scratch[t]) for t in tasks}
        out["scratch_gain"] = dict(zip(tasks[1:], gain.tolist()))
        out["avg_scratch_gain"] = float(gain.mean()) if gain.size else float("nan")
    return out
