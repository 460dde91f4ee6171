"""``Case``: the one record every reader returns, whatever the source format.

Orientation convention (all sources, after reading): arrays are indexed ``(z, row, col)`` for volumes and
``(row, col)`` for slices, with z increasing towards the patient's head (superior), rows towards the back
(posterior) and columns towards the patient's left — DICOM's LPS axes, i.e. the radiological display with
anterior at the top and the patient's right on the image's left. ``spacing`` is in mm per array axis, in the
same order. Images are float32 Hounsfield units; labels are integer maps of the same shape.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Case:
    """One image (a volume or a single slice) with its label map, spacing and identity.

    case_id: unique id within the data set (file stem, e.g. ``volume-7`` or ``img0001``).
    patient_id: the patient the image belongs to (splits never separate one patient's cases).
    image: float32 HU, ``(z, row, col)`` or ``(row, col)``; label: integer map of the same shape, or None.
    spacing: mm per axis, in array order. meta: anything else (site, height_m, sex, source, ...).
    files: the source files read (image first), for error messages and cache keys.
    """

    case_id: str
    patient_id: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    files: tuple[Path, ...] = ()

    @property
    def is_volume(self) -> bool:
        return self.image.ndim == 3

    def __post_init__(self) -> None:
        if self.image.ndim not in (2, 3):
            raise ValueError(f"{self.case_id}: image must be 2D or 3D, got shape {self.image.shape}")
        if len(self.spacing) != self.image.ndim:
            raise ValueError(f"{self.case_id}: spacing {self.spacing} does not match image shape {self.image.shape}")
        if self.label is not None and self.label.shape != self.image.shape:
            raise ValueError(
                f"{self.case_id}: label shape {self.label.shape} differs from image shape {self.image.shape}"
                + (f" ({self.files[0]})" if self.files else "")
            )
