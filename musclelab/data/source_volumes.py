"""Whole volumes behind a 2D slice source, so a 2D model can be scored on every slice of a test volume.

A slice source (:mod:`musclelab.data.sources`) serves slices for training; for volume-level evaluation
(``eval.level: volume | both``, :mod:`musclelab.evaluation.volume_from_slices`) it can also hand over a
:class:`SourceVolumes`: the test patients' whole volumes (every slice, labelled or not) on the same in-plane
grid as its slices, with the true slice thickness, and the L3 slice when known. Label subsets
(``data.labels``) are applied to these volumes exactly as to the slices.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np


@dataclass
class WholeVolume:
    """One whole volume: ``image`` float32 HU and ``label`` integer map, both ``(Z, H, W)``; ``spacing`` mm per
    axis ``(z, row, col)`` (z = slice thickness / spacing); ``l3_index`` the L3 slice or None. Predicted masks
    are written as NIfTI with this spacing (:func:`musclelab.outputs.nifti.save_nifti`)."""

    case_id: str
    patient_id: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    l3_index: int | None = None


class SourceVolumes:
    """Volumes by patient id, loaded on demand by ``load(patient_id) -> list[WholeVolume]`` (a patient may have
    several scans), relabelled to a label subset when one is set."""

    def __init__(self, load: Callable[[str], list[WholeVolume]], class_names: Sequence[str],
                 values: Sequence[int] | None = None, subset_names: Sequence[str] | None = None) -> None:
        self._load = load
        self.source_class_names = tuple(class_names)
        self.values = None if values is None else list(values)
        self.class_names = tuple(subset_names) if subset_names is not None else tuple(class_names)

    def with_labels(self, labels: Sequence[str]) -> "SourceVolumes":
        """The same volumes reduced to the classes ``labels`` (see :mod:`musclelab.data.labels`)."""
        from musclelab.data.labels import resolve_labels, subset_names

        values = resolve_labels(labels, self.source_class_names)
        return SourceVolumes(self._load, self.source_class_names, values,
                             subset_names(labels, self.source_class_names))

    def load(self, patient_id: str) -> list[WholeVolume]:
        """The volumes of ``patient_id``, relabelled to the subset."""
        from musclelab.data.labels import relabel

        out = self._load(str(patient_id))
        if self.values is None:
            return out
        return [replace(v, label=relabel(v.label, self.values, len(self.source_class_names))) for v in out]


def reader_volumes(reader: Any, img_size: int | None) -> SourceVolumes:
    """The volumes of a reader-backed source (``data=<name> data.root=DIR``): each case of a patient decoded by
    the reader and every slice resized in-plane exactly as the slice cache resizes them (same ``img_size``), so a
    2D model sees the grid it was trained on; the z spacing is the scan's own. ``meta["l3_index"]`` of a case,
    when its reader provides one, marks the L3 slice."""
    from musclelab.data.preprocess import SlicePreprocess, case_to_slice_arrays

    pre = SlicePreprocess(img_size=img_size, slices="all")
    by_patient: dict[str, list[Any]] = {}
    for ref in reader.scan():
        by_patient.setdefault(str(ref.patient_id), []).append(ref)

    def load(patient_id: str) -> list[WholeVolume]:
        out = []
        for ref in by_patient.get(patient_id, []):
            case = reader.load(ref)
            if case.label is None:
                continue
            images, labels, spacing, _ = case_to_slice_arrays(case, pre)
            z = float(case.spacing[0]) if case.is_volume else float("nan")
            l3 = case.meta.get("l3_index")
            out.append(WholeVolume(case.case_id, case.patient_id, images, np.asarray(labels, np.uint8),
                                   (z, float(spacing[0, 0]), float(spacing[0, 1])),
                                   None if l3 is None else int(l3)))
        return out

    names = getattr(reader, "class_names", ())
    return SourceVolumes(load, tuple(names() if callable(names) else names))
