"""A content-addressed, memory-mapped 2D slice cache on disk, built once per (source files, preprocessing).

Decoding compressed NIfTI/DICOM volumes every epoch dominates training time for 2D models; this cache decodes
each source once, applies a :class:`~musclelab.data.preprocess.SlicePreprocess` and stores the slices as one
``(N, H, W)`` table that later runs memory-map.

Why our own and not MONAI's ``PersistentDataset``/``CacheDataset``: those cache the output of a transform chain
per item, keyed by the item's dict (file names), one small file per item. We need (1) a single memory-mapped
slice table (random slice access with no per-item file open or unpickling), (2) a key over the *contents'
identity* — every source file's relative path, size and mtime_ns, the ids and scan-time metadata of each case,
the reader's parameters, the class names and the preprocessing preset — so an edited, added or removed file or a changed preset rebuilds, and nothing else
does, and (3) a cross-process build lock, so two jobs of a sweep that ask at once build once. PersistentDataset
has none of the three.

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

Correctness under crashes and concurrency: a build happens in a hidden temp dir inside ``cache_root``
(``.<name>-<key16>.tmp-*``), every file is fsynced, ``manifest.json`` is written last, then the temp dir is
renamed to its final name (atomic on one file system) — a crashed build never leaves a directory under the final
name. Builders hold ``fcntl.flock`` on ``<cache_root>/<name>-<key16>.lock``: a second process asking for the
same cache waits, then loads what the first built. Stale temp dirs of a crashed build are removed by the next
build of the same key (under the lock).

Memory: the build streams. Pass 1 decodes one case at a time and writes its slices to a per-case ``.npy`` part
(int16 when that case is integral); pass 2 counts are known, so the parts are copied into one
``np.lib.format.open_memmap`` and deleted. Peak memory is one case (plus its resized copy); peak extra disk is
the parts, about the size of the result.

The key is computed from ``reader.scan()`` refs and ``os.stat`` — no pixels are decoded to decide reuse. The
cache never writes into the data root (a ``cache_root`` inside it is refused).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from musclelab.data.case import Case
from musclelab.data.preprocess import SlicePreprocess, case_to_slice_arrays
from musclelab.data.sources import SliceSet
from musclelab.errors import ConfigError
from musclelab.io import atomic_write_json, atomic_write_text, file_lock, try_file_lock

log = logging.getLogger(__name__)

# bump when the on-disk layout or the key's composition changes (old caches are then simply not found)
CACHE_FORMAT = 1

# meta.csv columns the cache writes; case meta keys with these names are not copied over them
ID_COLUMNS = ("case_id", "patient_id", "source_case_id")
RESERVED_COLUMNS = (*ID_COLUMNS, "slice_index", "has_label")
# reader attributes that locate the data rather than define it: moving (or rsync -a copying) the data keeps the key
LOCATION_PARAMS = ("root", "data_root")
# reader attributes that are run-time state, not parameters (readers.base.Reader fills scan_problems in scan())
STATE_ATTRS = ("scan_problems",)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_INT16 = np.iinfo(np.int16)


class CaseRefLike(Protocol):
    """What the cache reads from a reader's cheap refs: ids and the source files (image first)."""

    case_id: str
    patient_id: str
    files: Sequence[str | os.PathLike]


