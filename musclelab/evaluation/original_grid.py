"""Body composition on the slice as acquired: McSweeney et al. 2022 (§2.3) threshold "the original CT volumes" at
175 HU, dilate that bone mask by 2 mm and remove it from the predictions, then measure SMA (cm²) and SMD (HU).

The network sees a resized, anti-aliased slice (``data.img_size``); thin cortical bone loses its HU there (a 1 mm
cortex at 0.8 mm pixels averages to well under 175 HU at 2-7 mm pixels), so thresholding the network's input
misses bone the paper removes. So, for each test slice whose original the slice set can give
(:attr:`~musclelab.data.containers.SliceSet.originals`):

* the prediction is brought to the original grid by **bilinear interpolation of the logits, then the same
  decision** (sigmoid > 0.5 / arg-max, :func:`~musclelab.losses.logits_to_labels`). Why not a nearest-neighbour
  upsampling of the predicted mask: that copies each network pixel into a block of original pixels (a staircase
  of the network's pixel size, 2.3 mm at 512 -> 224 px), biasing SMA at every boundary and RMS-DTA by about a
  quarter network pixel; interpolating the logits places the boundary between network pixels, the grid
  convention (``align_corners=False``) being the one the slices were resized with
  (:func:`musclelab.data.preprocess.resize_slices`). Label maps without logits (the threshold baselines,
  observers drawn on the network grid) are upsampled nearest-exact;
* the bone removal, SMA, SMD, DSC and RMS-DTA are computed against the original reference, on the original HU, in
  the original pixel spacing, for models (raw and post-processed) and observers alike.

When no original is available (a generated phantom without ``native_size``, whose slices *are* the originals, or
a source that cannot re-read a slice) the network grid is used, and column ``bc_grid`` of ``test_cases.csv`` /
``observers.csv`` says which grid each row was scored on (``original`` | ``network``).
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from musclelab.data.containers import OriginalSlice, SliceSet
from musclelab.losses import logits_to_labels
from musclelab.metrics import body_composition

log = logging.getLogger(__name__)

__all__ = ["ORIGINAL", "NETWORK", "original_of", "upsample_logits", "upsample_labels", "body_composition_row"]

ORIGINAL, NETWORK = "original", "network"


def original_of(slices: SliceSet | None, case_id: str) -> OriginalSlice | None:
    """The original of test slice ``case_id``, or None (network grid) when the set has none or it cannot be
    read (logged once per set, naming the case and the reason)."""
    if slices is None or slices.originals is None:
        return None
    try:
        return slices.originals(str(case_id))
    except (OSError, ValueError, KeyError) as err:
        if not getattr(slices, "_original_warned", False):
            log.warning("eval.body_composition: the original slice of case %s could not be read (%s); such cases "
                        "are scored on the network grid (test_cases.csv bc_grid=network)", case_id, err)
            object.__setattr__(slices, "_original_warned", True)
        return None


def upsample_logits(logits: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """Label map ``(h, w)`` of one slice's logits ``(C, H, W)`` interpolated bilinearly to ``shape`` (the
    original grid, same field of view), then decided as at the network's size."""
    x = logits[None].float()
    if tuple(x.shape[-2:]) != tuple(shape):
        x = F.interpolate(x, size=tuple(int(s) for s in shape), mode="bilinear", align_corners=False)
    return logits_to_labels(x)[0].cpu().numpy().astype(np.uint8)


def upsample_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A label map ``(H, W)`` on the original grid ``shape`` (nearest-exact, pixel centres as the resize)."""
    lab = np.asarray(labels)
    if lab.shape == tuple(shape):
        return lab.astype(np.uint8, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(lab, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(int(s) for s in shape), mode="nearest-exact")[0, 0].numpy().astype(np.uint8)


def body_composition_row(pred: np.ndarray, reference: np.ndarray, hu: np.ndarray, spacing: tuple[float, float],
                         grid: str) -> dict[str, Any]:
    """The body-composition columns of one test slice: post-processed (``sma_*``, ``smd_*``, ``dice_pp``,
    ``rms_dta_cm``, ``sma_removed``), raw (``*_raw``, ``dice_raw`` included: on this grid, where ``dice`` of
    :func:`~musclelab.metrics.case_metrics` is on the network's), and ``bc_grid`` with its spacing (mm)."""
    bc = body_composition(pred, reference, hu, spacing)
    row: dict[str, Any] = {("dice_pp" if k == "dice" else k): v for k, v in bc.items()}
    raw = body_composition(pred, reference, hu, spacing, postprocess=False)
    row.update({f"{k}_raw": v for k, v in raw.items() if k not in ("sma_removed", "sma_true", "smd_true")})
    row.update({"bc_grid": grid, "bc_spacing_row_mm": float(spacing[0]), "bc_spacing_col_mm": float(spacing[1])})
    return row
