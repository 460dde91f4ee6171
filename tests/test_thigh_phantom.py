"""Tests for the synthetic hip-to-knee thigh phantom (musclelab.phantoms.thigh)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, stats

from musclelab.phantoms.thigh import (
    AWGS2019_CUTOFF, CLASS_NAMES, GROUPS, MUSCLE_NAMES, generate_thigh_phantom, generate_thigh_volume,
    write_thigh_dataset,
)


@pytest.fixture(scope="module")
def cohort():
    return generate_thigh_phantom(24, seed=1)


def test_classes_groups_and_shapes(cohort):
    assert len(CLASS_NAMES) == 30 and len(MUSCLE_NAMES) == 27
    assert [len(g) for g in GROUPS.values()] == [5, 5, 3, 8, 6]
    v = cohort[0]
    assert v.image.shape == v.label.shape == (48, 64, 64) and v.label.dtype == np.uint8
    assert np.array_equal(v.image, np.rint(v.image)) and v.image.dtype == np.float32
    for vol in cohort[:4]:   # every class is present in every default-size volume
        assert set(np.unique(vol.label)) == set(range(30)), vol.meta["case_id"]
    # HU of muscle and bone are CT-like
    assert 10 < v.image[v.label >= 3].mean() < 70 and v.image[v.label == 1].mean() > 200


def test_deterministic_and_prefix_stable():
    a, b = generate_thigh_volume(3, seed=5), generate_thigh_phantom(4, seed=5)[3]
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.raters["rater_2"], b.raters["rater_2"])
    assert not np.array_equal(a.image, generate_thigh_volume(3, seed=6).image)


def test_meta_volumes_and_awgs_flag(cohort):
    for v in cohort:
        m = v.meta
        vox = np.prod(v.spacing) / 1000.0
        assert m["vol_gracilis_ml"] == pytest.approx((v.label == CLASS_NAMES.index("gracilis")).sum() * vox, abs=1e-2)
        assert m["sarcopenic"] == (m["smi_kg_m2"] < AWGS2019_CUTOFF[m["sex"]])


def test_built_in_volume_sarcopenia_relation(cohort):
    """Muscle volume / height² is proportional to SMI by construction: strongly negative vs sarcopenia."""
    meta = pd.DataFrame([v.meta for v in cohort])
    meta["total"] = meta[[f"vol_{m}_ml" for m in MUSCLE_NAMES]].sum(axis=1) / meta["height_m"] ** 2
    for sex, g in meta.groupby("sex"):
        assert stats.pearsonr(g["total"], g["smi_kg_m2"])[0] > 0.7, sex
        assert g["sarcopenic"].nunique() == 2, sex
        assert stats.pearsonr(g["sarcopenic"].astype(float), g["total"])[0] < -0.4, sex


def test_raters_differ_only_at_boundaries(cohort):
    v = cohort[0]
    r1, r2 = v.raters["rater_1"], v.raters["rater_2"]
    assert not np.array_equal(r1, r2)
    differ = r1 != v.label
    interior = ndimage.binary_erosion(v.label > 0, iterations=2) & ndimage.binary_erosion(
        ndimage.generic_filter(v.label, np.ptp, size=(1, 3, 3)) == 0, iterations=1)
    assert differ.mean() < 0.05 and not (differ & interior).any()


def test_written_dataset_is_msd_layout(tmp_path):
    out = write_thigh_dataset(tmp_path / "thigh", n=2, size=48, n_slices=16)
    js = json.loads((out / "dataset.json").read_text())
    assert js["labels"]["29"] == "rectus_abdominis" and len(js["labels"]) == 30
    from musclelab.data.readers import build_reader

    rdr = build_reader("msd", out)
    case = rdr.load(rdr.scan()[0])
    ref = generate_thigh_volume(0, size=48, n_slices=16)
    np.testing.assert_array_equal(case.label, ref.label)
    np.testing.assert_allclose(case.spacing, ref.spacing, rtol=1e-5)
    assert (out / "raters" / "rater_1" / "thigh-0000.nii.gz").exists()
