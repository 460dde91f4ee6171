"""Image decoding: a file (NIfTI, NRRD, MetaImage, DICOM, PNG masks) into an array in the project's LPS
convention with its spacing in mm.

Why this module exists: every public CT data set ships the same kind of content (an image, a label map) in
its own layout and its own orientation, and the ways this goes wrong are shared too (flipped axes, missing
HU rescale, truncated downloads, a mask paired with the wrong image). SimpleITK does all the decoding (NIfTI,
NRRD, MetaImage, DICOM with its RescaleSlope/Intercept, NIfTI with its scl_slope/scl_inter) and
``sitk.DICOMOrient(img, "LPS")`` turns any grid into the project's convention (see
:mod:`musclelab.data.case`): arrays ``(z, row, col)`` = (superior, posterior, patient's left). The readers
themselves only map layouts (which file belongs to which case) and label values (raw value -> class).

Two things SimpleITK does not do are done here:

* NIfTI truncation: ITK silently fills the missing part of a truncated ``.nii``/``.nii.gz`` with zeros, so
  :func:`open_image` first checks that the file holds all the voxels its header announces (a file-size check
  for ``.nii``, the gzip size trailer for ``.nii.gz``, with a full streaming check only when that disagrees).
* PNG masks have no geometry: a PNG mask is the label map *on the pixel grid of its image as stored in the
  image file* (for DICOM: the DICOM pixel rows/columns; for NIfTI/NRRD: SimpleITK's array before
  reorientation). It gets the image's geometry and then the same reorientation, so the flips that put the
  image into LPS are applied to the mask too.
"""
from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from musclelab.data.readers.files import file_kind, split_ext
from musclelab.data.readers.problems import UnreadableFileError, fmt_shape, missing_file_error, short_reason
from musclelab.errors import ConfigError


def check_nifti_complete(path: Path) -> None:
    """Raise :class:`UnreadableFileError` if a NIfTI file holds fewer bytes than its header announces.

    ITK reads the missing voxels of a truncated file as zeros without complaint. ``.nii``: compare the file
    size; ``.nii.gz``: compare the gzip ISIZE trailer (uncompressed size mod 2**32) and only when it differs
    (truncated, multi-member or padded files) decompress the stream to count the bytes.
    """
    import nibabel as nib

    try:
        hdr = nib.load(str(path)).header
        expected = int(hdr.get_data_offset()) + int(np.prod(hdr.get_data_shape(), dtype=np.int64)) * \
            hdr.get_data_dtype().itemsize
    except Exception as e:  # nibabel raises many types for bad headers / gzip streams
        raise UnreadableFileError(path, "NIfTI", short_reason(e)) from None
    if split_ext(path)[1] == ".nii":
        size = path.stat().st_size
        if size < expected:
            raise UnreadableFileError(path, "NIfTI", f"file has {size} bytes, header announces {expected}")
        return
    try:
        with open(path, "rb") as f:
            f.seek(-4, 2)
            isize = int.from_bytes(f.read(4), "little")
    except OSError as e:
        raise UnreadableFileError(path, "NIfTI", short_reason(e)) from None
    if isize == expected % 2**32:
        return
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                total += len(chunk)
    except (EOFError, OSError, zlib.error) as e:
        raise UnreadableFileError(path, "NIfTI", short_reason(e)) from None
    if total < expected:
        raise UnreadableFileError(path, "NIfTI", f"{total} bytes after decompression, header announces {expected}")


