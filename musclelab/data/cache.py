"""A content-addressed, memory-mapped 2D slice cache on disk, built once per (source files, preprocessing).

Decoding compressed NIfTI/DICOM volumes every epoch dominates training time for 2D models; this cache decodes
each source once, applies a :class:`~musclelab.data.preprocess.SlicePreprocess` and stores the slices as one
``(N, H, W)`` table that later runs memory-map.

The build protocol (identity key from the source files, lock, temp dir, fsync, manifest last, atomic rename)
is the one every store shares: :mod:`musclelab.data.cache_core`; this module adds the slice layout.

Layout of one cache, ``<cache_root>/<dataset_name>-<key[:16]>/``:

- ``images.npy``  ``(N, H, W)`` HU; **int16** when every stored value is an integer in int16 range (native-size
  slices of integer CT, e.g. LiTS with ``img_size=None``), otherwise **float32** (resized or resampled slices,
  which interpolation makes non-integer). ``manifest.json["images_dtype"]`` says which.
- ``labels.npy``  ``(N, H, W)`` uint8 label values; ``spacing.npy`` ``(N, 2)`` float64 mm per pixel (row, col).
- ``meta.csv``    one row per slice: ``case_id`` (``<case>_z042`` for a slice of a volume, the case id for a 2D
  case; unique), ``patient_id``, ``source_case_id``, ``slice_index`` (z in the volume), ``has_label``, then the
  case's ``meta`` columns.
- ``manifest.json`` key, key inputs, class names, creation time, counts, shapes and dtypes. Written last: it
  marks a complete cache.

Memory: the build streams. Pass 1 decodes one case at a time and writes its slices to a per-case ``.npy`` part
(int16 when that case is integral); pass 2 counts are known, so the parts are copied into one
``np.lib.format.open_memmap`` and deleted. Peak memory is one case (plus its resized copy); peak extra disk is
the parts, about the size of the result.

The key is computed from ``reader.scan()`` refs and ``os.stat`` — no pixels are decoded to decide reuse.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from musclelab.data.containers import SliceSet
from musclelab.data.cache_core import (ReaderLike, build_once, class_names_of, fsync_file, identity_key,
                                       is_complete, jsonable, lock_path, reader_identity, reader_params, save_npy)
from musclelab.data.preprocess import SlicePreprocess, case_to_slice_arrays
from musclelab.errors import ConfigError
from musclelab.io import atomic_write_text, try_file_lock

log = logging.getLogger(__name__)

# bump when the on-disk layout or the key's composition changes (old caches are then simply not found)
CACHE_FORMAT = 1

# meta.csv columns the cache writes; case meta keys with these names are not copied over them
ID_COLUMNS = ("case_id", "patient_id", "source_case_id")
RESERVED_COLUMNS = (*ID_COLUMNS, "slice_index", "has_label")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_INT16 = np.iinfo(np.int16)
WHAT = "slice cache"

__all__ = ["CACHE_FORMAT", "CacheKey", "SliceCache", "load_cache_dir", "reader_params"]


@dataclass(frozen=True)
class CacheKey:
    """The identity of one cache: full sha256 ``key``, its directory and the JSON-able inputs it hashes."""

    key: str
    dir: Path
    lock: Path
    inputs: dict[str, Any]
    refs: tuple[Any, ...]


class SliceCache:
    """Build-or-load entry point and maintenance helpers (all static; the state is on disk)."""

    @staticmethod
    def build_or_load(reader: ReaderLike, pre: SlicePreprocess, cache_root: str | Path, dataset_name: str) -> SliceSet:
        """The slices of every case ``reader`` scans, preprocessed by ``pre``, from the cache under ``cache_root``.

        Builds the cache if no complete one has this key (waiting on the lock if another process is building it),
        otherwise memory-maps the existing one without decoding anything.

        Returns a :class:`SliceSet` whose ``images`` is a read-only ``np.memmap`` of **int16 or float32 HU**
        (``manifest.json["images_dtype"]``; indexing yields HU numbers either way, and ``apply_window`` accepts
        both), ``labels`` a read-only uint8 memmap, ``spacing`` float64 ``(N, 2)`` mm in memory. ``meta.attrs``
        holds ``cache_dir`` and ``cache_key``.
        """
        ck = SliceCache.resolve(reader, pre, cache_root, dataset_name)
        build_once(ck.dir, WHAT, lambda tmp: _write(reader, ck, pre, tmp))
        return load_cache_dir(ck.dir)

    @staticmethod
    def resolve(reader: ReaderLike, pre: SlicePreprocess, cache_root: str | Path, dataset_name: str) -> CacheKey:
        """Compute the key (scan + ``os.stat`` only, nothing decoded) and where the cache lives."""
        if not _NAME_RE.match(dataset_name or ""):
            raise ConfigError(f"slice cache: dataset name {dataset_name!r} must be letters, digits, '.', '_', '+', '-'")
        cache_root = Path(cache_root).expanduser().resolve()
        identity, refs = reader_identity(reader, dataset_name, cache_root, WHAT)
        inputs = {"format": CACHE_FORMAT, **identity, "preprocess": pre.to_dict()}
        key = identity_key(inputs)
        d = cache_root / f"{dataset_name}-{key[:16]}"
        return CacheKey(key, d, lock_path(d), inputs, refs)

    @staticmethod
    def info(cache_root: str | Path) -> pd.DataFrame:
        """One row per complete cache under ``cache_root``: dataset, key16, slices, cases, shape, dtype, MB, created."""
        rows = []
        root = Path(cache_root)
        for d in sorted(root.glob("*-*")) if root.is_dir() else []:
            if not is_complete(d):
                continue
            m = json.loads((d / "manifest.json").read_text())
            size = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
            rows.append({"dataset": m["dataset"], "key16": m["key"][:16], "n_slices": m["n_slices"],
                         "n_cases": m["n_cases"], "image_shape": tuple(m["image_shape"]),
                         "images_dtype": m["images_dtype"], "size_mb": size / 2**20, "created": m["created"],
                         "path": str(d)})
        return pd.DataFrame(rows, columns=["dataset", "key16", "n_slices", "n_cases", "image_shape", "images_dtype",
                                           "size_mb", "created", "path"])

    @staticmethod
    def prune(cache_root: str | Path, dataset_name: str | None = None, keep: Sequence[str] = (),
              dry_run: bool = False) -> list[Path]:
        """Remove complete caches (of ``dataset_name``, or all) whose key does not start with one of ``keep``,
        and temp dirs left by crashed builds. Anything locked by a running build is skipped. Returns the paths
        removed (or that would be, with ``dry_run``). Processes that already memory-mapped a removed cache keep
        reading it (POSIX unlink semantics)."""
        root = Path(cache_root)
        removed: list[Path] = []
        if not root.is_dir():
            return removed
        for d in sorted(root.iterdir()):
            if not d.is_dir():
                continue
            stem = d.name.split(".tmp-")[0].lstrip(".") if d.name.startswith(".") else d.name
            if "-" not in stem:
                continue
            name, key16 = stem.rsplit("-", 1)
            if dataset_name is not None and name != dataset_name:
                continue
            is_tmp = d.name.startswith(".") and ".tmp-" in d.name
            if not is_tmp and (not is_complete(d) or any(key16.startswith(k[:16]) for k in keep)):
                continue
            with try_file_lock(root / f"{stem}.lock") as got:
                if not got:
                    continue
                removed.append(d)
                if not dry_run:
                    shutil.rmtree(d, ignore_errors=True)
        return removed


def load_cache_dir(cache_dir: str | Path) -> SliceSet:
    """Memory-map a complete cache directory as a :class:`SliceSet` (see :meth:`SliceCache.build_or_load`)."""
    d = Path(cache_dir)
    if not is_complete(d):
        raise FileNotFoundError(f"{d} is not a complete slice cache (no manifest.json)")
    m = json.loads((d / "manifest.json").read_text())
    if m.get("format") != CACHE_FORMAT:
        raise RuntimeError(f"{d}: cache format {m.get('format')} but this code reads {CACHE_FORMAT}; delete it")
    images = np.load(d / "images.npy", mmap_mode="r")
    labels = np.load(d / "labels.npy", mmap_mode="r")
    spacing = np.load(d / "spacing.npy")
    meta = pd.read_csv(d / "meta.csv", dtype={c: str for c in ID_COLUMNS}, keep_default_na=False, na_values=[""])
    n, shape = m["n_slices"], (m["n_slices"], *m["image_shape"])
    if images.shape != shape or labels.shape != shape or spacing.shape != (n, 2) or len(meta) != n \
            or str(images.dtype) != m["images_dtype"]:
        raise RuntimeError(f"{d}: files do not match manifest.json (expected {shape} {m['images_dtype']}, got "
                           f"images {images.shape} {images.dtype}, labels {labels.shape}, meta {len(meta)} rows); "
                           "the cache is damaged — delete the directory and it will be rebuilt")
    ss = SliceSet(images, labels, spacing, meta, tuple(m["class_names"]))
    ss.meta.attrs.update({"cache_dir": str(d), "cache_key": m["key"]})
    return ss


# --- build ------------------------------------------------------------------------------------------------------


def _write(reader: ReaderLike, ck: CacheKey, pre: SlicePreprocess, tmp: Path) -> dict[str, Any]:
    """Decode and preprocess every case into the slice layout under ``tmp``; returns the manifest (the core
    writes it last and renames ``tmp`` into place, :func:`musclelab.data.cache_core.build_once`)."""
    class_names = class_names_of(reader)
    t0 = time.perf_counter()
    log.info("slice cache %s: building from %d cases", ck.dir, len(ck.refs))
    parts_dir = tmp / "parts"
    parts_dir.mkdir()
    parts: list[tuple[Path, Path, int]] = []
    spacing: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    per_case: dict[str, int] = {}
    hw: tuple[int, int] | None = None
    all_int16 = True
    for i, ref in enumerate(ck.refs):
        case = reader.load(ref)
        where = f"case '{case.case_id}'" + (f" ({case.files[0]})" if case.files else "")
        imgs, labs, sp, idx = case_to_slice_arrays(case, pre)
        n = len(idx)
        per_case[str(case.case_id)] = n
        if n == 0:
            continue
        if hw is None:
            hw = imgs.shape[1:]
        elif imgs.shape[1:] != hw:
            raise ConfigError(f"slice cache: {where} has {imgs.shape[1]}x{imgs.shape[2]} px slices but earlier "
                              f"cases have {hw[0]}x{hw[1]}; set data.img_size to resize all slices to one size")
        is_int = _check_hu(imgs, where)
        all_int16 &= is_int
        if labs is None:
            labs = np.zeros(imgs.shape, np.uint8)
        else:
            lo, hi = int(labs.min()), int(labs.max())
            if lo < 0 or hi > 255 or (class_names and hi >= len(class_names)):
                raise ConfigError(f"slice cache: {where} has label values {lo}..{hi}, but the classes are "
                                  f"{list(class_names)} (values 0..{len(class_names) - 1}, at most 255)")
            labs = labs.astype(np.uint8)
        pi, pl_ = parts_dir / f"{i:06d}_img.npy", parts_dir / f"{i:06d}_lab.npy"
        np.save(pi, imgs.astype(np.int16) if is_int else imgs)
        np.save(pl_, labs)
        parts.append((pi, pl_, n))
        spacing.append(sp)
        meta = {k: _scalar(v) for k, v in case.meta.items() if k not in RESERVED_COLUMNS}
        for z in idx:
            sid = f"{case.case_id}_z{int(z):03d}" if case.is_volume else str(case.case_id)
            rows.append({"case_id": sid, "patient_id": str(case.patient_id), "source_case_id": str(case.case_id),
                         "slice_index": int(z), "has_label": case.label is not None, **meta})
        del case, imgs, labs
    total = sum(n for _, _, n in parts)
    if total == 0 or hw is None:
        raise ConfigError(f"slice cache: no slices from {len(ck.refs)} cases of '{ck.inputs['dataset']}' with "
                          f"{pre} (slices='target' needs label foreground)")
    dtype = np.int16 if all_int16 else np.float32
    _concat_parts([p[0] for p in parts], [p[2] for p in parts], tmp / "images.npy", dtype, hw)
    _concat_parts([p[1] for p in parts], [p[2] for p in parts], tmp / "labels.npy", np.uint8, hw)
    shutil.rmtree(parts_dir)
    save_npy(tmp / "spacing.npy", np.concatenate(spacing).astype(np.float64))
    meta_df = pd.DataFrame(rows)
    dup = meta_df["case_id"][meta_df["case_id"].duplicated()]
    if len(dup):
        raise ConfigError(f"slice cache: slice id '{dup.iloc[0]}' is not unique in '{ck.inputs['dataset']}' "
                          "(a 2D case id equals a volume slice id?)")
    atomic_write_text(tmp / "meta.csv", meta_df.to_csv(index=False))
    log.info("slice cache %s: built %d slices (%s) in %.1f s", ck.dir, total, np.dtype(dtype).name,
             time.perf_counter() - t0)
    return {
        "format": CACHE_FORMAT, "key": ck.key, "dataset": ck.inputs["dataset"], "key_inputs": ck.inputs,
        "class_names": list(class_names), "preprocess": pre.to_dict(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_cases": len(ck.refs), "n_slices": int(total), "slices_per_case": per_case,
        "image_shape": list(hw), "images_dtype": np.dtype(dtype).name, "labels_dtype": "uint8",
        "spacing_unit": "mm (row, col)", "build_seconds": round(time.perf_counter() - t0, 3),
    }


def _check_hu(imgs: np.ndarray, where: str, chunk: int = 32) -> bool:
    """Raise on NaN/inf HU; return whether every value is an integer in int16 range (checked in chunks of
    slices, so no full-size temporary copy of a long volume)."""
    is_int = True
    for s in range(0, len(imgs), chunk):
        c = imgs[s:s + chunk]
        if not np.isfinite(c).all():
            raise ConfigError(f"slice cache: {where} has NaN or infinite HU values")
        is_int = is_int and bool(c.min() >= _INT16.min and c.max() <= _INT16.max and np.array_equal(c, np.rint(c)))
    return is_int


def _concat_parts(paths: list[Path], counts: list[int], out: Path, dtype: Any, hw: tuple[int, int]) -> None:
    """Copy per-case ``.npy`` parts into one ``(N, H, W)`` array file, one part in memory at a time."""
    mm = np.lib.format.open_memmap(out, mode="w+", dtype=dtype, shape=(sum(counts), *hw))
    o = 0
    for p, n in zip(paths, counts):
        mm[o:o + n] = np.load(p)
        o += n
        p.unlink()
    mm.flush()
    del mm
    fsync_file(out)


def _scalar(v: Any) -> Any:
    """A case meta value as one CSV cell (non-scalars as JSON text)."""
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return json.dumps(jsonable(v))
