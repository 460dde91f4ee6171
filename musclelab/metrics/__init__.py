"""Segmentation metrics on numpy label arrays: overlap, surface distances (mm), per-case rows, summaries.

Plain numpy/scipy; knows nothing of models or Lightning, so it scores predictions
in memory or label maps loaded from disk alike.

Why our own instead of MONAI's metrics: we need RMS distance-to-agreement (not in
MONAI), one consistent empty-mask convention for every metric (both empty → perfect
scores and 0.0 mm; exactly one empty → overlap 0.0 and distances NaN, never inf), and
numpy inputs with a physical spacing, without torch or one-hot layouts. HD, HD95 and
ASSD follow MONAI's definitions exactly and are checked against MONAI in the tests.
"""

from .case import METRICS, OVERLAP_METRICS, case_metrics
from .overlap import Confusion, accuracy, confusion, dice, iou, jaccard, precision, recall
from .summary import summarize
from .surface import (
    SURFACE_METRICS,
    assd,
    hausdorff_distance,
    hd95,
    mask_edges,
    normalize_spacing,
    rms_dta,
    surface_distances,
    surface_metrics,
)

__all__ = [
    "METRICS",
    "OVERLAP_METRICS",
    "SURFACE_METRICS",
    "Confusion",
    "accuracy",
    "assd",
    "case_metrics",
    "confusion",
    "dice",
    "hausdorff_distance",
    "hd95",
    "iou",
    "jaccard",
    "mask_edges",
    "normalize_spacing",
    "precision",
    "recall",
    "rms_dta",
    "summarize",
    "surface_distances",
    "surface_metrics",
]
