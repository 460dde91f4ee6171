"""LiTS (Liver Tumor Segmentation Challenge, Bilic et al. 2023): abdominal CT volumes with liver/tumour masks.

Layout: ``volume-<i>.nii[.gz]`` with ``segmentation-<i>.nii[.gz]``, anywhere under ``root`` (LiTS ships
them in "Training Batch 1/2" folders, so the search is recursive). Label values: 0 background, 1 liver,
2 tumour. SimpleITK decodes and orients; this module only pairs files and maps the labels to the target.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from musclelab.data.readers.base import READERS, CaseRef, Reader, pair_files
from musclelab.data.readers.files import list_files
from musclelab.data.readers.label_maps import make_lut
from musclelab.errors import ConfigError

#: raw-label -> class mapping and class names per ``target``
TARGETS: dict[str, tuple[dict[int, int], tuple[str, ...]]] = {
    "liver": ({0: 0, 1: 1, 2: 1}, ("background", "liver")),            # liver incl. tumour (label >= 1)
    "tumour": ({0: 0, 1: 0, 2: 1}, ("background", "tumour")),          # tumour only (label == 2)
    "liver_tumour": ({0: 0, 1: 1, 2: 2}, ("background", "liver", "tumour")),
}
_ALIASES = {"tumor": "tumour", "liver_tumor": "liver_tumour"}
_VOLUME = re.compile(r"^volume-(\d+)\.nii(\.gz)?$", re.IGNORECASE)
_SEGMENTATION = re.compile(r"^segmentation-(\d+)\.nii(\.gz)?$", re.IGNORECASE)


@READERS.register("lits")
class LitsReader(Reader):
    """LiTS volumes. ``target``: ``liver`` (label >= 1, binary), ``tumour`` (label == 2, binary) or
    ``liver_tumour`` (3 classes). Case id ``volume-<i>``, patient id ``lits-<i>``."""

    name = "lits"

    def __init__(self, root: str | Path, target: str = "liver") -> None:
        super().__init__(root)
        target = _ALIASES.get(str(target), str(target))
        if target not in TARGETS:
            raise ConfigError(f"lits: unknown target {target!r} (config field data.target); choose one of "
                              f"{', '.join(TARGETS)}")
        self.target = target
        self._params = {"target": target}
        self._lut = make_lut(TARGETS[target][0])

    @property
    def class_names(self) -> tuple[str, ...]:
        return TARGETS[self.target][1]

    def scan(self) -> list[CaseRef]:
        images: dict[int, list[Path]] = {}
        labels: dict[int, list[Path]] = {}
        for p in list_files(self.root, recursive=True):
            if m := _VOLUME.match(p.name):
                images.setdefault(int(m.group(1)), []).append(p)
            elif m := _SEGMENTATION.match(p.name):
                labels.setdefault(int(m.group(1)), []).append(p)
        if not images:
            raise ConfigError(f"lits: no volume-<i>.nii[.gz] files under {self.root} (config field data.root); "
                              "point it at the folder holding the LiTS training batches")
        pairs, self.scan_problems = pair_files(images, labels, lambda k, img: f"segmentation-{k}.nii[.gz]",
                                                   lambda k: f"volume-{k}")
        return [CaseRef(f"volume-{k}", f"lits-{k}", (img,), (lab,) if lab else ()) for k, img, lab in pairs]

    def label_lut(self, ref: CaseRef, path: Path) -> np.ndarray:
        return self._lut
