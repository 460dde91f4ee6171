"""Preprocessing presets that turn a :class:`~musclelab.data.case.Case` into 2D training slices.

A preset (:class:`SlicePreprocess`) is a small frozen value: which slices of a volume to keep, the in-plane size
to resize them to and, optionally, a 3D target spacing to resample volumes to first. Its :meth:`to_dict` is what
the slice cache hashes, so changing any field rebuilds the cache and nothing else does.

Resampling uses MONAI (``Resize``, ``Spacing``); MONAI (slow to import) is only imported when a resize or a
resampling actually happens, so reading a built cache never pays for it.

Choices, in physical terms:

- In-plane resize keeps the field of view: a slice of ``H x W`` px at ``(sr, sc)`` mm becomes
  ``img_size x img_size`` px at ``(sr * H / img_size, sc * W / img_size)`` mm (512 px at 0.7 mm -> 128 px at
  2.8 mm), so areas in cm² computed downstream stay correct.
- Images are resized bilinearly; when downsampling, MONAI's anti-aliasing first smooths with a Gaussian of
  sigma ``(factor - 1) / 2`` px (as ``skimage.transform.resize`` does). We prefer this to ``area`` (box) averaging
  because it behaves the same for any factor (512 -> 224 as well as 512 -> 128), whereas area pooling over a
  non-integer factor averages windows of uneven width. Upsampling is plain bilinear.
- Labels are resized with ``nearest-exact`` (pixel centres mapped like the image's ``align_corners=False``
  grid, unlike torch's legacy ``nearest`` that shifts by half a pixel), so they stay integer label values
  aligned with the image.
- ``slices="target"`` keeps the slices whose label map has any foreground (label > 0), plus ``margin`` slices
  on either side (clipped to the volume).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

from musclelab.data.case import Case

# bump when the slice extraction / resampling code changes what it produces (invalidates every slice cache)
PREPROCESS_VERSION = 1

# slices resized per MONAI call: bounds the memory of one call on long volumes (1000 x 512 x 512 float32 = 1 GB)
_RESIZE_CHUNK = 32

SliceTuple = tuple[np.ndarray, np.ndarray, tuple[float, float], int]


@dataclass(frozen=True)
class SlicePreprocess:
    """How a case becomes 2D slices.

    img_size: resize every slice to ``img_size x img_size`` px keeping its physical extent (spacing in mm scales
        by ``old_px / img_size``); None keeps the native size.
    slices: ``"all"`` slices of a volume, or only the ``"target"`` slices (label > 0) plus ``margin`` slices on
        each side. A 2D case is always its one slice (with ``"target"`` it is kept only if it has foreground).
    margin: number of extra slices kept on each side of the target with ``slices="target"``.
    spacing_3d: if set, volumes are first resampled to this spacing in mm per axis ``(z, row, col)``
        (:func:`resample_volume`); 2D cases are unaffected.
    """

    img_size: int | None = None
    slices: Literal["all", "target"] = "all"
    margin: int = 0
    spacing_3d: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.img_size is not None and (not isinstance(self.img_size, (int, np.integer)) or self.img_size < 1):
            raise ValueError(f"SlicePreprocess.img_size must be a positive integer or None, got {self.img_size!r}")
        if self.slices not in ("all", "target"):
            raise ValueError(f"SlicePreprocess.slices must be 'all' or 'target', got {self.slices!r}")
        if not isinstance(self.margin, (int, np.integer)) or self.margin < 0:
            raise ValueError(f"SlicePreprocess.margin must be a non-negative integer, got {self.margin!r}")
        if self.spacing_3d is not None:
            sp = tuple(float(s) for s in self.spacing_3d)
            if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
                raise ValueError(f"SlicePreprocess.spacing_3d must be three positive mm values, "
                                 f"got {self.spacing_3d!r}")
            object.__setattr__(self, "spacing_3d", sp)  # lists from a config become a hashable tuple

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields (plus the code version) — the part of the slice-cache key this preset owns."""
        d = asdict(self)
        d["spacing_3d"] = list(self.spacing_3d) if self.spacing_3d is not None else None
        d["version"] = PREPROCESS_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SlicePreprocess":
        """Inverse of :meth:`to_dict` (ignores ``version``)."""
        d = {k: v for k, v in d.items() if k != "version"}
        if d.get("spacing_3d") is not None:
            d["spacing_3d"] = tuple(d["spacing_3d"])
        return cls(**d)


