"""Per-class volumes (mL) and the relative volume difference of Kim et al. 2024.

``RAVD = (V_pred - V_ref) / V_ref * 100`` (percent, **signed**, as the paper reports it: negative = the prediction
is too small); NaN when the reference is empty.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def class_volumes_ml(label: np.ndarray, spacing_mm: Sequence[float], n_classes: int) -> np.ndarray:
    """Volume in mL of every label value ``0..n_classes-1`` of an integer ``(D, H, W)`` map with ``spacing_mm``
    per axis (one bincount over the map)."""
    voxel_ml = float(np.prod(np.asarray(spacing_mm, float))) / 1000.0
    counts = np.bincount(np.asarray(label).ravel().astype(np.int64), minlength=n_classes)[:n_classes]
    return counts.astype(float) * voxel_ml


def ravd(pred_ml: float | np.ndarray, ref_ml: float | np.ndarray) -> float | np.ndarray:
    """Signed relative volume difference in percent, ``(pred - ref) / ref * 100`` (NaN for an empty reference)."""
    pred, ref = np.asarray(pred_ml, float), np.asarray(ref_ml, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(ref > 0, (pred - ref) / np.where(ref > 0, ref, 1.0) * 100.0, np.nan)
    return float(out) if out.ndim == 0 else out


def volume_rows(pred: np.ndarray, ref: np.ndarray, spacing_mm: Sequence[float], class_names: Sequence[str],
                others: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Columns of one case: ``vol_pred_<c>_ml``, ``vol_ref_<c>_ml``, ``ravd_<c>`` for every foreground class, and
    ``vol_<name>_<c>_ml`` for each extra annotation in ``others`` (raters), all on the same grid."""
    k = len(class_names)
    vp, vr = class_volumes_ml(pred, spacing_mm, k), class_volumes_ml(ref, spacing_mm, k)
    out: dict[str, float] = {}
    for c in range(1, k):
        name = class_names[c]
        out[f"vol_pred_{name}_ml"] = round(float(vp[c]), 4)
        out[f"vol_ref_{name}_ml"] = round(float(vr[c]), 4)
        out[f"ravd_{name}"] = float(ravd(vp[c], vr[c]))
    for who, lab in (others or {}).items():
        vo = class_volumes_ml(lab, spacing_mm, k)
        for c in range(1, k):
            out[f"vol_{who}_{class_names[c]}_ml"] = round(float(vo[c]), 4)
    fg = [out[f"ravd_{class_names[c]}"] for c in range(1, k) if np.isfinite(out[f"ravd_{class_names[c]}"])]
    out["ravd"] = float(np.mean(fg)) if fg else float("nan")
    return out
