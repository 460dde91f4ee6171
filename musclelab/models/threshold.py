"""Non-learning HU-threshold muscle baseline (stand-in for a semi-automatic threshold tool).

Yoon et al. 2024 ("Accelerated muscle mass estimation from CT images through transfer learning") compare
their networks with a semi-automatic tool ("BMI TOOL", Table 3) that thresholds Hounsfield units after its
user has separated the inside of the abdomen from the wall by hand (the paper: it "needs to manually separate
the inside and outside of the abdomen and segments based on the HU value", and still labels parts of organs and
the spinal canal as muscle). We reproduce its two automatic steps:

* the HU window: -29..150 HU, the standard skeletal-muscle range at L3 of Mitsiopoulos et al. 1998
  ("Cadaver validation of skeletal muscle measurement by magnetic resonance imaging and computerized
  tomography", J Appl Physiol 85:115-122), used by Slice-O-Matic-style tools and by Yoon et al.'s tool;
* optionally, the **inner abdominal boundary** the user draws: pixels inside it (the visceral cavity with its
  organs) are not muscle. ``exclude`` is that region as a mask — from files the user provides
  (:func:`read_boundary_mask`) or, on the built-in L3 phantom, its known fascia (:func:`phantom_inner_boundary`).

Without the boundary every pixel of muscle-like density inside the body counts as muscle, so organs (liver,
kidneys, vessels, bowel wall) are false positives; with it, what remains are the failures the paper names
(structures outside the boundary such as the spinal canal, and organ tissue the boundary leaves outside).

This is *not* a trainable model and is not in the model registry: the networks receive windowed,
normalised inputs, whereas a threshold needs raw Hounsfield units. Use :func:`threshold_muscle` on one
slice or :func:`evaluate_threshold_baseline` for a table of per-case metrics (same keys as
:func:`musclelab.metrics.case_metrics`) plus the time per slice.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import ndimage

from musclelab.metrics import case_metrics

__all__ = ["MUSCLE_HU_RANGE", "body_mask", "threshold_muscle", "evaluate_threshold_baseline", "phantom_inner_boundary",
           "read_boundary_mask"]

#: The standard skeletal-muscle density window at L3, HU, inclusive: Mitsiopoulos et al. 1998, J Appl Physiol
#: 85:115-122 (the range Slice-O-Matic-style semi-automatic tools, and Yoon et al.'s, threshold with).
MUSCLE_HU_RANGE: tuple[float, float] = (-29.0, 150.0)


def body_mask(
    image_hu: ArrayLike,
    body_threshold_hu: float = -500.0,
    *,
    spacing_mm: float | Sequence[float] | None = None,
    detach_mm: float = 5.0,
) -> np.ndarray:
    """Body outline of one ``(H, W)`` HU slice: the largest 8-connected component above
    ``body_threshold_hu`` with its holes filled (bowel gas). Empty if nothing is above it.

    With ``spacing_mm`` ((row, col) mm) the thresholded mask is first opened with a disc of radius
    ``detach_mm`` mm, which cuts thin plates touching the body (the CT table top, ~3 mm) so they do not
    join the body component; without it the mask is used as is (the table may then count as body).
    """
    img = np.asarray(image_hu, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"body_mask expects one 2D slice (H, W), got shape {img.shape}")
    above = img > body_threshold_hu
    if spacing_mm is not None and detach_mm > 0:
        from musclelab.metrics import ellipsoid_structure

        se = ellipsoid_structure(detach_mm, spacing_mm, ndim=2)
        above = ndimage.binary_opening(above, structure=se)
    comp, n = ndimage.label(above, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros(img.shape, bool)
    sizes = np.bincount(comp.ravel())
    sizes[0] = 0
    return ndimage.binary_fill_holes(comp == int(sizes.argmax()))


def threshold_muscle(
    image_hu: np.ndarray,
    hu_min: float = MUSCLE_HU_RANGE[0],
    hu_max: float = MUSCLE_HU_RANGE[1],
    body_threshold_hu: float = -500.0,
    *,
    spacing_mm: float | Sequence[float] | None = None,
    detach_mm: float = 5.0,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean muscle mask of one ``(H, W)`` HU slice: ``hu_min <= HU <= hu_max`` inside :func:`body_mask`
    and outside ``exclude`` (the region inside the user's inner abdominal boundary; None: no boundary).

    No clean-up of the muscle mask: the plain density threshold that organs of muscle-like HU fool where no
    boundary excludes them. Pass ``spacing_mm`` so that the CT table is cut off the body outline (see
    :func:`body_mask`); otherwise the table top (~120 HU) may be counted as muscle too.
    """
    img = np.asarray(image_hu, dtype=np.float32)
    if hu_min > hu_max:
        raise ValueError(f"hu_min={hu_min} must not exceed hu_max={hu_max}")
    body = body_mask(img, body_threshold_hu, spacing_mm=spacing_mm, detach_mm=detach_mm)
    muscle = (img >= hu_min) & (img <= hu_max) & body
    if exclude is not None:
        ex = np.asarray(exclude)
        if ex.shape != img.shape:
            raise ValueError(f"the inner abdominal boundary mask is {ex.shape}, the slice {img.shape}")
        muscle &= ex == 0
    return muscle


