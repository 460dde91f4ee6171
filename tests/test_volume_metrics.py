"""RAVD, volumes, volume correlation, ICC forms (against Shrout & Fleiss 1979) and the sarcopenia correlation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from musclelab.metrics.agreement import icc, sarcopenia_correlation, volume_correlation
from musclelab.metrics.volume import class_volumes_ml, ravd, volume_rows

# Shrout & Fleiss (1979) Table 2: 6 targets x 4 judges; their ICC(1,1)=.17, ICC(2,1)=.29, ICC(3,1)=.71
SF = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)


def _by_hand(x: np.ndarray) -> dict[str, float]:
    """Mean squares with explicit loops (the textbook two-way ANOVA) and the three ICC formulas."""
    n, k = x.shape
    g = sum(sum(r) for r in x) / (n * k)
    rows = [sum(r) / k for r in x]
    cols = [sum(x[i][j] for i in range(n)) / n for j in range(k)]
    ssr = k * sum((m - g) ** 2 for m in rows)
    ssc = n * sum((m - g) ** 2 for m in cols)
    sst = sum((x[i][j] - g) ** 2 for i in range(n) for j in range(k))
    sse = sst - ssr - ssc
    msr, msc, mse, msw = ssr / (n - 1), ssc / (k - 1), sse / ((n - 1) * (k - 1)), (ssc + sse) / (n * (k - 1))
    return {"ICC(1,1)": (msr - msw) / (msr + (k - 1) * msw),
            "ICC(2,1)": (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n),
            "ICC(3,1)": (msr - mse) / (msr + (k - 1) * mse)}


def test_icc_forms_match_hand_computation_and_published_values():
    hand = _by_hand(SF)
    published = {"ICC(1,1)": 0.17, "ICC(2,1)": 0.29, "ICC(3,1)": 0.71}
    # pingouin.intraclass_corr on this table: CI95 [-0.13, 0.72], [0.02, 0.76], [0.34, 0.95]
    ci = {"ICC(1,1)": (-0.13, 0.72), "ICC(2,1)": (0.02, 0.76), "ICC(3,1)": (0.34, 0.95)}
    for form in published:
        out = icc(SF, form)
        assert out["icc"] == pytest.approx(hand[form], abs=1e-12)
        assert out["icc"] == pytest.approx(published[form], abs=0.006)
        assert out["ci_low"] == pytest.approx(ci[form][0], abs=0.006)
        assert out["ci_high"] == pytest.approx(ci[form][1], abs=0.006)
    assert icc(SF, "ICC(3,1)")["F"] == pytest.approx(11.027, abs=1e-3)
    perfect = np.repeat(np.arange(5.0)[:, None], 3, axis=1)
    assert icc(perfect)["icc"] == pytest.approx(1.0)
    assert np.isnan(icc(SF[:1])["icc"])
    with pytest.raises(ValueError, match="ICC form"):
        icc(SF, "ICC(2,k)")


def test_volumes_ravd_and_correlation():
    lab = np.zeros((4, 5, 6), np.uint8)
    lab[:2, :, :3] = 1
    pred = lab.copy()
    pred[0, 0, 0] = 0
    v = class_volumes_ml(lab, (2.0, 1.0, 1.0), 3)
    np.testing.assert_allclose(v, [(120 - 30) * 2e-3, 30 * 2e-3, 0.0])
    assert ravd(9.0, 10.0) == pytest.approx(-10.0)            # signed, percent
    assert np.isnan(ravd(1.0, 0.0))
    row = volume_rows(pred, lab, (2.0, 1.0, 1.0), ["bg", "a", "b"], {"rater_1": lab})
    assert row["ravd_a"] == pytest.approx((29 - 30) / 30 * 100) and np.isnan(row["ravd_b"])
    assert row["vol_rater_1_a_ml"] == pytest.approx(0.06) and row["ravd"] == pytest.approx(row["ravd_a"])
    assert volume_correlation([1, 2, 3, 4], [2, 4, 6, 8.5]) > 0.99
    assert np.isnan(volume_correlation([1, 2], [1, 2]))


def test_sarcopenia_correlation_per_sex():
    rng = np.random.default_rng(0)
    n = 40
    t = pd.DataFrame({"sex": ["M", "F"] * (n // 2), "height_m": rng.uniform(1.5, 1.8, n)})
    t["sarcopenic"] = rng.random(n) < 0.5
    t["vol_a"] = (1000 - 300 * t["sarcopenic"] + rng.normal(0, 30, n)) * t["height_m"] ** 2
    t["vol_b"] = rng.normal(1000, 100, n)
    out = sarcopenia_correlation(t, {"a": "vol_a", "b": "vol_b"})
    assert set(out["sex"]) == {"F", "M"} and len(out) == 4
    a = out[out.structure == "a"]
    assert (a["r"] < -0.8).all() and (a["p"] < 1e-4).all()
    f = t[t.sex == "F"]
    from scipy import stats

    r_b = stats.pearsonr(f["vol_b"] / f["height_m"] ** 2, f["sarcopenic"].astype(float))[0]
    assert out[(out.structure == "b") & (out.sex == "F")]["r"].item() == pytest.approx(r_b)
