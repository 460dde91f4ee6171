"""SliceSet subsets of memory-mapped caches stay on disk (RowView) and read the right rows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from musclelab.data.containers import RowView, SliceSet


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


# --- one registry: forms and class names declared per source --------------------------------------------------------


def test_every_source_declares_its_forms_and_both_forms_share_one_registry() -> None:
    from musclelab.data.sources import SOURCES

    forms = {n: SOURCES.get(n).forms for n in SOURCES.names()}
    assert forms == {"abdomen_phantom": (2, 3), "btcv": (2, 3), "chaos": (2, 3), "l3_folder": (2,),
                     "lits": (2, 3), "lumbar_phantom": (2,), "msd": (2, 3), "phantom": (2,), "thigh_phantom": (3,)}
    assert {n for n in SOURCES.names() if SOURCES.get(n).reads_files} == {"btcv", "chaos", "l3_folder", "lits", "msd"}


def test_unknown_names_and_missing_forms_fail_early_listing_the_known_ones() -> None:
    import pytest

    from musclelab.data.sources import source_form
    from musclelab.errors import ConfigError
    from musclelab.registry import UnknownNameError

    with pytest.raises(UnknownNameError, match=r"unknown dataset 'nope' \(config field `data.name`\); known "
                                               r"datasets: abdomen_phantom, btcv, .*thigh_phantom"):
        source_form("nope", 3)
    with pytest.raises(ConfigError, match=r"data.name=phantom has no volume form .*volumes data sets: "
                                          r"abdomen_phantom, btcv, chaos, lits, msd, thigh_phantom$"):
        source_form("phantom", 3)
    with pytest.raises(ConfigError, match=r"data.name=thigh_phantom has no slice form .*slices data sets: "
                                          r"abdomen_phantom, btcv, chaos, l3_folder, lits, lumbar_phantom, msd, phantom$"):
        source_form("thigh_phantom", 2)


def test_generated_sources_declare_their_class_names_without_generating_data() -> None:
    from musclelab.data.sources import static_class_names

    assert static_class_names("abdomen_phantom", {"target": "tumor"}) == ("background", "tumour")
    assert static_class_names("phantom", {})[0] == "background"
    assert len(static_class_names("thigh_phantom", {})) == 30
    assert static_class_names("lits", {}) is None                      # a reader needs its data.root
    # the abdomen phantom's target table is one: the slice and the volume form serve the same classes
    from musclelab.data.phantom_sources import abdomen_volumes

    assert abdomen_volumes(target="liver_tumor", n_volumes=1).class_names == \
        static_class_names("abdomen_phantom", {"target": "liver_tumour"})