def read_boundary_mask(folder: str | Path, case_id: str, shape: tuple[int, int]) -> np.ndarray:
    """The inner abdominal boundary a user drew for ``case_id``: ``<folder>/<case_id>.npy``, ``.png`` or
    ``.nii.gz`` (non-zero = inside the boundary, excluded), resampled to ``shape`` (nearest neighbour) when the
    slices were resized. ``FileNotFoundError`` naming the case and the folder when there is none."""
    root = Path(folder)
    for ext in (".npy", ".png", ".nii.gz", ".nii"):
        path = root / f"{case_id}{ext}"
        if path.is_file():
            break
    else:
        raise FileNotFoundError(f"no inner abdominal boundary mask for case {case_id!r} in {root} "
                                f"(model.params.boundary_dir: <case_id>.npy, .png or .nii.gz)")
    if path.suffix == ".npy":
        mask = np.load(path)
    elif path.suffix == ".png":
        from PIL import Image

        mask = np.asarray(Image.open(path))
    else:
        import SimpleITK as sitk

        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    mask = np.squeeze(np.asarray(mask))
    if mask.ndim == 3:
        mask = mask[..., 0] if mask.shape[-1] in (3, 4) else mask[0]
    if mask.shape != tuple(shape):
        zoom = (shape[0] / mask.shape[0], shape[1] / mask.shape[1])
        mask = ndimage.zoom((mask != 0).astype(np.uint8), zoom, order=0)[: shape[0], : shape[1]]
    return mask != 0


_PHANTOM_ID = re.compile(r"^phantom-(?P<site>[A-Za-z0-9]+)-(?P<index>\d+)$")


def phantom_inner_boundary(case_id: str, image_hu: np.ndarray, seed: int = 0) -> np.ndarray:
    """The known inner abdominal boundary of a built-in L3 phantom slice (``phantom-<site>-<index>``): the
    visceral cavity (the phantom's visceral fat and the organs and bowel inside the muscle fascia that touch it,
    holes filled), i.e. the region a user traces along the fascia, around the psoas and the spine (the spinal
    canal, enclosed by bone, stays outside, as in the paper's tool). The subject is regenerated at the
    slice's size from ``seed`` (``data.source.phantom_seed``); ``ValueError`` unless it reproduces
    ``image_hu`` exactly (another seed, a resized or a non-phantom slice)."""
    from musclelab.phantoms.l3 import generate_phantom

    m = _PHANTOM_ID.match(str(case_id))
    if m is None:
        raise ValueError(f"boundary=phantom needs the built-in L3 phantom; case {case_id!r} is not one "
                         "(use boundary=masks with model.params.boundary_dir for your data)")
    img = np.asarray(image_hu, dtype=np.float32)
    ph = generate_phantom(1, size=img.shape[0], site=m["site"], seed=int(seed), start=int(m["index"]))
    if ph.images[0].shape != img.shape or not np.array_equal(ph.images[0], img):
        raise ValueError(f"boundary=phantom: case {case_id} does not reproduce with phantom seed {seed} at "
                         f"{img.shape[0]} px; set model.params.phantom_seed to data.source.phantom_seed")
    tissue = ph.labels["tissue"][0]                        # TISSUE_NAMES: 0 other, 1 muscle, 3 visceral fat, 4 bone
    within = ndimage.binary_fill_holes(ndimage.binary_closing(np.isin(tissue, (1, 3, 4)), np.ones((3, 3), bool),
                                                              iterations=2))   # inside the muscle fascia
    parts, _ = ndimage.label((tissue == 3) | ((tissue == 0) & within))     # fat and the organs touching it
    cavity = np.unique(parts[tissue == 3])
    return ndimage.binary_fill_holes(np.isin(parts, cavity[cavity > 0]))


