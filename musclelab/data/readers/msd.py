"""Medical Segmentation Decathlon / nnU-Net raw-data layout (also the project's own thigh-muscle study).

Layout under ``root``: ``dataset.json``, ``imagesTr/<case>.nii.gz`` (MSD) or ``imagesTr/<case>_0000.nii.gz``
(nnU-Net, channel 0000 = the CT), ``labelsTr/<case>.nii.gz``. Class names come from ``dataset.json`` in
either style: MSD ``"labels": {"0": "background", "1": "liver"}`` or nnU-Net v2
``"labels": {"background": 0, "liver": 1}`` (region-based label lists are not supported); nnU-Net v2's
``file_ending`` is honoured. ``target_labels`` (values or names) keeps some classes, renumbered 1..k.
SimpleITK decodes and orients; this module maps layout and labels.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from musclelab.data.readers.base import READERS, CaseRef, Reader, pair_files
from musclelab.data.readers.files import IMAGE_EXTS, LABEL_EXTS, list_files, split_ext
from musclelab.data.readers.label_maps import make_lut, resolve_targets
from musclelab.data.readers.problems import Problem
from musclelab.errors import ConfigError

_CHANNEL = re.compile(r"^(.*)_(\d{4})$")


def parse_dataset_json(path: Path) -> tuple[dict[int, str], str | None]:
    """``({value: name}, file_ending or None)`` from an MSD or nnU-Net v2 ``dataset.json``."""
    if not path.is_file():
        raise ConfigError(f"msd: {path} not found: an MSD/nnU-Net data set folder holds dataset.json, imagesTr/ "
                          "and labelsTr/ (config field data.root)")
    try:
        js = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"msd: {path} is not valid JSON ({e}): fix or re-export it") from None
    labels = js.get("labels") if isinstance(js, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise ConfigError(f"msd: {path} has no \"labels\" mapping: add e.g. \"labels\": {{\"background\": 0, "
                          "\"muscle\": 1}}")
    names: dict[int, str] = {}
    for k, v in labels.items():
        if isinstance(v, str) and str(k).strip().isdigit():      # MSD: {"0": "background"}
            value, name = int(k), v
        elif isinstance(v, int) and not isinstance(v, bool):     # nnU-Net v2: {"background": 0}
            value, name = int(v), str(k)
        elif isinstance(v, (list, tuple)):
            raise ConfigError(f"msd: {path} defines region-based label {k!r}: {v} (nnU-Net regions); list one "
                              "value per class instead")
        else:
            raise ConfigError(f"msd: {path} label entry {k!r}: {v!r} is neither MSD (\"1\": \"name\") nor "
                              "nnU-Net v2 (\"name\": 1) style")
        if value in names:
            raise ConfigError(f"msd: {path} assigns value {value} twice ({names[value]!r}, {name!r})")
        names[value] = name
    if 0 not in names:
        raise ConfigError(f"msd: {path} has no background label 0")
    names[0] = "background"
    ending = js.get("file_ending")
    return dict(sorted(names.items())), (str(ending).lower() if ending else None)


@READERS.register("msd")
class MsdReader(Reader):
    """MSD / nnU-Net raw data set. ``target_labels``: values or names from dataset.json (default: all
    classes). ``patient_regex``: optional regex whose first group (or group ``patient``) extracts the patient
    id from the case id (e.g. ``^(sub\\d+)_`` for ``sub01_left`` / ``sub01_right``); default patient = case."""

    name = "msd"

    def __init__(self, root: str | Path, target_labels: Sequence[int | str] | int | str | None = None,
                 patient_regex: str | None = None) -> None:
        super().__init__(root)
        self.label_names, self.file_ending = parse_dataset_json(self.root / "dataset.json")
        if target_labels is None:
            values = [v for v in self.label_names if v != 0]
        else:
            values = resolve_targets(target_labels, self.label_names,
                                     "msd target_labels (config field data.target_labels)")
        self.target_values = values
        self._lut = make_lut({**{v: 0 for v in self.label_names}, **{v: i + 1 for i, v in enumerate(values)}})
        try:
            self.patient_regex = re.compile(patient_regex) if patient_regex else None
        except re.error as e:
            raise ConfigError(f"msd: patient_regex {patient_regex!r} is not a valid regular expression: {e}") from None
        self._params = {"target_labels": list(values), "patient_regex": patient_regex or None,
                        "labels": {str(v): n for v, n in self.label_names.items()}, "file_ending": self.file_ending}

    @property
    def class_names(self) -> tuple[str, ...]:
        return ("background", *(self.label_names[v] for v in self.target_values))

    def _patient(self, case_id: str) -> str | None:
        if self.patient_regex is None:
            return case_id
        m = self.patient_regex.search(case_id)
        if not m:
            return None
        if "patient" in m.groupdict():
            return m.group("patient")
        return m.group(1) if m.groups() else m.group(0)

    def scan(self) -> list[CaseRef]:
        exts = (self.file_ending,) if self.file_ending else IMAGE_EXTS
        img_files = list_files(self.root / "imagesTr", exts)
        lab_files = list_files(self.root / "labelsTr", (self.file_ending,) if self.file_ending else LABEL_EXTS)
        if not img_files:
            raise ConfigError(f"msd: no images in {self.root / 'imagesTr'} (expected <case>.nii.gz or "
                              "<case>_0000.nii.gz)")
        labels: dict[str, list[Path]] = {}
        for p in lab_files:
            labels.setdefault(split_ext(p)[0], []).append(p)
        # nnU-Net naming if dataset.json is v2 style or any image is <case>_XXXX with a label <case>
        channel_style = self.file_ending is not None or any(
            (m := _CHANNEL.match(split_ext(p)[0])) and m.group(1) in labels and split_ext(p)[0] not in labels
            for p in img_files)
        images: dict[str, list[Path]] = {}
        extra_channels: list[Path] = []
        for p in img_files:
            stem = split_ext(p)[0]
            m = _CHANNEL.match(stem)
            if stem in labels and not (channel_style and m):
                key = stem
            elif channel_style and m:
                if m.group(2) != "0000":
                    extra_channels.append(p)
                    continue
                key = m.group(1)
            else:
                key = stem
            images.setdefault(key, []).append(p)
        ext = self.file_ending or ".nii.gz"
        pairs, problems = pair_files(images, labels, lambda k, img: f"labelsTr/{k}{ext}")
        if extra_channels:
            problems.append(Problem.warning(
                "channels", f"{len(extra_channels)} image files are channels other than _0000 (e.g. "
                f"{extra_channels[0].name}); only channel 0000 (the CT) is read", extra_channels[0]))
        refs = []
        for k, img, lab in pairs:
            pid = self._patient(k)
            if pid is None:
                problems.append(Problem.warning(
                    "patient_id", f"patient_regex {self.patient_regex.pattern!r} does not match case id {k!r}; "
                    "using the case id as patient id (splits may separate this patient's cases)", img, k))
                pid = k
            refs.append(CaseRef(k, pid, (img,), (lab,) if lab else ()))
        self.scan_problems = problems
        return refs

    def label_lut(self, ref: CaseRef, path: Path) -> np.ndarray:
        return self._lut