def resample_volume(case: Case, spacing: tuple[float, ...]) -> Case:
    """Resample a case to ``spacing`` (mm per array axis) with MONAI ``Spacing``.

    Image: trilinear (bilinear in 2D), border padding, float32 HU. Label: nearest. The output grid keeps the first
    and last voxel centres (MONAI's convention), so the extent in mm is preserved to within one output voxel.
    No anti-aliasing is applied when downsampling (MONAI ``Spacing`` has none). Returns the case unchanged if it
    already has that spacing.
    """
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    target = tuple(float(s) for s in spacing)
    nd = case.image.ndim
    if len(target) != nd:
        raise ValueError(f"{case.case_id}: target spacing {target} has {len(target)} axes, image has {nd}")
    if np.allclose(target, case.spacing, rtol=1e-6, atol=0):
        return case
    affine = torch.diag(torch.tensor([*case.spacing, *([1.0] * (4 - nd))], dtype=torch.float64))

    def run(arr: np.ndarray, mode: str) -> tuple[np.ndarray, tuple[float, ...]]:
        mt = MetaTensor(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None], affine=affine.clone())
        out = Spacing(pixdim=target, mode=mode, padding_mode="border", align_corners=False, dtype=np.float32)(mt)
        return out.detach().cpu().numpy()[0], tuple(float(s) for s in out.pixdim.tolist())

    image, new_spacing = run(case.image, "bilinear")
    label = None
    if case.label is not None:
        lab, _ = run(case.label, "nearest")
        label = np.rint(lab).astype(case.label.dtype, copy=False)
    return replace(case, image=image.astype(np.float32, copy=False), label=label, spacing=new_spacing)


def target_slice_indices(label: np.ndarray, margin: int = 0) -> np.ndarray:
    """Indices ``z`` of a ``(z, row, col)`` label map whose slice has foreground (>0), dilated by ``margin``
    slices on each side and clipped to the volume; sorted, unique."""
    has = np.asarray(label).reshape(label.shape[0], -1).any(axis=1)
    idx = np.flatnonzero(has)
    if margin and idx.size:
        idx = np.unique(np.clip((idx[:, None] + np.arange(-margin, margin + 1)[None]).ravel(), 0, label.shape[0] - 1))
    return idx.astype(np.int64)


