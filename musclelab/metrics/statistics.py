"""Group statistics for comparing training regimes with human observers.

McSweeney et al. 2022 report, per (pretraining, n-training-cases) group, the mean of
each per-slice score with a 95 % confidence interval, compare every group with the
human observers by Dunnett's many-to-one test, and draw the observers' spread as a
"human observer band". This module provides those three pieces on plain arrays:

* :func:`mean_ci` -- t-based confidence interval of a mean, NaN-aware;
* :func:`dunnett_vs_control` -- ``scipy.stats.dunnett`` (SciPy >= 1.11) wrapped into a
  tidy DataFrame, one row per group;
* :func:`observer_agreement` -- each observer's DSC, RMS-DTA (cm), SMA and SMD
  differences against a reference contour (:func:`musclelab.metrics.body_composition`).

NaN marks an undefined per-case value (see the empty-mask conventions of the metrics
package); it is dropped before any statistic, as in :func:`musclelab.metrics.summarize`.

Dunnett p-values are integrals of a multivariate t distribution that SciPy evaluates
by randomised quasi-Monte Carlo: they carry an error of order 1e-4 and change with the
seed. :func:`dunnett_vs_control` therefore fixes the seed (``rng=0``) by default, so a
results table is reproducible.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

from .body_composition import body_composition
from .surface import Spacing

__all__ = ["mean_ci", "dunnett_vs_control", "observer_agreement"]

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
    confidence: float = 0.95,
    rng: int | np.random.Generator | None = 0,
) -> pd.DataFrame:
    """Dunnett's many-to-one test of every group's mean against a control (``scipy.stats.dunnett``).

    Args:
        groups: name → per-case values of one group (e.g. DSC of each test slice for a
            (pretraining, n) setting). NaNs are dropped.
        control: the control's values (e.g. the human observers' scores), or the name of
            an entry of ``groups``, which is then used as control and not tested.
        alternative: ``"two-sided"``, ``"greater"`` (group mean > control mean) or ``"less"``.
        confidence: level of the simultaneous confidence intervals of the differences.
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
    ci = res.confidence_interval(confidence_level=confidence)
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