def read_png(path: str | Path) -> np.ndarray:
    """A PNG mask as a 2D integer array ``(rows, cols)`` (grey, 16-bit, 1-bit or palette indices; an RGB(A)
    file is accepted when its colour channels are equal)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise missing_file_error(path)
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.array(im)
    except Exception as e:  # pillow raises OSError, SyntaxError, ValueError, struct.error, ...
        raise UnreadableFileError(path, "PNG", short_reason(e)) from None
    if arr.ndim == 3:
        colour = arr[..., :3] if arr.shape[-1] >= 3 else arr[..., :1]
        if not (colour == colour[..., :1]).all():
            raise ConfigError(f"mask {path} is a colour PNG with different R/G/B values: save masks as grey-level "
                              "PNGs with the class value in each pixel")
        arr = colour[..., 0]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    return arr


def open_image(path: str | Path) -> sitk.Image:
    """Decode a file into a SimpleITK image in its native geometry (HU rescale applied by SimpleITK).

    PNG files become 2D images without physical geometry (unit spacing): pair them with an image through
    :func:`png_like`. Raises :class:`ConfigError` (an :class:`UnreadableFileError` naming the file) for
    missing, truncated, corrupt or multi-channel files.
    """
    path = Path(path)
    if not path.is_file():
        raise missing_file_error(path)
    kind = file_kind(path)
    if kind == "PNG":
        return sitk.GetImageFromArray(read_png(path))
    if kind == "NIfTI":
        check_nifti_complete(path)
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise UnreadableFileError(path, kind, short_reason(e)) from None
    if kind == "NIfTI" and img.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        img = _restore_nifti_nonfinite(img, path)
    return _squeeze_4d(img, path)


def _restore_nifti_nonfinite(img: sitk.Image, path: Path) -> sitk.Image:
    """Put NaN/inf back where a float NIfTI has them: ITK's NIfTI reader (niftilib) silently sets non-finite
    floats to 0, which would turn "no data" into water HU and hide the problem from the checks."""
    import nibabel as nib

    nimg = nib.load(str(path))
    if nimg.get_data_dtype().kind != "f":
        return img
    data = np.asanyarray(nimg.dataobj)
    bad = ~np.isfinite(data)
    if not bad.any():
        return img
    arr = sitk.GetArrayFromImage(img)
    vals = data.T[bad.T]
    if arr.shape != bad.T.shape:  # should not happen; keep ITK's reading rather than guess
        return img
    arr[bad.T] = vals.astype(arr.dtype)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out


def _squeeze_4d(img: sitk.Image, path: Path) -> sitk.Image:
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise ConfigError(f"{path} has {img.GetNumberOfComponentsPerPixel()} values per voxel (colour or vector "
                          "image): expected one grey value (HU) per voxel")
    if img.GetDimension() == 4:
        if img.GetSize()[3] != 1:
            raise ConfigError(f"{path} is 4D with {img.GetSize()[3]} channels/time points: multi-channel images "
                              "are not supported; save the CT channel alone")
        img = sitk.Extract(img, [*img.GetSize()[:3], 0], [0, 0, 0, 0])
    if img.GetDimension() not in (2, 3):
        raise ConfigError(f"{path} has {img.GetDimension()} dimensions: expected a 2D slice or a 3D volume")
    return img


def to_lps(img: sitk.Image) -> tuple[np.ndarray, tuple[float, ...]]:
    """Reorient to LPS and return ``(array, spacing)``: ``(z, row, col)`` with spacing in mm per array axis;
    a single-slice image (z size 1) becomes ``(row, col)``. A 2D image is taken as one axial slice."""
    if img.GetDimension() == 2:
        img = sitk.JoinSeries(img)
    img = sitk.DICOMOrient(img, "LPS")
    arr = sitk.GetArrayFromImage(img)
    spacing = tuple(float(s) for s in reversed(img.GetSpacing()))
    if arr.shape[0] == 1:
        return arr[0], spacing[1:]
    return arr, spacing


def png_like(mask: np.ndarray, like: sitk.Image, path: str | Path = "") -> sitk.Image:
    """A PNG mask array given the geometry of ``like`` (the image it annotates, in native geometry).

    ``mask`` is ``(rows, cols)`` for one slice or ``(n, rows, cols)`` for a stack, laid out like SimpleITK's
    array of ``like`` before reorientation (DICOM pixel rows/columns). Raises :class:`ConfigError` if the
    sizes differ."""
    native = sitk.GetArrayViewFromImage(like).shape
    squeezed = tuple(s for i, s in enumerate(native) if not (s == 1 and i == 0 and len(native) == 3))
    if tuple(mask.shape) not in (tuple(native), squeezed):
        raise ConfigError(f"mask {path} is {fmt_shape(mask.shape)} pixels but its image is "
                          f"{fmt_shape(squeezed)}: the PNG must have the image's rows and columns")
    out = sitk.GetImageFromArray(np.ascontiguousarray(mask.reshape(native)))
    out.CopyInformation(like)
    return out


def read_image(path: str | Path, like: sitk.Image | None = None) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read an image or label file into the project convention: ``(array, spacing)`` with the array in LPS
    ``(z, row, col)`` (or ``(row, col)`` for a single slice) and spacing in mm per array axis.

    NIfTI/NRRD/MetaImage/DICOM are decoded by SimpleITK: values are true HU (NIfTI ``scl_slope/scl_inter``
    and DICOM ``RescaleSlope/RescaleIntercept`` applied) in the file's pixel type (float32 when a rescale is
    not integral). A PNG mask takes the geometry of ``like`` (its image, as returned by :func:`open_image`);
    without ``like`` it is returned as stored with unknown (NaN) spacing.
    """
    path = Path(path)
    if file_kind(path) == "PNG":
        arr = read_png(path)
        if like is None:
            return arr, (math.nan, math.nan)
        return to_lps(png_like(arr, like, path))
    return to_lps(open_image(path))
