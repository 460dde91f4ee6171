"""BTCV (Multi-Atlas Labeling Beyond the Cranial Vault, MICCAI 2015 "Abdomen"): 30 CT volumes, 13 organs.

Layout: ``RawData/Training/img/img<XXXX>.nii.gz`` with ``RawData/Training/label/label<XXXX>.nii.gz``
(``root`` may also be ``RawData`` or ``RawData/Training`` itself). Label values 1..13 are the organs in
:data:`ORGANS`. ``target_labels`` picks organs (values or names) and renumbers them 1..k in that order;
every other organ becomes background. SimpleITK decodes and orients; this module maps layout and labels.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from musclelab.data.readers.base import READERS, CaseRef, Reader, pair_files
from musclelab.data.readers.files import list_files
from musclelab.data.readers.label_maps import make_lut, resolve_targets
from musclelab.errors import ConfigError

ORGANS: dict[int, str] = {
    1: "spleen", 2: "right_kidney", 3: "left_kidney", 4: "gallbladder", 5: "esophagus", 6: "liver",
    7: "stomach", 8: "aorta", 9: "inferior_vena_cava", 10: "portal_and_splenic_veins", 11: "pancreas",
    12: "right_adrenal_gland", 13: "left_adrenal_gland",
}
ALIASES: dict[str, int] = {
    "ivc": 9, "vena_cava": 9, "portal_vein_and_splenic_vein": 10, "portal_splenic_veins": 10,
    "right_adrenal": 12, "left_adrenal": 13, "kidney_right": 2, "kidney_left": 3, "oesophagus": 5,
    "gall_bladder": 4,
}
_IMG = re.compile(r"^img(\d+)\.nii(\.gz)?$", re.IGNORECASE)
_LAB = re.compile(r"^label(\d+)\.nii(\.gz)?$", re.IGNORECASE)


@READERS.register("btcv")
class BtcvReader(Reader):
    """BTCV abdomen training volumes. ``target_labels``: organ values (1..13) or names, default ``[6]``
    (liver); class names are ``background`` + the chosen organs. Case id ``img<XXXX>``, patient
    ``btcv-<XXXX>``."""

    name = "btcv"

    def __init__(self, root: str | Path, target_labels: Sequence[int | str] | int | str | None = None) -> None:
        super().__init__(root)
        values = resolve_targets([6] if target_labels is None else target_labels, ORGANS,
                                 "btcv target_labels (config field data.target_labels)", ALIASES)
        self.target_values = values
        self._params = {"target_labels": list(values)}
        self._lut = make_lut({0: 0, **{v: 0 for v in ORGANS}, **{v: i + 1 for i, v in enumerate(values)}})

    @property
    def class_names(self) -> tuple[str, ...]:
        return ("background", *(ORGANS[v] for v in self.target_values))

    def _base(self) -> Path:
        for cand in (self.root / "RawData" / "Training", self.root / "Training", self.root):
            if (cand / "img").is_dir():
                return cand
        raise ConfigError(f"btcv: no img/ folder under {self.root} (config field data.root); expected "
                          "RawData/Training/img/img0001.nii.gz and RawData/Training/label/label0001.nii.gz")

    def scan(self) -> list[CaseRef]:
        base = self._base()
        images: dict[str, list[Path]] = {}
        labels: dict[str, list[Path]] = {}
        for p in list_files(base / "img"):
            if m := _IMG.match(p.name):
                images.setdefault(m.group(1), []).append(p)
        for p in list_files(base / "label"):
            if m := _LAB.match(p.name):
                labels.setdefault(m.group(1), []).append(p)
        if not images:
            raise ConfigError(f"btcv: no img<XXXX>.nii[.gz] files in {base / 'img'}")
        pairs, self.scan_problems = pair_files(images, labels, lambda k, img: f"label/label{k}.nii.gz",
                                                   lambda k: f"img{k}")
        return [CaseRef(f"img{k}", f"btcv-{k}", (img,), (lab,) if lab else ()) for k, img, lab in pairs]

    def label_lut(self, ref: CaseRef, path: Path) -> np.ndarray:
        return self._lut
