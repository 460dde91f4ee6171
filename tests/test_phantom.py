"""Tests for the synthetic L3 CT phantom (musclelab.phantoms.l3)."""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from musclelab.phantoms.l3 import (
    LABEL_MAPS, META_COLUMNS, MUSCLE_NAMES, SITES, TISSUE_NAMES, generate_phantom, load_nifti_slice,
    observer_masks, write_phantom_dataset,
)

NORMAL = dict(sarcopenic=False, myosteatosis=False, contrast=False)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _eroded(mask: np.ndarray, it: int = 1) -> np.ndarray:
    return ndimage.binary_erosion(mask, iterations=it)


@pytest.fixture(scope="module")
def normal_a():
    return generate_phantom(6, size=128, site="a", seed=3, **NORMAL)


def test_shapes_dtypes_and_meta(normal_a):
    ph = normal_a
    assert ph.images.shape == (6, 128, 128) and ph.images.dtype == np.float32
    assert np.array_equal(ph.images, np.rint(ph.images))  # integer HU
    assert set(ph.labels) == set(LABEL_MAPS) == {"muscle", "muscles", "tissue"}
    for name, lab in ph.labels.items():
        assert lab.shape == (6, 128, 128) and lab.dtype == np.uint8
        assert lab.max() < len(LABEL_MAPS[name])
    assert ph.spacing.shape == (6, 2) and np.all(ph.spacing > 1.5) and np.all(ph.spacing < 6.0)
    assert list(ph.meta.columns) == list(META_COLUMNS) and len(ph.meta) == 6
    assert all(re.fullmatch(r"phantom-a-\d{4}", p) for p in ph.meta["patient_id"])
    assert set(ph.meta["sex"]) <= {"F", "M"}
    assert (ph.meta["site"] == "a").all() and not ph.meta["contrast"].any()
    np.testing.assert_allclose(ph.meta["smi_cm2_m2"], ph.meta["sma_cm2"] / ph.meta["height_m"] ** 2)
    assert MUSCLE_NAMES[1:] == ("erector_spinae", "quadratus_lumborum", "psoas_major", "obliques", "rectus_abdominis")
    assert TISSUE_NAMES == ("background", "muscle", "subcutaneous_fat", "visceral_fat", "bone")
    s = ph[2]
    assert s.image.shape == (128, 128) and s.meta["patient_id"] == ph.meta["patient_id"][2]


def test_hu_ranges_per_tissue(normal_a):
    ph = normal_a
    for k in range(len(ph)):
        img, tis = ph.images[k], ph.labels["tissue"][k]
        sat, vat, mus, bone = (img[tis == c].mean() for c in (2, 3, 1, 4))
        assert -130 <= sat <= -70, sat
        assert -125 <= vat <= -60, vat
        assert 25 <= mus <= 60, mus
        assert bone > 150, bone
        assert img[0].mean() < -950  # air above the anterior abdominal wall
        assert img.min() >= -1024 and img.max() <= 3071


def test_label_consistency(normal_a):
    ph = normal_a
    muscle, muscles, tissue = ph.labels["muscle"], ph.labels["muscles"], ph.labels["tissue"]
    assert np.array_equal(muscle, (muscles > 0).astype(np.uint8))
    assert np.array_equal(tissue == 1, muscle == 1)
    assert set(np.unique(muscle)) <= {0, 1}
    px_cm2 = ph.spacing[:, 0] * ph.spacing[:, 1] / 100.0
    np.testing.assert_allclose(ph.meta["sma_cm2"], muscle.sum((1, 2)) * px_cm2)
    for k in range(len(ph)):
        assert set(np.unique(muscles[k])) == set(range(6))  # every muscle present
        assert set(np.unique(tissue[k])) == set(range(5))
        for j, name in enumerate(MUSCLE_NAMES[1:], start=1):
            assert ph.meta[f"area_{name}_cm2"][k] == pytest.approx((muscles[k] == j).sum() * px_cm2[k])


def test_anatomical_layout(normal_a):
    """Supine, anterior at the top: rectus above the vertebra, erector spinae below it, obliques lateral."""
    for k in range(len(normal_a)):
        mus, tis = normal_a.labels["muscles"][k], normal_a.labels["tissue"][k]
        row = lambda m: np.nonzero(m)[0].mean()  # noqa: E731
        col = lambda m: np.nonzero(m)[1]  # noqa: E731
        bone_r, bone_c = row(tis == 4), col(tis == 4).mean()
        assert row(mus == 5) < bone_r < row(mus == 1)           # rectus anterior, erector posterior
        assert row(mus == 3) < row(mus == 1)                    # psoas anterior to erector spinae
        assert abs(bone_c - 64) < 15                            # vertebra near the midline
        obl = col(mus == 4)
        assert (obl < bone_c - 25).any() and (obl > bone_c + 25).any()  # obliques on both sides
        assert row(tis == 4) > 55                               # vertebra in the lower half


