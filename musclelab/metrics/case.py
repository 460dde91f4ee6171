"""Per-case metrics for multi-class label maps (one row of a results table).

:func:`case_metrics` compares a predicted label map with a ground-truth label map (2D or
3D, integer labels ``0..K-1`` with 0 = background) and returns a flat ``dict`` suitable
for a CSV row / DataFrame: per-class keys ``<metric>_<class name>`` plus case-level
summary keys ``<metric>``. Each class ``k`` is scored as the binary pair
``(pred == k, target == k)`` with the functions and the empty-mask convention of
:mod:`musclelab.metrics.overlap` and :mod:`musclelab.metrics.surface` (both empty →
perfect scores and 0.0 mm; exactly one empty → overlap 0.0 and distances NaN).

Overlap counts for all classes come from a single confusion matrix, and surface
distances are computed inside each class's bounding box, so a 512×512 slice with a few
classes costs a few milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from .overlap import (
    Confusion,
    dice_from_confusion,
    jaccard_from_confusion,
    precision_from_confusion,
    recall_from_confusion,
    accuracy_from_confusion,
)
from .surface import SURFACE_METRICS, Spacing, _bbox, normalize_spacing, surface_metrics_cropped

__all__ = ["OVERLAP_METRICS", "METRICS", "case_metrics"]

#: Overlap metric keys, in output order.
OVERLAP_METRICS: tuple[str, ...] = ("dice", "jaccard", "precision", "recall", "accuracy")
#: All metric keys produced per class, in output order.
METRICS: tuple[str, ...] = OVERLAP_METRICS + SURFACE_METRICS

_OVERLAP_FNS = {
    "dice": dice_from_confusion,
    "jaccard": jaccard_from_confusion,
    "precision": precision_from_confusion,
    "recall": recall_from_confusion,
    "accuracy": accuracy_from_confusion,
}


def _as_labels(a: ArrayLike, name: str, n_classes: int) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    if arr.size == 0:
        raise ValueError(f"{name} is empty (zero-size array)")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n_classes:
        raise ValueError(
            f"{name} has labels in [{lo}, {hi}] but class_names defines {n_classes} classes (0..{n_classes - 1})"
        )
    return arr


def _confusion_matrix(pred: np.ndarray, target: np.ndarray, n: int) -> np.ndarray:
    """``cm[i, j]`` = number of pixels with target label ``i`` and predicted label ``j``."""
    idx = target.ravel().astype(np.intp) * n + pred.ravel()
    return np.bincount(idx, minlength=n * n).reshape(n, n)


def case_metrics(
    pred: ArrayLike,
    target: ArrayLike,
    spacing: Spacing,
    class_names: Sequence[str],
    include_background: bool = False,
    surface: bool = True,
) -> dict[str, float]:
    """Overlap and surface metrics (distances in mm) of one case, per class and summarised.

    Args:
        pred: predicted label map, shape ``(H, W)`` or ``(D, H, W)``, integer labels.
        target: ground-truth label map, same shape.
        spacing: pixel/voxel size in mm per axis, same axis order as the arrays
            (e.g. ``(0.7, 0.7)`` or ``(3.0, 0.8, 0.8)``); one number means isotropic.
        class_names: name of every label value, index = label, so ``class_names[0]`` is
            the background (e.g. ``["background", "muscle"]``). Names become key suffixes.
        include_background: also report ``<metric>_<class_names[0]>``. The background
            never enters the case-level means.
        surface: compute the distance metrics (set False for a cheaper overlap-only row).

    Returns:
        Flat dict of floats. Case-level keys first: ``dice, jaccard, precision, recall,
        hd, hd95, assd, rms_dta`` are the unweighted (macro) means over foreground
        classes ``1..K-1`` -- NaN if any class's value is NaN, so an undefined class is
        never silently dropped from a case -- and ``accuracy`` is the multi-class pixel
        accuracy ``mean(pred == target)``. With a single foreground class every case-level
        key equals its per-class key. Then ``<metric>_<name>`` for each reported class,
        where ``accuracy_<name>`` is the binary pixel accuracy of that class.
    """
    names = list(class_names)
    n = len(names)
    if n < 2:
        raise ValueError("class_names must name the background (label 0) and at least one foreground class")
    if len(set(names)) != n:
        raise ValueError(f"class_names must be unique, got {names}")
    p = _as_labels(pred, "pred", n)
    t = _as_labels(target, "target", n)
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same shape, got {p.shape} and {t.shape}")
    sp = normalize_spacing(spacing, p.ndim) if surface else None

    cm = _confusion_matrix(p, t, n)
    total = int(p.size)
    classes = list(range(0 if include_background else 1, n))

    # Bounding boxes of every foreground label in one pass each (find_objects skips label 0).
    boxes_p = ndimage.find_objects(p, max_label=n - 1) if surface else []
    boxes_t = ndimage.find_objects(t, max_label=n - 1) if surface else []

    per_class: dict[int, dict[str, float]] = {}
    for k in classes:
        tp = int(cm[k, k])
        fp = int(cm[:, k].sum()) - tp
        fn = int(cm[k, :].sum()) - tp
        c = Confusion(tp, fp, fn, total - tp - fp - fn)
        row = {m: fn_(c) for m, fn_ in _OVERLAP_FNS.items()}
        if surface:
            assert sp is not None
            if k == 0:
                box = _bbox((p == 0) | (t == 0))
            else:
                box = _union_box(boxes_p[k - 1], boxes_t[k - 1])
            if box is None:  # class absent from both
                row.update(dict.fromkeys(SURFACE_METRICS, 0.0))
            else:
                row.update(surface_metrics_cropped(p[box] == k, t[box] == k, sp))
        per_class[k] = row

    metric_keys = OVERLAP_METRICS + (SURFACE_METRICS if surface else ())
    out: dict[str, float] = {}
    fg = range(1, n)
    for m in metric_keys:
        if m == "accuracy":
            out[m] = float(np.trace(cm)) / total
        else:
            vals = [per_class[k][m] for k in fg]
            out[m] = math.nan if any(math.isnan(v) for v in vals) else float(np.mean(vals))
    for k in classes:
        for m in metric_keys:
            out[f"{m}_{names[k]}"] = per_class[k][m]
    return out


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))
