"""The McSweeney et al. 2022 report: pretraining (``init``) × training-set size (``n``), compared with observers.

Reproduces the paper's outputs from the run directories of one study (a Hydra multirun over ``init.name``,
``data.n_train``, ``data.fold``, ``data.subset_draw`` and ``seed``), reading files only:

* Fig. 3 ``fig_dsc.png`` — mean DSC vs n per init with 95 % CIs and the human-observer band;
* Fig. 4 ``fig_rms.png`` — RMS distance-to-agreement (cm) vs n;
* Fig. 5 ``fig_sma_smd.png`` — SMA (cm²) and SMD (HU) differences vs n;
* Table 1 ``dunnett_dsc.csv`` / ``dunnett_rms.csv`` — Dunnett's test of each (init, n) group against the
  observers' pooled per-case scores;
* Table 2 ``dunnett_sma.csv`` / ``dunnett_smd.csv`` — each group's predicted SMA / SMD against the
  reference values of the same test cases;
* ``summary.csv`` (one row per (init, n)), ``runs.csv`` (every run directory and its status) and
  ``report.md`` tying it together, with missing and failed runs listed, never averaged away.

The unit of analysis is the test case: a group's (init, n) value of a case is its mean over the group's complete
runs (folds × draws × seeds, which all score the same hold-out test cases), and means, 95 % CIs and Dunnett's
tests are over those per-case means — not over pooled (run × case) rows, which would count one case once per run
as if independent. A failed case (the model predicted no muscle, so its RMS-DTA is undefined) stays in: its
RMS-DTA is scored as the worst RMS-DTA of the whole study (models and observers), its DSC is 0, and every table
counts the failures (:func:`score_failures`). The primary DSC is ``dice_pp`` (after the paper's bone
post-processing) when
``test_cases.csv`` has it, else ``dice``; RMS-DTA is ``rms_dta_cm`` when present, else ``rms_dta`` / 10.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from musclelab.io import atomic_write_text  # noqa: E402
from musclelab.outputs.figures import save_figure  # noqa: E402
from musclelab.report.markdown import md_table as _md_table  # noqa: E402
from musclelab.metrics.statistics import (dunnett_vs_control, fill_failures, mean_ci, per_case,  # noqa: E402
                                          worst_value)

from . import mcsweeney_findings as mf  # noqa: E402
from .mcsweeney_findings import init_order, mwu_markdown  # noqa: E402
from .runs import (MISSING, Study, config_value, find_run_dirs, load_config, load_study,  # noqa: E402
                   report_dir)

KIND = "mcsweeney"
TITLE = "McSweeney et al. 2022 reproduction: transfer learning for data-efficient muscle segmentation"

# output column -> dotted config key
COLUMNS: dict[str, str] = {
    "init": "init.name",
    "n_train": "data.n_train",
    "fold": "data.fold",
    "subset_draw": "data.subset_draw",
    "seed": "seed",
    "model": "model.name",
    "dataset": "data.name",
}
IDENTITY: tuple[str, ...] = tuple(COLUMNS)  # the columns naming one run (repeats are superseded)
METRICS: dict[str, str] = {
    "dsc": "DSC",
    "rms_dta_cm": "RMS-DTA (cm)",
    "sma_diff": "SMA difference (cm²)",
    "smd_diff": "SMD difference (HU)",
}
DIGITS: dict[str, int] = {"dsc": 3, "rms_dta_cm": 3, "sma_diff": 2, "smd_diff": 2}
CASE_COLUMNS = ["case_id", "dsc", "rms_dta_cm", "sma_pred", "sma_true", "sma_diff", "smd_pred", "smd_true",
                "smd_diff"]
DUNNETT_COLUMNS = ["metric", "n_train", "init", "n", "mean", "control", "control_mean", "diff", "statistic",
                   "p_value", "ci_low", "ci_high"]
ALPHA = 0.05
RMS_DTA_NOTE = (
    "**RMS-DTA** is the root mean square of the pooled symmetric surface distances: every boundary point of the "
    "prediction and of the reference contributes its distance (mm, in physical spacing) to the nearest point of "
    "the other boundary, and the RMS is taken over both sets together; reported in cm. The paper's equation 4 "
    "is garbled (it squares the difference of the two directed distances of one point, which is zero for a "
    "point-to-nearest-point distance taken both ways, and averages over the predicted boundary only), so we use "
    "the standard symmetric definition (`musclelab.metrics.surface.rms_dta`).")


def detect(study_dir: str | Path) -> bool:
    """Whether the study's runs are a McSweeney layout: configs with ``init.name`` and ``data.n_train``."""
    for run_dir in find_run_dirs(study_dir):
        cfg = load_config(run_dir)
        if config_value(cfg, "init.name") is not MISSING and config_value(cfg, "data.n_train") is not MISSING:
            return True
    return False


# ---------------------------------------------------------------------------------------------------- reading
def _has(df: pd.DataFrame, col: str) -> bool:
    return col in df and bool(pd.to_numeric(df[col], errors="coerce").notna().any())


def _num(df: pd.DataFrame, col: str) -> pd.Series:
    if col not in df:
        return pd.Series(np.nan, index=df.index, dtype=np.float64)
    return pd.to_numeric(df[col], errors="coerce").astype(np.float64)


