"""Clinical single-slice data (e.g. the L3 slice of each patient) in a plain folder layout.

Layout under ``root``::

    images/<id>.dcm | .nii.gz | .nii | .nrrd        one axial slice per case (HU)
    masks/<id>.nii.gz | .nrrd | .png                the reference mask
    observers/<observer>/<id>.*                     optional: other annotators of the same image
    meta.csv                                        optional: id, patient_id, site, height_m, sex, ...
    labels.yaml                                     optional: {labels: {background: 0, erector_spinae: 1}}

Why a generic folder reader: clinical L3 studies are exported from PACS or annotation tools in mixed
formats; asking for one image and one mask per id with the same stem is the smallest convention that still
pairs them unambiguously. The phantom writer (``musclelab phantom --out DIR``) produces this layout, so
phantom and clinical data train through the same path.

Labels: without ``labels.yaml`` (or the ``labels`` parameter) masks are binary skeletal muscle, values 0/1
(PNG also 0/255). With it, each name maps to the raw value in the mask files; classes are numbered in order of
value (background = value 0 first). A PNG mask is the label map on the image's stored pixel grid (DICOM
rows/columns); it is given the image's geometry and reoriented with it. Arrays come out 2D ``(row, col)`` in
LPS (anterior at row 0, patient's left at high columns); a single-slice NIfTI (W,H,1) or (H,W,1) becomes 2D.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from musclelab.data.readers.base import READERS, CaseRef, Reader, pair_files
from musclelab.data.readers.files import IMAGE_EXTS, LABEL_EXTS, file_kind, list_files, natural_key, split_ext
from musclelab.data.readers.label_maps import make_lut
from musclelab.data.readers.problems import Problem
from musclelab.errors import ConfigError

BINARY_NAMES = ("background", "muscle")


def _parse_labels(labels: Any, where: str) -> dict[int, str]:
    """``{value: name}`` from a ``{name: value}`` mapping; background (value 0) required."""
    if not isinstance(labels, Mapping) or not labels:
        raise ConfigError(f"{where}: expected a mapping of class name -> mask value, e.g. "
                          "{background: 0, erector_spinae: 1}")
    out: dict[int, str] = {}
    for name, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) <= 65535:
            raise ConfigError(f"{where}: value of {name!r} must be an integer 0..65535, got {value!r}")
        if int(value) in out:
            raise ConfigError(f"{where}: {out[int(value)]!r} and {name!r} both use value {value}")
        out[int(value)] = str(name)
    if 0 not in out:
        raise ConfigError(f"{where}: no class with value 0; add background: 0")
    return dict(sorted(out.items()))


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


@READERS.register("l3_folder")
class L3FolderReader(Reader):
    """Single-slice folder data set (see module docstring).

    Parameters: ``labels`` (name -> mask value; overrides ``labels.yaml``), ``images_dir`` / ``masks_dir``
    (folder names; e.g. ``masks_dir=masks_muscles`` for the phantom's individual muscles with
    ``labels``), ``observers_dir``, ``meta_file``, ``load_observers`` (also decode the observers' masks into
    ``Case.meta["observers"]`` = {name: label map} on every load; off by default because arrays in ``meta``
    do not belong in the slice cache's meta.csv; :meth:`observer_masks` reads them for one case on demand).
    Case id = file stem; patient id from ``meta.csv`` (default: the case id). Observers are always checked by
    ``verify_dataset``.
    """

    name = "l3_folder"
    ndim = 2

    def __init__(self, root: str | Path, labels: Mapping[str, int] | None = None, images_dir: str = "images",
                 masks_dir: str = "masks", observers_dir: str = "observers", meta_file: str = "meta.csv",
                 load_observers: bool = False) -> None:
        super().__init__(root)
        self.images_dir, self.masks_dir, self.observers_dir = images_dir, masks_dir, observers_dir
        self.meta_file = meta_file
        self.observers_in_meta = bool(load_observers)
        if labels is not None:
            self.label_values = _parse_labels(dict(labels), "l3_folder labels (config field data.labels)")
        elif (self.root / "labels.yaml").is_file():
            self.label_values = self._read_labels_yaml(self.root / "labels.yaml")
        else:
            self.label_values = None
        self._params = {
            "labels": None if self.label_values is None else {n: v for v, n in self.label_values.items()},
            "images_dir": images_dir, "masks_dir": masks_dir, "observers_dir": observers_dir,
            "meta_file": meta_file, "load_observers": bool(load_observers),
        }
        if self.label_values is None:
            self._lut = make_lut({0: 0, 1: 1})
            self._png_lut = make_lut({0: 0, 1: 1, 255: 1})
        else:
            self._lut = self._png_lut = make_lut({v: i for i, v in enumerate(self.label_values)})

    @staticmethod
    def _read_labels_yaml(path: Path) -> dict[int, str]:
        import yaml

        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"{path} is not valid YAML ({str(e).splitlines()[0]}): fix it") from None
        if not isinstance(doc, Mapping) or "labels" not in doc:
            raise ConfigError(f"{path}: expected a top-level 'labels:' mapping, e.g. "
                              "labels: {background: 0, erector_spinae: 1}")
        return _parse_labels(doc["labels"], str(path))

    @property
    def class_names(self) -> tuple[str, ...]:
        if self.label_values is None:
            return BINARY_NAMES
        return ("background", *list(self.label_values.values())[1:])

    def label_lut(self, ref: CaseRef, path: Path) -> np.ndarray:
        return self._png_lut if file_kind(path) == "PNG" else self._lut

    def _meta(self, problems: list[Problem]) -> dict[str, dict[str, Any]] | None:
        path = self.root / self.meta_file
        if not path.is_file():
            return None
        import pandas as pd

        try:
            df = pd.read_csv(path, dtype={"id": str, "patient_id": str}, keep_default_na=True)
        except Exception as e:  # pandas raises ParserError, UnicodeDecodeError, EmptyDataError, ...
            raise ConfigError(f"{path} could not be read as CSV ({str(e).splitlines()[0]}): fix or remove it") from None
        if "id" not in df.columns:
            raise ConfigError(f"{path} has no 'id' column (columns: {', '.join(map(str, df.columns))}): the id "
                              "column names each case's image file stem")
        rows: dict[str, dict[str, Any]] = {}
        for rec in df.to_dict("records"):
            cid = str(rec.pop("id")).strip()
            if cid in rows:
                problems.append(Problem.error("duplicate_id", f"{self.meta_file} lists id {cid!r} twice: keep one row",
                                              path, cid))
                continue
            rows[cid] = {str(k): _plain(v) for k, v in rec.items()}
        return rows

    def scan(self) -> list[CaseRef]:
        img_dir = self.root / self.images_dir
        if not img_dir.is_dir():
            raise ConfigError(f"l3_folder: {img_dir} not found (config field data.root): expected "
                              f"{self.images_dir}/<id>.dcm|.nii.gz|.nrrd and {self.masks_dir}/<id>.nii.gz|.nrrd|.png")
        images: dict[str, list[Path]] = {}
        for p in list_files(img_dir, IMAGE_EXTS):
            images.setdefault(split_ext(p)[0], []).append(p)
        if not images:
            raise ConfigError(f"l3_folder: no images (.dcm, .nii.gz, .nii, .nrrd, .mha) in {img_dir}")
        labels: dict[str, list[Path]] = {}
        for p in list_files(self.root / self.masks_dir, LABEL_EXTS):
            labels.setdefault(split_ext(p)[0], []).append(p)
        pairs, problems = pair_files(images, labels, lambda k, img: f"{self.masks_dir}/{k}.nii.gz|.nrrd|.png")

        observers: dict[str, dict[str, list[Path]]] = {}
        obs_root = self.root / self.observers_dir
        if obs_root.is_dir():
            for d in sorted((d for d in obs_root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                            key=natural_key):
                files: dict[str, list[Path]] = {}
                for p in list_files(d, LABEL_EXTS):
                    files.setdefault(split_ext(p)[0], []).append(p)
                observers[d.name] = files
                for k, fs in files.items():
                    if k not in images:
                        problems.append(Problem.warning(
                            "orphan_label", f"observer '{d.name}' mask without an image: add the image or remove "
                            "the mask", fs[0]))
                    elif len(fs) > 1:
                        problems.append(Problem.error(
                            "duplicate_label", f"{len(fs)} masks of observer '{d.name}' for one case: keep one", fs[1]))

        meta = self._meta(problems)
        if meta is not None:
            mpath = self.root / self.meta_file
            for cid in sorted(set(meta) - set(images), key=natural_key):
                problems.append(Problem.warning("meta", f"{self.meta_file} row {cid!r} has no image in "
                                                f"{self.images_dir}/", mpath, cid))
        refs = []
        for k, img, lab in pairs:
            row = dict(meta.get(k, {})) if meta is not None else {}
            if meta is not None and k not in meta:
                problems.append(Problem.warning(
                    "meta", f"no {self.meta_file} row for this case: its patient id defaults to the case id (add "
                    "a row so splits keep each patient's cases together)", img, k))
            pid = row.get("patient_id")
            pid = str(pid) if pid not in (None, "") else k
            obs = {name: files[k][0] for name, files in observers.items() if files.get(k)}
            refs.append(CaseRef(k, pid, (img,), (lab,) if lab else (), obs, row))
        self.scan_problems = problems
        return refs
