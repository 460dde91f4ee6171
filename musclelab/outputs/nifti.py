"""Write label maps (and images) as NIfTI in the project's LPS array convention, atomically.

Arrays are ``(z, row, col)`` in LPS (see :mod:`musclelab.data.case`): z towards the head, rows posterior, columns
towards the patient's left. A mask is written either on the grid of a *reference* file (the source scan it was
predicted for: the output then has exactly that file's affine and orientation, so it overlays the scan in any
viewer) or, for generated data with no file, on an axis-aligned grid with the given spacing and LPS origin.

SimpleITK writes the files (as the readers read them); the write goes to a temporary file in the target folder
that is renamed into place, so a mask file is either complete or absent.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from musclelab.io import atomic_path

__all__ = ["lps_affine", "save_nifti", "load_nifti"]


def lps_affine(spacing: Sequence[float], origin_lps: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """The NIfTI (RAS) affine of an LPS ``(z, row, col)`` array with ``spacing`` (mm per array axis) stored
    as NIfTI voxel axes (col, row, z), whose first voxel centre is at ``origin_lps`` = (x, y, z) mm in LPS."""
    sz, sr, sc = (float(s) for s in spacing)
    aff = np.diag([-sc, -sr, sz, 1.0])
    aff[:3, 3] = (-float(origin_lps[0]), -float(origin_lps[1]), float(origin_lps[2]))
    return aff


def _sitk_image(array: np.ndarray, spacing: Sequence[float] | None, reference: str | Path | None,
                origin_lps: Sequence[float] | None):
    import SimpleITK as sitk

    if reference is not None:
        from musclelab.data.readers.decode import open_image

        ref = open_image(reference)
        if ref.GetDimension() == 2:   # a single slice: a one-slice volume (DICOMOrient needs 3D)
            ref = sitk.JoinSeries(ref)
            array = array[None] if array.ndim == 2 else array
        img = sitk.GetImageFromArray(np.ascontiguousarray(array))   # (z, row, col) -> sitk (x=col, y=row, z)
        ref_lps = sitk.DICOMOrient(ref, "LPS")
        if tuple(reversed(ref_lps.GetSize())) != tuple(array.shape):
            raise ValueError(f"mask shape {tuple(array.shape)} differs from the LPS shape "
                             f"{tuple(reversed(ref_lps.GetSize()))} of its reference image {reference}")
        img.CopyInformation(ref_lps)
        code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(ref.GetDirection())
        return sitk.DICOMOrient(img, code)
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    if spacing is None or len(spacing) != array.ndim or any(float(s) <= 0 for s in spacing):
        raise ValueError(f"save_nifti needs a positive spacing per array axis (mm) or a reference file; got {spacing}")
    img.SetSpacing([float(s) for s in reversed(spacing)])
    img.SetOrigin([float(v) for v in (origin_lps if origin_lps is not None else (0.0,) * array.ndim)])
    return img


def save_nifti(path: str | Path, array: np.ndarray, *, spacing: Sequence[float] | None = None,
               reference: str | Path | None = None, origin_lps: Sequence[float] | None = None,
               dtype: type = np.uint8) -> Path:
    """Atomically write an LPS ``(z, row, col)`` array (a label map by default: ``dtype`` uint8) to ``path``
    (``.nii.gz`` or ``.nii``). Geometry from ``reference`` (the source scan: same affine and orientation;
    the array must have the shape that scan has in LPS; a 2D reference slice gives a one-slice volume) or else from ``spacing`` (mm per axis) and
    ``origin_lps`` (mm; default 0). Returns ``path``."""
    import SimpleITK as sitk

    path = Path(path)
    arr = np.asarray(array)
    if np.issubdtype(np.dtype(dtype), np.integer) and arr.size and (arr.min() < np.iinfo(dtype).min
                                                                    or arr.max() > np.iinfo(dtype).max):
        raise ValueError(f"values {arr.min()}..{arr.max()} do not fit {np.dtype(dtype).name} for {path}")
    img = _sitk_image(arr.astype(dtype, copy=False), spacing, reference, origin_lps)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    with atomic_path(path, suffix) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=suffix.endswith(".gz"))
    return path


def load_nifti(path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read a NIfTI file back into the LPS ``(z, row, col)`` convention: ``(array, spacing mm)``."""
    from musclelab.data.readers.decode import read_image

    return read_image(path)
