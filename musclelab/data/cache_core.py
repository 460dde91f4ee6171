"""The build protocol every on-disk data cache shares (the slice store :mod:`.cache`, the volume store
:mod:`.volume_cache`): an identity key from the source files' identity, a cross-process lock, a hidden temp
directory, fsync of every file and of the directories, ``manifest.json`` last and an atomic rename.

Why our own and not MONAI's ``PersistentDataset``/``CacheDataset``: those cache a transform chain's output per
item, keyed by the item's dict (file names), one small file per item, with no build lock. We need (1) a key over
the *contents' identity* — every source file's relative path, size and mtime_ns, the ids and scan-time metadata
of each case, the reader's parameters and class names, plus what the store adds (its preprocessing) — so an
edited, added or removed file or a changed preset rebuilds and nothing else does; no pixel is decoded to decide
reuse; and (2) a cross-process build lock, so two jobs of a sweep that ask at once build once.

Correctness under crashes and concurrency (:func:`build_once`): the build writes into a hidden temp dir beside
the final one (``.<name>.tmp-*``), every file is fsynced (:func:`save_npy`, :func:`musclelab.io.atomic_write_json`),
``manifest.json`` is written last, the temp dir is fsynced and renamed to its final name (atomic on one file
system) and the parent directory fsynced — a crashed build never leaves a directory under the final name.
Builders hold ``fcntl.flock`` on ``<name>.lock`` beside it (:func:`musclelab.io.file_lock`): a second process
asking for the same cache waits, then loads what the first built. Stale temp dirs of a crashed build of the
same key, and a final directory without ``manifest.json``, are removed by the next build (under the lock).

The cache never writes into the data root (a ``cache_root`` inside it is refused).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from musclelab.errors import ConfigError
from musclelab.io import atomic_write_json, file_lock, make_temp_dir

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# reader attributes that locate the data rather than define it: moving (or rsync -a copying) the data keeps the key
LOCATION_PARAMS = ("root", "data_root")
# reader attributes that are run-time state, not parameters (readers.base.Reader fills scan_problems in scan())
STATE_ATTRS = ("scan_problems",)


class CaseRefLike(Protocol):
    """What the key reads from a reader's cheap refs: ids and the source files (image first)."""

    case_id: str
    patient_id: str
    files: Sequence[str | os.PathLike]


class ReaderLike(Protocol):
    """A reader: ``scan()`` lists refs without decoding, ``load(ref)`` decodes one case.

    ``class_names`` (attribute or method) gives label value -> name. Optional: ``root`` (the data root; relative
    paths in the key are taken from it) and ``params`` (dict or method returning one) for the key; without
    ``params`` the reader's public attributes (dataclass fields) are used. ``root``/``data_root`` never enter the
    key.
    """

    def scan(self) -> Sequence[CaseRefLike]: ...

    def load(self, ref: Any) -> Any: ...


# --- identity ---------------------------------------------------------------------------------------------------


def identity_key(inputs: dict[str, Any]) -> str:
    """sha256 of ``inputs`` as canonical JSON (sorted keys, no spaces; non-JSON values as ``str``)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def reader_identity(reader: ReaderLike, dataset_name: str, cache_root: Path, what: str
                    ) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """``(inputs, refs)``: the identity of the data ``reader`` scans (``dataset``, ``reader`` class and parameters,
    ``class_names``, per case its ids, scan-time meta and every file's relative path, size and mtime_ns) from
    ``scan()`` and ``os.stat`` only. ``what`` names the store in the one-line errors (no cases, a repeated case
    id, a missing file, a ``cache_root`` inside the data)."""
    refs = tuple(reader.scan())
    if not refs:
        raise ConfigError(f"{what}: reader {type(reader).__name__} found no cases for '{dataset_name}' "
                          "(check the data root and its file pattern)")
    files_per_ref = [_ref_files(r, what) for r in refs]
    base = _relative_base(reader, files_per_ref)
    _refuse_cache_in_data(cache_root, reader, files_per_ref, what)
    seen: set[str] = set()
    cases = []
    for ref, files in zip(refs, files_per_ref):
        cid = str(ref.case_id)
        if cid in seen:
            raise ConfigError(f"{what}: case id '{cid}' appears twice in '{dataset_name}'"
                              + (f" ({files[0]})" if files else ""))
        seen.add(cid)
        entries = []
        for f in files:
            try:
                st = os.stat(f)
            except FileNotFoundError:
                raise ConfigError(f"{what}: source file {f} of case '{cid}' does not exist") from None
            entries.append({"path": _rel(f, base), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        case = {"case_id": cid, "patient_id": str(ref.patient_id), "files": entries}
        if getattr(ref, "meta", None):  # metadata known at scan time (e.g. a meta.csv row) lands in meta.csv
            case["meta"] = jsonable(ref.meta)
        cases.append(case)
    inputs = {
        "dataset": dataset_name,
        "reader": {"class": f"{type(reader).__module__}.{type(reader).__qualname__}",
                   "params": reader_params(reader)},
        "class_names": list(class_names_of(reader)),
        "cases": cases,
    }
    return inputs, refs


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
    return {str(k): jsonable(v) for k, v in dict(p).items() if k not in LOCATION_PARAMS and not callable(v)}


def class_names_of(reader: Any) -> tuple[str, ...]:
    """A reader's (or source's) ``class_names``, attribute or method, as a tuple of str."""
    names = getattr(reader, "class_names", ())
    names = names() if callable(names) else names
    return tuple(str(n) for n in names)


def jsonable(v: Any) -> Any:
    """``v`` as stable JSON values (paths as str, NumPy as Python, sets sorted, dataclasses as dicts)."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        items = [jsonable(x) for x in v]
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
        return jsonable(asdict(v))
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return repr(v)  # objects with a default repr ('<... at 0x...>') would make the key unstable: give params


