"""Label tables of the readers: raw label value -> class index (:func:`make_lut`), the mapping of a label map
through one in chunks with the undeclared values reported (:func:`map_labels`), and classes named by value or
name (:func:`resolve_targets`)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from musclelab.data.readers.problems import Problem
from musclelab.errors import ConfigError


def make_lut(mapping: Mapping[int, int], size: int | None = None) -> np.ndarray:
    """Raw label value -> class index table; values not in ``mapping`` map to -1 (undeclared)."""
    n = max(size or 0, max(mapping) + 1 if mapping else 1)
    lut = np.full(n, -1, np.int32)
    for raw, cls in mapping.items():
        lut[int(raw)] = int(cls)
    return lut


_CHUNK = 1 << 22  # voxels per pass: bounds the int64 temporaries of bincount / table lookup to ~32 MB


def map_labels(raw: np.ndarray, lut: np.ndarray, path: str | Path, class_names: Sequence[str],
               case_id: str = "") -> tuple[np.ndarray | None, np.ndarray | None, list[Problem]]:
    """Map raw label values through ``lut`` (O(n) in chunks: bincount + table lookup, no sort).

    Returns ``(label, voxels_per_class, problems)``; label is uint8 (int16 beyond 256 classes) or None when
    some values are not declared classes (an error problem lists them with their voxel counts)."""
    problems: list[Problem] = []
    a = np.asarray(raw)
    if a.dtype.kind == "f":
        finite = np.isfinite(a)
        if not finite.all() or not (a[finite] == np.round(a[finite])).all():
            frac = a[finite & (a != np.round(np.where(finite, a, 0)))]
            example = f" (e.g. {float(frac.flat[0]):g})" if frac.size else " (NaN/inf)"
            problems.append(Problem.error(
                "label_values", f"label map has non-integer values{example}: it looks like an image or an "
                "interpolated mask; re-export it with integer class values", path, case_id))
            return None, None, problems
        a = a.astype(np.int32)
    elif a.dtype.kind == "b":
        a = a.view(np.uint8)
    elif a.dtype.kind not in "iu":
        problems.append(Problem.error("label_values", f"label map has pixel type {a.dtype}: expected integers",
                                      path, case_id))
        return None, None, problems
    n = len(lut)
    flat = a.reshape(-1)
    counts = np.zeros(n, np.int64)
    bad: dict[int, int] = {}
    for s in range(0, flat.size, _CHUNK):
        chunk = flat[s:s + _CHUNK]
        if chunk.size and (int(chunk.min()) < 0 or int(chunk.max()) >= n):
            out_of_range = (chunk < 0) | (chunk >= n)
            vals, cnt = np.unique(chunk[out_of_range], return_counts=True)
            for v, c in zip(vals, cnt):
                bad[int(v)] = bad.get(int(v), 0) + int(c)
            chunk = chunk[~out_of_range]
        counts += np.bincount(chunk, minlength=n)
    for v in np.flatnonzero((counts > 0) & (lut < 0)):
        bad[int(v)] = int(counts[v])
    if bad:
        shown = ", ".join(f"{v} ({c} voxels)" for v, c in sorted(bad.items())[:8])
        declared = ", ".join(f"{v}" for v in np.flatnonzero(lut >= 0)[:40])
        problems.append(Problem.error(
            "label_values", f"label values {shown} are not classes of this data set (declared raw values: "
            f"{declared}; classes: {', '.join(class_names)}): fix the label file or declare the class",
            path, case_id))
        return None, None, problems
    used = counts > 0
    per_class = np.bincount(lut[used], weights=counts[used], minlength=len(class_names)).astype(np.int64)
    table = lut.astype(np.uint8 if len(class_names) <= 256 else np.int16)
    label = np.empty(a.shape, table.dtype)
    out = label.reshape(-1)
    for s in range(0, flat.size, _CHUNK):
        out[s:s + _CHUNK] = table[flat[s:s + _CHUNK]]
    return label, per_class, problems


def resolve_targets(targets: Iterable[int | str], names: Mapping[int, str], field_name: str,
                    aliases: Mapping[str, int] | None = None) -> list[int]:
    """Raw label values for ``targets`` given as values or names (case/space/dash-insensitive)."""

    def norm(s: str) -> str:
        return re.sub(r"[\s\-]+", "_", str(s).strip().lower())

    by_name = {norm(v): k for k, v in names.items()}
    by_name.update({norm(k): v for k, v in (aliases or {}).items()})
    out: list[int] = []
    if isinstance(targets, (str, int)):
        targets = [targets]
    for t in targets:
        if isinstance(t, bool):
            t = int(t)
        if isinstance(t, (int, np.integer)) or (isinstance(t, str) and t.strip().lstrip("-").isdigit()):
            v = int(t)
            if v not in names:
                raise ConfigError(f"{field_name}: label value {v} is not a class of this data set; known: "
                                  + ", ".join(f"{k}={n}" for k, n in sorted(names.items())))
        else:
            key = norm(t)
            if key not in by_name:
                raise ConfigError(f"{field_name}: unknown class name {t!r}; known: "
                                  + ", ".join(f"{k}={n}" for k, n in sorted(names.items())))
            v = by_name[key]
        if v == 0:
            raise ConfigError(f"{field_name}: background (0) is always class 0; list foreground classes only")
        if v in out:
            raise ConfigError(f"{field_name}: class {t!r} is listed twice")
        out.append(v)
    if not out:
        raise ConfigError(f"{field_name}: give at least one class")
    return out
