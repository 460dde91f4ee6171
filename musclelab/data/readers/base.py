"""Shared machinery for the data-set readers: file decoding, orientation, label mapping, pairing and checks.

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

A reader is built with ``READERS.get(name)(root, **params)`` (or :func:`build_reader`). ``scan()`` lists the
cases cheaply (file names only, no pixel decoding, never raising for a bad pair: problems found while
pairing are kept in ``reader.scan_problems`` for :func:`musclelab.data.verify.verify_dataset`), ``load(ref)``
decodes one case into a :class:`~musclelab.data.case.Case` and raises :class:`ConfigError` for anything that
would silently corrupt training (shape/spacing mismatch, label values that are not classes, NaN/inf HU).
Readers never write into ``root``.
"""
from __future__ import annotations

import gzip
import inspect
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from musclelab.data.case import Case
from musclelab.errors import ConfigError
from musclelab.registry import Registry

# ----------------------------------------------------------------------------------------------------------
# File types
# ----------------------------------------------------------------------------------------------------------

_KINDS: dict[str, str] = {
    ".nii.gz": "NIfTI", ".nii": "NIfTI", ".nrrd": "NRRD", ".nhdr": "NRRD", ".mha": "MetaImage",
    ".mhd": "MetaImage", ".dcm": "DICOM", ".png": "PNG",
}
#: extensions readers accept for volumes/slices with geometry (PNG is accepted for masks only)
IMAGE_EXTS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
LABEL_EXTS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png")


def split_ext(path: str | Path) -> tuple[str, str]:
    """``(stem, extension)`` with compound extensions kept whole: ``img01.nii.gz`` -> ``("img01", ".nii.gz")``.
    The extension is lower-cased; an unknown one is returned as Python's last suffix."""
    name = Path(path).name
    low = name.lower()
    for ext in sorted(_KINDS, key=len, reverse=True):
        if low.endswith(ext):
            return name[: -len(ext)], ext
    suffix = Path(name).suffix
    return (name[: -len(suffix)] if suffix else name), suffix.lower()


def file_kind(path: str | Path) -> str:
    """Human name of a file's format from its extension (``NIfTI``, ``DICOM``, ``PNG``, ...)."""
    return _KINDS.get(split_ext(path)[1], "DICOM" if not split_ext(path)[1] else "image")


def natural_key(path: str | Path) -> tuple:
    """Sort key that orders embedded numbers numerically (``img2`` before ``img10``)."""
    parts = re.split(r"(\d+)", Path(path).name)
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p.lower()) for p in parts)


def list_files(folder: Path, exts: Sequence[str] | None = None, recursive: bool = False) -> list[Path]:
    """Files in ``folder`` (optionally recursive) with one of ``exts``, naturally sorted. Hidden files and
    folders (``.name``, e.g. macOS ``._x.nii.gz`` resource forks shipped in some MSD tarballs) are skipped."""
    if not folder.is_dir():
        return []
    it = folder.rglob("*") if recursive else folder.iterdir()
    out = []
    for p in it:
        rel = p.relative_to(folder).parts
        if any(part.startswith(".") for part in rel) or not p.is_file():
            continue
        if exts is not None and split_ext(p)[1] not in exts:
            continue
        out.append(p)
    return sorted(out, key=lambda p: (natural_key(p.parent), natural_key(p)))


# ----------------------------------------------------------------------------------------------------------
# Errors and problems
# ----------------------------------------------------------------------------------------------------------


def missing_file_error(path: str | Path) -> ConfigError:
    """ConfigError for a file that is not there, with ``.path`` set (for reports)."""
    err = ConfigError(f"file {path} does not exist")
    err.path = Path(path)  # type: ignore[attr-defined]
    return err


class UnreadableFileError(ConfigError):
    """A file that exists but cannot be decoded (truncated, corrupt, wrong format). ``path`` names it."""

    def __init__(self, path: str | Path, kind: str | None = None, reason: str = "") -> None:
        self.path = Path(path)
        kind = kind or file_kind(path)
        msg = f"file {self.path} could not be read as {kind} (truncated or corrupt?): re-export or remove it"
        if reason:
            msg += f" [{reason}]"
        super().__init__(msg)


