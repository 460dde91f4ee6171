"""Tests for musclelab.metrics: hand-checked values, empty-mask conventions, MONAI agreement."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from musclelab.metrics import (
    METRICS,
    accuracy,
    assd,
    case_metrics,
    confusion,
    dice,
    hausdorff_distance,
    hd95,
    iou,
    jaccard,
    mask_edges,
    precision,
    recall,
    rms_dta,
    summarize,
    surface_distances,
    surface_metrics,
)

SURF = ("hd", "hd95", "assd", "rms_dta")


def square(shape=(40, 40), r0=10, c0=10, size=10) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[r0 : r0 + size, c0 : c0 + size] = True
    return m


# --------------------------------------------------------------------------- overlap


def test_overlapping_rectangles_by_hand():
    a = np.zeros((10, 10), dtype=bool)
    b = np.zeros((10, 10), dtype=bool)
    a[0:4, 0:6] = True  # 24 px (prediction)
    b[2:8, 3:9] = True  # 36 px (target); intersection rows 2-3 x cols 3-5 = 6 px
    assert tuple(confusion(a, b)) == (6, 18, 30, 46)
    assert dice(a, b) == pytest.approx(2 * 6 / (24 + 36))
    assert jaccard(a, b) == pytest.approx(6 / 54)
    assert iou(a, b) == jaccard(a, b)
    assert precision(a, b) == pytest.approx(6 / 24)
    assert recall(a, b) == pytest.approx(6 / 36)
    assert accuracy(a, b) == pytest.approx((6 + 46) / 100)


def test_overlap_3d_and_nonbool_input():
    a = np.zeros((4, 5, 6), dtype=np.uint8)
    b = np.zeros((4, 5, 6), dtype=np.int64)
    a[1:3, 1:4, 1:5] = 1  # 24 voxels
    b[1:3, 1:4, 1:3] = 7  # 12 voxels, all inside a
    assert dice(a, b) == pytest.approx(2 * 12 / 36)
    assert precision(a, b) == pytest.approx(0.5)
    assert recall(a, b) == pytest.approx(1.0)
    assert accuracy(a, b) == pytest.approx(1 - 12 / 120)


def test_identical_masks_are_perfect():
    m = square()
    assert dice(m, m) == jaccard(m, m) == precision(m, m) == recall(m, m) == accuracy(m, m) == 1.0
    assert surface_metrics(m, m, (0.7, 0.7)) == dict.fromkeys(SURF, 0.0)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        dice(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError):
        surface_metrics(np.zeros((3, 3)), np.zeros((3, 4)), (1, 1))
    with pytest.raises(ValueError):
        surface_metrics(np.ones((3, 3)), np.ones((3, 3)), (1, 1, 1))  # spacing length
    with pytest.raises(ValueError):
        surface_metrics(np.ones((3, 3)), np.ones((3, 3)), (1, 0))  # non-positive spacing


# --------------------------------------------------------------------------- surfaces


def test_mask_edges_is_mask_minus_erosion():
    m = square((8, 8), 1, 1, 5)
    e = mask_edges(m)
    assert e.sum() == 25 - 9
    assert not e[2:5, 2:5].any()
    full = np.ones((4, 5), dtype=bool)  # the image border counts as surface (zero border)
    assert mask_edges(full).sum() == 4 * 5 - 2 * 3


@pytest.mark.parametrize("k", [1, 3])
def test_square_shift_anisotropic(k):
    """Spacing (2.0, 1.0): a shift of k rows gives HD 2k mm, a shift of k columns k mm."""
    a = square()
    sp = (2.0, 1.0)
    rows = np.roll(a, k, axis=0)
    cols = np.roll(a, k, axis=1)
    assert hausdorff_distance(a, rows, sp) == pytest.approx(2.0 * k)
    assert hausdorff_distance(a, cols, sp) == pytest.approx(1.0 * k)
    # The displaced top/bottom (left/right) edges are the farthest points: HD95 <= HD.
    assert 0 < hd95(a, rows, sp) <= 2.0 * k
    assert 0 < assd(a, cols, sp) < rms_dta(a, cols, sp) <= 1.0 * k
    # Symmetric metrics do not depend on argument order.
    assert surface_metrics(a, rows, sp) == pytest.approx(surface_metrics(rows, a, sp))


def test_single_pixels_anisotropic_2d_and_3d():
    a = np.zeros((10, 10), dtype=bool)
    b = np.zeros((10, 10), dtype=bool)
    a[2, 2] = True
    b[5, 6] = True  # 3 rows, 4 cols
    expected = math.hypot(3 * 2.0, 4 * 0.5)
    assert surface_metrics(a, b, (2.0, 0.5)) == pytest.approx(dict.fromkeys(SURF, expected))

    a3 = np.zeros((5, 6, 7), dtype=bool)
    b3 = np.zeros((5, 6, 7), dtype=bool)
    a3[1, 1, 1] = True
    b3[2, 3, 1] = True  # 1 slice, 2 rows
    expected = math.sqrt((1 * 3.0) ** 2 + (2 * 0.8) ** 2)
    assert surface_metrics(a3, b3, (3.0, 0.8, 0.8)) == pytest.approx(dict.fromkeys(SURF, expected))


def test_directed_percentile_pooled_mean_and_rms_by_hand():
    """P = {(2,2)}, T = {(2,2), (2,6)}: d(P→T) = [0], d(T→P) = [0, 4 px]."""
    p = np.zeros((8, 10), dtype=bool)
    t = np.zeros((8, 10), dtype=bool)
    p[2, 2] = True
    t[2, 2] = t[2, 6] = True
    sp = (1.0, 0.5)  # 4 columns = 2 mm
    d_pt, d_tp = surface_distances(p, t, sp)
    np.testing.assert_allclose(np.sort(d_pt), [0.0])
    np.testing.assert_allclose(np.sort(d_tp), [0.0, 2.0])
    m = surface_metrics(p, t, sp)
    assert m["hd"] == pytest.approx(2.0)
    # percentile per direction (linear interpolation), then max: max(0, 0 + 0.95 * 2)
    assert m["hd95"] == pytest.approx(1.9)
    assert m["assd"] == pytest.approx(2.0 / 3)  # mean of pooled [0, 0, 2]
    assert m["rms_dta"] == pytest.approx(math.sqrt(4.0 / 3))  # sqrt(mean of [0, 0, 4])
    assert hd95(p, t, sp) == m["hd95"] and assd(p, t, sp) == m["assd"] and rms_dta(p, t, sp) == m["rms_dta"]


def test_crop_does_not_change_distances():
    """Metrics on a mask pair are invariant to zero padding around it (we crop internally)."""
    rng = np.random.default_rng(3)
    p = _blob(rng, (30, 34), 2.5)
    t = _blob(rng, (30, 34), 2.5)
    padded = [np.pad(x, ((7, 2), (0, 11))) for x in (p, t)]
    assert surface_metrics(*padded, (0.9, 1.3)) == pytest.approx(surface_metrics(p, t, (0.9, 1.3)))


# --------------------------------------------------------------------------- empty masks


def test_both_empty_is_perfect_agreement():
    z = np.zeros((6, 7), dtype=bool)
    assert dice(z, z) == jaccard(z, z) == precision(z, z) == recall(z, z) == accuracy(z, z) == 1.0
    assert surface_metrics(z, z, (1.0, 2.0)) == dict.fromkeys(SURF, 0.0)
    assert hausdorff_distance(z, z, (1.0, 2.0)) == 0.0
    d_pt, d_tp = surface_distances(z, z, (1.0, 2.0))
    assert d_pt.size == d_tp.size == 0


@pytest.mark.parametrize("pred_empty", [True, False])
def test_exactly_one_empty(pred_empty):
    z = np.zeros((6, 7), dtype=bool)
    m = z.copy()
    m[1:3, 2:5] = True  # 6 px
    pred, target = (z, m) if pred_empty else (m, z)
    assert dice(pred, target) == 0.0
    assert jaccard(pred, target) == 0.0
    assert precision(pred, target) == 0.0
    assert recall(pred, target) == 0.0
    assert accuracy(pred, target) == pytest.approx(1 - 6 / 42)
    s = surface_metrics(pred, target, (1.0, 1.0))
    assert set(s) == set(SURF) and all(math.isnan(v) for v in s.values())  # NaN, never inf
    assert math.isnan(hausdorff_distance(pred, target, (1.0, 1.0)))
    assert math.isnan(hd95(pred, target, (1.0, 1.0)))
    with pytest.raises(ValueError):
        surface_distances(pred, target, (1.0, 1.0))


# --------------------------------------------------------------------------- case_metrics


def _two_class_case():
    t = np.zeros((20, 20), dtype=np.uint8)
    t[2:8, 2:8] = 1
    t[10:16, 10:16] = 2
    p = np.zeros_like(t)
    p[2:8, 2:8] = 1
    p[11:17, 10:16] = 2  # class 2 shifted down one row
    return p, t


def test_case_metrics_multiclass_keys_and_values():
    p, t = _two_class_case()
    names = ["background", "muscle", "fat"]
    r = case_metrics(p, t, (1.0, 1.0), names)
    expected_keys = set(METRICS) | {f"{m}_{c}" for m in METRICS for c in ("muscle", "fat")}
    assert set(r) == expected_keys
    assert all(isinstance(v, float) for v in r.values())
    assert r["dice_muscle"] == 1.0 and r["hd_muscle"] == 0.0 and r["assd_muscle"] == 0.0
    assert r["dice_fat"] == pytest.approx(2 * 30 / 72)
    assert r["hd_fat"] == pytest.approx(1.0)
    assert r["dice"] == pytest.approx((1 + 2 * 30 / 72) / 2)  # macro mean over foreground
    assert r["hd"] == pytest.approx(0.5)
    assert r["accuracy"] == pytest.approx(1 - 12 / 400)  # multi-class pixel accuracy
    assert r["accuracy_fat"] == pytest.approx(1 - 12 / 400)

    with_bg = case_metrics(p, t, (1.0, 1.0), names, include_background=True)
    assert {k for k in with_bg if k.endswith("_background")} == {f"{m}_background" for m in METRICS}
    for m in METRICS:  # case-level means exclude background either way
        assert with_bg[m] == pytest.approx(r[m])

    no_surf = case_metrics(p, t, (1.0, 1.0), names, surface=False)
    assert not any(k.startswith(s) for k in no_surf for s in SURF)
    assert no_surf["dice_fat"] == r["dice_fat"]


def test_case_metrics_per_class_matches_binary_functions():
    rng = np.random.default_rng(7)
    shape = (48, 56)
    f = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), 4) for _ in range(4)])
    t = f.argmax(0)
    t[f.max(0) < 0.4 * f.std()] = 0
    p = ndimage.shift(t, (2, -1), order=0, mode="nearest")
    p[:5] = 0
    names = ["bg", "a", "b", "c", "d"]
    sp = (0.7, 1.1)
    r = case_metrics(p, t, sp, names, include_background=True)
    for k, name in enumerate(names):
        pk, tk = p == k, t == k
        assert r[f"dice_{name}"] == pytest.approx(dice(pk, tk))
        assert r[f"precision_{name}"] == pytest.approx(precision(pk, tk))
        assert r[f"recall_{name}"] == pytest.approx(recall(pk, tk))
        assert r[f"jaccard_{name}"] == pytest.approx(jaccard(pk, tk))
        assert r[f"accuracy_{name}"] == pytest.approx(accuracy(pk, tk))
        s = surface_metrics(pk, tk, sp)
        for m in SURF:
            assert r[f"{m}_{name}"] == pytest.approx(s[m])


def test_case_metrics_binary_and_empty_classes():
    p, t = _two_class_case()
    binary = case_metrics((p == 2).astype(np.uint8), (t == 2).astype(np.uint8), (1.0, 1.0), ["bg", "muscle"])
    for m in METRICS:
        assert binary[m] == binary[f"{m}_muscle"]

    # class 3 absent from both -> perfect; class 2 missing from prediction -> NaN distances
    p2 = np.where(p == 2, 0, p)
    r = case_metrics(p2, t, (1.0, 1.0), ["bg", "muscle", "fat", "bone"])
    assert r["dice_bone"] == 1.0 and r["hd95_bone"] == 0.0
    assert r["dice_fat"] == 0.0 and r["precision_fat"] == 0.0 and r["recall_fat"] == 0.0
    assert math.isnan(r["hd95_fat"]) and math.isnan(r["hd95"])  # NaN propagates to the case mean
    assert r["dice"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)

    z = np.zeros((5, 5), dtype=np.int16)
    r = case_metrics(z, z, (1.0, 1.0), ["bg", "muscle"])
    assert r["dice"] == 1.0 and r["hd"] == 0.0 and r["accuracy"] == 1.0


def test_case_metrics_3d_and_validation():
    t = np.zeros((6, 12, 12), dtype=np.uint8)
    t[1:4, 2:8, 2:8] = 1
    p = np.roll(t, 1, axis=0)  # one slice = 3 mm
    r = case_metrics(p, t, (3.0, 0.8, 0.8), ["bg", "muscle"])
    assert r["hd"] == pytest.approx(3.0)
    assert r["dice"] == pytest.approx(2 * 2 / 6)
    # float labels that are integral (e.g. read from NIfTI) are accepted
    r_float = case_metrics(p.astype(np.float32), t.astype(np.float64), (3.0, 0.8, 0.8), ["bg", "muscle"])
    assert r_float == r

    with pytest.raises(ValueError):  # label 2 but only 2 classes named
        case_metrics(p * 2, t, (3.0, 0.8, 0.8), ["bg", "muscle"])
    with pytest.raises(ValueError):
        case_metrics(p + 0.5, t, (3.0, 0.8, 0.8), ["bg", "muscle"])
    with pytest.raises(ValueError):
        case_metrics(p, t, (0.8, 0.8), ["bg", "muscle"])
    with pytest.raises(ValueError):
        case_metrics(p, t, (3.0, 0.8, 0.8), ["muscle"])


# --------------------------------------------------------------------------- summarize


def test_summarize_with_nans():
    rows = [
        {"case": "a", "dice": 0.8, "hd95": 2.0},
        {"case": "b", "dice": 0.6, "hd95": float("nan")},
        {"case": "c", "dice": 1.0, "hd95": 4.0},
        {"case": "d", "dice": 0.9},  # missing key counts as NaN
    ]
    s = summarize(rows)
    assert set(s) == {"dice", "hd95"}  # non-numeric columns are skipped
    assert s["dice"]["mean"] == pytest.approx(0.825)
    assert s["dice"]["sd"] == pytest.approx(np.std([0.8, 0.6, 1.0, 0.9], ddof=1))
    assert s["dice"]["median"] == pytest.approx(0.85)
    assert (s["dice"]["n"], s["dice"]["n_nan"]) == (4, 0)
    assert s["hd95"]["mean"] == pytest.approx(3.0)
    assert s["hd95"]["sd"] == pytest.approx(math.sqrt(2.0))
    assert (s["hd95"]["n"], s["hd95"]["n_nan"]) == (2, 2)
    assert summarize(pd.DataFrame(rows)) == s

    one = summarize([{"x": 1.0}, {"x": float("nan")}])["x"]
    assert one["mean"] == 1.0 and math.isnan(one["sd"]) and (one["n"], one["n_nan"]) == (1, 1)
    none = summarize([{"x": float("nan")}])["x"]
    assert math.isnan(none["mean"]) and math.isnan(none["median"]) and none["n"] == 0


# --------------------------------------------------------------------------- agreement with MONAI


def _blob(rng, shape, sigma, thr=0.4):
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return f > thr * f.std()


def _monai_metrics(p: np.ndarray, t: np.ndarray, spacing) -> dict[str, float]:
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    # one-hot, batch-first: (1, 2, *spatial); channel 0 (background) is excluded by default
    y_pred = torch.from_numpy(np.stack([~p, p])[None].astype(np.float32))
    y = torch.from_numpy(np.stack([~t, t])[None].astype(np.float32))
    sp = list(spacing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "hd": monai_metrics.compute_hausdorff_distance(y_pred, y, spacing=sp).item(),
            "hd95": monai_metrics.compute_hausdorff_distance(
                y_pred, y, percentile=95, directed=False, spacing=sp
            ).item(),
            "assd": monai_metrics.compute_average_surface_distance(y_pred, y, symmetric=True, spacing=sp).item(),
        }


@pytest.mark.parametrize(
    "shape,spacing,sigma",
    [
        ((64, 72), (1.0, 1.0), 3.0),
        ((64, 72), (0.7, 0.7), 3.0),
        ((64, 72), (2.0, 0.7), 3.0),
        ((16, 40, 36), (1.0, 1.0, 1.0), 2.5),
        ((16, 40, 36), (3.0, 0.8, 0.8), 2.5),
    ],
)
def test_agrees_with_monai(shape, spacing, sigma):
    """Random smooth shapes (several components, touching the border): HD, HD95, ASSD match MONAI."""
    rng = np.random.default_rng(sum(shape) + int(10 * sum(spacing)))
    for _ in range(3):
        p = _blob(rng, shape, sigma)
        t = _blob(rng, shape, sigma)
        ours = surface_metrics(p, t, spacing)
        ref = _monai_metrics(p, t, spacing)
        for m in ("hd", "hd95", "assd"):
            # MONAI returns float32; our values are float64
            assert ours[m] == pytest.approx(ref[m], rel=1e-5, abs=1e-5), (m, ours[m], ref[m])
