"""Volumes for 3D training: preprocessing (resample to a target spacing, crop to the body) and the way back to
the source geometry for scoring and NIfTI output.

Preprocessing as Kim et al. 2024: resample to ``data.spacing`` (mm per array axis ``(z, row, col)``; the paper's
(1.5, 1.5, 2.0) mm in (x, y, z) is ``[2.0, 1.5, 1.5]`` here) with MONAI ``Spacing`` (image linear, label nearest;
:func:`musclelab.data.preprocess.resample_volume`), then crop to the body foreground (HU > ``body_hu`` plus a
margin; MONAI's ``generate_spatial_bounding_box``). HU stay HU (the window is applied when a patch is read, so a
window change does not rebuild the cache).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

import numpy as np

from musclelab.data.case import Case

BACKGROUND_HU = -1024.0


@dataclass(frozen=True)
class VolumePreprocess:
    """How a source volume becomes a cached volume.

    spacing: target mm per axis ``(z, row, col)`` or None (keep the source spacing); crop_foreground: crop to
    the body (voxels above ``body_hu`` HU) with ``margin_mm`` around it.
    """

    spacing: tuple[float, float, float] | None = None
    crop_foreground: bool = True
    body_hu: float = -500.0
    margin_mm: float = 10.0

    def __post_init__(self) -> None:
        if self.spacing is not None:
            sp = tuple(float(s) for s in self.spacing)
            if len(sp) != 3 or not all(np.isfinite(sp)) or min(sp) <= 0:
                raise ValueError(f"data.spacing must be three positive numbers (z, row, col) in mm, got "
                                 f"{list(self.spacing)}")
            object.__setattr__(self, "spacing", sp)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "volume", **asdict(self), "spacing": list(self.spacing) if self.spacing else None}


@dataclass
class Preprocessed:
    """A preprocessed case and what is needed to map predictions back to its source grid."""

    case: Case
    source_shape: tuple[int, int, int]
    source_spacing: tuple[float, float, float]
    resampled_shape: tuple[int, int, int]
    crop_start: tuple[int, int, int]


def check_volume_case(case: Case, where: str = "") -> None:
    """One-line errors for what would break 3D training: not a volume, missing/zero spacing, shape mismatch."""
    src = where or (str(case.files[0]) if case.files else case.case_id)
    if case.image.ndim != 3:
        raise ValueError(f"{src}: data.spatial_dims=3 needs volumes, but case '{case.case_id}' is "
                         f"{case.image.ndim}D (shape {case.image.shape}); use data.spatial_dims=2 for slices")
    sp = np.asarray(case.spacing, float)
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"{src}: case '{case.case_id}' has missing or zero voxel spacing {tuple(case.spacing)}; "
                         "fix the file header (pixdim) — volumes cannot be resampled without it")
    if case.label is not None and case.label.shape != case.image.shape:
        raise ValueError(f"{src}: label shape {case.label.shape} differs from image shape {case.image.shape}")


def preprocess_volume(case: Case, pre: VolumePreprocess) -> Preprocessed:
    """Resample (``pre.spacing``) and crop to the body (``pre.crop_foreground``) one volume case."""
    from musclelab.data.preprocess import resample_volume

    check_volume_case(case)
    source_shape = tuple(int(s) for s in case.image.shape)
    source_spacing = tuple(float(s) for s in case.spacing)
    out = resample_volume(case, pre.spacing) if pre.spacing is not None else case
    resampled_shape = tuple(int(s) for s in out.image.shape)
    start = (0, 0, 0)
    if pre.crop_foreground:
        from monai.transforms.utils import generate_spatial_bounding_box

        margin = [int(np.ceil(pre.margin_mm / s)) for s in out.spacing]
        body = (out.image > pre.body_hu)[None]
        if body.any():
            lo, hi = generate_spatial_bounding_box(body, margin=margin)
            lo = [max(0, int(v)) for v in lo]
            hi = [min(int(h), s) for h, s in zip(hi, resampled_shape)]
            sl = tuple(slice(a, b) for a, b in zip(lo, hi))
            label = out.label[sl] if out.label is not None else None
            out = replace(out, image=np.ascontiguousarray(out.image[sl]),
                          label=None if label is None else np.ascontiguousarray(label))
            start = tuple(lo)
    return Preprocessed(out, source_shape, source_spacing, resampled_shape, start)


def to_source_geometry(pred: np.ndarray, resampled_shape: Sequence[int], crop_start: Sequence[int],
                       source_shape: Sequence[int]) -> np.ndarray:
    """A label map predicted on the cached grid (cropped, resampled) placed back into the full resampled grid
    (background outside the crop) and resampled with nearest neighbour to the source grid ``source_shape``
    (same physical extent)."""
    import torch

    full = np.zeros(tuple(int(s) for s in resampled_shape), dtype=np.uint8)
    sl = tuple(slice(int(a), int(a) + int(n)) for a, n in zip(crop_start, pred.shape))
    full[sl] = pred
    if tuple(full.shape) == tuple(int(s) for s in source_shape):
        return full
    t = torch.from_numpy(full)[None, None].float()
    back = torch.nn.functional.interpolate(t, size=tuple(int(s) for s in source_shape), mode="nearest-exact")
    return back[0, 0].to(torch.uint8).numpy()


def volume_problems(reader: Any) -> list:
    """Header checks that matter only for 3D training (``musclelab data verify`` with ``data.spatial_dims=3``):
    every image must be a volume with a positive spacing on every axis (resampling needs it)."""
    from musclelab.data.readers.problems import Problem

    out = []
    for ref in reader.scan():
        try:
            head, _ = reader.headers(ref)
        except Exception as err:  # noqa: BLE001 - unreadable headers are reported by verify_dataset itself
            del err
            continue
        if len(head.shape) != 3:
            out.append(Problem.error("volume", f"image is {len(head.shape)}D {tuple(head.shape)}: data.spatial_dims=3 "
                                     "needs volumes (use data.spatial_dims=2 for slices)", head.path, ref.case_id))
        elif head.spacing is None or not all(np.isfinite(head.spacing)) or min(head.spacing) <= 0:
            out.append(Problem.error("spacing", f"missing or zero voxel spacing {head.spacing}: fix the header "
                                     "(pixdim); volumes cannot be resampled without it", head.path, ref.case_id))
    return out