def evaluate_threshold_baseline(
    slices_hu: ArrayLike,
    labels: ArrayLike,
    spacing: ArrayLike,
    class_names: Sequence[str] = ("background", "muscle"),
    *,
    case_ids: Sequence[str] | None = None,
    hu_min: float = MUSCLE_HU_RANGE[0],
    hu_max: float = MUSCLE_HU_RANGE[1],
    body_threshold_hu: float = -500.0,
    detach_mm: float = 5.0,
    surface: bool = True,
) -> pd.DataFrame:
    """Run :func:`threshold_muscle` on every slice and score it against the labels.

    Args:
        slices_hu: ``(N, H, W)`` CT slices in HU.
        labels: ``(N, H, W)`` ground truth; any non-zero value is muscle (a multi-muscle map is binarised).
        spacing: ``(N, 2)`` (row, col) mm per slice, or one ``(2,)`` pair for all.
        class_names: two names, background first; they suffix the per-class metric keys.
        case_ids: optional identifiers for the ``case`` column (default ``"0" .. "N-1"``).
        detach_mm: radius (mm) of the opening that cuts the CT table off the body outline (0: none).
        surface: also compute the surface-distance metrics (mm).

    Returns:
        One row per slice: ``case``, the :func:`~musclelab.metrics.case_metrics` keys and ``time_ms`` (the
        wall-clock time of the thresholding itself, excluding the scoring).
    """
    imgs = np.asarray(slices_hu)
    lab = np.asarray(labels)
    if imgs.ndim != 3 or lab.shape != imgs.shape:
        raise ValueError(
            f"slices_hu and labels must both be (N, H, W) with the same shape, got {imgs.shape} and {lab.shape}"
        )
    names = list(class_names)
    if len(names) != 2:
        raise ValueError(f"the threshold baseline is binary: class_names needs 2 names, got {names}")
    n = len(imgs)
    sp = np.asarray(spacing, dtype=np.float64)
    if sp.shape == (2,):
        sp = np.broadcast_to(sp, (n, 2))
    if sp.shape != (n, 2):
        raise ValueError(f"spacing must be (N, 2) = ({n}, 2) or (2,), got {sp.shape}")
    ids = [str(i) for i in range(n)] if case_ids is None else [str(c) for c in case_ids]
    if len(ids) != n:
        raise ValueError(f"case_ids has {len(ids)} entries for {n} slices")
    rows = []
    for k in range(n):
        t0 = time.perf_counter()
        pred = threshold_muscle(imgs[k], hu_min, hu_max, body_threshold_hu, spacing_mm=tuple(sp[k]),
                                detach_mm=detach_mm)
        elapsed_ms = (time.perf_counter() - t0) * 1e3
        row: dict[str, object] = {"case": ids[k]}
        row.update(case_metrics(pred.astype(np.uint8), (lab[k] != 0).astype(np.uint8), tuple(sp[k]), names,
                                surface=surface))
        row["time_ms"] = elapsed_ms
        rows.append(row)
    return pd.DataFrame(rows)
