"""Training-time augmentation (flip, rotation, scaling, shear, elastic) from MONAI dictionary transforms.

Images are augmented after windowing, so the padding value 0 is the bottom of the window (air/fat).
Labels are resampled with nearest-neighbour interpolation so they stay integer class maps.
"""
from __future__ import annotations

import math

from monai.transforms import Compose, Rand2DElasticd, RandAffined, RandFlipd


def build_augmentation(
    flip_prob: float = 0.5, rotate_deg: float = 15.0, scale: float = 0.1, affine_prob: float = 0.5,
    elastic_prob: float = 0.0, elastic_spacing: float = 20.0, elastic_magnitude: float = 2.0,
    shear_deg: float = 0.0,
) -> Compose | None:
    """MONAI transforms over ``{"image": (C,H,W), "label": (1,H,W)}``; ``None`` when everything is off.

    flip_prob: left-right flip probability; rotate_deg: uniform rotation range ±deg; scale: zoom range ±scale;
    shear_deg: shear angle range ±deg on both in-plane axes (Kawamoto et al. 2024: ±22.5°, i.e. ±π/8; MONAI
    takes the shear coefficient tan(angle)); affine_prob: probability of the rotation/zoom/shear;
    elastic_prob: probability of a 2D elastic deformation with control-point ``elastic_spacing`` (pixels) and displacement ``elastic_magnitude`` (pixels).
    """
    keys = ("image", "label")
    transforms = []
    if flip_prob > 0:
        transforms.append(RandFlipd(keys, prob=flip_prob, spatial_axis=1))
    if affine_prob > 0 and (rotate_deg > 0 or scale > 0 or shear_deg > 0):
        shear = math.tan(math.radians(shear_deg))
        transforms.append(RandAffined(
            keys, prob=affine_prob, rotate_range=(math.radians(rotate_deg),),
            scale_range=(scale, scale), shear_range=(shear, shear) if shear_deg > 0 else None,
            mode=("bilinear", "nearest"), padding_mode="zeros",
        ))
    if elastic_prob > 0:
        transforms.append(Rand2DElasticd(
            keys, spacing=(elastic_spacing, elastic_spacing), magnitude_range=(0.0, elastic_magnitude),
            prob=elastic_prob, mode=("bilinear", "nearest"), padding_mode="zeros",
        ))
    return Compose(transforms) if transforms else None


def split_repeats(params: dict) -> tuple[dict, int]:
    """``(augmentation parameters, repeats)``: ``data.augment.repeats`` enlarges the training set that many
    times per epoch with differently augmented copies (Kawamoto et al. 2024: 8); 1 = each slice once."""
    params = dict(params)
    repeats = params.pop("repeats", 1)
    if repeats is None or int(repeats) != repeats or int(repeats) < 1:
        raise ValueError(f"data.augment.repeats must be an integer >= 1, got {repeats}")
    return params, int(repeats)
