"""Body-composition read-outs of a muscle mask on CT: SMA (cm²), SMD (HU), SMI, volume (mL).

Follows McSweeney et al. 2022 (Med Phys), who score each test slice by DSC, RMS
distance-to-agreement (cm), skeletal muscle area (SMA, cm²) and skeletal muscle
density (SMD, mean HU inside the mask), after a bone post-processing step applied to
the predicted mask: pixels above 175 HU are taken as bone, that bone mask is dilated
by 2 mm *in physical units*, and the dilated bone is removed from the muscle mask.

Why our own: no library computes SMA/SMD with that bone post-processing, and the
dilation must use a structuring element built from the (possibly anisotropic) pixel
spacing, so a fixed pixel radius would be wrong.

Conventions:

* Masks: any non-zero value is muscle (for a label map pass ``labels == k``).
  ``image_hu`` is the CT slice/volume in Hounsfield units, same shape as the mask.
* Spacing: mm per axis in array order (``(row_mm, col_mm)`` or ``(z_mm, row_mm, col_mm)``);
  one number means isotropic.
* Bone: ``image_hu > threshold_hu`` (strictly above). A pixel is removed by
  :func:`remove_bone` iff its physical (Euclidean, mm) distance to the nearest bone
  pixel is ``<= dilate_mm`` -- bone pixels themselves included (distance 0).
* Post-processing is applied to the *prediction only* by default, as in the paper
  (the reference contours are taken as drawn); ``postprocess_target=True`` applies it
  to the ground truth as well.
* Empty masks: SMA and volume are ``0.0`` (a well-defined area); SMD is ``NaN`` (a mean
  over no pixels), so any SMD difference involving an empty mask is NaN. Dice and
  RMS-DTA follow :mod:`musclelab.metrics.overlap` / :mod:`musclelab.metrics.surface`
  (both empty → 1.0 and 0.0 cm; exactly one empty → 0.0 and NaN). Note that the bone
  removal can empty a prediction.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from .overlap import dice
from .surface import Spacing, _bbox, normalize_spacing, rms_dta

__all__ = [
    "BODY_COMPOSITION_KEYS",
    "ellipsoid_structure",
    "bone_mask",
    "remove_bone",
    "sma_cm2",
    "smd_hu",
    "smi_cm2_m2",
    "volume_ml",
    "body_composition",
]

#: Keys returned by :func:`body_composition`, in order.
BODY_COMPOSITION_KEYS: tuple[str, ...] = (
    "sma_pred",
    "sma_true",
    "sma_diff",
    "sma_abs_diff",
    "smd_pred",
    "smd_true",
    "smd_diff",
    "dice",
    "rms_dta_cm",
    "sma_removed",
)

# Slack on the "distance <= radius" test so that e.g. 4 × 0.5 mm counts as 2 mm exactly.
_EPS_MM = 1e-9


def _as_mask(a: ArrayLike, name: str = "mask") -> np.ndarray:
    m = np.asarray(a)
    if m.size == 0:
        raise ValueError(f"{name} is empty (zero-size array)")
    return m.astype(bool, copy=False)


def _check_image(mask: np.ndarray, image_hu: ArrayLike) -> np.ndarray:
    img = np.asarray(image_hu)
    if img.shape != mask.shape:
        raise ValueError(f"image_hu must have the mask's shape {mask.shape}, got {img.shape}")
    return img


def ellipsoid_structure(radius_mm: float, spacing_mm: Spacing, ndim: int | None = None) -> np.ndarray:
    """Boolean structuring element of the physical ball of ``radius_mm`` on a pixel grid.

    Axis ``i`` spans ``±floor(radius_mm / spacing_mm[i])`` pixels; an offset ``k`` is
    included iff ``sqrt(sum((k_i * spacing_i)²)) <= radius_mm``. With anisotropic spacing
    this is an ellipse (2D) / ellipsoid (3D) in pixel units. ``radius_mm = 0`` gives a
    single pixel.
    """
    if np.isscalar(spacing_mm) and ndim is None:
        raise ValueError("pass ndim when spacing_mm is a single number")
    sp = normalize_spacing(spacing_mm, ndim if ndim is not None else len(spacing_mm))  # type: ignore[arg-type]
    if not (math.isfinite(radius_mm) and radius_mm >= 0):
        raise ValueError(f"radius_mm must be finite and >= 0, got {radius_mm}")
    half = [int(math.floor(radius_mm / s + _EPS_MM)) for s in sp]
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    d2 = sum((g * s) ** 2 for g, s in zip(grids, sp))
    return np.asarray(d2 <= radius_mm**2 + _EPS_MM)


def bone_mask(image_hu: ArrayLike, threshold_hu: float = 175.0) -> np.ndarray:
    """Pixels strictly above ``threshold_hu`` (HU): the paper's bone definition (175 HU)."""
    return np.asarray(image_hu) > threshold_hu


