"""Overlap metrics for binary masks of any dimensionality (2D slices, 3D volumes).

All functions take two arrays of the same shape; any non-zero value is foreground.
Results are plain Python floats.

Empty-mask convention (shared with :mod:`musclelab.metrics.surface`): a ratio whose
denominator is zero -- which only happens when one or both masks are empty -- is
``1.0`` if *both* masks are empty (perfect agreement on absence) and ``0.0``
otherwise. Concretely:

==================  ======  =========  =========  ======
case                dice    jaccard    precision  recall
==================  ======  =========  =========  ======
both empty          1.0     1.0        1.0        1.0
pred empty only     0.0     0.0        0.0        0.0
target empty only   0.0     0.0        0.0        0.0
==================  ======  =========  =========  ======

Pixel accuracy is always defined (its denominator is the image size).

We implement these ourselves rather than using MONAI/torchmetrics so that the whole
metric suite works on numpy label arrays (e.g. loaded from disk) without torch, and so
that every metric follows the single empty-mask convention above.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "Confusion",
    "confusion",
    "ratio",
    "dice",
    "jaccard",
    "iou",
    "precision",
    "recall",
    "accuracy",
]


class Confusion(NamedTuple):
    """Pixel/voxel counts of a binary comparison (prediction vs. target)."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def pred_empty(self) -> bool:
        return self.tp + self.fp == 0

    @property
    def target_empty(self) -> bool:
        return self.tp + self.fn == 0

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.fn + self.tn


def _as_bool_pair(pred: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred).astype(bool, copy=False)
    t = np.asarray(target).astype(bool, copy=False)
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same shape, got {p.shape} and {t.shape}")
    return p, t


def confusion(pred: ArrayLike, target: ArrayLike) -> Confusion:
    """Count TP/FP/FN/TN pixels between two binary masks (non-zero = foreground)."""
    p, t = _as_bool_pair(pred, target)
    n_pred = int(np.count_nonzero(p))
    n_target = int(np.count_nonzero(t))
    tp = int(np.count_nonzero(p & t))
    fp = n_pred - tp
    fn = n_target - tp
    tn = int(p.size) - tp - fp - fn
    return Confusion(tp, fp, fn, tn)


def ratio(num: float, den: float, both_empty: bool) -> float:
    """``num / den``, or the empty-mask convention (1.0 if both empty, else 0.0) when ``den == 0``."""
    if den == 0:
        return 1.0 if both_empty else 0.0
    return float(num) / float(den)


def _both_empty(c: Confusion) -> bool:
    return c.pred_empty and c.target_empty


def dice_from_confusion(c: Confusion) -> float:
    return ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn, _both_empty(c))


def jaccard_from_confusion(c: Confusion) -> float:
    return ratio(c.tp, c.tp + c.fp + c.fn, _both_empty(c))


def precision_from_confusion(c: Confusion) -> float:
    return ratio(c.tp, c.tp + c.fp, _both_empty(c))


def recall_from_confusion(c: Confusion) -> float:
    return ratio(c.tp, c.tp + c.fn, _both_empty(c))


def accuracy_from_confusion(c: Confusion) -> float:
    if c.total == 0:
        raise ValueError("accuracy of a zero-size image is undefined")
    return float(c.tp + c.tn) / float(c.total)


def dice(pred: ArrayLike, target: ArrayLike) -> float:
    """Dice similarity coefficient 2|P∩T| / (|P|+|T|); 1.0 if both masks are empty."""
    return dice_from_confusion(confusion(pred, target))


def jaccard(pred: ArrayLike, target: ArrayLike) -> float:
    """Jaccard index / IoU |P∩T| / |P∪T|; 1.0 if both masks are empty."""
    return jaccard_from_confusion(confusion(pred, target))


iou = jaccard


def precision(pred: ArrayLike, target: ArrayLike) -> float:
    """Precision (positive predictive value) TP / (TP+FP).

    With an empty prediction the ratio is 0/0: defined as 1.0 if the target is also
    empty, else 0.0 (a missed structure is not rewarded).
    """
    return precision_from_confusion(confusion(pred, target))


def recall(pred: ArrayLike, target: ArrayLike) -> float:
    """Recall (sensitivity) TP / (TP+FN).

    With an empty target the ratio is 0/0: defined as 1.0 if the prediction is also
    empty, else 0.0 (a hallucinated structure is not rewarded).
    """
    return recall_from_confusion(confusion(pred, target))


def accuracy(pred: ArrayLike, target: ArrayLike) -> float:
    """Pixel accuracy (TP+TN) / N over the whole image, background included.

    Dominated by background for small structures; reported for completeness.
    """
    return accuracy_from_confusion(confusion(pred, target))