def _resize_stack(images: np.ndarray, labels: np.ndarray | None, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize ``(n, H, W)`` stacks to ``(n, size, size)``: images bilinear (anti-aliased when shrinking), labels
    nearest-exact. The slices are the channel axis of one 2D MONAI call, in chunks of :data:`_RESIZE_CHUNK`."""
    import torch
    from monai.transforms import Resize

    n, h, w = images.shape
    down = size < h or size < w
    rs_img = Resize((size, size), mode="bilinear", align_corners=False, anti_aliasing=down, dtype=torch.float32)
    rs_lab = Resize((size, size), mode="nearest-exact", dtype=torch.float32)
    out_img = np.empty((n, size, size), np.float32)
    out_lab = None if labels is None else np.empty((n, size, size), labels.dtype)
    for s in range(0, n, _RESIZE_CHUNK):
        sl = slice(s, min(n, s + _RESIZE_CHUNK))
        chunk = torch.from_numpy(np.ascontiguousarray(images[sl], dtype=np.float32))
        out_img[sl] = np.asarray(rs_img(chunk).detach().cpu().numpy(), np.float32)
        if labels is not None:
            lab = torch.from_numpy(np.ascontiguousarray(labels[sl], dtype=np.float32))
            out_lab[sl] = np.rint(rs_lab(lab).detach().cpu().numpy()).astype(labels.dtype)
    return out_img, out_lab


def resize_slices(images: np.ndarray, labels: np.ndarray | None, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize ``(n, H, W)`` HU slices and their labels to ``(n, size, size)`` exactly as the slice store does
    (images bilinear, anti-aliased when shrinking; labels nearest-exact)."""
    return _resize_stack(images, labels, size)


def resize_labels(labels: np.ndarray, size: int | None) -> np.ndarray:
    """Resize a ``(n, H, W)`` label stack to ``(n, size, size)`` exactly as cached labels are (nearest-exact);
    unchanged when ``size`` is None or already the size."""
    if size is None or labels.shape[1:] == (size, size):
        return labels
    return _resize_stack(labels.astype(np.float32), labels, size)[1]


def case_to_slice_arrays(
    case: Case, pre: SlicePreprocess
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """The slices of ``case`` under ``pre`` as stacked arrays.

    Returns ``images`` float32 HU ``(n, H, W)``, ``labels`` ``(n, H, W)`` in the label's integer dtype (None if the
    case has no label), ``spacing`` float64 ``(n, 2)`` mm per pixel (row, col) and ``slice_index`` int64 ``(n,)``:
    the z index in the (resampled, if ``spacing_3d``) volume, 0 for a 2D case. ``n`` may be 0 (``"target"`` on a
    case without foreground). Without resizing, the arrays may share memory with ``case`` (do not modify them).
    """
    if pre.spacing_3d is not None and case.is_volume:
        case = resample_volume(case, pre.spacing_3d)
    image, label = case.image, case.label
    if pre.slices == "target" and label is None:
        raise ValueError(f"{case.case_id}: slices='target' needs a label map, but the case has none"
                         + (f" ({case.files[0]})" if case.files else ""))
    if image.ndim == 2:
        image, label = image[None], (None if label is None else label[None])
        in_plane = (float(case.spacing[0]), float(case.spacing[1]))
    else:
        in_plane = (float(case.spacing[1]), float(case.spacing[2]))
    index = np.arange(image.shape[0], dtype=np.int64)
    if pre.slices == "target":
        index = target_slice_indices(label, pre.margin)
    every = len(index) == image.shape[0]  # all slices: no fancy-index copy of a possibly 1 GB volume
    images = np.asarray(image if every else image[index], dtype=np.float32)
    labels = None if label is None else np.asarray(label if every else label[index])
    if labels is not None and not np.issubdtype(labels.dtype, np.integer):
        if not np.array_equal(labels, np.rint(labels)):
            raise ValueError(f"{case.case_id}: label map has non-integer values")
        labels = labels.astype(np.int64)
    h, w = images.shape[1:]
    spacing = np.tile(np.asarray(in_plane, np.float64), (len(index), 1))
    if pre.img_size is not None and (h, w) != (pre.img_size, pre.img_size) and len(index):
        images, labels = _resize_stack(images, labels, pre.img_size)
        spacing = spacing * np.array([h / pre.img_size, w / pre.img_size])
    return images, labels, spacing, index


def case_to_slices(case: Case, pre: SlicePreprocess) -> list[SliceTuple]:
    """The slices of ``case`` under ``pre``: a list of ``(image2d float32 HU, label2d or None, (row_mm, col_mm),
    slice_index)``. Volumes give their z slices (rows x cols, in-plane spacing); a 2D case gives one slice with
    index 0."""
    images, labels, spacing, index = case_to_slice_arrays(case, pre)
    return [(images[i], None if labels is None else labels[i], (float(spacing[i, 0]), float(spacing[i, 1])),
             int(index[i])) for i in range(len(index))]