def remove_bone(
    mask: ArrayLike,
    image_hu: ArrayLike,
    spacing_mm: Spacing,
    threshold_hu: float = 175.0,
    dilate_mm: float = 2.0,
) -> np.ndarray:
    """Muscle mask with bone (``> threshold_hu`` HU) dilated by ``dilate_mm`` mm removed.

    The bone mask is dilated with :func:`ellipsoid_structure` (physical radius, so the
    pixel radius differs per axis with anisotropic spacing); a muscle pixel is dropped
    iff it lies within ``dilate_mm`` mm of a bone pixel. Works for 2D slices and 3D
    volumes (spacing per axis in array order). Returns a new boolean array.
    """
    m = _as_mask(mask)
    img = _check_image(m, image_hu)
    sp = normalize_spacing(spacing_mm, m.ndim)
    out = m.copy()
    box = _bbox(m)
    if box is None:
        return out
    struct = ellipsoid_structure(dilate_mm, sp)
    # Only bone within the structuring element's reach of the mask matters: crop to the
    # mask's bounding box padded by the element's half-size (dilation pads with 0).
    pad = [(n - 1) // 2 for n in struct.shape]
    crop = tuple(slice(max(b.start - p, 0), min(b.stop + p, n)) for b, p, n in zip(box, pad, m.shape))
    bone = bone_mask(img[crop], threshold_hu)
    if bone.any():
        near_bone = ndimage.binary_dilation(bone, structure=struct)
        out[crop] &= ~near_bone
    return out


def sma_cm2(mask: ArrayLike, spacing_mm: Spacing) -> float:
    """Skeletal muscle area in cm² of a 2D slice: pixel count × row_mm × col_mm / 100 (0.0 if empty)."""
    m = _as_mask(mask)
    if m.ndim != 2:
        raise ValueError(f"sma_cm2 needs a 2D slice, got shape {m.shape} (use volume_ml for 3D)")
    r, c = normalize_spacing(spacing_mm, 2)
    return float(np.count_nonzero(m)) * r * c / 100.0


def smd_hu(mask: ArrayLike, image_hu: ArrayLike) -> float:
    """Skeletal muscle density: mean HU of ``image_hu`` inside the mask (NaN if the mask is empty)."""
    m = _as_mask(mask)
    img = _check_image(m, image_hu)
    if not m.any():
        return math.nan
    return float(np.mean(img[m], dtype=np.float64))


def smi_cm2_m2(sma: float, height_m: float) -> float:
    """Skeletal muscle index in cm²/m²: SMA (cm²) / height (m)²."""
    if not (math.isfinite(height_m) and height_m > 0):
        raise ValueError(f"height_m must be positive and finite, got {height_m}")
    return float(sma) / (height_m * height_m)


def volume_ml(mask: ArrayLike, spacing_mm: Spacing) -> float:
    """Volume in mL of a 3D mask: voxel count × voxel volume (mm³) / 1000 (0.0 if empty)."""
    m = _as_mask(mask)
    if m.ndim != 3:
        raise ValueError(f"volume_ml needs a 3D volume, got shape {m.shape} (use sma_cm2 for a slice)")
    sp = normalize_spacing(spacing_mm, 3)
    return float(np.count_nonzero(m)) * math.prod(sp) / 1000.0


def body_composition(
    pred: ArrayLike,
    target: ArrayLike,
    image_hu: ArrayLike,
    spacing_mm: Spacing,
    postprocess: bool = True,
    threshold_hu: float = 175.0,
    dilate_mm: float = 2.0,
    postprocess_target: bool = False,
) -> dict[str, float]:
    """Per-slice scores of McSweeney et al. 2022 for a predicted vs. reference muscle mask.

    Args:
        pred: predicted muscle mask of a 2D slice (non-zero = muscle).
        target: reference muscle mask, same shape.
        image_hu: the CT slice in HU, same shape.
        spacing_mm: ``(row_mm, col_mm)`` pixel size (one number = isotropic).
        postprocess: remove bone (``> threshold_hu`` HU, dilated by ``dilate_mm`` mm) from
            the prediction before scoring, as in the paper.
        postprocess_target: also remove bone from the reference (default False: the
            paper post-processed predictions only). Ignored if ``postprocess`` is False.

    Returns:
        ``sma_pred``, ``sma_true`` (cm²), ``sma_diff`` = pred − true, ``sma_abs_diff``;
        ``smd_pred``, ``smd_true`` (HU), ``smd_diff`` = pred − true (NaN if either mask
        is empty); ``dice`` and ``rms_dta_cm`` (RMS distance-to-agreement in cm) of the
        post-processed masks; ``sma_removed`` (cm²) = area the post-processing removed
        from the prediction (0.0 without post-processing).
    """
    p = _as_mask(pred, "pred")
    t = _as_mask(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same shape, got {p.shape} and {t.shape}")
    if p.ndim != 2:
        raise ValueError(f"body_composition scores 2D slices, got shape {p.shape}")
    img = _check_image(p, image_hu)
    sp = normalize_spacing(spacing_mm, 2)

    sma_raw = sma_cm2(p, sp)
    if postprocess:
        p = remove_bone(p, img, sp, threshold_hu, dilate_mm)
        if postprocess_target:
            t = remove_bone(t, img, sp, threshold_hu, dilate_mm)

    sma_p, sma_t = sma_cm2(p, sp), sma_cm2(t, sp)
    smd_p, smd_t = smd_hu(p, img), smd_hu(t, img)
    return {
        "sma_pred": sma_p,
        "sma_true": sma_t,
        "sma_diff": sma_p - sma_t,
        "sma_abs_diff": abs(sma_p - sma_t),
        "smd_pred": smd_p,
        "smd_true": smd_t,
        "smd_diff": smd_p - smd_t,
        "dice": dice(p, t),
        "rms_dta_cm": rms_dta(p, t, sp) / 10.0,
        "sma_removed": sma_raw - sma_p,
    }