def test_determinism_and_prefix():
    a = generate_phantom(5, size=96, site="c", seed=11)
    b = generate_phantom(5, size=96, site="c", seed=11)
    assert np.array_equal(a.images, b.images)
    assert all(np.array_equal(a.labels[k], b.labels[k]) for k in a.labels)
    assert np.array_equal(a.spacing, b.spacing)
    pd.testing.assert_frame_equal(a.meta, b.meta)
    c = generate_phantom(5, size=96, site="c", seed=12)
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.labels["muscle"], c.labels["muscle"])
    small = generate_phantom(2, size=96, site="c", seed=11)
    assert np.array_equal(small.images, a.images[:2])
    assert np.array_equal(small.labels["tissue"], a.labels["tissue"][:2])
    mid = generate_phantom(2, size=96, site="c", seed=11, start=3)
    assert np.array_equal(mid.images, a.images[3:5])
    assert list(mid.meta["patient_id"]) == list(a.meta["patient_id"][3:5])


def test_sites_differ_for_the_same_subjects():
    """Travelling subjects: the same anatomy imaged at sites a and b / c."""
    a = generate_phantom(6, size=128, site="a", seed=0, **NORMAL)
    b = generate_phantom(6, size=128, site="b", seed=0, anatomy_site="a", **NORMAL)
    c = generate_phantom(6, size=128, site="c", seed=0, anatomy_site="a", **NORMAL)
    assert np.array_equal(a.labels["muscles"], b.labels["muscles"])
    assert list(a.meta["patient_id"]) == list(b.meta["patient_id"])
    shift, sd_a, sd_b = [], [], []
    for k in range(6):
        core = _eroded(a.labels["muscle"][k] == 1)
        shift.append(b.images[k][core].mean() - a.images[k][core].mean())
        sat = _eroded(a.labels["tissue"][k] == 2, 2)
        sd_a.append(a.images[k][sat].std())
        sd_b.append(b.images[k][sat].std())
    assert 18 <= np.mean(shift) <= 32  # site b calibration offset +25 HU
    assert np.mean(sd_b) > 1.8 * np.mean(sd_a)
    # site c: coarser pixels (larger FOV), same anatomy in mm, HU scale 0.93
    np.testing.assert_allclose(c.spacing / a.spacing, SITES["c"].fov_factor)
    np.testing.assert_allclose(c.meta["sma_cm2"], a.meta["sma_cm2"], rtol=0.04)
    bone_a = np.mean([a.images[k][_eroded(a.labels["tissue"][k] == 4)].mean() for k in range(6)])
    bone_c = np.mean([c.images[k][_eroded(c.labels["tissue"][k] == 4)].mean() for k in range(6)])
    assert bone_c < bone_a - 5


