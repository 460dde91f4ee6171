"""The one registry of data sources (``data.name``): each source declares the forms it serves — 2D slices
(``data.spatial_dims: 2``) and/or volumes (``data.spatial_dims: 3``) — and the class names its settings give.

* Built-in phantoms (:mod:`musclelab.data.phantom_sources`): ``phantom`` (L3, slices), ``abdomen_phantom``
  (slices and volumes), ``lumbar_phantom`` (slices, with their whole volumes), ``thigh_phantom`` (volumes).
* Data sets read from ``data.root`` through their reader (:mod:`musclelab.data.readers`), after a header check
  (:func:`musclelab.data.verify.verify_dataset`): ``lits``, ``btcv``, ``chaos``, ``msd`` (slices and volumes),
  ``l3_folder`` (slices). Slices come from the slice store (:mod:`musclelab.data.cache`), volumes from the
  volume store (:mod:`musclelab.data.volume_cache`).

An unknown name, or a name without the form asked for, fails before any data is loaded, listing the known ones
(:func:`source_form`). :func:`load_source` (slices) and :func:`load_volume_source` (volumes) are the entry points
the datamodule calls; :func:`check_labels_early` checks ``data.labels`` against the declared class names.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from musclelab.data import phantom_sources as ph
from musclelab.data.case import Case
from musclelab.data.containers import (OriginalLoader, OriginalSlice, SliceSet, SourceData, VolumeLoader,
                                       VolumeSet)
from musclelab.data.labels import apply_to_source, resolve_labels
from musclelab.errors import ConfigError
from musclelab.registry import Registry

FORMS = {2: "slices", 3: "volumes"}


@dataclass(frozen=True)
class Source:
    """One data set: ``slices(**params) -> SourceData`` and/or ``volumes(**params) -> VolumeItems`` (``None``: the
    form is not served), ``class_names(**params)`` the classes its settings give (``None`` when only loading can
    tell), ``reads_files``: read from ``data.root`` (``True``) or generated (``False``)."""

    slices: Callable[..., SourceData] | None
    volumes: Callable[..., Any] | None
    class_names: Callable[..., tuple[str, ...] | None]
    reads_files: bool = False

    @property
    def forms(self) -> tuple[int, ...]:
        """The ``data.spatial_dims`` this source serves."""
        return tuple(d for d, f in ((2, self.slices), (3, self.volumes)) if f is not None)


SOURCES: Registry[Source] = Registry("dataset", "data.name")

SOURCES.register("phantom")(Source(ph.l3_slices, None, ph.l3_class_names))
SOURCES.register("abdomen_phantom")(Source(ph.abdomen_slices, ph.abdomen_volumes, ph.abdomen_class_names))
SOURCES.register("lumbar_phantom")(Source(ph.lumbar_slices, None, ph.lumbar_class_names))
SOURCES.register("thigh_phantom")(Source(None, ph.thigh_volumes, ph.thigh_class_names))


def source_form(name: str, spatial_dims: int = 2) -> Callable[..., Any]:
    """The builder of source ``name`` in the form ``spatial_dims`` asks for (2: slices, 3: volumes).

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the known data sets).
        ConfigError: the source does not serve that form (the message lists the data sets that do).
    """
    src = SOURCES.get(name)
    fn = src.slices if int(spatial_dims) == 2 else src.volumes
    if fn is None:
        other = {2: 3, 3: 2}[int(spatial_dims)]
        serving = [n for n in SOURCES.names() if int(spatial_dims) in SOURCES.get(n).forms]
        raise ConfigError(f"data.name={name} has no {FORMS[int(spatial_dims)][:-1]} form (data.spatial_dims="
                          f"{spatial_dims}; it serves data.spatial_dims={other}); {FORMS[int(spatial_dims)]} data "
                          f"sets: {', '.join(serving)}")
    return fn


# --- reader-backed sources ---------------------------------------------------------------------------------------


def open_reader(name: str, root: str | None, reader: dict | None = None) -> Any:
    """The reader of data set ``name`` on ``root`` (``data.source.reader`` settings), headers checked."""
    from musclelab.data.readers import build_reader
    from musclelab.data.verify import verify_dataset

    if not root:
        raise ConfigError(f"data={name} needs the data set's folder: add data.root=/path/to/{name}")
    rdr = build_reader(name, root, **(reader or {}))
    verify_dataset(rdr, decode=False).raise_if_errors()  # headers only; decoding checks run in the store's build
    return rdr


def _reader_slices(name: str) -> Callable[..., SourceData]:
    def slices(*, img_size: int, root: str | None, cache_dir: str, slices: str = "target", margin: int = 0,
               reader: dict | None = None) -> SourceData:
        from musclelab.data.cache import SliceCache
        from musclelab.data.preprocess import SlicePreprocess

        rdr = open_reader(name, root, reader)
        pool = SliceCache.build_or_load(rdr, SlicePreprocess(img_size=img_size, slices=slices, margin=margin),
                                        cache_dir, name)
        pool.observers = reader_observers(rdr, pool, img_size)
        pool.originals = reader_originals(rdr, pool)  # the slices as acquired, re-read for the test cases
        return SourceData(pool, volumes=reader_volumes(rdr, img_size))  # whole volumes for eval.level=volume

    slices.__doc__ = f"Data set '{name}' from data.root through the '{name}' reader and the slice store."
    return slices


def _reader_volumes(name: str) -> Callable[..., Any]:
    def volumes(*, root: str | None, cache_dir: str, reader: dict | None = None, **_slice_only: Any) -> Any:
        from musclelab.data.volume_cache import ReaderVolumes

        return ReaderVolumes(open_reader(name, root, reader), name, Path(cache_dir))

    volumes.__doc__ = f"Data set '{name}' read from data.root as volumes."
    return volumes


def _reader_class_names(name: str) -> Callable[..., tuple[str, ...] | None]:
    def class_names(root: str | None = None, reader: dict | None = None, **_: Any) -> tuple[str, ...] | None:
        if not root:
            return None
        from musclelab.data.readers import build_reader

        return tuple(build_reader(name, root, **(reader or {})).class_names)

    return class_names


for _name, _forms in (("lits", (2, 3)), ("btcv", (2, 3)), ("chaos", (2, 3)), ("msd", (2, 3)), ("l3_folder", (2,))):
    SOURCES.register(_name)(Source(_reader_slices(_name), _reader_volumes(_name) if 3 in _forms else None,
                                   _reader_class_names(_name), reads_files=True))


def reader_observers(reader: Any, pool: SliceSet, img_size: int) -> dict[str, np.ndarray] | None:
    """Extra annotators' masks of single-slice cases (an L3 folder's ``observers/<name>/<id>.*``), resized like
    the cached slices; None when no case has them. Every observer is kept, each on the cases they annotated:
    ``pool.meta["observer_names"]`` lists a case's observers (";"-separated) and the others' masks of that case
    are empty (McSweeney 2022, §2.4: two groups of radiographers contoured 20 test images each, some images have
    four contours, so no observer annotated every case). When only some cases were annotated (the paper's
    observers contoured its test images only), ``pool.meta["has_observers"]`` marks which
    (``data.test_set=observers`` tests on exactly those)."""
    refs = {r.case_id: r for r in reader.scan() if r.observers}
    if not refs:
        return None
    from musclelab.data.preprocess import resize_labels

    names = sorted(set.union(*(set(r.observers) for r in refs.values())))
    per_name: dict[str, list[np.ndarray]] = {n: [] for n in names}
    has: list[bool] = []
    present: list[str] = []
    empty = np.zeros(pool.labels.shape[1:], np.uint8)
    for source_id, slice_index in zip(pool.meta["source_case_id"], pool.meta["slice_index"]):
        ref = refs.get(str(source_id))
        has.append(ref is not None)
        mine = sorted(ref.observers) if ref is not None else []
        present.append(";".join(mine))
        masks = reader.observer_masks(ref) if ref is not None else {}
        for n in per_name:  # an observer who did not annotate this case: an empty mask, not listed in meta
            if n not in mine:
                per_name[n].append(empty)
                continue
            mask = masks[n] if masks[n].ndim == 2 else masks[n][int(slice_index)]
            per_name[n].append(resize_labels(mask[None], img_size)[0])
    if not all(has):
        pool.meta["has_observers"] = has
    pool.meta["observer_names"] = present
    return {n: np.stack(v) for n, v in per_name.items()}


def reader_originals(reader: Any, pool: SliceSet) -> OriginalLoader:
    """``originals(case_id)``: a cached slice as acquired — re-read from ``data.root`` through the reader at its
    own resolution, HU and spacing, with its reference and its observers' masks (:class:`OriginalSlice`).

    Re-read rather than stored: only the test cases are asked for, and caches built before originals existed
    load unchanged. The cache's key covers the source files (``os.stat``), so the slice re-read is the one the
    cache was built from; a case that can no longer be read raises ``OSError``/``ValueError`` and the caller
    scores on the network grid (saying so)."""
    from musclelab.data.preprocess import SlicePreprocess, case_to_slice_arrays

    refs = {str(r.case_id): r for r in reader.scan()}
    rows = {str(c): (str(s), int(z)) for c, s, z in zip(pool.meta["case_id"], pool.meta["source_case_id"],
                                                       pool.meta["slice_index"])}
    native = SlicePreprocess(img_size=None, slices="all")  # the in-plane grid as acquired
    last: dict[str, Any] = {}  # the last decoded case: consecutive test slices of one volume decode it once

    def originals(case_id: str) -> OriginalSlice:
        source_id, z = rows[str(case_id)]
        ref = refs.get(source_id)
        if ref is None:
            raise ValueError(f"case '{source_id}' is no longer in data.root")
        if last.get("id") != source_id:
            case = reader.load(ref)
            last.clear()
            last.update(id=source_id, arrays=case_to_slice_arrays(case, native),
                        observers=reader.observer_masks(ref) if ref.observers else {})
        images, labels, spacing, _ = last["arrays"]
        if labels is None:
            raise ValueError(f"case '{source_id}' has no label map")
        obs = {n: (m if m.ndim == 2 else m[z]) for n, m in last["observers"].items()}
        return OriginalSlice(np.asarray(images[z], np.float32), np.asarray(labels[z], np.uint8),
                             (float(spacing[z, 0]), float(spacing[z, 1])), obs)

    return originals


def reader_volumes(reader: Any, img_size: int | None) -> VolumeLoader:
    """The whole volumes of a reader-backed source (``data=<name> data.root=DIR``): each case of a patient decoded
    by the reader and every slice resized in-plane exactly as the slice store resizes them (same ``img_size``), so
    a 2D model sees the grid it was trained on; the z spacing is the scan's own. ``meta["l3_index"]`` of a case,
    when its reader provides one, marks the L3 slice."""
    from musclelab.data.preprocess import SlicePreprocess, case_to_slice_arrays

    pre = SlicePreprocess(img_size=img_size, slices="all")
    by_patient: dict[str, list[Any]] = {}
    for ref in reader.scan():
        by_patient.setdefault(str(ref.patient_id), []).append(ref)

    def load(patient_id: str) -> list[Case]:
        out = []
        for ref in by_patient.get(patient_id, []):
            case = reader.load(ref)
            if case.label is None:
                continue
            images, labels, spacing, _ = case_to_slice_arrays(case, pre)
            z = float(case.spacing[0]) if case.is_volume else float("nan")
            l3 = case.meta.get("l3_index")
            out.append(Case(case.case_id, case.patient_id, images, np.asarray(labels, np.uint8),
                            (z, float(spacing[0, 0]), float(spacing[0, 1])),
                            {"l3_index": None if l3 is None else int(l3)}))
        return out

    return load


# --- loading -----------------------------------------------------------------------------------------------------

# arguments the datamodule supplies itself (from data.img_size, data.root, data.cache_dir), not data.source
SUPPLIED = ("img_size", "root", "cache_dir")


def load_source(name: str, img_size: int, params: dict, root: str | None = None,
                cache_dir: str | None = None, labels: list[str] | None = None) -> SourceData:
    """The slices of source ``name`` with its ``data.source`` parameters; unknown parameters name the field.
    ``labels`` (``data.labels``) reduces it to those classes, renumbered 1..k (:mod:`musclelab.data.labels`)."""
    fn = source_form(name, 2)
    signature = inspect.signature(fn).parameters
    known = [p for p in signature if p not in SUPPLIED]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(
            f"data.source.{unknown[0]} is not a parameter of dataset '{name}'; known parameters: {', '.join(known)}"
        )
    if root and not SOURCES.get(name).reads_files:
        raise ValueError(f"data.root is set but dataset '{name}' is generated, not read; remove data.root")
    supplied = {"img_size": img_size, "root": root, "cache_dir": cache_dir}
    return apply_to_source(fn(**{k: v for k, v in supplied.items() if k in signature}, **params), labels)


def load_volume_source(name: str, params: dict, pre: Any, root: str | None, cache_dir: str | None) -> VolumeSet:
    """The cached volumes of source ``name`` (``data.source`` = ``params``) preprocessed by ``pre``
    (:class:`~musclelab.data.volumes.VolumePreprocess`); unknown parameters name the field."""
    from musclelab.data.volume_cache import build_or_load

    fn = source_form(name, 3)
    if SOURCES.get(name).reads_files:
        items = fn(root=root, cache_dir=str(cache_dir), **params)
    else:
        known = list(inspect.signature(fn).parameters)
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ConfigError(f"data.source.{unknown[0]} is not a parameter of volume dataset '{name}'; known "
                              f"parameters: {', '.join(known)}")
        if root:
            raise ConfigError(f"data.root is set but dataset '{name}' is generated, not read; remove data.root")
        items = fn(**params)
    if not cache_dir:
        raise ConfigError("data.cache_dir is not set: volumes are cached on disk (paths.cache_dir)")
    return build_or_load(items, pre, cache_dir)


# --- class names from the settings alone --------------------------------------------------------------------------


def static_class_names(name: str, source: dict | None, root: str | None = None) -> tuple[str, ...] | None:
    """The class names source ``name`` will serve, known from its settings alone (no pixel data read);
    ``None`` when they can only be known by loading it."""
    if name not in SOURCES:
        return None
    try:
        return SOURCES.get(name).class_names(root=root, **dict(source or {}))
    except Exception:  # noqa: BLE001 - anything wrong here is reported by the source itself when it loads
        return None


def check_labels_early(data_cfg: Any) -> None:
    """Validate ``data.labels`` against the source's class names before any data is loaded (when they are
    known from the config); a no-op without ``data.labels``."""
    from musclelab.data.labels import FIELD

    labels = data_cfg.get("labels") if hasattr(data_cfg, "get") else None
    if labels is None:
        return
    labels = list(labels) if not isinstance(labels, str) else [labels]
    source = data_cfg.get("source")
    source = dict(source) if source is not None else {}
    names = static_class_names(str(data_cfg.get("name")), source, data_cfg.get("root"))
    if names is not None:
        resolve_labels(labels, names)
    elif not labels:
        raise ConfigError(f"{FIELD} is empty: name at least one foreground class")
