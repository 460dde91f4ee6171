"""Data sources chosen by name (``data.name``): each returns a :class:`SliceSet` of 2D slices in HU.

A source only reads or generates data; splitting, windowing and augmentation happen downstream in the
datamodule, so every source trains exactly like every other.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from musclelab.registry import Registry

if TYPE_CHECKING:
    from musclelab.data.source_volumes import SourceVolumes


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


@dataclass
class SliceSet:
    """2D slices with labels and physical spacing.

    images: ``(N, H, W)`` in HU — float32 in memory, or a read-only int16/float32 memory map from the slice
    cache, or a :class:`RowView` of one (index it; do not convert the whole array); labels: uint8 ``(N, H, W)``; spacing: float ``(N, 2)`` mm per pixel
    (row, column); meta: one row per slice with at least ``case_id`` and ``patient_id``;
    class_names: label value -> name, background first.
    observers: optional extra annotations of the same slices, observer name -> ``(N, H, W)`` label maps
    (human readers of an L3 folder, or the phantom's simulated observers).
    """

    images: np.ndarray
    labels: np.ndarray
    spacing: np.ndarray
    meta: pd.DataFrame
    class_names: tuple[str, ...]
    observers: dict[str, np.ndarray] | None = None

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
                        self.meta.iloc[index].reset_index(drop=True), self.class_names, observers)

    @staticmethod
    def concat(parts: list["SliceSet"]) -> "SliceSet":
        """Join slice sets with the same classes."""
        names = {p.class_names for p in parts}
        if len(names) != 1:
            raise ValueError(f"cannot join slice sets with different classes: {sorted(names)}")
        observers = None
        if all(p.observers for p in parts) and len({tuple(sorted(p.observers)) for p in parts}) == 1:
            observers = {k: np.concatenate([p.observers[k] for p in parts]) for k in parts[0].observers}
        return SliceSet(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
                        np.concatenate([p.spacing for p in parts]),
                        pd.concat([p.meta for p in parts], ignore_index=True), parts[0].class_names, observers)


@dataclass
class SourceData:
    """What a source hands the datamodule: a pool to split, and optionally a fixed external test set."""

    pool: SliceSet
    external_test: SliceSet | None = None
    # whole volumes of the pool's patients for volume-level scoring of 2D models (data/source_volumes.py)
    volumes: "SourceVolumes | None" = None


SourceFn = Callable[..., SourceData]
SOURCES: Registry[SourceFn] = Registry("dataset", "data.name")


@SOURCES.register("phantom")
def phantom_source(
    *, img_size: int, target: str = "muscle", site: str = "a", n_cases: int = 160,
    test_site: str | None = None, n_test_cases: int = 40, phantom_seed: int = 0, n_observers: int = 0,
    observer_cases: int | None = None,
) -> SourceData:
    """The built-in L3 phantom: ``n_cases`` subjects at ``site``; with ``test_site`` the test set is
    ``n_test_cases`` subjects of that other site (domain shift) instead of a hold-out of the pool.
    ``n_observers`` simulated readers re-contour every slice (for comparisons with human observers), or only the
    last ``observer_cases`` subjects of the pool (meta ``has_observers``; as the paper's observers contoured
    only its 37 test images: ``data.test_set=observers`` makes them the test set)."""
    from musclelab.data.phantom import LABEL_MAPS, generate_phantom, observer_masks

    if target not in LABEL_MAPS:
        raise ValueError(f"data.target '{target}' unknown for the phantom; known targets: {', '.join(LABEL_MAPS)}")

    def make(site_: str, n: int) -> SliceSet:
        ph = generate_phantom(n=n, size=img_size, site=site_, seed=phantom_seed)
        meta = ph.meta.copy()
        if "case_id" not in meta.columns:
            meta["case_id"] = meta["patient_id"]
        labels, spacing = ph.labels[target], np.asarray(ph.spacing, float)
        observers = None
        if n_observers > 0:
            per_case = np.stack([observer_masks(labels[i], spacing[i], n_observers, seed=(phantom_seed, i))
                                 for i in range(len(labels))])
            observers = {f"observer_{j + 1}": per_case[:, j] for j in range(n_observers)}
            if observer_cases is not None and site_ == site:  # the pool: only the last observer_cases subjects
                if not 0 < observer_cases < len(labels):
                    raise ValueError(f"data.source.observer_cases={observer_cases} must be in 1..{len(labels) - 1}")
                meta["has_observers"] = np.arange(len(labels)) >= len(labels) - observer_cases
        return SliceSet(ph.images.astype(np.float32), labels, spacing, meta, tuple(LABEL_MAPS[target]), observers)

    pool = make(site, n_cases)
    external = make(test_site, n_test_cases) if test_site else None
    return SourceData(pool, external)


@SOURCES.register("abdomen_phantom")
def abdomen_phantom_source(*, img_size: int, site: str = "lits", n_volumes: int = 20, target: str = "liver",
                           slices: str = "target", margin: int = 2, phantom_seed: int = 0,
                           test_site: str | None = None, n_test_volumes: int = 6) -> SourceData:
    """The built-in 3D abdominal phantom with a liver: ``n_volumes`` volumes of ``site`` (lits | btcv | chaos),
    served as 2D axial slices. ``target``: liver (label >= 1) | tumour (label 2) | liver_tumour (3 classes);
    ``slices``: ``target`` (slices containing the target +- ``margin`` slices) or ``all``. A volume's slices
    share its ``patient_id`` (patient-level splits keep them together). With ``test_site`` the test set is
    ``n_test_volumes`` volumes of that site (drawn after the pool's volumes when it is the pool's own site)."""
    from musclelab.data.abdomen_phantom import LIVER_SITES, TARGET_ALIASES, TARGETS, generate_abdomen_volume
    from musclelab.data.preprocess import target_slice_indices

    target = TARGET_ALIASES.get(str(target), str(target))
    if target not in TARGETS:
        raise ValueError(f"data.source.target '{target}' unknown for the abdomen phantom; known targets: "
                         f"{', '.join(TARGETS)}")
    for field_, value in (("site", site), ("test_site", test_site)):
        if value is not None and value not in LIVER_SITES:
            raise ValueError(f"data.source.{field_} '{value}' unknown for the abdomen phantom; known sites: "
                             f"{', '.join(LIVER_SITES)}")
    if slices not in ("target", "all"):
        raise ValueError(f"data.source.slices must be 'target' or 'all', got '{slices}'")
    if int(margin) < 0:
        raise ValueError(f"data.source.margin must be >= 0, got {margin}")
    if int(n_volumes) < 1:
        raise ValueError(f"data.source.n_volumes must be >= 1, got {n_volumes}")
    mapping, class_names = TARGETS[target]
    lut = np.zeros(256, np.uint8)
    for raw, cls in mapping.items():
        lut[raw] = cls

    def make(site_: str, n: int, start: int, what: str) -> SliceSet:
        images, labels, spacing, rows = [], [], [], []
        for i in range(start, start + n):
            vol = generate_abdomen_volume(i, site=site_, seed=phantom_seed, size=img_size)
            lab = lut[vol.label]
            index = np.arange(len(lab)) if slices == "all" else target_slice_indices(lab, int(margin))
            if len(index) == 0:
                continue
            images.append(vol.image[index])
            labels.append(lab[index])
            spacing.append(np.tile([vol.spacing[1], vol.spacing[2]], (len(index), 1)))
            for k in index:
                rows.append({"case_id": f"{vol.meta['volume_id']}_z{int(k):03d}", "slice_index": int(k), **vol.meta})
        if not rows:
            raise ValueError(f"no slice of the {n} abdomen phantom volumes of site '{site_}' ({what}) contains the "
                             f"target '{target}' (site {site_} has tumours in {LIVER_SITES[site_].p_tumour:.0%} of "
                             "volumes): use more volumes, another site or target, or data.source.slices=all")
        meta = pd.DataFrame(rows)
        lead = ["case_id", "patient_id", "slice_index", "site", "contrast_phase"]
        meta = meta[lead + [c for c in meta.columns if c not in lead]]
        return SliceSet(np.concatenate(images).astype(np.float32), np.concatenate(labels), np.concatenate(spacing),
                        meta, tuple(class_names))

    pool = make(site, int(n_volumes), 0, "data.source.n_volumes")
    external = None
    if test_site:
        start = int(n_volumes) if test_site == site else 0
        external = make(test_site, int(n_test_volumes), start, "data.source.n_test_volumes")
    return SourceData(pool, external)


def _reader_source(name: str) -> SourceFn:
    """A source that reads data set ``name`` from ``root`` through its reader, checks it, and serves its 2D
    slices from the memory-mapped slice cache (built on first use, rebuilt when files or settings change)."""

    def source(*, img_size: int, root: str | None, cache_dir: str, slices: str = "target", margin: int = 0,
               reader: dict | None = None) -> SourceData:
        from musclelab.data.cache import SliceCache
        from musclelab.data.preprocess import SlicePreprocess
        from musclelab.data.readers import build_reader
        from musclelab.data.verify import verify_dataset
        from musclelab.errors import ConfigError

        if not root:
            raise ConfigError(f"data={name} needs the data set's folder: add data.root=/path/to/{name}")
        rdr = build_reader(name, root, **(reader or {}))
        verify_dataset(rdr, decode=False).raise_if_errors()  # headers only; decoding checks run in the cache build
        pre = SlicePreprocess(img_size=img_size, slices=slices, margin=margin)
        pool = SliceCache.build_or_load(rdr, pre, cache_dir, name)
        pool.observers = _reader_observers(rdr, pool, img_size)
        from musclelab.data.source_volumes import reader_volumes

        return SourceData(pool, volumes=reader_volumes(rdr, img_size))  # whole volumes for eval.level=volume

    source.__doc__ = f"Data set '{name}' from data.root through the '{name}' reader and the slice cache."
    return source


def _reader_observers(reader, pool: SliceSet, img_size: int) -> dict[str, np.ndarray] | None:
    """Extra annotators' masks of single-slice cases (an L3 folder's ``observers/<name>/<id>.*``), resized like
    the cached slices; None when no case has them. Only observers who annotated every annotated case are kept,
    so each observer is compared on the same slices. When only some cases were annotated (the paper's observers
    contoured its test images only), the others get empty masks and ``pool.meta["has_observers"]`` marks which
    are real (``data.test_set=observers`` tests on exactly those)."""
    refs = {r.case_id: r for r in reader.scan() if r.observers}
    if not refs:
        return None
    from musclelab.data.preprocess import resize_labels

    names = set.intersection(*(set(r.observers) for r in refs.values()))
    per_name: dict[str, list[np.ndarray]] = {n: [] for n in sorted(names)}
    has: list[bool] = []
    for source_id, slice_index in zip(pool.meta["source_case_id"], pool.meta["slice_index"]):
        ref = refs.get(str(source_id))
        if not names:
            return None
        has.append(ref is not None)
        if ref is None:  # not annotated by the observers: an empty mask, marked in meta
            for n in per_name:
                per_name[n].append(np.zeros(pool.labels.shape[1:], np.uint8))
            continue
        masks = reader.observer_masks(ref)
        for n in per_name:
            mask = masks[n] if masks[n].ndim == 2 else masks[n][int(slice_index)]
            per_name[n].append(resize_labels(mask[None], img_size)[0])
    if not all(has):
        pool.meta["has_observers"] = has
    return {n: np.stack(v) for n, v in per_name.items()} if per_name else None


for _name in ("lits", "btcv", "chaos", "l3_folder", "msd"):
    SOURCES.register(_name)(_reader_source(_name))


# arguments the datamodule supplies itself (from data.img_size, data.root, data.cache_dir), not data.source
SUPPLIED = ("img_size", "root", "cache_dir")


def load_source(name: str, img_size: int, params: dict, root: str | None = None,
                cache_dir: str | None = None, labels: list[str] | None = None) -> SourceData:
    """Run the source called ``name`` with its ``data.source`` parameters; unknown parameters name the field.
    ``labels`` (``data.labels``) reduces it to those classes, renumbered 1..k (:mod:`musclelab.data.labels`)."""
    fn = SOURCES.get(name)
    signature = inspect.signature(fn).parameters
    known = [p for p in signature if p not in SUPPLIED]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(
            f"data.source.{unknown[0]} is not a parameter of dataset '{name}'; known parameters: {', '.join(known)}"
        )
    supplied = {"img_size": img_size, "root": root, "cache_dir": cache_dir}
    if root and "root" not in signature:
        raise ValueError(f"data.root is set but dataset '{name}' is generated, not read; remove data.root")
    from musclelab.data.labels import apply_to_source

    return apply_to_source(fn(**{k: v for k, v in supplied.items() if k in signature}, **params), labels)


from musclelab.data import lumbar_source  # noqa: E402,F401  (registers lumbar_phantom; needs SOURCES above)