def test_site_profiles_and_unknown_site():
    assert set(SITES) >= {"a", "b", "c", "d"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        SITES["a"].noise_sd = 1.0  # type: ignore[misc]
    for call in (lambda: generate_phantom(1, site="zz"), lambda: generate_phantom(1, anatomy_site="zz")):
        with pytest.raises(ValueError, match="known sites: a, b, c, d"):
            call()


def test_sarcopenia_and_myosteatosis():
    norm = generate_phantom(8, size=128, site="a", seed=5, **NORMAL)
    sarc = generate_phantom(8, size=128, site="a", seed=5, sarcopenic=True, myosteatosis=False, contrast=False)
    myo = generate_phantom(8, size=128, site="a", seed=5, sarcopenic=False, myosteatosis=True, contrast=False)
    assert sarc.meta["sarcopenic"].all() and not norm.meta["sarcopenic"].any()
    ratio = sarc.meta["sma_cm2"] / norm.meta["sma_cm2"]
    assert (ratio < 0.85).all() and 0.5 < ratio.mean() < 0.75
    assert sarc.meta["smi_cm2_m2"].mean() < norm.meta["smi_cm2_m2"].mean() - 10
    assert myo.meta["myosteatosis"].all()
    assert np.array_equal(myo.labels["muscle"], norm.labels["muscle"])  # only the HU changes
    m_norm = np.array([norm.images[k][norm.labels["muscle"][k] == 1].mean() for k in range(8)])
    m_myo = np.array([myo.images[k][myo.labels["muscle"][k] == 1].mean() for k in range(8)])
    assert (m_myo < m_norm - 10).all()
    assert 12 <= myo.meta["muscle_hu_true"].mean() <= 28
    assert 35 <= norm.meta["muscle_hu_true"].mean() <= 50
    # population level (default prevalences)
    pop = generate_phantom(60, size=64, site="a", seed=1).meta
    for _sex, grp in pop.groupby("sex"):
        assert grp.loc[grp.sarcopenic, "smi_cm2_m2"].mean() < grp.loc[~grp.sarcopenic, "smi_cm2_m2"].mean()
    assert pop.loc[pop.myosteatosis, "muscle_hu_true"].mean() < pop.loc[~pop.myosteatosis, "muscle_hu_true"].mean() - 15
    assert 0 < pop["contrast"].mean() < 1


def test_size_changes_sampling_not_anatomy():
    lo = generate_phantom(4, size=128, site="a", seed=2)
    hi = generate_phantom(4, size=256, site="a", seed=2)
    np.testing.assert_allclose(lo.spacing * 128, hi.spacing * 256)  # same FOV in mm
    np.testing.assert_allclose(hi.meta["sma_cm2"], lo.meta["sma_cm2"], rtol=0.03)
    np.testing.assert_allclose(hi.meta["area_psoas_major_cm2"], lo.meta["area_psoas_major_cm2"], rtol=0.06)
    big = generate_phantom(1, size=512, site="a", seed=2)
    assert big.images.shape == (1, 512, 512) and big.labels["muscles"].shape == (1, 512, 512)
    assert big.meta["sma_cm2"][0] == pytest.approx(lo.meta["sma_cm2"][0], rel=0.03)
    assert big.meta["patient_id"][0] == lo.meta["patient_id"][0]


def test_write_dataset_roundtrip(tmp_path):
    nib = pytest.importorskip("nibabel")
    out = write_phantom_dataset(tmp_path / "ds", n=3, size=64, site="b", seed=4)
    ph = generate_phantom(3, size=64, site="b", seed=4)
    meta = pd.read_csv(out / "meta.csv")
    assert list(meta["id"]) == list(ph.meta["case_id"])
    assert {"id", "patient_id", "site", "height_m", "sex", "sma_cm2", "contrast"} <= set(meta.columns)
    np.testing.assert_allclose(meta["sma_cm2"], ph.meta["sma_cm2"])
    for k, case in enumerate(meta["id"]):
        img, sp = load_nifti_slice(out / "images" / f"{case}.nii.gz")
        assert np.array_equal(img, ph.images[k]) and img.dtype == np.int16
        np.testing.assert_allclose(sp, ph.spacing[k], rtol=1e-6)
        for sub, key in (("masks", "muscle"), ("masks_muscles", "muscles"), ("masks_tissue", "tissue")):
            lab, _ = load_nifti_slice(out / sub / f"{case}.nii.gz")
            assert lab.dtype == np.uint8 and np.array_equal(lab, ph.labels[key][k])
        raw = nib.load(str(out / "images" / f"{case}.nii.gz"))  # documented layout: (W, H, 1), spacing on the diagonal
        assert raw.shape == (64, 64, 1)
        assert nib.aff2axcodes(raw.affine) == ("L", "P", "S")
        expected = [ph.spacing[k, 1], ph.spacing[k, 0], 3.0]
        np.testing.assert_allclose(np.abs(np.diag(raw.affine)[:3]), expected, rtol=1e-6)
        assert np.array_equal(np.asanyarray(raw.dataobj)[..., 0].T, ph.images[k])
    assert not [p for p in tmp_path.iterdir() if p.name != "ds"]  # no temp dirs left behind


def test_write_dataset_refuses_non_empty(tmp_path):
    target = tmp_path / "user"
    (target / "images").mkdir(parents=True)
    (target / "images" / "precious.nii.gz").write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="non-empty"):
        write_phantom_dataset(target, n=1, size=48)
    assert (target / "images" / "precious.nii.gz").read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user"]
    empty = tmp_path / "empty"
    empty.mkdir()
    write_phantom_dataset(empty, n=1, size=48)
    assert len(list((empty / "masks").iterdir())) == 1
    with pytest.raises(ValueError, match="known sites"):
        write_phantom_dataset(tmp_path / "x", n=1, site="q")
    assert not (tmp_path / "x").exists()


def test_observer_masks():
    ph = generate_phantom(4, size=128, site="a", seed=7)
    dices = []
    for k in range(4):
        truth = ph.labels["muscle"][k]
        obs = observer_masks(truth, ph.spacing[k], 4, seed=(7, k))
        assert obs.shape == (4, 128, 128) and obs.dtype == np.uint8
        assert set(np.unique(obs)) <= {0, 1}
        for o in obs:
            assert not np.array_equal(o, truth)
            dices.append(_dice(o, truth))
        assert not np.array_equal(obs[0], obs[1])
        again = observer_masks(truth, ph.spacing[k], 2, seed=(7, k))
        assert np.array_equal(again, obs[:2])  # observer j depends only on (seed, j)
    assert min(dices) > 0.83 and max(dices) < 0.995
    assert 0.88 <= np.mean(dices) <= 0.97
    multi = observer_masks(ph.labels["muscles"][0], ph.spacing[0], 2, seed=0)
    assert set(np.unique(multi)) == set(range(6))
    assert _dice(multi[0] > 0, ph.labels["muscle"][0]) > 0.83