def _short_reason(err: BaseException) -> str:
    """One line out of an ITK/zlib exception text (ITK's are multi-line with C++ source locations)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception thrown", "/"))] or lines or [type(err).__name__]
    text = useful[-1]
    text = re.sub(r"^(sitk::)?ERROR:\s*", "", text)
    text = re.sub(r"^ITK ERROR:\s*\S+:\s*", "", text)
    return text[:200]


@dataclass(frozen=True)
class Problem:
    """One finding of a data check. severity: ``error`` (the data set must not be used as is) or
    ``warning``; check: short name of the check (``missing_label``, ``shape``, ...); file: the file to look
    at; message: what is wrong and how to fix it."""

    severity: str
    check: str
    message: str
    file: str = ""
    case_id: str = ""

    @staticmethod
    def error(check: str, message: str, file: str | Path = "", case_id: str = "") -> "Problem":
        return Problem("error", check, message, str(file) if file else "", case_id)

    @staticmethod
    def warning(check: str, message: str, file: str | Path = "", case_id: str = "") -> "Problem":
        return Problem("warning", check, message, str(file) if file else "", case_id)


# ----------------------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------------------


def _check_nifti_complete(path: Path) -> None:
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
        raise UnreadableFileError(path, "NIfTI", _short_reason(e)) from None
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
        raise UnreadableFileError(path, "NIfTI", _short_reason(e)) from None
    if isize == expected % 2**32:
        return
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                total += len(chunk)
    except (EOFError, OSError, zlib.error) as e:
        raise UnreadableFileError(path, "NIfTI", _short_reason(e)) from None
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
        raise UnreadableFileError(path, "PNG", _short_reason(e)) from None
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
        _check_nifti_complete(path)
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise UnreadableFileError(path, kind, _short_reason(e)) from None
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
        raise ConfigError(f"mask {path} is {_fmt_shape(mask.shape)} pixels but its image is "
                          f"{_fmt_shape(squeezed)}: the PNG must have the image's rows and columns")
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


# ----------------------------------------------------------------------------------------------------------
# Headers (cheap: no pixel decoding)
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """Geometry of a file without its pixels.

    shape / spacing: array shape and mm per axis after reorientation to LPS (single slices squeezed to 2D);
    spacing is None for PNG. native_shape: SimpleITK's array shape before reorientation (what a PNG mask of
    this image must match)."""

    path: Path
    shape: tuple[int, ...]
    spacing: tuple[float, ...] | None
    native_shape: tuple[int, ...]


def lps_permutation(direction: Sequence[float]) -> list[int]:
    """For a 3x3 direction matrix (row-major, columns = image axes), the LPS world axis (0 L, 1 P, 2 S) each
    image axis runs along (its dominant direction cosine), as DICOMOrient pairs them."""
    d = np.abs(np.asarray(direction, float).reshape(3, 3))
    perm = [int(np.argmax(d[:, i])) for i in range(3)]
    return perm if sorted(perm) == [0, 1, 2] else [0, 1, 2]


def _header_from(path: Path, size: Sequence[int], spacing: Sequence[float], direction: Sequence[float]) -> Header:
    size, spacing = list(size), list(spacing)
    if len(size) == 2:
        size, spacing = size + [1], spacing + [1.0]
        d2 = np.asarray(direction, float).reshape(2, 2)
        d3 = np.eye(3)
        d3[:2, :2] = d2
        direction = d3.ravel().tolist()
    perm = lps_permutation(direction)
    osize, osp = [0, 0, 0], [0.0, 0.0, 0.0]
    for i, j in enumerate(perm):
        osize[j], osp[j] = int(size[i]), float(spacing[i])
    shape, sp = tuple(reversed(osize)), tuple(reversed(osp))
    native = tuple(reversed(size))
    if shape[0] == 1:
        shape, sp = shape[1:], sp[1:]
    if native[0] == 1:
        native = native[1:]
    return Header(path, shape, sp, native)


def read_header(path: str | Path) -> Header:
    """Shape and spacing of an image/label file from its header only (NIfTI files are also checked for
    truncation, which costs a look at the gzip trailer). Raises :class:`ConfigError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise missing_file_error(path)
    kind = file_kind(path)
    if kind == "PNG":
        from PIL import Image

        try:
            with Image.open(path) as im:
                w, h = im.size
        except Exception as e:
            raise UnreadableFileError(path, "PNG", _short_reason(e)) from None
        return Header(path, (h, w), None, (h, w))
    if kind == "NIfTI":
        _check_nifti_complete(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise UnreadableFileError(path, kind, _short_reason(e)) from None
    size, spacing, direction = list(reader.GetSize()), list(reader.GetSpacing()), list(reader.GetDirection())
    if reader.GetNumberOfComponents() != 1:
        raise ConfigError(f"{path} has {reader.GetNumberOfComponents()} values per voxel (colour or vector "
                          "image): expected one grey value (HU) per voxel")
    if len(size) == 4:
        if size[3] != 1:
            raise ConfigError(f"{path} is 4D with {size[3]} channels/time points: multi-channel images are "
                              "not supported; save the CT channel alone")
        d = np.asarray(direction).reshape(4, 4)[:3, :3]
        size, spacing, direction = size[:3], spacing[:3], d.ravel().tolist()
    return _header_from(path, size, spacing, direction)


# ----------------------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------------------


def make_lut(mapping: Mapping[int, int], size: int | None = None) -> np.ndarray:
    """Raw label value -> class index table; values not in ``mapping`` map to -1 (undeclared)."""
    n = max(size or 0, max(mapping) + 1 if mapping else 1)
    lut = np.full(n, -1, np.int32)
    for raw, cls in mapping.items():
        lut[int(raw)] = int(cls)
    return lut


_CHUNK = 1 << 22  # voxels per pass: bounds the int64 temporaries of bincount / table lookup to ~32 MB


def map_labels(raw: np.ndarray, lut: np.ndarray, path: str | Path, class_names: Sequence[str],
               case_id: str = "") -> tuple[np.ndarray | None, np.ndarray | None, list[Problem]]:
    """Map raw label values through ``lut`` (O(n) in chunks: bincount + table lookup, no sort).

    Returns ``(label, voxels_per_class, problems)``; label is uint8 (int16 beyond 256 classes) or None when
    some values are not declared classes (an error problem lists them with their voxel counts)."""
    problems: list[Problem] = []
    a = np.asarray(raw)
    if a.dtype.kind == "f":
        finite = np.isfinite(a)
        if not finite.all() or not (a[finite] == np.round(a[finite])).all():
            frac = a[finite & (a != np.round(np.where(finite, a, 0)))]
            example = f" (e.g. {float(frac.flat[0]):g})" if frac.size else " (NaN/inf)"
            problems.append(Problem.error(
                "label_values", f"label map has non-integer values{example}: it looks like an image or an "
                "interpolated mask; re-export it with integer class values", path, case_id))
            return None, None, problems
        a = a.astype(np.int32)
    elif a.dtype.kind == "b":
        a = a.view(np.uint8)
    elif a.dtype.kind not in "iu":
        problems.append(Problem.error("label_values", f"label map has pixel type {a.dtype}: expected integers",
                                      path, case_id))
        return None, None, problems
    n = len(lut)
    flat = a.reshape(-1)
    counts = np.zeros(n, np.int64)
    bad: dict[int, int] = {}
    for s in range(0, flat.size, _CHUNK):
        chunk = flat[s:s + _CHUNK]
        if chunk.size and (int(chunk.min()) < 0 or int(chunk.max()) >= n):
            out_of_range = (chunk < 0) | (chunk >= n)
            vals, cnt = np.unique(chunk[out_of_range], return_counts=True)
            for v, c in zip(vals, cnt):
                bad[int(v)] = bad.get(int(v), 0) + int(c)
            chunk = chunk[~out_of_range]
        counts += np.bincount(chunk, minlength=n)
    for v in np.flatnonzero((counts > 0) & (lut < 0)):
        bad[int(v)] = int(counts[v])
    if bad:
        shown = ", ".join(f"{v} ({c} voxels)" for v, c in sorted(bad.items())[:8])
        declared = ", ".join(f"{v}" for v in np.flatnonzero(lut >= 0)[:40])
        problems.append(Problem.error(
            "label_values", f"label values {shown} are not classes of this data set (declared raw values: "
            f"{declared}; classes: {', '.join(class_names)}): fix the label file or declare the class",
            path, case_id))
        return None, None, problems
    used = counts > 0
    per_class = np.bincount(lut[used], weights=counts[used], minlength=len(class_names)).astype(np.int64)
    table = lut.astype(np.uint8 if len(class_names) <= 256 else np.int16)
    label = np.empty(a.shape, table.dtype)
    out = label.reshape(-1)
    for s in range(0, flat.size, _CHUNK):
        out[s:s + _CHUNK] = table[flat[s:s + _CHUNK]]
    return label, per_class, problems


def resolve_targets(targets: Iterable[int | str], names: Mapping[int, str], field_name: str,
                    aliases: Mapping[str, int] | None = None) -> list[int]:
    """Raw label values for ``targets`` given as values or names (case/space/dash-insensitive)."""

    def norm(s: str) -> str:
        return re.sub(r"[\s\-]+", "_", str(s).strip().lower())

    by_name = {norm(v): k for k, v in names.items()}
    by_name.update({norm(k): v for k, v in (aliases or {}).items()})
    out: list[int] = []
    if isinstance(targets, (str, int)):
        targets = [targets]
    for t in targets:
        if isinstance(t, bool):
            t = int(t)
        if isinstance(t, (int, np.integer)) or (isinstance(t, str) and t.strip().lstrip("-").isdigit()):
            v = int(t)
            if v not in names:
                raise ConfigError(f"{field_name}: label value {v} is not a class of this data set; known: "
                                  + ", ".join(f"{k}={n}" for k, n in sorted(names.items())))
        else:
            key = norm(t)
            if key not in by_name:
                raise ConfigError(f"{field_name}: unknown class name {t!r}; known: "
                                  + ", ".join(f"{k}={n}" for k, n in sorted(names.items())))
            v = by_name[key]
        if v == 0:
            raise ConfigError(f"{field_name}: background (0) is always class 0; list foreground classes only")
        if v in out:
            raise ConfigError(f"{field_name}: class {t!r} is listed twice")
        out.append(v)
    if not out:
        raise ConfigError(f"{field_name}: give at least one class")
    return out


# ----------------------------------------------------------------------------------------------------------
# Case references and the reader base class
# ----------------------------------------------------------------------------------------------------------


@dataclass
class CaseRef:
    """A case found by :meth:`Reader.scan`, before decoding.

    image: the image file(s): one file, or every slice file of a DICOM series (in the reader's pairing order);
    label: the label file(s) paired with it (one file, or one PNG per DICOM slice); empty if none was found.
    observers: extra annotations of the same image, observer name -> file (checked by verify, decoded only
    on request: :meth:`Reader.observer_masks`). meta: metadata known without decoding (e.g. the ``meta.csv``
    row)."""

    case_id: str
    patient_id: str
    image: tuple[Path, ...]
    label: tuple[Path, ...] = ()
    observers: dict[str, Path] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def files(self) -> tuple[Path, ...]:
        """The files :meth:`Reader.load` reads by default (image first, then label; not the observers)."""
        return (*self.image, *self.label)


@dataclass
class Decoded:
    """One decoded case before label mapping: LPS arrays and spacings (label_spacing None = not its own)."""

    image: np.ndarray
    spacing: tuple[float, ...]
    raw_label: np.ndarray | None = None
    label_spacing: tuple[float, ...] | None = None
    native: sitk.Image | None = None
    observers: dict[str, tuple[np.ndarray, tuple[float, ...] | None]] = field(default_factory=dict)
    observer_labels: dict[str, np.ndarray] = field(default_factory=dict)


READERS: Registry[type["Reader"]] = Registry("dataset reader", "data.name")

SPACING_TOL_MM = 1e-3


def pair_files(images: Mapping[Any, list[Path]], labels: Mapping[Any, list[Path]],
               expected_label: Callable[[Any, Path], str], case_id: Callable[[Any], str] = str,
               ) -> tuple[list[tuple[Any, Path, Path | None]], list[Problem]]:
    """Pair image files with label files by key. Returns ``[(key, image, label or None)]`` (one entry per
    image file, so two images with the same key give a duplicate id) and the pairing problems: missing label
    (error), several labels for one key (error), label without image (warning). ``case_id(key)`` names the
    case in the problems."""
    pairs: list[tuple[Any, Path, Path | None]] = []
    problems: list[Problem] = []
    for key in sorted(images, key=lambda k: natural_key(str(k))):
        labs = labels.get(key, [])
        if len(labs) > 1:
            problems.append(Problem.error(
                "duplicate_label", f"{len(labs)} label files for one case ({', '.join(p.name for p in labs)}): "
                "keep one and remove the others", labs[1], case_id(key)))
        for img in images[key]:
            if not labs:
                problems.append(Problem.error(
                    "missing_label", f"no label file for this image (expected {expected_label(key, img)}): add "
                    "the mask or move the image out of the data folder", img, case_id(key)))
            pairs.append((key, img, labs[0] if labs else None))
    for key in sorted(set(labels) - set(images), key=lambda k: natural_key(str(k))):
        for lab in labels[key]:
            problems.append(Problem.warning(
                "orphan_label", "label file without an image (renamed or missing image?): add the image or "
                "remove the label", lab, case_id(key)))
    return pairs, problems


def _fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def _fmt_spacing(sp: Sequence[float]) -> str:
    return "(" + ", ".join(f"{s:.4g}" for s in sp) + ") mm"


class Reader:
    """Base of the data-set readers: ``Reader(root, **params)``, :meth:`scan`, :meth:`load`,
    :attr:`class_names`. Subclasses implement :meth:`scan`, :attr:`class_names` and :meth:`label_lut`; the
    defaults of :meth:`headers` / :meth:`decode` handle one image file with one label file (NIfTI, NRRD,
    MetaImage, DICOM, PNG masks)."""

    name: ClassVar[str] = ""
    #: dimensionality of the images this source holds (3 volumes, 2 single slices)
    ndim: ClassVar[int] = 3
    #: put the observers' masks into ``Case.meta["observers"]`` on every load (arrays: keep off for caching)
    observers_in_meta: bool = False

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise ConfigError(f"data root {self.root} does not exist or is not a folder (config field data.root)")
        self.scan_problems: list[Problem] = []
        self._params: dict[str, Any] = {}

    @property
    def params(self) -> dict[str, Any]:
        """The effective parameters that define what ``load`` returns (not the root), JSON-able: the slice cache
        keys on them. Includes label definitions read from the data folder (labels.yaml, dataset.json)."""
        return dict(self._params)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self._params.items())
        return f"{type(self).__name__}(root={str(self.root)!r}{extra})"

    # -- to implement ------------------------------------------------------------------------------------

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names by class index for the configured target, background first."""
        raise NotImplementedError

    def scan(self) -> list[CaseRef]:
        """All cases under ``root`` (file names only, no pixel decoding). Pairing problems (missing or orphan
        labels, ...) go to ``self.scan_problems`` instead of raising."""
        raise NotImplementedError

    def label_lut(self, ref: CaseRef, path: Path) -> np.ndarray:
        """Raw value -> class index table for the label file ``path`` of ``ref`` (-1 = undeclared value)."""
        raise NotImplementedError

    # -- shared pipeline -------------------------------------------------------------------------------

    def headers(self, ref: CaseRef) -> tuple[Header, Header | None]:
        """Image and label headers (no pixel decoding). Raises :class:`ConfigError` naming an unreadable file."""
        ih = read_header(ref.image[0])
        lh = read_header(ref.label[0]) if ref.label else None
        return ih, lh

    def decode(self, ref: CaseRef, observers: bool = True) -> Decoded:
        """Decode image (float32 HU), raw label and (``observers``) the observers' raw masks into LPS arrays."""
        native = open_image(ref.image[0])
        image, spacing = to_lps(native)
        out = Decoded(image.astype(np.float32, copy=False), spacing, native=native)
        if ref.label:
            out.raw_label, out.label_spacing = self._read_label(ref.label[0], native)
        for name, path in (ref.observers.items() if observers else ()):
            out.observers[name] = self._read_label(path, native)
        return out

    def _read_label(self, path: Path, native: sitk.Image) -> tuple[np.ndarray, tuple[float, ...] | None]:
        if file_kind(path) == "PNG":
            arr, _ = read_image(path, like=native)
            return arr, None
        return read_image(path)

    def dimension_problems(self, ref: CaseRef, img_shape: tuple[int, ...]) -> list[Problem]:
        """The image has the dimensionality this source holds (single slices for 2D sources)."""
        if self.ndim == 2 and len(img_shape) != 2:
            what = ("a single coronal/sagittal slice" if 1 in img_shape else "a volume") + \
                f" of {_fmt_shape(img_shape)} voxels"
            return [Problem.error(
                "dimensions", f"image is {what}: this source expects single axial slices; export the one axial "
                "slice (e.g. L3) or use a volume reader", ref.image[0], ref.case_id)]
        return []

    def geometry_problems(self, ref: CaseRef, img_shape: tuple[int, ...], img_spacing: Sequence[float] | None,
                          lab_shape: tuple[int, ...], lab_spacing: Sequence[float] | None,
                          lab_file: Path | str, what: str = "label") -> list[Problem]:
        """Shape/spacing agreement of the image and one label map (spacing None: a PNG, no own spacing)."""
        if tuple(lab_shape) != tuple(img_shape):
            return [Problem.error(
                "shape", f"{what} is {_fmt_shape(lab_shape)} voxels but the image is {_fmt_shape(img_shape)}: "
                f"the {what} must be drawn on this image's grid (wrong pairing, cropped or resampled {what}?)",
                lab_file, ref.case_id)]
        if lab_spacing is not None and img_spacing is not None and len(lab_spacing) == len(img_spacing):
            diff = max(abs(a - b) for a, b in zip(lab_spacing, img_spacing))
            if diff > SPACING_TOL_MM:
                return [Problem.error(
                    "spacing", f"{what} spacing {_fmt_spacing(lab_spacing)} differs from the image's "
                    f"{_fmt_spacing(img_spacing)}: fix the {what} header (copy the image geometry) or re-export",
                    lab_file, ref.case_id)]
        return []

    def _header_geometry(self, ref: CaseRef, ih: Header, lh: Header, what: str = "label") -> list[Problem]:
        if lh.spacing is None:  # PNG: compare with the image's stored grid
            if lh.native_shape != ih.native_shape:
                return [Problem.error(
                    "shape", f"{what} PNG is {_fmt_shape(lh.native_shape)} pixels but the image is "
                    f"{_fmt_shape(ih.native_shape)}: the PNG must have the image's rows and columns",
                    lh.path, ref.case_id)]
            return []
        return self.geometry_problems(ref, ih.shape, ih.spacing, lh.shape, lh.spacing, lh.path, what)

    def _map(self, ref: CaseRef, raw: np.ndarray, path: Path | str, lut_path: Path
             ) -> tuple[np.ndarray | None, np.ndarray | None, list[Problem]]:
        return map_labels(raw, self.label_lut(ref, lut_path), path, self.class_names, ref.case_id)

    def content_problems(self, ref: CaseRef, d: Decoded) -> tuple[np.ndarray | None, list[Problem]]:
        """Finite HU, label values within the declared classes, empty masks (and observers' values).
        Returns the mapped label too (observers' mapped masks go to ``d.observer_labels``)."""
        probs: list[Problem] = []
        if d.image.dtype.kind == "f":
            bad = int(d.image.size - np.count_nonzero(np.isfinite(d.image)))
            if bad:
                probs.append(Problem.error(
                    "finite", f"image has {bad} NaN/inf voxels: re-export it (NaN usually marks outside the "
                    "reconstruction field of view; replace with -1024 HU)", ref.image[0], ref.case_id))
        label = None
        if d.raw_label is not None:
            lab_file = ref.label[0] if len(ref.label) == 1 else ref.label[0].parent
            label, per_class, lp = self._map(ref, d.raw_label, lab_file, ref.label[0])
            probs += lp
            if per_class is not None and per_class[1:].sum() == 0:
                probs.append(Problem.warning(
                    "empty_mask", f"label has no voxel of any foreground class ({', '.join(self.class_names[1:])})"
                    ": fine for a negative case, otherwise the mask is missing its drawing", lab_file, ref.case_id))
        for name, (raw, _sp) in d.observers.items():
            path = ref.observers[name]
            mapped, _, op = self._map(ref, raw, path, path)
            probs += op
            if mapped is not None:
                d.observer_labels[name] = mapped
        return label, probs

    def check(self, ref: CaseRef, decode: bool = True) -> list[Problem]:
        """All per-case checks: readable files, geometry from headers, then (``decode``) content."""
        try:
            ih, lh = self.headers(ref)
        except ConfigError as e:
            return [Problem.error("readable", str(e), getattr(e, "path", ""), ref.case_id)]
        probs = self.dimension_problems(ref, ih.shape)
        if lh is not None:
            probs += self._header_geometry(ref, ih, lh)
        for name, path in ref.observers.items():
            try:
                probs += self._header_geometry(ref, ih, read_header(path), f"observer '{name}' mask")
            except ConfigError as e:
                probs.append(Problem.error("readable", str(e), getattr(e, "path", path), ref.case_id))
        if not decode or any(p.severity == "error" for p in probs):
            return probs
        try:
            d = self.decode(ref)
        except ConfigError as e:
            return probs + [Problem.error("readable", str(e), getattr(e, "path", ""), ref.case_id)]
        _, cp = self.content_problems(ref, d)
        return probs + cp

    def load(self, ref: CaseRef) -> Case:
        """Decode one case into a :class:`Case` (LPS arrays, float32 HU, mapped label, spacing in mm; with
        ``observers_in_meta`` also the observers' masks in ``meta["observers"]``). Raises :class:`ConfigError`
        for geometry mismatches, undeclared label values or NaN/inf HU."""
        return self._load(ref, self.observers_in_meta)

    def observer_masks(self, ref: CaseRef) -> dict[str, np.ndarray]:
        """The other annotators' masks of ``ref`` (observer name -> label map in LPS, mapped like the label)."""
        if not ref.observers:
            return {}
        return self._load(ref, True).meta["observers"]

    def _load(self, ref: CaseRef, observers: bool) -> Case:
        d = self.decode(ref, observers=observers)
        probs = self.dimension_problems(ref, d.image.shape)
        if d.raw_label is not None:
            lab_file = ref.label[0] if len(ref.label) == 1 else ref.label[0].parent
            probs += self.geometry_problems(ref, d.image.shape, d.spacing, d.raw_label.shape, d.label_spacing,
                                            lab_file)
        for name, (raw, sp) in d.observers.items():
            probs += self.geometry_problems(ref, d.image.shape, d.spacing, raw.shape, sp, ref.observers[name],
                                            f"observer '{name}' mask")
        label = None
        if not probs:
            label, cp = self.content_problems(ref, d)
            probs += cp
        errors = [p for p in probs if p.severity == "error"]
        if errors:
            raise ConfigError(f"case {ref.case_id} ({self.name}): " + "; ".join(
                f"{p.file + ': ' if p.file else ''}{p.message}" for p in errors)
                + " (run verify_dataset for a report over the whole data set)")
        meta = {"source": self.name, **ref.meta}
        files = ref.files
        if observers and ref.observers:
            meta["observers"] = dict(d.observer_labels)
            files = (*files, *ref.observers.values())
        return Case(ref.case_id, ref.patient_id, d.image, label, d.spacing, meta, files)

    def layout_problems(self, refs: Sequence[CaseRef]) -> list[Problem]:
        """Data-set level problems: duplicate case ids plus what :meth:`scan` found while pairing."""
        probs = list(self.scan_problems)
        seen: dict[str, CaseRef] = {}
        for ref in refs:
            if ref.case_id in seen:
                probs.append(Problem.error(
                    "duplicate_id", f"case id {ref.case_id!r} is used twice ({seen[ref.case_id].image[0].name} and "
                    f"{ref.image[0].name}): keep one file per case", ref.image[0], ref.case_id))
            else:
                seen[ref.case_id] = ref
        return probs

    def load_all(self) -> list[Case]:
        """Every case :meth:`scan` finds, decoded (convenience for small data sets)."""
        return [self.load(ref) for ref in self.scan()]


def build_reader(name: str, root: str | Path, **params: Any) -> Reader:
    """The reader called ``name`` for data under ``root``; unknown parameters raise :class:`ConfigError`
    listing the accepted ones."""
    cls = READERS.get(name)
    sig = inspect.signature(cls.__init__)
    accepted = [p for p in sig.parameters if p not in ("self", "root")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"dataset reader '{name}' does not take parameter(s) {', '.join(unknown)}; it accepts: "
                          f"{', '.join(accepted) or '(none)'}")
    return cls(root, **params)