class ReaderLike(Protocol):
    """A reader: ``scan()`` lists refs without decoding, ``load(ref)`` decodes one :class:`Case`.

    ``class_names`` (attribute or method) gives label value -> name. Optional: ``root`` (the data root; relative
    paths in the key are taken from it) and ``params`` (dict or method returning one) for the key; without
    ``params`` the reader's public attributes (dataclass fields) are used. ``root``/``data_root`` never enter the
    key.
    """

    def scan(self) -> Sequence[CaseRefLike]: ...

    def load(self, ref: Any) -> Case: ...


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
        if not _is_complete(ck.dir):
            with file_lock(ck.lock, what=f"slice cache {ck.dir.name}"):
                if not _is_complete(ck.dir):  # someone else may have built it while we waited
                    _build(reader, ck, pre)
        else:
            log.info("slice cache %s: reusing", ck.dir)
        return load_cache_dir(ck.dir)

    @staticmethod
    def resolve(reader: ReaderLike, pre: SlicePreprocess, cache_root: str | Path, dataset_name: str) -> CacheKey:
        """Compute the key (scan + ``os.stat`` only, nothing decoded) and where the cache lives."""
        if not _NAME_RE.match(dataset_name or ""):
            raise ConfigError(f"slice cache: dataset name {dataset_name!r} must be letters, digits, '.', '_', '+', '-'")
        cache_root = Path(cache_root).expanduser().resolve()
        refs = tuple(reader.scan())
        if not refs:
            raise ConfigError(f"slice cache: reader {type(reader).__name__} found no cases for '{dataset_name}' "
                              "(check the data root and its file pattern)")
        files_per_ref = [_ref_files(r) for r in refs]
        base = _relative_base(reader, files_per_ref)
        _refuse_cache_in_data(cache_root, reader, files_per_ref)
        seen: set[str] = set()
        cases = []
        for ref, files in zip(refs, files_per_ref):
            cid = str(ref.case_id)
            if cid in seen:
                raise ConfigError(f"slice cache: case id '{cid}' appears twice in '{dataset_name}'"
                                  + (f" ({files[0]})" if files else ""))
            seen.add(cid)
            entries = []
            for f in files:
                try:
                    st = os.stat(f)
                except FileNotFoundError:
                    raise ConfigError(f"slice cache: source file {f} of case '{cid}' does not exist") from None
                entries.append({"path": _rel(f, base), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
            case = {"case_id": cid, "patient_id": str(ref.patient_id), "files": entries}
            if getattr(ref, "meta", None):  # metadata known at scan time (e.g. a meta.csv row) lands in meta.csv
                case["meta"] = _jsonable(ref.meta)
            cases.append(case)
        inputs = {
            "format": CACHE_FORMAT,
            "dataset": dataset_name,
            "reader": {"class": f"{type(reader).__module__}.{type(reader).__qualname__}",
                       "params": reader_params(reader)},
            "class_names": list(_class_names(reader)),
            "preprocess": pre.to_dict(),
            "cases": cases,
        }
        key = hashlib.sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        stem = f"{dataset_name}-{key[:16]}"
        return CacheKey(key, cache_root / stem, cache_root / f"{stem}.lock", inputs, refs)

    @staticmethod
    def info(cache_root: str | Path) -> pd.DataFrame:
        """One row per complete cache under ``cache_root``: dataset, key16, slices, cases, shape, dtype, MB, created."""
        rows = []
        root = Path(cache_root)
        for d in sorted(root.glob("*-*")) if root.is_dir() else []:
            if not _is_complete(d):
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
            if not is_tmp and (not _is_complete(d) or any(key16.startswith(k[:16]) for k in keep)):
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
    if not _is_complete(d):
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


def reader_params(reader: Any) -> dict[str, Any]:
    """The reader parameters that enter the key: ``reader.params`` (dict or method), else dataclass fields, else
    public attributes (minus run-time state such as ``scan_problems``); location parameters (``root``,
    ``data_root``) are dropped; values made JSON-able."""
    p = getattr(reader, "params", None)
    if p is not None:
        p = p() if callable(p) else p
    elif is_dataclass(reader):
        p = asdict(reader)
    else:
        p = {k: v for k, v in vars(reader).items() if not k.startswith("_") and k not in STATE_ATTRS}
    return {str(k): _jsonable(v) for k, v in dict(p).items() if k not in LOCATION_PARAMS and not callable(v)}


# --- build ------------------------------------------------------------------------------------------------------


def _build(reader: ReaderLike, ck: CacheKey, pre: SlicePreprocess) -> None:
    """Decode, preprocess and write the cache into a temp dir, then rename it into place (caller holds the lock)."""
    root = ck.dir.parent
    root.mkdir(parents=True, exist_ok=True)
    if ck.dir.exists():  # a directory without manifest.json under the final name: not ours to trust
        log.warning("slice cache %s is incomplete (no manifest.json); rebuilding it", ck.dir)
        shutil.rmtree(ck.dir)
    for stale in root.glob(f".{ck.dir.name}.tmp-*"):  # left by a crashed build of this key (we hold its lock)
        shutil.rmtree(stale, ignore_errors=True)
    class_names = _class_names(reader)
    t0 = time.perf_counter()
    log.info("slice cache %s: building from %d cases", ck.dir, len(ck.refs))
    tmp = Path(tempfile.mkdtemp(prefix=f".{ck.dir.name}.tmp-", dir=root))
    try:
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
        _save_npy(tmp / "spacing.npy", np.concatenate(spacing).astype(np.float64))
        meta_df = pd.DataFrame(rows)
        dup = meta_df["case_id"][meta_df["case_id"].duplicated()]
        if len(dup):
            raise ConfigError(f"slice cache: slice id '{dup.iloc[0]}' is not unique in '{ck.inputs['dataset']}' "
                              "(a 2D case id equals a volume slice id?)")
        atomic_write_text(tmp / "meta.csv", meta_df.to_csv(index=False))
        atomic_write_json(tmp / "manifest.json", {  # last: marks the directory complete
            "format": CACHE_FORMAT, "key": ck.key, "dataset": ck.inputs["dataset"], "key_inputs": ck.inputs,
            "class_names": list(class_names), "preprocess": pre.to_dict(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "n_cases": len(ck.refs), "n_slices": int(total), "slices_per_case": per_case,
            "image_shape": list(hw), "images_dtype": np.dtype(dtype).name, "labels_dtype": "uint8",
            "spacing_unit": "mm (row, col)", "build_seconds": round(time.perf_counter() - t0, 3),
        })
        _fsync_dir(tmp)
        os.rename(tmp, ck.dir)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("slice cache %s: built %d slices (%s) in %.1f s", ck.dir, total, np.dtype(dtype).name,
             time.perf_counter() - t0)


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
    _fsync_file(out)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, arr)
        f.flush()
        os.fsync(f.fileno())


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_complete(d: Path) -> bool:
    return (d / "manifest.json").is_file()


# --- key helpers --------------------------------------------------------------------------------------------------


def _ref_files(ref: Any) -> list[Path]:
    files = getattr(ref, "files", None)
    if files is None:
        files = getattr(ref, "paths", None)
    if files is None:
        raise TypeError(f"slice cache: reader ref {ref!r} has no 'files' (the source files to key the cache on)")
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    return [Path(f).expanduser().resolve() for f in files]


def _class_names(reader: Any) -> tuple[str, ...]:
    names = getattr(reader, "class_names", ())
    names = names() if callable(names) else names
    return tuple(str(n) for n in names)


def _relative_base(reader: Any, files_per_ref: list[list[Path]]) -> Path:
    root = getattr(reader, "root", None) or getattr(reader, "data_root", None)
    if root is not None:
        return Path(root).expanduser().resolve()
    parents = {str(f.parent) for fs in files_per_ref for f in fs}
    return Path(os.path.commonpath(sorted(parents))) if parents else Path("/")


def _rel(f: Path, base: Path) -> str:
    try:
        return f.relative_to(base).as_posix()
    except ValueError:
        return f.as_posix()


def _refuse_cache_in_data(cache_root: Path, reader: Any, files_per_ref: list[list[Path]]) -> None:
    """The cache must not live in the data root (nor in any directory holding source files)."""
    dirs = {f.parent for fs in files_per_ref for f in fs}
    root = getattr(reader, "root", None) or getattr(reader, "data_root", None)
    if root is not None:
        dirs.add(Path(root).expanduser().resolve())
    for d in dirs:
        if cache_root == d or d in cache_root.parents:
            raise ConfigError(f"slice cache: cache_root {cache_root} is inside the data directory {d}; the data root "
                              "is never written to — set paths.cache_dir to a directory outside it")


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        items = [_jsonable(x) for x in v]
        return sorted(items, key=repr) if isinstance(v, (set, frozenset)) else items
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, re.Pattern):
        return v.pattern
    if is_dataclass(v) and not isinstance(v, type):
        return _jsonable(asdict(v))
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return repr(v)  # objects with a default repr ('<... at 0x...>') would make the key unstable: give params


def _scalar(v: Any) -> Any:
    """A case meta value as one CSV cell (non-scalars as JSON text)."""
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return json.dumps(_jsonable(v))
