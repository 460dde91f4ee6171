"""File headers without pixels: shape and spacing after reorientation to LPS (and the native shape a PNG mask
must match), read cheaply by SimpleITK's image information (NIfTI also checked for truncation)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from musclelab.data.readers.decode import check_nifti_complete
from musclelab.data.readers.files import file_kind
from musclelab.data.readers.problems import UnreadableFileError, missing_file_error, short_reason
from musclelab.errors import ConfigError


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
            raise UnreadableFileError(path, "PNG", short_reason(e)) from None
        return Header(path, (h, w), None, (h, w))
    if kind == "NIfTI":
        check_nifti_complete(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise UnreadableFileError(path, kind, short_reason(e)) from None
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
