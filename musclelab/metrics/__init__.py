"""Segmentation metrics on numpy label arrays: overlap, surface distances (mm), per-case rows, summaries.

Plain numpy/scipy; knows nothing of models or Lightning, so it scores predictions
in memory or label maps loaded from disk alike.

Why our own instead of MONAI's metrics: we need RMS distance-to-agreement (not in
MONAI), one consistent empty-mask convention for every metric (both empty → perfect
scores and 0.0 mm; exactly one empty → overlap 0.0 and distances NaN, never inf), and
numpy inputs with a physical spacing, without torch or one-hot layouts. HD, HD95 and
ASSD follow MONAI's definitions exactly and are checked against MONAI in the tests.
"""

from .body_composition import (
    BODY_COMPOSITION_KEYS,
    body_composition,
    bone_mask,
    ellipsoid_structure,
    remove_bone,
    sma_cm2,
    smd_hu,
    smi_cm2_m2,
    volume_ml,
)
from .case import METRICS, OVERLAP_METRICS, case_metrics
from .overlap import Confusion, accuracy, confusion, dice, iou, jaccard, precision, recall
from .statistics import dunnett_vs_control, mean_ci, observer_agreement
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
    "BODY_COMPOSITION_KEYS",
    "METRICS",
    "OVERLAP_METRICS",
    "SURFACE_METRICS",
    "Confusion",
    "accuracy",
    "assd",
    "body_composition",
    "bone_mask",
    "case_metrics",
    "confusion",
    "dice",
    "dunnett_vs_control",
    "ellipsoid_structure",
    "hausdorff_distance",
    "hd95",
    "iou",
    "jaccard",
    "mask_edges",
    "mean_ci",
    "normalize_spacing",
    "observer_agreement",
    "precision",
    "recall",
    "remove_bone",
    "rms_dta",
    "sma_cm2",
    "smd_hu",
    "smi_cm2_m2",
    "summarize",
    "surface_distances",
    "surface_metrics",
    "volume_ml",
]
