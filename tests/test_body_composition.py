"""Tests for musclelab.metrics.body_composition and .statistics: hand-made slices, SciPy's Dunnett example."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage, stats

from musclelab.metrics import (
    BODY_COMPOSITION_KEYS,
    body_composition,
    bone_mask,
    dice,
    dunnett_vs_control,
    ellipsoid_structure,
    mean_ci,
    observer_agreement,
    remove_bone,
    rms_dta,
    sma_cm2,
    smd_hu,
    smi_cm2_m2,
    volume_ml,
)

MUSCLE_HU, FAT_HU, BONE_HU = 40.0, -100.0, 400.0


def rect(shape, r0, r1, c0, c1) -> np.ndarray:
    """Boolean mask, True on rows r0..r1-1 and cols c0..c1-1."""
    m = np.zeros(shape, dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


def removed_by_edt(mask, image, spacing, threshold=175.0, radius=2.0) -> np.ndarray:
    """Independent reference for remove_bone: drop pixels within `radius` mm (EDT) of bone."""
    bone = image > threshold
    near = ndimage.distance_transform_edt(~bone, sampling=spacing) <= radius + 1e-9
    return mask & ~near


# --------------------------------------------------------------------------- SMA / SMD / SMI / volume


def test_sma_rectangle_known_area():
    m = rect((64, 64), 10, 30, 5, 35)  # 20 x 30 = 600 pixels
    assert np.count_nonzero(m) == 600
    assert 600 * 0.56 / 100 == pytest.approx(3.36)
    assert sma_cm2(m, (0.8, 0.7)) == pytest.approx(3.36, abs=1e-12)
    assert sma_cm2(m.astype(np.uint8) * 3, 0.5) == pytest.approx(600 * 0.25 / 100)  # non-zero = muscle
    assert sma_cm2(np.zeros((8, 8)), (0.8, 0.7)) == 0.0  # empty → 0 area
    with pytest.raises(ValueError, match="2D"):
        sma_cm2(np.ones((2, 3, 3)), (1.0, 1.0, 1.0))


def test_smd_known_hu_and_empty():
    img = np.full((20, 20), FAT_HU)
    m = rect(img.shape, 0, 4, 0, 10)  # 40 pixels
    img[0:1, 0:10] = 100.0  # 10 pixels at 100 HU
    img[1:4, 0:10] = 20.0  # 30 pixels at 20 HU
    assert smd_hu(m, img) == pytest.approx((10 * 100 + 30 * 20) / 40)  # 40 HU
    assert smd_hu(m, img.astype(np.int16)) == pytest.approx(40.0)
    assert math.isnan(smd_hu(np.zeros_like(m), img))
    with pytest.raises(ValueError, match="shape"):
        smd_hu(m, img[:10])


def test_smi_and_volume():
    assert smi_cm2_m2(150.0, 1.75) == pytest.approx(150 / 1.75**2)
    assert math.isnan(smi_cm2_m2(math.nan, 1.8))
    with pytest.raises(ValueError):
        smi_cm2_m2(150.0, 0.0)
    v = np.zeros((16, 32, 40), dtype=bool)
    v[2:12, 5:25, 3:33] = True  # 10 x 20 x 30 = 6000 voxels
    assert volume_ml(v, (2.5, 0.8, 0.7)) == pytest.approx(8.4, abs=1e-12)  # 6000 × 1.4 mm³ / 1000
    assert volume_ml(np.zeros((2, 2, 2)), 1.0) == 0.0
    with pytest.raises(ValueError, match="3D"):
        volume_ml(np.ones((4, 4)), 1.0)


# --------------------------------------------------------------------------- bone removal


def test_ellipsoid_structure_anisotropic_by_hand():
    # 2 mm at (0.5, 1.0) mm: ±4 rows, ±2 cols; offsets with (0.5 i)^2 + j^2 <= 4.
    s = ellipsoid_structure(2.0, (0.5, 1.0))
    assert s.shape == (9, 5)
    assert s[:, 2].sum() == 9  # j = 0: |i| <= 4
    assert s[:, 1].sum() == s[:, 3].sum() == 7  # j = ±1: |i| <= sqrt(12) → 3
    assert s[:, 0].sum() == s[:, 4].sum() == 1  # j = ±2: i = 0 only
    assert s.sum() == 25
    assert ellipsoid_structure(0.0, (0.5, 1.0)).tolist() == [[True]]
    s3 = ellipsoid_structure(2.0, (2.0, 1.0, 1.0))
    assert s3.shape == (3, 5, 5) and s3[0].sum() == 1 and s3[1].sum() == 13  # 13 = disc of radius 2 px
    assert ellipsoid_structure(1.0, 1.0, ndim=2).sum() == 5


def test_remove_bone_anisotropic_block_by_hand():
    """Bone block at 400 HU inside muscle; spacing (0.5, 1.0) mm → reach 4 rows but 2 cols."""
    sp = (0.5, 1.0)
    img = np.full((40, 40), MUSCLE_HU)
    img[10:20, 10:20] = BONE_HU  # 10 x 10 bone block
    muscle = np.ones_like(img, dtype=bool)
    muscle[10:20, 10:20] = False  # muscle everywhere around the bone
    out = remove_bone(muscle, img, sp)

    # Bone ⊕ ellipse by hand: cols 10-19 reach rows 6-23 (±4 rows = 2 mm); cols 9/20
    # (1 mm away) reach rows 7-22 (±3 rows: sqrt(1.5² + 1²) = 1.80 <= 2 < sqrt(2² + 1²));
    # cols 8/21 (2 mm away) only rows 10-19.
    expected_zone = 18 * 10 + 2 * 16 + 2 * 10  # 232 pixels including the 100 bone pixels
    removed = muscle & ~out
    assert removed.sum() == expected_zone - 100 == 132
    assert not removed[5, 15] and removed[6, 15]  # 2.5 mm vs 2.0 mm above the bone
    assert removed[7, 9] and not removed[6, 9]
    assert removed[15, 8] and not removed[15, 7]  # 2 mm vs 3 mm left of the bone
    np.testing.assert_array_equal(out, removed_by_edt(muscle, img, sp))

    # A mask that includes the bone loses the bone pixels too.
    out_all = remove_bone(np.ones_like(muscle), img, sp)
    assert (~out_all).sum() == expected_zone
    # dilate_mm=0 removes exactly the bone; threshold is strict (175 HU itself is not bone).
    assert (~remove_bone(np.ones_like(muscle), img, sp, dilate_mm=0.0)).sum() == 100
    img175 = np.where(img == BONE_HU, 175.0, img)
    np.testing.assert_array_equal(remove_bone(muscle, img175, sp), muscle)
    assert (~remove_bone(np.ones_like(muscle), img175, sp, threshold_hu=174.9)).sum() == expected_zone
    # Inputs are not modified; no bone / empty mask → unchanged.
    assert muscle.sum() == 1500
    np.testing.assert_array_equal(remove_bone(muscle, np.zeros_like(img), sp), muscle)
    assert not remove_bone(np.zeros_like(muscle), img, sp).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("spacing", [(0.5, 1.0), (0.78, 0.78), (1.1, 0.6)])
def test_remove_bone_matches_distance_transform_2d(seed, spacing):
    rng = np.random.default_rng(seed)
    img = rng.normal(MUSCLE_HU, 30.0, size=(48, 56))
    bone = ndimage.binary_dilation(rng.random(img.shape) < 0.01, iterations=2)
    img[bone] = rng.uniform(200, 1200, size=bone.sum())
    # A small mask (so bone outside its bounding box is within reach) and a large one.
    for mask in (rect(img.shape, 15, 30, 20, 33), rng.random(img.shape) < 0.7):
        out = remove_bone(mask, img, spacing, dilate_mm=2.0)
        np.testing.assert_array_equal(out, removed_by_edt(mask, img, spacing))
        out3 = remove_bone(mask, img, spacing, dilate_mm=3.3)
        np.testing.assert_array_equal(out3, removed_by_edt(mask, img, spacing, radius=3.3))


def test_remove_bone_3d_matches_distance_transform():
    sp = (2.5, 0.7, 0.9)
    img = np.full((8, 40, 40), MUSCLE_HU)
    img[3:5, 18:22, 18:22] = BONE_HU
    mask = np.ones(img.shape, dtype=bool)
    out = remove_bone(mask, img, sp, dilate_mm=2.0)
    np.testing.assert_array_equal(out, removed_by_edt(mask, img, sp))
    # 2 mm < 2.5 mm slice spacing: the neighbouring slices are untouched; in-plane the
    # block grows by 2 px along rows (1.4 mm) and 2 px along cols (1.8 mm), minus corners.
    assert out[[0, 1, 2, 5, 6, 7]].all()
    zone = ellipsoid_structure(2.0, (0.7, 0.9))
    assert zone.shape == (5, 5)
    per_slice = ndimage.binary_dilation(img[3] > 175, structure=zone).sum()
    assert (~out).sum() == 2 * per_slice
    assert volume_ml(out, sp) == pytest.approx((mask.sum() - 2 * per_slice) * 2.5 * 0.7 * 0.9 / 1000)

    rng = np.random.default_rng(3)
    img[rng.random(img.shape) < 0.002] = BONE_HU
    for sp_ in (sp, (1.0, 0.7, 0.9)):
        np.testing.assert_array_equal(remove_bone(mask, img, sp_), removed_by_edt(mask, img, sp_))


# --------------------------------------------------------------------------- body_composition


def _phantom():
    """A slice at (0.8, 0.7) mm: muscle ring (40 HU) in fat (-100 HU) around a vertebra (400 HU)."""
    img = np.full((64, 64), FAT_HU)
    target = rect(img.shape, 10, 50, 10, 54) & ~rect(img.shape, 20, 40, 20, 44)
    img[target] = MUSCLE_HU
    img[25:35, 27:37] = BONE_HU  # bone 5+ pixels (≥ 3.5 mm) inside the ring's hole
    return img, target, (0.8, 0.7)


def test_body_composition_postprocessing_and_signs():
    img, target, sp = _phantom()
    bone = bone_mask(img)
    pred = target | bone  # a prediction that also covers the bone
    bc = body_composition(pred, target, img, sp)
    assert tuple(bc) == BODY_COMPOSITION_KEYS
    # bone removal recovers the target exactly (no target pixel within 2 mm of bone)
    assert bc["dice"] == 1.0 and bc["rms_dta_cm"] == 0.0
    assert bc["sma_diff"] == pytest.approx(0.0) and bc["sma_abs_diff"] == pytest.approx(0.0)
    assert bc["smd_pred"] == bc["smd_true"] == MUSCLE_HU and bc["smd_diff"] == 0.0
    assert bc["sma_removed"] == pytest.approx(100 * 0.56 / 100)
    assert bc["sma_true"] == pytest.approx(target.sum() * 0.56 / 100)

    raw = body_composition(pred, target, img, sp, postprocess=False)
    assert raw["sma_diff"] == pytest.approx(0.56) and raw["sma_removed"] == 0.0
    assert raw["smd_diff"] > 0  # bone raises the mean HU
    assert raw["dice"] == pytest.approx(dice(pred, target)) and raw["dice"] < 1.0
    assert raw["rms_dta_cm"] == pytest.approx(rms_dta(pred, target, sp) / 10)

    # Over-segmentation into fat: positive SMA error, negative SMD error.
    grown = ndimage.binary_dilation(target)
    g = body_composition(grown, target, img, sp)
    n_extra = int(grown.sum() - target.sum())
    assert g["sma_diff"] == pytest.approx(n_extra * 0.56 / 100) and g["sma_abs_diff"] == g["sma_diff"]
    assert g["smd_diff"] < 0
    assert 0 < g["rms_dta_cm"] < 0.1 and g["rms_dta_cm"] == pytest.approx(rms_dta(grown, target, sp) / 10)
    # Under-segmentation: negative SMA error, |.| in sma_abs_diff.
    shrunk = ndimage.binary_erosion(target)
    s = body_composition(shrunk, target, img, sp)
    assert s["sma_diff"] < 0 and s["sma_abs_diff"] == pytest.approx(-s["sma_diff"])


def test_body_composition_postprocess_target_flag():
    img, target, sp = _phantom()
    img[20:22, 30:34] = BONE_HU  # bone touching the ring's inner edge
    pred = target.copy()
    default = body_composition(pred, target, img, sp)  # prediction only
    assert default["sma_diff"] < 0 and default["sma_removed"] > 0
    both = body_composition(pred, target, img, sp, postprocess_target=True)
    assert both["sma_diff"] == pytest.approx(0.0) and both["dice"] == 1.0
    assert both["sma_true"] == pytest.approx(default["sma_pred"])
    off = body_composition(pred, target, img, sp, postprocess=False, postprocess_target=True)
    assert off["sma_diff"] == 0.0 and off["dice"] == 1.0


def test_body_composition_empty_conventions():
    img, target, sp = _phantom()
    empty = np.zeros_like(target)
    e = body_composition(empty, target, img, sp)
    assert e["sma_pred"] == 0.0 and e["sma_diff"] == pytest.approx(-e["sma_true"])
    assert math.isnan(e["smd_pred"]) and math.isnan(e["smd_diff"])
    assert e["dice"] == 0.0 and math.isnan(e["rms_dta_cm"])
    # A prediction that is all bone is emptied by the post-processing: same as empty.
    b = body_composition(bone_mask(img), target, img, sp)
    assert b["sma_pred"] == 0.0 and b["dice"] == 0.0 and math.isnan(b["rms_dta_cm"])
    # Both empty: areas agree (0.0), density undefined, overlap/distances perfect.
    z = body_composition(empty, empty, img, sp)
    assert z["sma_diff"] == 0.0 and z["dice"] == 1.0 and z["rms_dta_cm"] == 0.0
    assert math.isnan(z["smd_true"]) and math.isnan(z["smd_diff"])
    with pytest.raises(ValueError, match="2D"):
        body_composition(np.ones((2, 4, 4)), np.ones((2, 4, 4)), np.zeros((2, 4, 4)), 1.0)


# --------------------------------------------------------------------------- statistics


def test_mean_ci_by_hand():
    vals = [1.0, 2.0, 3.0, 4.0, 5.0, np.nan]
    m, lo, hi = mean_ci(vals)
    # n = 5, sd = sqrt(2.5), t_{0.975, 4} = 2.7764451051977987
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)
    assert m == 3.0 and lo == pytest.approx(3 - half, abs=1e-12) and hi == pytest.approx(3 + half, abs=1e-12)
    ref = stats.t.interval(0.9, df=4, loc=3.0, scale=stats.sem([1, 2, 3, 4, 5]))
    assert mean_ci(vals, 0.9)[1:] == pytest.approx(ref, abs=1e-12)
    assert mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    one = mean_ci([7.0, np.nan])
    assert one[0] == 7.0 and math.isnan(one[1]) and math.isnan(one[2])
    assert all(math.isnan(x) for x in mean_ci([np.nan]))
    with pytest.raises(ValueError):
        mean_ci(vals, 1.0)


# scipy.stats.dunnett docstring example (Dunnett 1955, Table 1).
DRUG_A = [3.8, 2.7, 4.0, 2.4]
DRUG_B = [2.8, 3.4, 3.7, 2.2, 2.0]
CONTROL = [2.9, 3.0, 2.5, 2.6, 3.2]
DOC_STATISTIC = [0.90874545, -0.05007117]
DOC_P_TWO_SIDED = [0.58325114, 0.99819341]
DOC_P_GREATER = [0.30230596, 0.69115597]
# The same p-values by deterministic adaptive quadrature of the bivariate t integral
# (df = 11, rho = sqrt(4·5 / (9·10))), to ~1e-10: SciPy's printed values are one
# quasi-Monte Carlo draw and differ from these by up to 8e-5.
QUAD_P_TWO_SIDED = [0.58317243, 0.99819251]
QUAD_P_GREATER = [0.30224844, 0.69115298]


def test_dunnett_reproduces_scipy_reference_example():
    df = dunnett_vs_control({"A": DRUG_A, "B": DRUG_B}, CONTROL)
    assert list(df.columns) == [
        "group", "n", "mean", "control_mean", "diff", "statistic", "p_value", "ci_low", "ci_high",
    ]  # fmt: skip
    assert df["group"].tolist() == ["A", "B"] and df["n"].tolist() == [4, 5]
    np.testing.assert_allclose(df["statistic"], DOC_STATISTIC, atol=5e-9)  # to the printed 8 decimals
    np.testing.assert_allclose(df["mean"], [3.225, 2.82])
    np.testing.assert_allclose(df["control_mean"], 2.84)
    np.testing.assert_allclose(df["diff"], [0.385, -0.02], atol=1e-12)
    # p-values: QMC integration error ~1e-4, so not to 8 decimals.
    np.testing.assert_allclose(df["p_value"], DOC_P_TWO_SIDED, atol=3e-4)
    np.testing.assert_allclose(df["p_value"], QUAD_P_TWO_SIDED, atol=2e-4)
    assert (df["ci_low"] < df["diff"]).all() and (df["diff"] < df["ci_high"]).all()

    g = dunnett_vs_control({"A": DRUG_A, "B": DRUG_B}, CONTROL, alternative="greater")
    np.testing.assert_allclose(g["statistic"], DOC_STATISTIC, atol=5e-9)
    np.testing.assert_allclose(g["p_value"], DOC_P_GREATER, atol=3e-4)
    np.testing.assert_allclose(g["p_value"], QUAD_P_GREATER, atol=2e-4)
    assert np.isinf(g["ci_high"]).all()

    # Fixed seed by default → identical tables; control by name (excluded from the rows); NaNs dropped.
    pd.testing.assert_frame_equal(df, dunnett_vs_control({"A": DRUG_A, "B": DRUG_B}, CONTROL))
    named = dunnett_vs_control({"human": CONTROL + [np.nan], "A": DRUG_A, "B": DRUG_B + [np.nan]}, "human")
    pd.testing.assert_frame_equal(named, df)
    with pytest.raises(KeyError):
        dunnett_vs_control({"A": DRUG_A}, "human")
    with pytest.raises(ValueError):
        dunnett_vs_control({"A": [np.nan]}, CONTROL)


def test_observer_agreement_perturbed_masks():
    img, reference, sp = _phantom()
    shifted = np.roll(reference, 1, axis=1)
    grown = ndimage.binary_dilation(reference)
    df = observer_agreement({"obs1": reference, "obs2": shifted, "obs3": grown}, reference, img, sp)
    assert df["observer"].tolist() == ["obs1", "obs2", "obs3"]
    assert list(df.columns) == ["observer", "dice", "rms_dta_cm", "sma", "smd", "sma_diff", "sma_abs_diff", "smd_diff"]
    r1, r2, r3 = (df.iloc[i] for i in range(3))
    assert r1["dice"] == 1.0 and r1["rms_dta_cm"] == 0.0 and r1["sma_diff"] == 0.0 and r1["smd_diff"] == 0.0
    assert r2["dice"] == pytest.approx(dice(shifted, reference)) and r2["dice"] < 1
    assert r2["rms_dta_cm"] == pytest.approx(rms_dta(shifted, reference, sp) / 10)
    assert 0 < r2["rms_dta_cm"] <= 0.07  # at most one 0.7 mm column off
    assert r2["sma_diff"] == pytest.approx(0.0)  # a shift keeps the area
    n_extra = int(grown.sum() - reference.sum())
    assert r3["sma_diff"] == pytest.approx(n_extra * 0.56 / 100) and r3["smd_diff"] < 0
    assert r3["sma"] == pytest.approx(grown.sum() * 0.56 / 100)
    # Manual contours are not post-processed unless asked.
    with_bone = reference | bone_mask(img)
    raw = observer_agreement({"o": with_bone}, reference, img, sp)
    pp = observer_agreement({"o": with_bone}, reference, img, sp, postprocess=True)
    assert raw.loc[0, "sma_diff"] > 0 and pp.loc[0, "sma_diff"] == pytest.approx(0.0)


# --------------------------------------------------------------------------- scored on the slice as acquired


def _thin_cortex_slice(size: int = 128, spacing_mm: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """A muscle block touching a one-pixel cortical plate (450 HU) at the original resolution."""
    img = np.full((size, size), FAT_HU, np.float32)
    muscle = rect((size, size), 32, 96, 20, 64)
    img[muscle] = MUSCLE_HU
    img[32:96, 64] = 450.0  # 0.8 mm of cortex: bone on the acquired slice, partial-volumed away when resized
    img[32:96, 65:100] = MUSCLE_HU
    return img, muscle.astype(np.uint8)


def test_bone_removal_on_the_original_slice_sees_thin_cortex_the_resized_slice_loses():
    from musclelab.data.preprocess import resize_slices
    from musclelab.evaluation.original_grid import NETWORK, ORIGINAL, body_composition_row, upsample_logits

    img, muscle = _thin_cortex_slice()
    sp, size = 0.8, 32                                      # 128 px at 0.8 mm -> 32 px at 3.2 mm
    small, small_lab = resize_slices(img[None], muscle[None], size)
    small, small_lab = small[0], small_lab[0]
    assert small.max() < 175 < img.max()                    # the cortex is no longer bone on the network's grid
    logits = torch.from_numpy(np.where(small_lab > 0, 8.0, -8.0).astype(np.float32))[None]  # a perfect network
    net = body_composition_row(small_lab, small_lab, small, (sp * 4, sp * 4), NETWORK)
    orig = body_composition_row(upsample_logits(logits, img.shape), muscle, img, (sp, sp), ORIGINAL)
    assert net["sma_removed"] == 0.0 and net["bc_grid"] == "network"   # nothing removed: the wrong answer
    # on the original: muscle within 2 mm of the plate (columns 62, 63 at 0.8 mm: 1.6 and 0.8 mm) removed
    expected = removed_by_edt(upsample_logits(logits, img.shape).astype(bool), img, (sp, sp))
    assert orig["sma_pred"] == pytest.approx(sma_cm2(expected, sp))
    assert orig["sma_removed"] == pytest.approx(sma_cm2(upsample_logits(logits, img.shape), sp) - orig["sma_pred"])
    assert 0.75 < orig["sma_removed"] < 0.85                # about two 0.8 mm columns along the 51 mm plate
    assert orig["bc_grid"] == "original" and orig["bc_spacing_row_mm"] == sp
    assert orig["dice_raw"] > 0.98 and orig["sma_pred_raw"] > orig["sma_pred"]


def test_logits_interpolated_to_the_original_grid_place_the_boundary_better_than_a_nearest_mask():
    from musclelab.evaluation.original_grid import upsample_labels, upsample_logits

    big, small, r = 128, 32, 37.3                          # a disc, radius in original pixels
    yy, xx = np.mgrid[0:big, 0:big] + 0.5 - big / 2
    truth = np.hypot(yy, xx) <= r
    c = (np.arange(small) + 0.5) * big / small - big / 2    # the network's pixel centres (align_corners=False)
    sdf = torch.from_numpy((r - np.hypot(*np.meshgrid(c, c, indexing="ij"))).astype(np.float32))[None]
    by_logits = upsample_logits(sdf, truth.shape).astype(bool)
    by_mask = upsample_labels((sdf[0] > 0).numpy().astype(np.uint8), truth.shape).astype(bool)
    assert by_logits.shape == truth.shape
    assert abs(int(by_logits.sum()) - int(truth.sum())) < abs(int(by_mask.sum()) - int(truth.sum()))
    assert dice(by_logits, truth) > dice(by_mask, truth) > 0.95
