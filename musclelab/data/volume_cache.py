"""A content-addressed, memory-mapped cache of preprocessed volumes (the 3D counterpart of :mod:`.cache`).

Each volume is decoded (or generated) once, resampled and cropped by a :class:`~musclelab.data.volumes.
VolumePreprocess`, and stored as HU in int16 (rounded; the window is applied when a patch is read, so windows
change without a rebuild). Training memory-maps the arrays and reads only the patches it samples, so a job's
memory does not grow with the number of volumes.

Key: sha256 over the source's identity — for a reader, the identity every store uses
(:func:`musclelab.data.cache_core.reader_identity`: every file's relative path, size and mtime_ns, ids, reader
parameters, class names), for a generated phantom its generator parameters — and the preprocessing. The build
protocol (lock, temp dir, fsync of files and folders, ``manifest.json`` last, atomic rename) is the shared one,
:func:`musclelab.data.cache_core.build_once`.

Layout of ``<cache_root>/volumes/<name>-<key16>/``: ``images/<case>.npy`` int16 HU, ``labels/<case>.npy`` uint8,
``source_labels/<case>.npy`` (the label on the source grid, for metrics in the source geometry),
``raters/<rater>/<case>.npy`` (source grid), ``indices/<case>.npy`` (per class up to :data:`N_INDICES` random
flat voxel indices, -1 padded, for label-class patch sampling without scanning the volume), ``meta.csv``, ``manifest.json``.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import pandas as pd

from musclelab.data.cache_core import build_once, class_names_of, identity_key, reader_identity, save_npy
from musclelab.data.case import Case
from musclelab.data.containers import VolumeSet
from musclelab.data.volumes import VolumePreprocess, preprocess_volume
from musclelab.io import atomic_write_text

log = logging.getLogger(__name__)

VOLUME_CACHE_FORMAT = 2
# the reader identity's "format" entry: the slice store's format number, which these keys have always carried
READER_IDENTITY_FORMAT = 1
WHAT = "volume cache"
N_INDICES = 4096
_I16 = np.iinfo(np.int16)


class VolumeItems(Protocol):
    """What the cache needs from a volume source: its identity (JSON), the case ids and a loader."""

    name: str
    class_names: tuple[str, ...]

    def key_inputs(self) -> dict[str, Any]: ...

    def __len__(self) -> int: ...

    def load(self, i: int) -> tuple[Case, dict[str, np.ndarray]]: ...


@dataclass
class GeneratedVolumes:
    """Volumes produced by a seeded generator: ``make(i) -> (Case, raters)``; ``params`` identify them."""

    name: str
    class_names: tuple[str, ...]
    n: int
    params: dict[str, Any]
    make: Callable[[int], tuple[Case, dict[str, np.ndarray]]]

    def key_inputs(self) -> dict[str, Any]:
        return {"generator": self.name, "params": self.params, "n": self.n, "class_names": list(self.class_names)}

    def __len__(self) -> int:
        return self.n

    def load(self, i: int) -> tuple[Case, dict[str, np.ndarray]]:
        return self.make(i)


class ReaderVolumes:
    """A reader's cases as volumes; the identity is the slice cache's key inputs (files, ids, parameters)."""

    def __init__(self, reader: Any, name: str, cache_root: Path) -> None:
        self.reader, self.name = reader, name
        self.class_names = class_names_of(reader)
        identity, refs = reader_identity(reader, name, Path(cache_root).expanduser().resolve(), WHAT)
        self._inputs = {"format": READER_IDENTITY_FORMAT, **identity}
        self.refs = list(refs)

    def key_inputs(self) -> dict[str, Any]:
        return self._inputs

    def __len__(self) -> int:
        return len(self.refs)

    def load(self, i: int) -> tuple[Case, dict[str, np.ndarray]]:
        return self.reader.load(self.refs[i]), {}


def build_or_load(items: VolumeItems, pre: VolumePreprocess, cache_root: str | Path) -> VolumeSet:
    """The preprocessed volumes of ``items`` from the cache under ``cache_root`` (built on first use)."""
    root = Path(cache_root).expanduser().resolve() / "volumes"
    inputs = {"format": VOLUME_CACHE_FORMAT, "source": items.key_inputs(), "preprocess": pre.to_dict()}
    key = identity_key(inputs)
    d = root / f"{items.name}-{key[:16]}"
    build_once(d, WHAT, lambda tmp: _write(items, pre, tmp, key, inputs))
    return load_volume_cache(d)


def load_volume_cache(d: str | Path) -> VolumeSet:
    d = Path(d)
    m = json.loads((d / "manifest.json").read_text())
    if m.get("format") != VOLUME_CACHE_FORMAT:
        raise RuntimeError(f"{d}: volume cache format {m.get('format')}, this code reads {VOLUME_CACHE_FORMAT}; "
                           "delete it")
    meta = pd.read_csv(d / "meta.csv", dtype={"case_id": str, "patient_id": str, "source_file": str},
                       keep_default_na=False, na_values=[""])
    meta["source_file"] = meta["source_file"].fillna("")
    vs = VolumeSet(d, meta, tuple(m["class_names"]), tuple(m["raters"]))
    vs.meta.attrs.update({"cache_dir": str(d), "cache_key": m["key"]})
    return vs


def _write(items: VolumeItems, pre: VolumePreprocess, tmp: Path, key: str, inputs: dict) -> dict[str, Any]:
    """Preprocess every volume of ``items`` into the volume layout under ``tmp``; returns the manifest (written
    last by :func:`musclelab.data.cache_core.build_once`)."""
    t0 = time.perf_counter()
    k = len(items.class_names)
    rng = np.random.default_rng(int(key[:12], 16))
    rows, raters = [], set()
    for i in range(len(items)):
        case, rater_maps = items.load(i)
        src = str(case.files[0]) if case.files else f"{items.name} case {case.case_id}"
        if case.label is None:
            raise ValueError(f"{src}: case '{case.case_id}' has no label; 3D training needs labelled volumes")
        if int(case.label.max(initial=0)) >= k:
            raise ValueError(f"{src}: label value {int(case.label.max())} beyond the {k} configured classes "
                             f"(0..{k - 1}: {', '.join(items.class_names[:4])}, ...)")
        p = preprocess_volume(case, pre)
        c = p.case
        cid = case.case_id
        hu = np.clip(np.rint(c.image), _I16.min, _I16.max).astype(np.int16)
        save_npy(tmp / "images" / f"{cid}.npy", hu)
        save_npy(tmp / "labels" / f"{cid}.npy", c.label.astype(np.uint8))
        save_npy(tmp / "source_labels" / f"{cid}.npy", case.label.astype(np.uint8))
        for name, lab in rater_maps.items():
            raters.add(name)
            save_npy(tmp / "raters" / name / f"{cid}.npy", np.asarray(lab, np.uint8))
        flat = c.label.ravel()
        idx = np.full((k, N_INDICES), -1, np.int64)   # per class a random sample of its voxels, -1 padded
        for cls in range(k):
            where = np.flatnonzero(flat == cls)
            if len(where) > N_INDICES:
                where = np.sort(rng.choice(where, N_INDICES, replace=False))
            idx[cls, :len(where)] = where
        save_npy(tmp / "indices" / f"{cid}.npy", idx)
        row = {"case_id": cid, "patient_id": case.patient_id,
               **{f"shape_{a}": int(s) for a, s in zip("zyx", c.image.shape)},
               **{f"spacing_{a}_mm": float(s) for a, s in zip(("z", "row", "col"), c.spacing)},
               **{f"source_{a}": int(s) for a, s in zip("zyx", p.source_shape)},
               **{f"source_spacing_{a}_mm": float(s) for a, s in zip(("z", "row", "col"), p.source_spacing)},
               **{f"resampled_{a}": int(s) for a, s in zip("zyx", p.resampled_shape)},
               **{f"crop_{a}": int(s) for a, s in zip("zyx", p.crop_start)},
               "source_file": str(case.files[0]) if case.files else ""}
        row.update({k2: v for k2, v in case.meta.items() if k2 not in row and np.isscalar(v)})
        rows.append(row)
    atomic_write_text(tmp / "meta.csv", pd.DataFrame(rows).to_csv(index=False))
    log.info("volume cache %s: built %d volumes in %.1f s", tmp, len(rows), time.perf_counter() - t0)
    return {
        "format": VOLUME_CACHE_FORMAT, "key": key, "dataset": items.name, "class_names": list(items.class_names),
        "raters": sorted(raters), "n_volumes": len(rows), "inputs": inputs,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_s": round(time.perf_counter() - t0, 2)}
