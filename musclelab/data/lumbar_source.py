"""``data.name=lumbar_phantom``: the built-in lumbar volumes (:mod:`musclelab.phantoms.lumbar`) as 2D slices.

Every volume is one patient (its slices share ``patient_id``); ``meta`` carries ``slice_index``, the vertebral
``level`` of the slice and ``is_l3`` (the L3 mid-slice). The source also hands over the whole volumes
(:class:`~musclelab.data.source_volumes.SourceVolumes`) for volume-level scoring of 2D models.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from musclelab.data.source_volumes import SourceVolumes, WholeVolume
from musclelab.data.sources import SOURCES, SliceSet, SourceData

SLICES = ("all", "l3")


@SOURCES.register("lumbar_phantom")
def lumbar_phantom_source(*, img_size: int, n_volumes: int = 30, thickness_mm: float = 7.5, site: str = "a",
                          slices: str = "all", margin: int = 0, phantom_seed: int = 0) -> SourceData:
    """``n_volumes`` lumbar volumes (L1–L5) of ``site`` at ``img_size`` px and ``thickness_mm`` slices.
    ``slices``: ``all`` (every slice of each volume) or ``l3`` (the L3 mid-slice ± ``margin`` slices)."""
    from musclelab.phantoms.lumbar import CLASS_NAMES, SITES, generate_lumbar_volume, slice_level

    if int(n_volumes) < 1:
        raise ValueError(f"data.source.n_volumes must be >= 1, got {n_volumes}")
    if site not in SITES:
        raise ValueError(f"data.source.site '{site}' unknown for the lumbar phantom; known sites: {', '.join(SITES)}")
    if slices not in SLICES:
        raise ValueError(f"data.source.slices must be one of {', '.join(SLICES)}, got '{slices}'")
    if float(thickness_mm) <= 0:
        raise ValueError(f"data.source.thickness_mm must be > 0, got {thickness_mm}")

    def volume(i: int):
        return generate_lumbar_volume(i, size=img_size, thickness_mm=float(thickness_mm), seed=phantom_seed,
                                      site=site)

    images, labels, spacing, rows = [], [], [], []
    for i in range(int(n_volumes)):
        v = volume(i)
        n_z = len(v.image)
        index = np.arange(n_z) if slices == "all" else \
            np.arange(max(v.l3_index - int(margin), 0), min(v.l3_index + int(margin) + 1, n_z))
        images.append(v.image[index])
        labels.append(v.label[index])
        spacing.append(np.tile(v.spacing[1:], (len(index), 1)))
        for k in index:
            rows.append({"case_id": f"{v.volume_id}_z{int(k):03d}", "patient_id": v.volume_id,
                         "slice_index": int(k), "level": slice_level(v, int(k)), "is_l3": bool(k == v.l3_index),
                         "site": site, "slice_thickness_mm": float(v.spacing[0])})
    pool = SliceSet(np.concatenate(images), np.concatenate(labels), np.concatenate(spacing),
                    pd.DataFrame(rows), CLASS_NAMES)
    ids = {f"lumbar-{site}-{i:04d}": i for i in range(int(n_volumes))}

    def load(patient_id: str) -> list[WholeVolume]:
        v = volume(ids[patient_id])
        return [WholeVolume(v.volume_id, v.volume_id, v.image, v.label, v.spacing, v.l3_index)]

    return SourceData(pool, volumes=SourceVolumes(load, CLASS_NAMES))
