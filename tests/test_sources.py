"""SliceSet subsets of memory-mapped caches stay on disk (RowView) and read the right rows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from musclelab.data.sources import RowView, SliceSet


def test_subsets_of_a_memmap_are_lazy_views(tmp_path: Path) -> None:
    images = np.lib.format.open_memmap(tmp_path / "images.npy", mode="w+", dtype=np.int16, shape=(10, 4, 4))
    images[:] = np.arange(10, dtype=np.int16)[:, None, None]
    images.flush()
    mm = np.load(tmp_path / "images.npy", mmap_mode="r")
    meta = pd.DataFrame({"case_id": [f"c{i}" for i in range(10)], "patient_id": [f"p{i}" for i in range(10)]})
    full = SliceSet(mm, np.zeros((10, 4, 4), np.uint8), np.ones((10, 2)), meta, ("background", "muscle"))
    sub = full.subset(np.array([7, 3, 5])).subset(np.array([2, 0]))
    assert isinstance(sub.images, RowView) and sub.images.shape == (2, 4, 4)
    assert [int(sub.images[i][0, 0]) for i in range(2)] == [5, 7]
    assert sub.meta["case_id"].tolist() == ["c5", "c7"]
    assert np.asarray(sub.images, dtype=np.float32)[:, 0, 0].tolist() == [5.0, 7.0]
    in_memory = SliceSet(np.asarray(mm), full.labels, full.spacing, meta, full.class_names).subset(np.array([1]))
    assert isinstance(in_memory.images, np.ndarray)