def standard_case_metrics(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per-case columns of :data:`CASE_COLUMNS` from one ``test_cases.csv``, and which source column fed each.

    DSC = ``dice_pp`` if present (with any value) else ``dice``; RMS-DTA (cm) = ``rms_dta_cm`` else
    ``rms_dta`` / 10 (mm → cm); SMA/SMD differences = the ``*_diff`` columns else ``pred − true``.
    """
    out = pd.DataFrame({"case_id": df["case_id"].astype(str)} if "case_id" in df
                       else {"case_id": [str(i) for i in range(len(df))]}, index=df.index)
    src: dict[str, str] = {}
    dsc_col = "dice_pp" if _has(df, "dice_pp") else "dice"
    out["dsc"], src["dsc"] = _num(df, dsc_col), dsc_col
    if _has(df, "rms_dta_cm"):
        out["rms_dta_cm"], src["rms_dta_cm"] = _num(df, "rms_dta_cm"), "rms_dta_cm"
    else:
        out["rms_dta_cm"], src["rms_dta_cm"] = _num(df, "rms_dta") / 10.0, "rms_dta / 10"
    for what in ("sma", "smd"):
        out[f"{what}_pred"], out[f"{what}_true"] = _num(df, f"{what}_pred"), _num(df, f"{what}_true")
        if _has(df, f"{what}_diff"):
            out[f"{what}_diff"], src[f"{what}_diff"] = _num(df, f"{what}_diff"), f"{what}_diff"
        else:
            out[f"{what}_diff"] = out[f"{what}_pred"] - out[f"{what}_true"]
            src[f"{what}_diff"] = f"{what}_pred − {what}_true"
    return out[CASE_COLUMNS], src


def _as_int(value: object) -> int | None:
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) and f == int(f) else None


def load_cases(study: Study) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Counter], list[str]]:
    """Per-case rows of every used run, tagged with the run's keys.

    Returns:
        ``(cases, excluded, sources, notes)``: ``cases`` has the run columns (``run_dir, init, n_train,
        fold, subset_draw, seed``) plus :data:`CASE_COLUMNS`; ``excluded`` lists complete runs that could
        not be used (no ``test_cases.csv``, no ``init.name`` or ``data.n_train``) with a ``reason``;
        ``sources`` counts, per metric, which ``test_cases.csv`` column fed it.
    """
    frames, excluded, notes = [], [], []
    sources: dict[str, Counter] = {m: Counter() for m in METRICS}
    grids: Counter = Counter()  # where the bone removal and SMA/SMD were measured (test_cases.csv bc_grid)
    for run in study.used.itertuples(index=False):
        run_dir = study.root / run.run_dir
        n_train = _as_int(run.n_train)
        reason = ""
        if run.init is None or (isinstance(run.init, float) and math.isnan(run.init)):
            reason = "no init.name in its config"
        elif n_train is None:
            reason = f"data.n_train is {run.n_train!r}, not a number of training cases"
        elif not (run_dir / "test_cases.csv").exists():
            reason = "status complete but no test_cases.csv"
        if not reason:
            try:
                raw = pd.read_csv(run_dir / "test_cases.csv")
            except (OSError, ValueError) as err:
                raw, reason = None, f"unreadable test_cases.csv ({type(err).__name__}: {err})"
        if reason:
            excluded.append({**run._asdict(), "reason": reason})
            continue
        metrics, src = standard_case_metrics(raw)
        for k, v in src.items():
            sources[k][v] += 1
        grids.update(raw["bc_grid"].astype(str) if "bc_grid" in raw else ["not recorded"] * len(raw))
        tags = {"run_dir": run.run_dir, "init": str(run.init), "n_train": n_train, "fold": run.fold,
                "subset_draw": run.subset_draw, "seed": run.seed}
        frames.append(metrics.assign(**tags))
    if grids:
        where = {"original": "the original slice (the paper's rule, §2.3)", "network": "the network's resized input",
                 "not recorded": "a grid the runs did not record"}
        notes.append("Bone removal (>175 HU + 2 mm), SMA, SMD and the post-processed DSC / RMS-DTA were measured on "
                     + ", ".join(f"{where.get(k, k)} ({v} test rows)" for k, v in sorted(grids.items())) + ".")
    cols = ["run_dir", "init", "n_train", "fold", "subset_draw", "seed", *CASE_COLUMNS]
    cases = pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)
    for metric, counter in sources.items():
        if len(counter) > 1:
            notes.append(f"{METRICS[metric]} comes from different columns in different runs: "
                         + ", ".join(f"`{k}` ({v} runs)" for k, v in counter.items()))
    excl = pd.DataFrame(excluded, columns=[*study.used.columns, "reason"])
    return cases, excl, sources, notes


def load_observers(study: Study) -> pd.DataFrame | None:
    """Pooled observer rows from the used runs' ``observers.csv`` files, or ``None`` when there are none.

    Runs of the same fold share their test cases and so repeat the same rows; rows are deduplicated on
    ``(case_id, observer)``. Columns: ``case_id, observer, dsc, rms_dta_cm, sma_diff, smd_diff``. The observers
    are scored the way the models are: after the bone post-processing (``observers.csv``'s ``*_pp`` columns)
    when the files have them, as the models' DSC is ``dice_pp``.
    """
    frames = []
    for run in study.used.itertuples(index=False):
        path = study.root / run.run_dir / "observers.csv"
        if path.exists():
            frames.append(pd.read_csv(path))
    if not frames:
        return None
    raw = pd.concat(frames, ignore_index=True)
    if raw.empty:
        return None
    pp = "_pp" if _has(raw, "dice_pp") else ""
    obs = pd.DataFrame({
        "case_id": raw["case_id"].astype(str),
        "observer": raw["observer"].astype(str) if "observer" in raw else "observer",
        "dsc": _num(raw, f"dice{pp}"),
        "rms_dta_cm": _num(raw, f"rms_dta_cm{pp}"),
        "sma_diff": _num(raw, f"sma_diff{pp}"),
        "smd_diff": _num(raw, f"smd_diff{pp}"),
    })
    return obs.drop_duplicates(["case_id", "observer"], ignore_index=True)


def score_failures(cases: pd.DataFrame, obs: pd.DataFrame | None) -> tuple[pd.DataFrame, list[str]]:
    """Failed cases kept in the statistics: ``cases`` with a ``failed`` column (RMS-DTA undefined and DSC 0: the
    model predicted no muscle, or muscle where the reference has none) and those RMS-DTA values scored as the worst
    RMS-DTA of the study (models and observers,
    cm); DSC needs nothing (an empty prediction has DSC 0). Returns ``(cases, notes)``; the notes say what was
    scored. SMD is undefined for an empty prediction and is left out of the SMD means (counted in ``failed``)."""
    cases = cases.copy()
    rms = pd.to_numeric(cases["rms_dta_cm"], errors="coerce") if len(cases) else pd.Series(dtype=float)
    dsc = pd.to_numeric(cases["dsc"], errors="coerce") if len(cases) else pd.Series(dtype=float)
    cases["failed"] = (rms.isna() & (dsc == 0)).to_numpy() if len(cases) else pd.Series(dtype=bool)
    n_failed = int(cases["failed"].sum()) if len(cases) else 0
    if not n_failed:
        return cases, []
    pool = np.concatenate([rms.to_numpy(float), [] if obs is None else obs["rms_dta_cm"].to_numpy(float)])
    worst = worst_value(pool, higher_is_better=False)
    if not np.isfinite(worst):
        return cases, [f"{n_failed} of {len(cases)} case values have no RMS-DTA and no finite RMS-DTA exists in "
                       "the study to score them with; RMS-DTA statistics are not computed"]
    filled, _ = fill_failures(rms[cases["failed"]].to_numpy(float), worst)
    cases.loc[cases["failed"], "rms_dta_cm"] = filled
    return cases, [f"{n_failed} of {len(cases)} case values failed (the model predicted no muscle: RMS-DTA "
                   f"undefined); they are scored with the study's worst RMS-DTA, {worst:.3f} cm, and DSC 0, and stay "
                   "in every mean, CI and test; SMD is undefined for them and left out of the SMD means"]


# ---------------------------------------------------------------------------------------------------- statistics
def summarize_groups(cases: pd.DataFrame, missing: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (init, n_train): ``n_runs, n_missing, n_cases`` (run × case rows), ``n_unique_cases``,
    ``n_failed`` (rows whose prediction failed, scored by :func:`score_failures`) and, per metric of
    :data:`METRICS`, ``<metric>_mean, <metric>_ci_low, <metric>_ci_high`` (:func:`mean_ci`, 95 %) over the
    per-case means of the group's runs (the unit of analysis). ``n_missing`` counts expected runs of the group without a
    complete run (needs ``init`` and ``n_train`` columns in ``missing``)."""
    rows = []
    miss_count: Counter = Counter()
    if missing is not None and {"init", "n_train"} <= set(missing.columns):
        for r in missing.itertuples(index=False):
            miss_count[(str(r.init), _as_int(r.n_train))] += 1
    groups = {} if cases.empty else dict(list(cases.groupby(["init", "n_train"], sort=False)))
    keys = set(groups) | set(miss_count)
    for init in init_order([k[0] for k in keys]):
        for n in sorted(k[1] for k in keys if k[0] == init and k[1] is not None):
            g = groups.get((init, n), cases.iloc[0:0])
            row: dict[str, object] = {
                "init": init, "n_train": int(n), "n_runs": int(g["run_dir"].nunique()),
                "n_missing": int(miss_count[(init, n)]), "n_cases": int(len(g)),
                "n_unique_cases": int(g["case_id"].nunique()),
                "n_failed": int(g["failed"].sum()) if "failed" in g else 0,
            }
            for m in METRICS:
                have = len(g) and m in g
                mean, lo, hi = mean_ci(per_case(g, m).to_numpy(dtype=np.float64)) if have else (math.nan,) * 3
                row.update({f"{m}_mean": mean, f"{m}_ci_low": lo, f"{m}_ci_high": hi})
            rows.append(row)
    cols = ["init", "n_train", "n_runs", "n_missing", "n_cases", "n_unique_cases", "n_failed"]
    cols += [f"{m}_{s}" for m in METRICS for s in ("mean", "ci_low", "ci_high")]
    return pd.DataFrame(rows, columns=cols)


def observer_band(obs: pd.DataFrame | None) -> pd.DataFrame:
    """Per metric (index): the observers' pooled per-case ``mean, ci_low, ci_high`` (95 %), ``n`` values
    and ``n_observers``. Empty when there are no observers."""
    cols = ["mean", "ci_low", "ci_high", "n", "n_observers"]
    if obs is None or obs.empty:
        return pd.DataFrame(columns=cols, index=pd.Index([], name="metric"))
    rows = {}
    for m in METRICS:
        v = obs[m].to_numpy(dtype=np.float64)
        mean, lo, hi = mean_ci(v)
        rows[m] = [mean, lo, hi, int(np.isfinite(v).sum()), int(obs.loc[np.isfinite(v), "observer"].nunique())]
    return pd.DataFrame.from_dict(rows, orient="index", columns=cols).rename_axis("metric")


def _finite(v: pd.Series) -> np.ndarray:
    a = v.to_numpy(dtype=np.float64)
    return a[np.isfinite(a)]


def _dunnett_rows(metric: str, n: int, groups: dict[str, np.ndarray], control: np.ndarray,
                  control_name: str, rng: int, intervals: bool = True) -> list[dict]:
    groups = {k: v for k, v in groups.items() if v.size}
    if not groups or control.size < 2 or sum(v.size for v in groups.values()) + control.size <= len(groups) + 1:
        return []
    res = dunnett_vs_control(groups, control, rng=rng, confidence=0.95 if intervals else None)
    res = res.rename(columns={"group": "init"})
    res.insert(0, "metric", metric)
    res.insert(1, "n_train", int(n))
    res.insert(res.columns.get_loc("control_mean"), "control", control_name)
    return res[DUNNETT_COLUMNS].to_dict("records")


def dunnett_vs_observers(cases: pd.DataFrame, obs: pd.DataFrame | None, metric: str,
                         rng: int = 0, intervals: bool = True) -> pd.DataFrame:
    """Table 1 (long form): for each n, every init's per-case ``metric`` (mean over its runs) against the
    observers' per-case values (mean over the observers of a case).

    The control is the per-image mean over that image's observers (McSweeney 2022, §2.4: "mean DSC and mean
    RMS-DTA for every image"), one value per test image however many observers contoured it (five, or four).
    One :func:`dunnett_vs_control` call per n (the inits of that n form the family); columns
    :data:`DUNNETT_COLUMNS`. Empty without observers.
    """
    rows: list[dict] = []
    if obs is not None and not cases.empty:
        control = per_case(obs, metric).to_numpy(np.float64)
        for n in sorted(cases["n_train"].unique()):
            at_n = cases[cases["n_train"] == n]
            groups = {i: per_case(at_n[at_n["init"] == i], metric).to_numpy(np.float64)
                      for i in init_order(at_n["init"].unique())}
            rows += _dunnett_rows(metric, n, groups, control, "observers", rng, intervals)
    return pd.DataFrame(rows, columns=DUNNETT_COLUMNS)


def dunnett_vs_reference(cases: pd.DataFrame, what: str, rng: int = 0, intervals: bool = True) -> pd.DataFrame:
    """Table 2 (long form): for each n, every init's predicted ``what`` (``"sma"`` or ``"smd"``) against the
    reference values of the same test cases.

    The control is ``<what>_true`` of the distinct test cases at that n (each case once, however many runs
    scored it); groups are each init's per-case ``<what>_pred`` (mean over its runs). Columns
    :data:`DUNNETT_COLUMNS`.
    """
    rows: list[dict] = []
    if not cases.empty:
        for n in sorted(cases["n_train"].unique()):
            at_n = cases[cases["n_train"] == n]
            control = _finite(at_n.drop_duplicates("case_id")[f"{what}_true"])
            groups = {i: per_case(at_n[at_n["init"] == i], f"{what}_pred").to_numpy(np.float64)
                      for i in init_order(at_n["init"].unique())}
            rows += _dunnett_rows(what, n, groups, control, "reference", rng, intervals)
    return pd.DataFrame(rows, columns=DUNNETT_COLUMNS)


def pvalue_table(long: pd.DataFrame) -> pd.DataFrame:
    """The paper's table layout: rows = init (paper order), columns = n (ascending), cells = p-values."""
    if long.empty:
        return pd.DataFrame()
    wide = long.pivot(index="init", columns="n_train", values="p_value")
    wide = wide.reindex(index=init_order(list(wide.index)), columns=sorted(wide.columns))
    wide.index.name, wide.columns.name = "init", "n_train"
    return wide


def format_p(p: float) -> str:
    """``0.003``, ``<0.001``, or ``–`` for a missing value."""
    if p is None or not np.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


# ---------------------------------------------------------------------------------------------------- results
@dataclass
class McSweeneyResult:
    """Everything the report shows, computed from one study directory."""

    study: Study
    cases: pd.DataFrame
    excluded: pd.DataFrame
    observers: pd.DataFrame | None
    summary: pd.DataFrame
    band: pd.DataFrame
    dunnett: dict[str, pd.DataFrame]  # "dsc", "rms", "sma", "smd" -> long form
    sources: dict[str, Counter]
    notes: list[str] = field(default_factory=list)
    mann_whitney: pd.DataFrame = field(default_factory=pd.DataFrame)  # Appendix C, long form (RMS-DTA)
    findings: list = field(default_factory=list)  # report.findings.Finding, from mcsweeney_findings
    split_lines: list[str] = field(default_factory=list)  # the split design as the manifests show it


def analyze(study_dir: str | Path, rng: int = 0, intervals: bool = True) -> McSweeneyResult:
    """Collect the runs of ``study_dir`` and compute the summary, observer band and Dunnett tables
    (``intervals=False`` skips the Dunnett tables' simultaneous CIs, the slow part; p-values are unchanged)."""
    study = load_study(study_dir, COLUMNS, IDENTITY)
    cases, excluded, sources, notes = load_cases(study)
    obs = load_observers(study)
    cases, fail_notes = score_failures(cases, obs)
    notes = [*study.notes, *notes, *fail_notes]
    dunnett = {
        "dsc": dunnett_vs_observers(cases, obs, "dsc", rng, intervals),
        "rms": dunnett_vs_observers(cases, obs, "rms_dta_cm", rng, intervals),
        "sma": dunnett_vs_reference(cases, "sma", rng, intervals),
        "smd": dunnett_vs_reference(cases, "smd", rng, intervals),
    }
    if obs is None:
        notes.append("no observers.csv in any complete run: no observer band, and the Dunnett tests against "
                     "the observers (Table 1) are skipped")

    mwu = mf.mann_whitney_table(cases)
    return McSweeneyResult(study=study, cases=cases, excluded=excluded, observers=obs,
                           summary=summarize_groups(cases, study.missing), band=observer_band(obs),
                           dunnett=dunnett, sources=sources, notes=notes, mann_whitney=mwu,
                           findings=mf.mcsweeney_findings(cases, dunnett, obs),
                           split_lines=mf.split_design(mf.load_manifests(study.root, study.used)))


# ---------------------------------------------------------------------------------------------------- figures
def _plot_metric(ax: plt.Axes, summary: pd.DataFrame, metric: str, band: pd.DataFrame,
                 zero_line: bool = False) -> None:
    """Mean ± 95 % CI of ``metric`` vs n (log axis, inits slightly offset), with the observer band."""
    inits = init_order(list(summary["init"].unique()))
    ns = sorted(summary["n_train"].unique())
    for k, init in enumerate(inits):
        g = summary[summary["init"] == init].sort_values("n_train")
        x = g["n_train"].to_numpy(dtype=float) * math.exp((k - (len(inits) - 1) / 2) * 0.035)
        mean = g[f"{metric}_mean"].to_numpy(dtype=float)
        err = np.vstack([mean - g[f"{metric}_ci_low"].to_numpy(dtype=float),
                         g[f"{metric}_ci_high"].to_numpy(dtype=float) - mean])
        ax.errorbar(x, mean, yerr=np.nan_to_num(err), marker="o", ms=4, capsize=3, lw=1.3, label=init)
    if metric in band.index and np.isfinite(band.loc[metric, "mean"]):
        b = band.loc[metric]
        if np.isfinite(b["ci_low"]):
            ax.axhspan(b["ci_low"], b["ci_high"], color="0.5", alpha=0.25, lw=0,
                       label="observers (mean, 95% CI)")
        ax.axhline(b["mean"], color="0.35", ls="--", lw=1)
    if zero_line:
        ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xscale("log")
    if ns:
        ax.set_xticks(ns)
        ax.set_xticklabels([str(n) for n in ns])
        ax.minorticks_off()
        ax.set_xlim(min(ns) / 1.25, max(ns) * 1.25)
    ax.set(xlabel="training-set size n (patients)", ylabel=METRICS[metric])
    ax.grid(alpha=0.3)


def plot_dsc(summary: pd.DataFrame, band: pd.DataFrame, path: str | Path) -> Path:
    """Fig. 3: mean DSC vs n, one line per init with 95 % CIs, observer band shaded."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    _plot_metric(ax, summary, "dsc", band)
    ax.set_title("Mean DSC vs training-set size")
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def plot_rms(summary: pd.DataFrame, band: pd.DataFrame, path: str | Path) -> Path:
    """Fig. 4: mean RMS distance-to-agreement (cm) vs n, with the observer band."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    _plot_metric(ax, summary, "rms_dta_cm", band)
    ax.set_title("RMS distance-to-agreement vs training-set size")
    ax.legend(fontsize=8, loc="upper right")
    return save_figure(fig, path)


def plot_sma_smd(summary: pd.DataFrame, band: pd.DataFrame, path: str | Path) -> Path:
    """Fig. 5: mean SMA (cm²) and SMD (HU) differences (model − reference) vs n, two panels."""
    fig, (ax_a, ax_d) = plt.subplots(1, 2, figsize=(11, 4.2))
    _plot_metric(ax_a, summary, "sma_diff", band, zero_line=True)
    _plot_metric(ax_d, summary, "smd_diff", band, zero_line=True)
    ax_a.set_title("SMA difference (model − reference)")
    ax_d.set_title("SMD difference (model − reference)")
    ax_a.legend(fontsize=8)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------------- markdown
def md_table(df: pd.DataFrame, index: bool = False) -> str:
    """A GitHub Markdown table of ``df`` (cells as text; ``|`` escaped; missing values left blank)."""
    return _md_table(df, index=index, missing="")


def _fmt(x: float, digits: int) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _mean_ci_text(mean: float, lo: float, hi: float, digits: int) -> str:
    if not np.isfinite(mean):
        return "–"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return _fmt(mean, digits)
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _band_text(band: pd.DataFrame, metric: str) -> str:
    b = band.loc[metric]
    return _mean_ci_text(b["mean"], b["ci_low"], b["ci_high"], DIGITS[metric])


def metric_table(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows = init, columns = ``n=<n>``, cells ``mean [95 % CI]`` of ``metric`` (text)."""
    d = DIGITS[metric]
    cells = summary.assign(text=[_mean_ci_text(r[f"{metric}_mean"], r[f"{metric}_ci_low"], r[f"{metric}_ci_high"], d)
                                 for _, r in summary.iterrows()])
    return _wide_text(cells, "text")


def _wide_text(df: pd.DataFrame, col: str) -> pd.DataFrame:
    wide = df.pivot(index="init", columns="n_train", values=col)
    wide = wide.reindex(index=init_order(list(wide.index)), columns=sorted(wide.columns)).fillna("–")
    wide.columns = [f"n={n}" for n in wide.columns]
    wide.index.name = "init"
    return wide


def pvalue_markdown(long: pd.DataFrame) -> str:
    """Markdown of :func:`pvalue_table` with formatted p-values (``0.003``, ``<0.001``)."""
    wide = pvalue_table(long)
    if wide.empty:
        return "_no test could be computed_"
    text = wide.apply(lambda s: s.map(format_p))
    text.columns = [f"n={n}" for n in text.columns]
    return md_table(text, index=True)


def _first_n(summary: pd.DataFrame, init: str, ok) -> int | None:
    g = summary[summary["init"] == init].sort_values("n_train")
    for r in g.itertuples(index=False):
        if ok(r):
            return int(r.n_train)
    return None


def _plural(n: int, noun: str, plural_last: str | None = None) -> str:
    """``"1 run"``, ``"2 runs"``; ``plural_last`` replaces the last word in the plural."""
    if n == 1:
        return f"{n} {noun}"
    head, _, last = noun.rpartition(" ")
    return f"{n} {head + ' ' if head else ''}{plural_last or last + 's'}"


def _list_phrase(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def summary_paragraph(res: McSweeneyResult) -> str:
    """A plain-language paragraph computed from the numbers: who leads at the smallest and largest n, when
    each init first reaches the observer band, and what Dunnett's tests find."""
    s = res.summary[np.isfinite(res.summary["dsc_mean"].astype(float))]
    st = res.study
    n_used = len(res.cases["run_dir"].unique()) if not res.cases.empty else 0
    counts = (f"This report pools {_plural(n_used, 'complete run')} of {st.n_expected} expected "
              f"({_plural(len(st.missing), 'expected run')} without a complete result, "
              f"{_plural(len(st.failed), 'failed or unfinished run directory', 'directories')}).")
    if s.empty:
        return counts + " No group has a DSC value, so nothing can be compared."
    parts = [counts]
    ns = sorted(s["n_train"].unique())

    def leader(n: int) -> str:
        g = s[s["n_train"] == n].sort_values("dsc_mean", ascending=False)
        best = g.iloc[0]
        text = f"**{best['init']}** has the highest mean DSC ({best['dsc_mean']:.3f})"
        if len(g) > 1:
            text += f", ahead of {g.iloc[1]['init']} ({g.iloc[1]['dsc_mean']:.3f})"
        return text

    if len(ns) == 1:
        parts.append(f"With n={ns[0]} training cases, {leader(ns[0])}.")
    else:
        parts.append(f"At the smallest training set (n={ns[0]}), {leader(ns[0])}; "
                     f"at the largest (n={ns[-1]}), {leader(ns[-1])}.")
    inits = init_order(list(s["init"].unique()))
    if "dsc" in res.band.index and np.isfinite(res.band.loc["dsc", "ci_low"]):
        b = res.band.loc["dsc"]
        reach, never = [], []
        for init in inits:
            n = _first_n(s, init, lambda r: r.dsc_mean >= b["ci_low"])
            (reach if n is not None else never).append(f"{init} at n={n}" if n is not None else init)
        text = f"The observers' mean DSC is {b['mean']:.3f} (95% CI {b['ci_low']:.3f}–{b['ci_high']:.3f}); "
        if reach:
            text += f"a model's mean DSC first reaches the band's lower bound for {_list_phrase(reach)}"
            if never:
                text += (f", while {_list_phrase(never)} never do{'es' if len(never) == 1 else ''} "
                         f"(up to n={ns[-1]})")
        else:
            text += f"no init's mean DSC reaches the band's lower bound up to n={ns[-1]}"
        parts.append(text + ".")
        d = res.dunnett["dsc"]
        if not d.empty:
            same, differ = [], []
            for init in inits:
                ok = d[(d["init"] == init) & (d["p_value"] >= ALPHA)].sort_values("n_train")
                if len(ok):
                    same.append(f"{init} from n={int(ok.iloc[0]['n_train'])}")
                elif (d["init"] == init).any():
                    differ.append(init)
            text = "Dunnett's test against the observers (α = 0.05) "
            if same:
                text += f"first finds no significant DSC difference for {_list_phrase(same)}"
                if differ:
                    text += f"; {_list_phrase(differ)} differ{'s' if len(differ) == 1 else ''} at every n"
            else:
                text += "finds a significant DSC difference for every init at every n"
            parts.append(text + ".")
    else:
        parts.append("Without observer scores there is no observer band to compare with.")
    last = s[s["n_train"] == ns[-1]]
    rms = last[np.isfinite(last["rms_dta_cm_mean"].astype(float))]
    if not rms.empty:
        r = rms.sort_values("rms_dta_cm_mean").iloc[0]
        parts.append(f"At n={ns[-1]} the lowest mean RMS-DTA is {r['rms_dta_cm_mean']:.3f} cm ({r['init']}).")
    for m, unit in (("sma_diff", "cm²"), ("smd_diff", "HU")):
        v = s[f"{m}_mean"].astype(float)
        v = v[np.isfinite(v)]
        if len(v):
            parts.append(f"Mean {m.split('_')[0].upper()} differences from the reference range from "
                         f"{v.min():.2f} to {v.max():.2f} {unit} across groups.")
    return " ".join(parts)


def _runs_md(res: McSweeneyResult) -> list[str]:
    st = res.study
    n_used = len(res.cases["run_dir"].unique()) if not res.cases.empty else 0
    lines = ["## Runs", "",
             "| | runs |", "|---|---|",
             f"| expected ({'multirun.yaml grid' if st.grid is not None else 'no multirun.yaml: runs found'}) "
             f"| {st.n_expected} |",
             f"| run directories found | {len(st.runs)} |",
             f"| complete and used | {n_used} |",
             f"| failed or unfinished | {len(st.failed)} |",
             f"| expected but no complete run (missing) | {len(st.missing)} |",
             f"| complete but superseded by a newer run of the same setting | {len(st.superseded)} |",
             f"| complete but unusable | {len(res.excluded)} |", ""]
    if len(st.missing):
        order = [c for c in IDENTITY if c in st.missing] + [c for c in st.missing if c not in IDENTITY]
        lines += ["### Missing runs (expected, no complete result; not in any statistic)", "",
                  md_table(st.missing[order]), ""]
    if len(st.failed):
        cols = ["run_dir", "status", *[c for c in ("init", "n_train", "fold", "subset_draw", "seed")
                                       if c in st.failed], "error"]
        f = st.failed[cols].copy()
        f["error"] = f["error"].map(lambda e: (e[:160] + "…") if isinstance(e, str) and len(e) > 160 else e)
        lines += ["### Failed or unfinished runs (not in any statistic)", "", md_table(f), ""]
    if len(st.superseded):
        lines += ["### Superseded runs (a newer complete run of the same setting is used instead)", "",
                  md_table(st.superseded[["run_dir", *IDENTITY]]), ""]
    if len(res.excluded):
        lines += ["### Complete but unusable runs", "",
                  md_table(res.excluded[["run_dir", "init", "n_train", "reason"]]), ""]
    if not res.summary.empty:
        counts = res.summary.assign(text=[f"{r.n_runs}/{r.n_runs + r.n_missing} ({r.n_unique_cases} cases; "
                                          f"failed {r.n_failed}/{r.n_cases})"
                                          for r in res.summary.itertuples(index=False)])
        lines += ["Complete runs / expected runs per group (test cases; failed predictions / run × case values, "
                  "failures scored, not dropped):", "",
                  md_table(_wide_text(counts, "text"), index=True), ""]
    return lines


def render_markdown(res: McSweeneyResult, figures: Mapping[str, str]) -> str:
    """The text of ``report.md`` (figures referenced by the relative paths in ``figures``)."""
    st = res.study
    used = st.used
    models = sorted({str(v) for v in used.get("model", pd.Series(dtype=object)).dropna()})
    datasets = sorted({str(v) for v in used.get("dataset", pd.Series(dtype=object)).dropna()})
    lines = [f"# {TITLE}", "",
             f"Study directory: `{st.root}`" + (f" · data: {', '.join(datasets)}" if datasets else "")
             + (f" · model: {', '.join(models)}" if models else ""), "",
             "## Summary", "", summary_paragraph(res), ""]
    from .design import design_markdown
    from .findings import findings_markdown

    lines += design_markdown(find_run_dirs(st.root))
    lines += [findings_markdown(res.findings, intro=(
        "Each claim of the paper, the test that checks it on these runs, and the verdict. Unit of analysis: the "
        "test case, its value averaged over the repeated trainings of a group; groups that share test cases are "
        "compared paired by case.")), ""]
    lines += ["## Split design", "", *res.split_lines, ""]
    lines += _runs_md(res)
    src = {m: ", ".join(f"`{k}`" for k in c) or "–" for m, c in res.sources.items()}
    lines += ["## Results per group", "",
              f"Mean [95% CI] over the test cases of each (init, n) group, each case's value averaged over the "
              f"group's runs (folds × subset draws × seeds); failed predictions are in, scored (Runs table). "
              f"DSC from {src['dsc']}; RMS-DTA from {src['rms_dta_cm']}.", ""]
    if len(res.band):
        b = res.band
        obs_n = int(b["n_observers"].max())
        lines += [f"Human observers ({obs_n} observer{'s' if obs_n != 1 else ''}, pooled per case, each "
                  f"(case, observer) once): "
                  + "; ".join(f"{METRICS[m]} {_band_text(b, m)}" for m in METRICS if m in b.index), ""]
    else:
        lines += ["_No observers.csv: no observer band._", ""]
    for metric, fig_key, caption in (("dsc", "dsc", "Fig. 3: mean DSC vs n"),
                                     ("rms_dta_cm", "rms", "Fig. 4: RMS distance-to-agreement vs n")):
        lines += [f"### {METRICS[metric]}", "", md_table(metric_table(res.summary, metric), index=True), "",
                  f"![{caption}]({figures[fig_key]})", ""]
    lines += ["### SMA and SMD differences (model − reference)", "",
              f"**{METRICS['sma_diff']}**", "", md_table(metric_table(res.summary, "sma_diff"), index=True), "",
              f"**{METRICS['smd_diff']}**", "", md_table(metric_table(res.summary, "smd_diff"), index=True), "",
              f"![Fig. 5: SMA and SMD differences vs n]({figures['sma_smd']})", ""]
    lines += ["## Table 1: Dunnett's test against the human observers", "",
              "Two-sided p-values of each init's per-case values (mean over its runs) against the observers' per-case "
              "values (mean over the observers of a case); Dunnett's test treats the groups as independent, "
              "one many-to-one family per n (SciPy `dunnett`, fixed seed). Rows: init; columns: n.", ""]
    if res.observers is None:
        lines += ["_Skipped: no observers.csv in any complete run, so there is no control group._", ""]
    else:
        lines += ["**DSC**", "", pvalue_markdown(res.dunnett["dsc"]), "",
                  "**RMS-DTA**", "", pvalue_markdown(res.dunnett["rms"]), ""]
    lines += ["## Table 2: Dunnett's test against the reference", "",
              "Two-sided p-values of each init's predicted values against the reference values of the same "
              "test cases (each case once), one family per n. Rows: init; columns: n.", "",
              "**SMA**", "", pvalue_markdown(res.dunnett["sma"]), "",
              "**SMD**", "", pvalue_markdown(res.dunnett["smd"]), ""]
    lines += ["## Appendix C: inter-model Mann–Whitney U tests (RMS-DTA)", "",
              "Two-sided p-values of each pair of inits at each n on per-case RMS-DTA (mean over runs): "
              "Wilcoxon signed-rank paired by test case (Mann–Whitney U when a pair shares no case; the paper "
              "pooled its models' predictions into Mann–Whitney U tests); long form in `mannwhitney_rms.csv`.", "",
              *mwu_markdown(res.mann_whitney, format_p)]
    curves = {k.split(":", 1)[1]: v for k, v in figures.items() if k.startswith("appendix_a:")}
    if curves:
        lines += ["## Appendix A: pretext training curves", "",
                  "Training and validation loss of each pretext stage (early-stopped on the validation loss; the "
                  "best epoch's weights are transferred), copied from the runs' `pretext_curve.png`.", ""]
        lines += [f"![{init} pretext curve]({path})" for init, path in curves.items()] + [""]
    lines += ["## Metric definitions", "", RMS_DTA_NOTE, ""]
    if res.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in res.notes], ""]
    lines += ["## Files", "",
              "`summary.csv` (one row per (init, n)), `runs.csv` (every run directory and its status), "
              "`dunnett_dsc.csv`, `dunnett_rms.csv`, `dunnett_sma.csv`, `dunnett_smd.csv` (long form), "
              "`findings.csv` (the findings above), `mannwhitney_rms.csv` (Appendix C, long form), "
              "`fig_dsc.png`, `fig_rms.png`, `fig_sma_smd.png`.", ""]
    return "\n".join(lines)


def write(study_dir: str | Path, out_dir: str | Path | None = None, rng: int = 0) -> Path:
    """Compute the McSweeney report of ``study_dir`` and write it to ``out_dir`` (default
    ``<study_dir>/report``); every file atomically. Returns the path of ``report.md``."""
    res = analyze(study_dir, rng=rng)
    out = report_dir(study_dir, out_dir)
    atomic_write_text(out / "summary.csv", res.summary.to_csv(index=False))
    atomic_write_text(out / "runs.csv", res.study.runs.to_csv(index=False))
    for key, df in res.dunnett.items():
        atomic_write_text(out / f"dunnett_{key}.csv", df.to_csv(index=False))
    from .findings import write_findings

    write_findings(res.findings, out)
    atomic_write_text(out / "mannwhitney_rms.csv", res.mann_whitney.to_csv(index=False))
    figures = {"dsc": "fig_dsc.png", "rms": "fig_rms.png", "sma_smd": "fig_sma_smd.png"}
    plot_dsc(res.summary, res.band, out / figures["dsc"])
    plot_rms(res.summary, res.band, out / figures["rms"])
    plot_sma_smd(res.summary, res.band, out / figures["sma_smd"])
    figures.update(_appendix_a_figures(res, out))
    return atomic_write_text(out / "report.md", render_markdown(res, figures))


def _appendix_a_figures(res: McSweeneyResult, out: Path) -> dict[str, str]:
    """Copy one ``pretext_curve.png`` per pretext init (from its first used run) into ``out``;
    ``{"appendix_a:<init>": file name}``."""
    import shutil

    found: dict[str, str] = {}
    for run in res.study.used.itertuples(index=False):
        src = res.study.root / run.run_dir / "pretext_curve.png"
        key = f"appendix_a:{run.init}"
        if key not in found and src.exists():
            name = f"fig_pretext_{run.init}.png"
            shutil.copyfile(src, out / name)
            found[key] = name
    return dict(sorted(found.items()))