def _ref_files(ref: Any, what: str) -> list[Path]:
    files = getattr(ref, "files", None)
    if files is None:
        files = getattr(ref, "paths", None)
    if files is None:
        raise TypeError(f"{what}: reader ref {ref!r} has no 'files' (the source files to key the cache on)")
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    return [Path(f).expanduser().resolve() for f in files]


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


def _refuse_cache_in_data(cache_root: Path, reader: Any, files_per_ref: list[list[Path]], what: str) -> None:
    """The cache must not live in the data root (nor in any directory holding source files)."""
    cache_root = Path(cache_root).expanduser().resolve()
    dirs = {f.parent for fs in files_per_ref for f in fs}
    root = getattr(reader, "root", None) or getattr(reader, "data_root", None)
    if root is not None:
        dirs.add(Path(root).expanduser().resolve())
    for d in dirs:
        if cache_root == d or d in cache_root.parents:
            raise ConfigError(f"{what}: cache_root {cache_root} is inside the data directory {d}; the data root "
                              "is never written to — set paths.cache_dir to a directory outside it")


# --- the build protocol -----------------------------------------------------------------------------------------


def is_complete(d: Path) -> bool:
    """Whether ``d`` is a finished cache (its manifest, written last, exists)."""
    return (Path(d) / MANIFEST).is_file()


def lock_path(final: Path) -> Path:
    """The build lock of cache directory ``final``: ``<final>.lock`` beside it."""
    return final.with_name(f"{final.name}.lock")


def build_once(final: Path, what: str, write: Callable[[Path], dict[str, Any]]) -> bool:
    """Make ``final`` a complete cache, building it at most once across processes; returns whether it was built.

    ``write(tmp)`` fills the temp directory ``tmp`` (with fsynced files: :func:`save_npy`,
    :func:`musclelab.io.atomic_write_text`) and returns the manifest; the manifest is written last, then ``tmp``
    is fsynced, renamed to ``final`` and the parent fsynced. A failing ``write`` leaves nothing behind.
    """
    final = Path(final)
    if is_complete(final):
        log.info("%s %s: reusing", what, final)
        return False
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(lock_path(final), what=f"{what} {final.name}"):
        if is_complete(final):  # someone else built it while we waited
            return False
        if final.exists():  # a directory without manifest.json under the final name: not ours to trust
            log.warning("%s %s is incomplete (no %s); rebuilding it", what, final, MANIFEST)
            shutil.rmtree(final)
        for stale in root.glob(f".{final.name}.tmp-*"):  # left by a crashed build of this key (we hold its lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = make_temp_dir(f".{final.name}.tmp-", root)  # the umask's permissions, not 0700
        try:
            manifest = write(tmp)
            atomic_write_json(tmp / MANIFEST, manifest)  # last: marks the directory complete
            for d in sorted((p for p in tmp.rglob("*") if p.is_dir()), reverse=True):
                fsync_dir(d)  # sub-folders' entries (volume stores keep one folder per array kind)
            fsync_dir(tmp)
            os.rename(tmp, final)
            fsync_dir(root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return True


def save_npy(path: Path, arr: np.ndarray) -> None:
    """``np.save`` to ``path`` (folders created), flushed and fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.save(f, arr)
        f.flush()
        os.fsync(f.fileno())


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
