"""Agreement across cases: volume correlation, intraclass correlation (ICC) and the sarcopenia correlation of
Kim et al. 2024.

ICC forms (Shrout & Fleiss 1979; Koo & Li 2016, the guideline the paper cites), from the two-way ANOVA of an
``(n subjects, k raters)`` table with mean squares MSR (rows), MSC (columns), MSE (residual), MSW (within rows):

* ``ICC(1,1)`` one-way random, absolute agreement: ``(MSR - MSW) / (MSR + (k-1) MSW)``;
* ``ICC(2,1)`` two-way random, absolute agreement, single rater: ``(MSR - MSE) / (MSR + (k-1) MSE + k (MSC - MSE) / n)``;
* ``ICC(3,1)`` two-way mixed, consistency, single rater: ``(MSR - MSE) / (MSR + (k-1) MSE)``.

We report **ICC(2,1)** by default: model and raters are treated as random raters and systematic volume offsets
count as disagreement (the paper does not name its form). The 95 % CI uses the F-distribution bounds of
Shrout & Fleiss (as pingouin and R's ``psych::ICC``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

ICC_FORMS = ("ICC(1,1)", "ICC(2,1)", "ICC(3,1)")


def _anova(x: np.ndarray) -> tuple[float, float, float, float, int, int]:
    n, k = x.shape
    grand = x.mean()
    ss_r = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_c = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_t = ((x - grand) ** 2).sum()
    ss_e = ss_t - ss_r - ss_c
    msr, msc = ss_r / (n - 1), ss_c / (k - 1)
    mse = ss_e / ((n - 1) * (k - 1))
    msw = (ss_c + ss_e) / (n * (k - 1))
    return msr, msc, mse, msw, n, k


def icc(ratings: np.ndarray | Sequence[Sequence[float]], form: str = "ICC(2,1)", alpha: float = 0.05
        ) -> dict[str, float]:
    """``{"icc", "ci_low", "ci_high", "F", "p"}`` of an ``(n subjects, k raters)`` table (rows with NaN are
    dropped; n >= 2 and k >= 2 needed, else NaNs)."""
    if form not in ICC_FORMS:
        raise ValueError(f"ICC form must be one of {', '.join(ICC_FORMS)}, got {form!r}")
    x = np.asarray(ratings, float)
    x = x[np.all(np.isfinite(x), axis=1)]
    nan = {"icc": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "F": float("nan"), "p": float("nan")}
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        return nan
    with np.errstate(divide="ignore", invalid="ignore"):   # tiny or degenerate tables give NaN bounds
        return _icc(x, form, alpha, nan)


def _icc(x: np.ndarray, form: str, alpha: float, nan: dict[str, float]) -> dict[str, float]:
    msr, msc, mse, msw, n, k = _anova(x)
    q = 1 - alpha / 2
    if form == "ICC(1,1)":
        if msr + (k - 1) * msw == 0:
            return nan
        value = (msr - msw) / (msr + (k - 1) * msw)
        f = msr / msw if msw > 0 else np.inf
        df1, df2 = n - 1, n * (k - 1)
        fl, fu = f / stats.f.ppf(q, df1, df2), f * stats.f.ppf(q, df2, df1)
        lo, hi = (fl - 1) / (fl + k - 1), (fu - 1) / (fu + k - 1)
    elif form == "ICC(3,1)":
        if msr + (k - 1) * mse == 0:
            return nan
        value = (msr - mse) / (msr + (k - 1) * mse)
        f = msr / mse if mse > 0 else np.inf
        df1, df2 = n - 1, (n - 1) * (k - 1)
        fl, fu = f / stats.f.ppf(q, df1, df2), f * stats.f.ppf(q, df2, df1)
        lo, hi = (fl - 1) / (fl + k - 1), (fu - 1) / (fu + k - 1)
    else:
        denom = msr + (k - 1) * mse + k * (msc - mse) / n
        if denom == 0:
            return nan
        value = (msr - mse) / denom
        f = msr / mse if mse > 0 else np.inf
        df1, df2 = n - 1, (n - 1) * (k - 1)
        # Shrout & Fleiss: approximate df for the CI of ICC(2,1)
        a = k * value / (n * (1 - value)) if value < 1 else np.inf
        b = 1 + k * value * (n - 1) / (n * (1 - value)) if value < 1 else np.inf
        v = (a * msc + b * mse) ** 2 / ((a * msc) ** 2 / (k - 1) + (b * mse) ** 2 / ((n - 1) * (k - 1))) \
            if np.isfinite(a) and (a * msc + b * mse) > 0 else np.inf
        fs, fi = stats.f.ppf(q, n - 1, v), stats.f.ppf(q, v, n - 1)
        lo = n * (msr - fs * mse) / (fs * (k * msc + (k * n - k - n) * mse) + n * msr)
        hi = n * (fi * msr - mse) / (k * msc + (k * n - k - n) * mse + n * fi * msr)
    p = float(stats.f.sf(f, df1, df2)) if np.isfinite(f) else 0.0
    return {"icc": float(value), "ci_low": float(lo), "ci_high": float(hi), "F": float(f), "p": p}


def volume_correlation(pred: Sequence[float], ref: Sequence[float]) -> float:
    """VC: Pearson's r of predicted vs reference volumes over cases (NaN for < 3 finite pairs or no spread)."""
    p, r = np.asarray(pred, float), np.asarray(ref, float)
    ok = np.isfinite(p) & np.isfinite(r)
    if ok.sum() < 3 or np.std(p[ok]) == 0 or np.std(r[ok]) == 0:
        return float("nan")
    return float(stats.pearsonr(p[ok], r[ok])[0])


def sarcopenia_correlation(table: pd.DataFrame, volume_columns: dict[str, str], height: str = "height_m",
                           flag: str = "sarcopenic", sex: str = "sex") -> pd.DataFrame:
    """Per sex and structure: Pearson r (point-biserial) and p of ``volume / height²`` against the sarcopenia
    flag (Kim 2024 Fig. 7). ``volume_columns`` maps structure name -> column of volumes (mL). Rows: sex,
    structure, n, n_sarcopenic, r, p."""
    rows = []
    for s, g in table.groupby(sex, sort=True):
        y = g[flag].astype(float).to_numpy()
        for name, col in volume_columns.items():
            x = (g[col].astype(float) / g[height].astype(float) ** 2).to_numpy()
            ok = np.isfinite(x) & np.isfinite(y)
            if ok.sum() >= 3 and np.std(y[ok]) > 0 and np.std(x[ok]) > 0:
                r, p = stats.pearsonr(x[ok], y[ok])
            else:
                r, p = float("nan"), float("nan")
            rows.append({"sex": s, "structure": name, "n": int(ok.sum()), "n_sarcopenic": int(y[ok].sum()),
                         "r": float(r), "p": float(p)})
    return pd.DataFrame(rows, columns=["sex", "structure", "n", "n_sarcopenic", "r", "p"])
