"""Group statistics for comparing training regimes with each other and with human observers, and the layer
every report's findings use to test a paper's claim.

McSweeney et al. 2022 report, per (pretraining, n-training-cases) group, the mean of
each per-slice score with a 95 % confidence interval, compare every group with the
human observers by Dunnett's many-to-one test, and draw the observers' spread as a
"human observer band":

* :func:`mean_ci` -- t-based confidence interval of a mean, NaN-aware;
* :func:`dunnett_vs_control` -- ``scipy.stats.dunnett`` (SciPy >= 1.11) wrapped into a
  tidy DataFrame, one row per group;
* :func:`observer_agreement` -- each observer's DSC, RMS-DTA (cm), SMA and SMD
  differences against a reference contour (:func:`musclelab.metrics.body_composition`).

The claims layer (:class:`ClaimTest` results, consumed by :func:`musclelab.report.findings.judge`):

* :func:`per_case` -- the unit of analysis: a test case's value averaged over the repeated trainings
  (folds, draws, seeds) that scored it, so one case is one unit however many runs scored it;
* :func:`compare` -- two-sided Wilcoxon signed-rank paired by case when two groups share their cases,
  Mann–Whitney U on per-case means otherwise; :func:`one_sample` -- Wilcoxon against a value;
* :func:`tost` (equivalence, "no difference") and :func:`noninferiority` ("similar or better", "at least the
  paper's value"), each with a stated margin; :func:`all_of` -- a claim that must hold at every n;
* :func:`holm` -- Holm's step-down adjustment over a report's tests;
* :func:`fill_failures` / :func:`worst_value` -- a failed case (e.g. a distance undefined because the model
  predicted nothing) is scored with the worst value of its metric in the study instead of being dropped.

NaN marks an undefined per-case value (see the empty-mask conventions of the metrics
package). :func:`mean_ci` and :func:`dunnett_vs_control` drop it, as
:func:`musclelab.metrics.summarize` does; the reports score failures first (:func:`fill_failures`), so what
they drop is only what was never measured.

Dunnett p-values are integrals of a multivariate t distribution that SciPy evaluates
by randomised quasi-Monte Carlo: they carry an error of order 1e-4 and change with the
seed. :func:`dunnett_vs_control` therefore fixes the seed (``rng=0``) by default, so a
results table is reproducible.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

from .body_composition import body_composition
from .surface import Spacing

__all__ = ["ClaimTest", "all_of", "compare", "dunnett_vs_control", "fill_failures", "holm", "mean_ci",
           "noninferiority", "observer_agreement", "one_sample", "per_case", "tost", "worst_value"]

Alternative = Literal["two-sided", "less", "greater"]


def _finite(values: ArrayLike, name: str = "values") -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    if np.isinf(v).any():
        raise ValueError(f"{name} contains infinite values")
    return v[~np.isnan(v)]


def mean_ci(values: ArrayLike, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the mean and its two-sided t-based confidence interval.

    ``mean ± t_{(1+confidence)/2, n-1} · sd / sqrt(n)`` with the sample SD (``ddof=1``),
    over the non-NaN values. ``n == 0`` → all NaN; ``n == 1`` → the value with NaN bounds.
    Units are those of ``values`` (e.g. cm² for SMA differences).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    v = _finite(values)
    n = int(v.size)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if n < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * float(v.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def _seed_kwarg() -> str:
    # SciPy 1.15 renamed ``random_state`` to ``rng`` (SPEC 7); older versions only know the former.
    return "rng" if "rng" in inspect.signature(stats.dunnett).parameters else "random_state"


def dunnett_vs_control(
    groups: Mapping[str, ArrayLike],
    control: ArrayLike | str,
    alternative: Alternative = "two-sided",
    confidence: float | None = 0.95,
    rng: int | np.random.Generator | None = 0,
) -> pd.DataFrame:
    """Dunnett's many-to-one test of every group's mean against a control (``scipy.stats.dunnett``).

    Args:
        groups: name → per-case values of one group (e.g. DSC of each test slice for a
            (pretraining, n) setting). NaNs are dropped.
        control: the control's values (e.g. the human observers' scores), or the name of
            an entry of ``groups``, which is then used as control and not tested.
        alternative: ``"two-sided"``, ``"greater"`` (group mean > control mean) or ``"less"``.
        confidence: level of the simultaneous confidence intervals of the differences; ``None`` skips them
            (NaN bounds): SciPy finds them by a root search over the same integrals, ~15× the p-values' cost.
        rng: seed / generator for SciPy's quasi-Monte Carlo p-value integration (fixed by
            default so results are reproducible; ``None`` draws a fresh one).

    Returns:
        DataFrame, one row per tested group in ``groups`` order, columns ``group, n,
        mean, control_mean, diff`` (= mean − control_mean), ``statistic, p_value,
        ci_low, ci_high`` (simultaneous CI of ``diff``; one-sided alternatives give an
        infinite bound). p-values are already adjusted for the many-to-one comparisons.
    """
    if isinstance(control, str):
        if control not in groups:
            raise KeyError(f"control group {control!r} not in groups {list(groups)}")
        ctrl = _finite(groups[control], f"groups[{control!r}]")
        tested = {k: v for k, v in groups.items() if k != control}
    else:
        ctrl = _finite(control, "control")
        tested = dict(groups)
    if not tested:
        raise ValueError("need at least one group besides the control")
    samples = {str(k): _finite(v, f"groups[{k!r}]") for k, v in tested.items()}
    for name, v in {**samples, "control": ctrl}.items():
        if v.size == 0:
            raise ValueError(f"group {name!r} has no non-NaN values")

    res = stats.dunnett(*samples.values(), control=ctrl, alternative=alternative, **{_seed_kwarg(): rng})
    nan = np.full(len(samples), np.nan)
    ci = res.confidence_interval(confidence_level=confidence) if confidence is not None else \
        type("NoCI", (), {"low": nan, "high": nan})()
    means = np.array([v.mean() for v in samples.values()])
    return pd.DataFrame(
        {
            "group": list(samples),
            "n": [int(v.size) for v in samples.values()],
            "mean": means,
            "control_mean": float(ctrl.mean()),
            "diff": means - float(ctrl.mean()),
            "statistic": np.asarray(res.statistic, dtype=np.float64),
            "p_value": np.asarray(res.pvalue, dtype=np.float64),
            "ci_low": np.asarray(ci.low, dtype=np.float64),
            "ci_high": np.asarray(ci.high, dtype=np.float64),
        }
    )


def observer_agreement(
    observer_masks: Mapping[str, ArrayLike],
    reference: ArrayLike,
    image_hu: ArrayLike,
    spacing_mm: Spacing,
    postprocess: bool = False,
    threshold_hu: float = 175.0,
    dilate_mm: float = 2.0,
) -> pd.DataFrame:
    """Each observer's agreement with a reference contour on one 2D slice (the "human observer band").

    Every observer mask is scored as a prediction against ``reference`` with
    :func:`musclelab.metrics.body_composition`. Manual contours are not post-processed
    by default (``postprocess=False``); set it to score them exactly like a model.

    Returns:
        DataFrame, one row per observer in input order: ``observer, dice, rms_dta_cm``
        (cm), ``sma`` (cm²), ``smd`` (HU), ``sma_diff``, ``sma_abs_diff`` (cm²) and
        ``smd_diff`` (HU), differences being observer − reference.
    """
    rows = []
    for name, mask in observer_masks.items():
        bc = body_composition(
            mask, reference, image_hu, spacing_mm,
            postprocess=postprocess, threshold_hu=threshold_hu, dilate_mm=dilate_mm,
        )  # fmt: skip
        rows.append(
            {
                "observer": str(name),
                "dice": bc["dice"],
                "rms_dta_cm": bc["rms_dta_cm"],
                "sma": bc["sma_pred"],
                "smd": bc["smd_pred"],
                "sma_diff": bc["sma_diff"],
                "sma_abs_diff": bc["sma_abs_diff"],
                "smd_diff": bc["smd_diff"],
            }
        )
    columns = ["observer", "dice", "rms_dta_cm", "sma", "smd", "sma_diff", "sma_abs_diff", "smd_diff"]
    return pd.DataFrame(rows, columns=columns)


# ------------------------------------------------------------------------------------------ claims of the papers
# The layer every report's findings use: per-case values averaged over repeated trainings (the unit of analysis),
# failures scored instead of dropped, paired tests where two groups share their test cases, equivalence and
# non-inferiority tests for "no difference" / "at least" claims, and Holm's adjustment over a report's tests.
#
# Differences are tested with rank tests (Wilcoxon signed-rank on paired per-case values, Mann–Whitney U when the
# groups share no case), two-sided; equivalence (TOST) and non-inferiority with t-tests on the per-case values,
# as is usual for those designs (Schuirmann 1987). SciPy has every test but Holm's step-down adjustment
# (``scipy.stats.false_discovery_control`` is Benjamini–Hochberg) and no TOST; statsmodels has both but is not a
# dependency for six lines, so :func:`holm` and :func:`tost` are ours.


@dataclass(frozen=True)
class ClaimTest:
    """One test of a claim on per-unit values.

    Attributes:
        test: the test in words (e.g. ``"Wilcoxon signed-rank, paired by test case, two-sided"``).
        unit: the unit of analysis (e.g. ``"test case (mean over 4 runs)"``).
        n: number of units (pairs for a paired test, both groups together otherwise).
        estimate: the measured difference in the claim's units (``a − b``, or the mean − the reference value).
        statistic: the test statistic (NaN when it cannot be computed).
        p_value: its p-value (NaN when it cannot be computed); for TOST the larger one-sided p.
        margin: the equivalence / non-inferiority margin, ``None`` for a difference test.
        n_failed: units that were failures (scored as such, see :func:`fill_failures`).
    """

    test: str
    unit: str
    n: int
    estimate: float
    statistic: float
    p_value: float
    margin: float | None = None
    n_failed: int = 0


def per_case(frame: pd.DataFrame, value: str, case: str = "case_id") -> pd.Series:
    """The mean of ``value`` per test case over the rows of ``frame`` (one row per (run, case)): the unit of
    analysis when the same cases are scored by several trainings (folds, draws, seeds). Indexed by ``case``;
    NaN values are left out of a case's mean (fill failures first, :func:`fill_failures`)."""
    if frame.empty:
        return pd.Series(dtype=np.float64, name=value)
    v = pd.to_numeric(frame[value], errors="coerce").astype(np.float64)
    return v.groupby(frame[case].astype(str)).mean().dropna().rename(value)


