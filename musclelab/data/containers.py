"""The data containers between the stores and the datamodule; a reader's record is :class:`~musclelab.data.case.Case`.

* :class:`SliceSet`: 2D slices in HU with labels, spacing (mm), meta and class names (in memory, or memory-mapped
  from the slice store, :mod:`musclelab.data.cache`); subsets are lazy :class:`RowView` s of the memory map.
* :class:`VolumeSet`: the volume store's cached volumes (:mod:`musclelab.data.volume_cache`), opened lazily.
* :class:`OriginalSlice`: one slice as acquired (original resolution, HU) with its reference and observers'
  contours: what the McSweeney bone post-processing and SMA/SMD are measured on (``SliceSet.originals``).
* :class:`SourceData`: what a source hands the datamodule: the pool to split, an optional external test set and,
  for volume-level scoring of 2D models (``eval.level``), a loader of the whole volumes behind the slices
  (patient id -> :class:`~musclelab.data.case.Case` s).

A reader's record and a whole volume are both :class:`~musclelab.data.case.Case`; nothing else is needed.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from musclelab.data.case import Case


class RowView:
    """Rows ``index`` of a (memory-mapped) array, without reading them: indexing reads only the rows asked for.

    Splitting a cached data set into train/val/test then costs no memory, however large the cache.
    """

    def __init__(self, base: "np.ndarray | RowView", index: np.ndarray) -> None:
        index = np.asarray(index, dtype=np.int64)
        if isinstance(base, RowView):
            base, index = base.base, base.index[index]
        self.base, self.index = base, index

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.base.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    def __getitem__(self, key: int | slice | np.ndarray) -> np.ndarray:
        return self.base[self.index[key]]

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        rows = np.asarray(self.base[self.index])
        return rows if dtype is None else rows.astype(dtype)


def _rows(array: "np.ndarray | RowView", index: np.ndarray) -> "np.ndarray | RowView":
    """``array[index]``: a lazy :class:`RowView` for memory-mapped data, a copy for arrays in memory."""
    return RowView(array, index) if isinstance(array, (np.memmap, RowView)) else array[index]


@dataclass(frozen=True)
class OriginalSlice:
    """One slice at its original resolution: ``hu`` float HU ``(h, w)``, ``label`` the reference ``(h, w)`` (the
    slice set's classes), ``spacing`` (row, col) mm per pixel and ``observers`` name -> ``(h, w)`` mask of the
    observers who contoured it (empty when none)."""

    hu: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float]
    observers: dict[str, np.ndarray] = field(default_factory=dict)


#: ``originals(case_id)``: a slice's :class:`OriginalSlice`, read on demand (the test cases only are asked for)
OriginalLoader = Callable[[str], OriginalSlice]


@dataclass
class SliceSet:
    """2D slices with labels and physical spacing.

    images: ``(N, H, W)`` in HU — float32 in memory, or a read-only int16/float32 memory map from the slice
    cache, or a :class:`RowView` of one (index it; do not convert the whole array); labels: uint8 ``(N, H, W)``; spacing: float ``(N, 2)`` mm per pixel
    (row, column); meta: one row per slice with at least ``case_id`` and ``patient_id``;
    class_names: label value -> name, background first.
    observers: optional extra annotations of the same slices, observer name -> ``(N, H, W)`` label maps
    (human readers of an L3 folder, or the phantom's simulated observers).
    originals: optional ``originals(case_id) -> OriginalSlice``: the slice as acquired (before the resize to
    ``data.img_size``), read on demand; body composition is then scored on it (``eval.body_composition``).
    None: the slices are the originals (generated at this size), or the source cannot re-read them.
    """

    images: np.ndarray
    labels: np.ndarray
    spacing: np.ndarray
    meta: pd.DataFrame
    class_names: tuple[str, ...]
    observers: dict[str, np.ndarray] | None = None
    originals: OriginalLoader | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if not (len(self.labels) == len(self.spacing) == len(self.meta) == n):
            raise ValueError("SliceSet: images, labels, spacing and meta must have the same length")
        for col in ("case_id", "patient_id"):
            if col not in self.meta.columns:
                raise ValueError(f"SliceSet.meta needs a '{col}' column")
        self.meta = self.meta.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> "SliceSet":
        """The slices at ``index`` (in that order)."""
        observers = {k: v[index] for k, v in self.observers.items()} if self.observers else None
        return SliceSet(_rows(self.images, index), _rows(self.labels, index), self.spacing[index],
                        self.meta.iloc[index].reset_index(drop=True), self.class_names, observers, self.originals)

    @staticmethod
    def concat(parts: list["SliceSet"]) -> "SliceSet":
        """Join slice sets with the same classes."""
        names = {p.class_names for p in parts}
        if len(names) != 1:
            raise ValueError(f"cannot join slice sets with different classes: {sorted(names)}")
        observers = None
        if all(p.observers for p in parts) and len({tuple(sorted(p.observers)) for p in parts}) == 1:
            observers = {k: np.concatenate([p.observers[k] for p in parts]) for k in parts[0].observers}
        loaders = {id(p.originals): p.originals for p in parts}
        originals = parts[0].originals if len(loaders) == 1 else None  # one loader for all parts, or none
        return SliceSet(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                        np.concatenate([p.spacing for p in parts]),
                        pd.concat([p.meta for p in parts], ignore_index=True), parts[0].class_names, observers,
                        originals)


@dataclass
class VolumeSet:
    """Cached volumes, opened lazily (memory-mapped on access, so memory does not grow with their number).

    ``dirs``: the cache directory; ``meta``: one row per volume with ``case_id``, ``patient_id``, ``shape_*``,
    ``spacing_*`` (cached grid), ``source_*`` geometry, ``crop_*`` and ``source_file`` (the image it came from,
    for NIfTI output on its grid; empty for generated data); ``class_names``; ``raters``: names of extra
    annotations stored per volume (the phantom's raters).
    """

    root: Path
    meta: pd.DataFrame
    class_names: tuple[str, ...]
    raters: tuple[str, ...] = ()
    observers: None = field(default=None, repr=False)   # slice-set compatibility: volumes carry raters instead

    def __post_init__(self) -> None:
        self.meta = self.meta.reset_index(drop=True)
        for col in ("case_id", "patient_id"):
            if col not in self.meta.columns:
                raise ValueError(f"VolumeSet.meta needs a '{col}' column")

    def __len__(self) -> int:
        return len(self.meta)

    def subset(self, index: np.ndarray) -> "VolumeSet":
        return VolumeSet(self.root, self.meta.iloc[np.asarray(index, int)].reset_index(drop=True), self.class_names,
                         self.raters)

    def _load(self, kind: str, i: int) -> np.ndarray:
        return np.load(self.root / kind / f"{self.meta.at[i, 'case_id']}.npy", mmap_mode="r")

    def image(self, i: int) -> np.ndarray:
        """HU (int16, memory-mapped) of volume ``i`` on the cached grid."""
        return self._load("images", i)

    def label(self, i: int) -> np.ndarray:
        return self._load("labels", i)

    def source_label(self, i: int) -> np.ndarray:
        """The reference label on the source grid (for metrics in the source geometry)."""
        return self._load("source_labels", i)

    def rater(self, name: str, i: int) -> np.ndarray:
        """Rater ``name``'s label on the source grid."""
        return np.load(self.root / "raters" / name / f"{self.meta.at[i, 'case_id']}.npy", mmap_mode="r")

    def class_indices(self, i: int) -> list[np.ndarray]:
        """Per class, a random subsample of flat voxel indices of that class (for label-class patch sampling)."""
        z = np.load(self.root / "indices" / f"{self.meta.at[i, 'case_id']}.npy", mmap_mode="r")
        return [row[row >= 0] for row in np.asarray(z)]

    def spacing(self, i: int) -> tuple[float, float, float]:
        r = self.meta.iloc[i]
        return float(r["spacing_z_mm"]), float(r["spacing_row_mm"]), float(r["spacing_col_mm"])

    def source_spacing(self, i: int) -> tuple[float, float, float]:
        r = self.meta.iloc[i]
        return float(r["source_spacing_z_mm"]), float(r["source_spacing_row_mm"]), float(r["source_spacing_col_mm"])

    def geometry(self, i: int) -> dict[str, tuple[int, ...]]:
        r = self.meta.iloc[i]
        return {"resampled_shape": tuple(int(r[f"resampled_{a}"]) for a in "zyx"),
                "crop_start": tuple(int(r[f"crop_{a}"]) for a in "zyx"),
                "source_shape": tuple(int(r[f"source_{a}"]) for a in "zyx")}


#: the whole volumes of one patient (a patient may have several scans), loaded on demand
VolumeLoader = Callable[[str], list[Case]]


@dataclass
class SourceData:
    """What a source hands the datamodule: a pool to split (slices, or cached volumes in 3D), optionally a fixed
    external test set, and optionally ``volumes(patient_id) -> list[Case]``: the whole volumes of the pool's
    patients (volume-level scoring of 2D models). Each volume's ``image`` is float32 HU and ``label`` the pool's
    classes, ``(Z, H, W)`` on the in-plane grid of the slices, ``spacing`` mm ``(z, row, col)`` (z = the slice
    thickness) and, when known, ``meta["l3_index"]`` the L3 slice."""

    pool: "SliceSet | VolumeSet"
    external_test: SliceSet | None = None
    volumes: VolumeLoader | None = None
