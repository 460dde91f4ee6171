"""Non-learning HU-threshold muscle baseline (stand-in for a semi-automatic threshold tool).

Yoon et al. 2024 ("Accelerated muscle mass estimation from CT images through transfer learning") compare
their networks with a semi-automatic commercial tool whose core is the classical skeletal-muscle HU window
(-29..150 HU) applied inside the body outline, after which a reader corrects the result by hand. The
uncorrected threshold step is what we reproduce here, deliberately plain: every pixel of muscle-like
density inside the body counts as muscle, so organs (liver, kidneys, vessels, bowel wall, spinal canal)
are false positives. That failure mode is what the manual correction, and a learned model, remove.

This is *not* a trainable model and is not in the model registry: the networks receive windowed,
normalised inputs, whereas a threshold needs raw Hounsfield units. Use :func:`threshold_muscle` on one
slice or :func:`evaluate_threshold_baseline` for a table of per-case metrics (same keys as
:func:`musclelab.metrics.case_metrics`) plus the time per slice.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import ndimage

from musclelab.metrics import case_metrics

__all__ = ["MUSCLE_HU_RANGE", "body_mask", "threshold_muscle", "evaluate_threshold_baseline"]

#: The standard skeletal-muscle density window at L3 (Mitsiopoulos et al. 1998), HU, inclusive.
MUSCLE_HU_RANGE: tuple[float, float] = (-29.0, 150.0)


def body_mask(
    image_hu: ArrayLike,
    body_threshold_hu: float = -500.0,
    *,
    spacing_mm: float | Sequence[float] | None = None,
    detach_mm: float = 5.0,
) -> np.ndarray:
    """Body outline of one ``(H, W)`` HU slice: the largest 8-connected component above
    ``body_threshold_hu`` with its holes filled (bowel gas). Empty if nothing is above it.

    With ``spacing_mm`` ((row, col) mm) the thresholded mask is first opened with a disc of radius
    ``detach_mm`` mm, which cuts thin plates touching the body (the CT table top, ~3 mm) so they do not
    join the body component; without it the mask is used as is (the table may then count as body).
    """
    img = np.asarray(image_hu, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"body_mask expects one 2D slice (H, W), got shape {img.shape}")
    above = img > body_threshold_hu
    if spacing_mm is not None and detach_mm > 0:
        from musclelab.metrics import ellipsoid_structure

        se = ellipsoid_structure(detach_mm, spacing_mm, ndim=2)
        above = ndimage.binary_opening(above, structure=se)
    comp, n = ndimage.label(above, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros(img.shape, bool)
    sizes = np.bincount(comp.ravel())
    sizes[0] = 0
    return ndimage.binary_fill_holes(comp == int(sizes.argmax()))


def threshold_muscle(
    image_hu: np.ndarray,
    hu_min: float = MUSCLE_HU_RANGE[0],
    hu_max: float = MUSCLE_HU_RANGE[1],
    body_threshold_hu: float = -500.0,
    *,
    spacing_mm: float | Sequence[float] | None = None,
    detach_mm: float = 5.0,
) -> np.ndarray:
    """Boolean muscle mask of one ``(H, W)`` HU slice: ``hu_min <= HU <= hu_max`` inside :func:`body_mask`.

    No organ exclusion and no clean-up of the muscle mask: the plain density threshold that organs of
    muscle-like HU fool. Pass ``spacing_mm`` so that the CT table is cut off the body outline (see
    :func:`body_mask`); otherwise the table top (~120 HU) may be counted as muscle too.
    """
    img = np.asarray(image_hu, dtype=np.float32)
    if hu_min > hu_max:
        raise ValueError(f"hu_min={hu_min} must not exceed hu_max={hu_max}")
    body = body_mask(img, body_threshold_hu, spacing_mm=spacing_mm, detach_mm=detach_mm)
    return (img >= hu_min) & (img <= hu_max) & body


def evaluate_threshold_baseline(
    slices_hu: ArrayLike,
    labels: ArrayLike,
    spacing: ArrayLike,
    class_names: Sequence[str] = ("background", "muscle"),
    *,
    case_ids: Sequence[str] | None = None,
    hu_min: float = MUSCLE_HU_RANGE[0],
    hu_max: float = MUSCLE_HU_RANGE[1],
    body_threshold_hu: float = -500.0,
    detach_mm: float = 5.0,
    surface: bool = True,
) -> pd.DataFrame:
    """Run :func:`threshold_muscle` on every slice and score it against the labels.

    Args:
        slices_hu: ``(N, H, W)`` CT slices in HU.
        labels: ``(N, H, W)`` ground truth; any non-zero value is muscle (a multi-muscle map is binarised).
        spacing: ``(N, 2)`` (row, col) mm per slice, or one ``(2,)`` pair for all.
        class_names: two names, background first; they suffix the per-class metric keys.
        case_ids: optional identifiers for the ``case`` column (default ``"0" .. "N-1"``).
        detach_mm: radius (mm) of the opening that cuts the CT table off the body outline (0: none).
        surface: also compute the surface-distance metrics (mm).

    Returns:
        One row per slice: ``case``, the :func:`~musclelab.metrics.case_metrics` keys and ``time_ms`` (the
        wall-clock time of the thresholding itself, excluding the scoring).
    """
    imgs = np.asarray(slices_hu)
    lab = np.asarray(labels)
    if imgs.ndim != 3 or lab.shape != imgs.shape:
        raise ValueError(
            f"slices_hu and labels must both be (N, H, W) with the same shape, got {imgs.shape} and {lab.shape}"
        )
    names = list(class_names)
    if len(names) != 2:
        raise ValueError(f"the threshold baseline is binary: class_names needs 2 names, got {names}")
    n = len(imgs)
    sp = np.asarray(spacing, dtype=np.float64)
    if sp.shape == (2,):
        sp = np.broadcast_to(sp, (n, 2))
    if sp.shape != (n, 2):
        raise ValueError(f"spacing must be (N, 2) = ({n}, 2) or (2,), got {sp.shape}")
    ids = [str(i) for i in range(n)] if case_ids is None else [str(c) for c in case_ids]
    if len(ids) != n:
        raise ValueError(f"case_ids has {len(ids)} entries for {n} slices")
    rows = []
    for k in range(n):
        t0 = time.perf_counter()
        pred = threshold_muscle(imgs[k], hu_min, hu_max, body_threshold_hu, spacing_mm=tuple(sp[k]),
                                detach_mm=detach_mm)
        elapsed_ms = (time.perf_counter() - t0) * 1e3
        row: dict[str, object] = {"case": ids[k]}
        row.update(case_metrics(pred.astype(np.uint8), (lab[k] != 0).astype(np.uint8), tuple(sp[k]), names,
                                surface=surface))
        row["time_ms"] = elapsed_ms
        rows.append(row)
    return pd.DataFrame(rows)