def fill_failures(values: ArrayLike, worst: float) -> tuple[np.ndarray, int]:
    """Failed cases (NaN: e.g. a distance for an empty prediction) scored ``worst``; returns ``(values,
    number filled)``. A failure stays in every mean, CI and test as the worst score instead of leaving them."""
    v = np.asarray(values, dtype=np.float64).copy()
    bad = np.isnan(v)
    v[bad] = worst
    return v, int(bad.sum())


def worst_value(values: ArrayLike, higher_is_better: bool) -> float:
    """The worst finite value of a metric over a study (the score of a failed case); NaN if none is finite."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return math.nan
    return float(v.min() if higher_is_better else v.max())


def compare(a: pd.Series, b: pd.Series, unit: str = "test case") -> ClaimTest:
    """Two-sided test of ``a − b`` on per-case values (Series indexed by case id, e.g. :func:`per_case`).

    When the groups share most of their cases (at least half of each group's): Wilcoxon signed-rank on the paired
    differences of the shared cases (SciPy, exact for small n); otherwise Mann–Whitney U on the two sets of
    per-case values (pairing a few shared cases would throw the rest away). ``estimate`` is the mean paired
    difference (paired) or the difference of the means. All differences zero → p = 1.
    """
    a, b = a.dropna(), b.dropna()
    shared = a.index.intersection(b.index)
    if _mostly_shared(len(shared), len(a), len(b)):
        d = (a.loc[shared] - b.loc[shared]).to_numpy(dtype=np.float64)
        name = "Wilcoxon signed-rank, paired, two-sided"
        if not np.any(d != 0):
            return ClaimTest(name, unit, len(d), 0.0, 0.0, 1.0)
        res = stats.wilcoxon(d)
        return ClaimTest(name, unit, len(d), float(d.mean()), float(res.statistic), float(res.pvalue))
    name = "Mann–Whitney U (no shared unit: unpaired), two-sided"
    if not len(a) or not len(b):
        return ClaimTest(name, unit, len(a) + len(b), math.nan, math.nan, math.nan)
    res = stats.mannwhitneyu(a.to_numpy(float), b.to_numpy(float), alternative="two-sided")
    return ClaimTest(name, unit, len(a) + len(b), float(a.mean() - b.mean()), float(res.statistic),
                      float(res.pvalue))


def _mostly_shared(n_shared: int, n_a: int, n_b: int) -> bool:
    return n_shared > 0 and 2 * n_shared >= max(n_a, n_b)


def one_sample(d: ArrayLike, unit: str, mu0: float = 0.0) -> ClaimTest:
    """Two-sided Wilcoxon signed-rank test of values ``d`` (one per unit) against ``mu0``; estimate = mean − mu0.
    All values equal to ``mu0`` → p = 1; no value → NaN."""
    v = np.asarray(d, dtype=np.float64)
    v = v[np.isfinite(v)] - mu0
    name = f"Wilcoxon signed-rank vs {mu0:g}, two-sided"
    if not v.size:
        return ClaimTest(name, unit, 0, math.nan, math.nan, math.nan)
    if not np.any(v != 0):
        return ClaimTest(name, unit, int(v.size), 0.0, 0.0, 1.0)
    res = stats.wilcoxon(v)
    return ClaimTest(name, unit, int(v.size), float(v.mean()), float(res.statistic), float(res.pvalue))


def _paired_or_two(a: pd.Series | ArrayLike, b: pd.Series | ArrayLike | None) -> tuple[np.ndarray, np.ndarray | None]:
    if b is None:
        return np.asarray(a, dtype=np.float64), None
    if isinstance(a, pd.Series) and isinstance(b, pd.Series):
        a, b = a.dropna(), b.dropna()
        shared = a.index.intersection(b.index)
        if _mostly_shared(len(shared), len(a), len(b)):
            return (a.loc[shared] - b.loc[shared]).to_numpy(dtype=np.float64), None
        return a.to_numpy(np.float64), b.to_numpy(np.float64)
    return np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)


def _t_one_sided(x: np.ndarray, y: np.ndarray | None, shift: float, alternative: str) -> tuple[float, float]:
    """One-sided t-test of mean(x) − shift (one sample) or mean(x) − mean(y) − shift (Welch)."""
    if y is None:
        if x.size < 2 or np.std(x) == 0:
            m = float(x.mean()) - shift if x.size else math.nan
            ok = (m > 0) if alternative == "greater" else (m < 0)
            return (math.nan, (0.0 if ok else 1.0) if x.size else math.nan)
        r = stats.ttest_1samp(x, shift, alternative=alternative)
    else:
        if x.size < 2 or y.size < 2:
            return math.nan, math.nan
        r = stats.ttest_ind(x - shift, y, equal_var=False, alternative=alternative)
    return float(r.statistic), float(r.pvalue)


def tost(a: pd.Series | ArrayLike, b: pd.Series | ArrayLike | None, margin: float, unit: str) -> ClaimTest:
    """Equivalence test (two one-sided t-tests, Schuirmann): is ``|mean(a − b)| < margin``?

    ``a``, ``b`` per-case Series sharing cases → paired (one-sample on the differences); no shared case → Welch;
    ``b=None`` → ``a`` are already differences. ``p_value`` is the larger one-sided p: equivalence is shown at
    level α when it is below α (the 1 − 2α CI of the difference lies inside ±margin).
    """
    if margin <= 0:
        raise ValueError(f"margin must be positive, got {margin}")
    x, y = _paired_or_two(a, b)
    x = x[np.isfinite(x)]
    y = None if y is None else y[np.isfinite(y)]
    paired = y is None
    est = float(x.mean() - (0.0 if paired else y.mean())) if x.size and (paired or y.size) else math.nan
    how = ", paired" if paired and b is not None else ""
    name = f"TOST equivalence (two one-sided t-tests{how}), margin ±{margin:g}"
    t_lo, p_lo = _t_one_sided(x, y, -margin, "greater")
    t_hi, p_hi = _t_one_sided(x, y, margin, "less")
    p = max(p_lo, p_hi) if np.isfinite(p_lo) and np.isfinite(p_hi) else math.nan
    stat = t_lo if p_lo >= p_hi else t_hi
    return ClaimTest(name, unit, int(x.size + (0 if paired else y.size)), est, stat, p, margin=margin)


def noninferiority(a: pd.Series | ArrayLike, b: pd.Series | ArrayLike | float | None, margin: float,
                   unit: str) -> ClaimTest:
    """One-sided t-test that ``mean(a − b) > −margin`` ("similar or better", "reaches at least").

    ``b`` a per-case Series sharing cases with ``a`` → paired; a number → ``a`` against that reference value
    (e.g. a value a paper reports); ``None`` → ``a`` are already differences. Shown at level α when p < α.
    """
    if margin < 0:
        raise ValueError(f"margin must be non-negative, got {margin}")
    ref = None
    if isinstance(b, (int, float)):
        ref, b = float(b), None
    x, y = _paired_or_two(a, b)
    x = x[np.isfinite(x)]
    if ref is not None:
        x = x - ref
    y = None if y is None else y[np.isfinite(y)]
    est = float(x.mean() - (0.0 if y is None else y.mean())) if x.size else math.nan
    what = f"against {ref:g}" if ref is not None else ("paired" if y is None else "Welch")
    t, p = _t_one_sided(x, y, -margin, "greater")
    return ClaimTest(f"non-inferiority one-sided t-test ({what}), margin {margin:g}", unit,
                      int(x.size + (0 if y is None else y.size)), est, t, p, margin=margin)


def all_of(results: Sequence[ClaimTest], test: str) -> ClaimTest:
    """A claim that must hold in every one of several tests ("at every n ≥ 50"): the intersection–union test,
    whose p-value is the largest of the parts (valid at level α without adjustment). Estimate: the part with the
    largest p."""
    if not results:
        return ClaimTest(test, "", 0, math.nan, math.nan, math.nan)
    ps = [r.p_value if np.isfinite(r.p_value) else math.inf for r in results]
    worst = results[int(np.argmax(ps))]
    p = max(ps)
    return ClaimTest(f"{test} (largest p of {len(results)})", worst.unit, worst.n, worst.estimate, worst.statistic,
                      p if math.isfinite(p) else math.nan, margin=worst.margin,
                      n_failed=sum(r.n_failed for r in results))


def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error); NaN entries stay NaN and are not counted."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if not m:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out
