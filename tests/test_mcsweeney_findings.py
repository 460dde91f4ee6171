"""McSweeney findings computed from per-case values: the verdict rule, the unit of analysis, failures scored,
Appendix C/D, split design."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

import pytest

from musclelab.report.findings import (AGREES, ALPHA, DISAGREES, INCONCLUSIVE, OPPOSITE_NS, SAME_NS,
                                       UNTESTED_SAME)
from musclelab.report.mcsweeney import dunnett_vs_observers
from musclelab.report.mcsweeney_findings import (convergence_finding, mann_whitney_matrices, mann_whitney_table,
                                                 mcsweeney_findings, observer_findings, plateau_findings,
                                                 smallest_n_findings, split_design)

# mean DSC per (init, n): pretraining helps at n=2 and the gap closes; 'worse' is worse than scratch at n=2
MEANS = {("scratch", 2): 0.40, ("pre", 2): 0.80, ("worse", 2): 0.30,
         ("scratch", 8): 0.85, ("pre", 8): 0.90, ("worse", 8): 0.86,
         ("scratch", 24): 0.90, ("pre", 24): 0.905, ("worse", 24): 0.90}


def _cases(means=MEANS, n_cases: int = 20) -> pd.DataFrame:
    rows = []
    for k, ((init, n), m) in enumerate(means.items()):
        d = np.clip(m + np.random.default_rng(k).normal(0, 0.02, n_cases), 0, 1)
        rows.append(pd.DataFrame({"init": init, "n_train": n, "case_id": [f"c{i}" for i in range(n_cases)],
                                  "dsc": d, "rms_dta_cm": (1 - d) * 2.0, "run_dir": f"{init}-{n}"}))
    return pd.concat(rows, ignore_index=True)


def _observers(n_cases: int = 20) -> pd.DataFrame:
    d = 0.78 + np.random.default_rng(99).normal(0, 0.01, n_cases)
    return pd.DataFrame({"case_id": [f"c{i}" for i in range(n_cases)], "observer": "o1", "dsc": d,
                         "rms_dta_cm": (1 - d) * 2.0})


def test_smallest_n_pretrained_vs_scratch_paired_by_case() -> None:
    cases = _cases()
    fs = smallest_n_findings(cases)
    pre_dsc = next(f for f in fs if "pre beats scratch in DSC" in f.claim)
    a = cases.query("init == 'pre' and n_train == 2").set_index("case_id")["dsc"]
    s = cases.query("init == 'scratch' and n_train == 2").set_index("case_id")["dsc"]
    assert pre_dsc.verdict == AGREES and "n=2" in pre_dsc.measured and pre_dsc.n == 20
    assert pre_dsc.p_value == pytest.approx(stats.wilcoxon(a - s).pvalue) and "paired" in pre_dsc.test
    worse_rms = next(f for f in fs if "worse beats scratch in RMS-DTA" in f.claim)
    assert worse_rms.verdict == DISAGREES  # significantly higher RMS-DTA than scratch
    assert len(fs) == 4
    no_scratch = smallest_n_findings(cases[cases["init"] != "scratch"])
    assert len(no_scratch) == 1 and no_scratch[0].agrees is None
    # a right direction without significance is not "agrees"
    tiny = _cases({("scratch", 2): 0.80, ("pre", 2): 0.801})
    f = next(f for f in smallest_n_findings(tiny) if "DSC" in f.claim)
    assert f.verdict == SAME_NS and f.p_value >= ALPHA


def test_repeated_runs_are_averaged_per_case_not_pooled() -> None:
    """Four runs of the same 20 cases are 20 units, not 80: pooling them would make a small shift look certain."""
    base = _cases({("scratch", 2): 0.80, ("pre", 2): 0.806}, n_cases=20)
    runs = pd.concat([base.assign(run_dir=base["run_dir"] + f"-{k}",
                                  dsc=base["dsc"] + np.random.default_rng(k).normal(0, 0.001, len(base)))
                      for k in range(4)], ignore_index=True)
    f = next(f for f in smallest_n_findings(runs) if "DSC" in f.claim)
    assert f.n == 20 and "mean over 4 runs" in f.unit
    pooled = stats.mannwhitneyu(runs.query("init == 'pre'")["dsc"], runs.query("init == 'scratch'")["dsc"]).pvalue
    assert f.p_value > pooled  # the pooled test overstates the evidence


def _obs_study() -> pd.DataFrame:
    means = {("scratch", 5): 0.60, ("pre", 5): 0.78, ("scratch", 50): 0.79, ("pre", 50): 0.86,
             ("scratch", 75): 0.80, ("pre", 75): 0.87}
    return _cases(means)


def test_observer_claims_need_significantly_better_dsc_and_equivalent_rms() -> None:
    cases = _obs_study()
    obs = _observers()
    d = {"dsc": dunnett_vs_observers(cases, obs, "dsc"), "rms": dunnett_vs_observers(cases, obs, "rms_dta_cm")}
    fs = {f.claim: f for f in observer_findings(d, cases, obs)}
    pre = fs["pre: DSC significantly better than the observers at every n ≥ 50"]
    assert pre.verdict == AGREES and pre.p_value < ALPHA
    assert pre.p_value == pytest.approx(d["dsc"].query("init == 'pre' and n_train >= 50")["p_value"].max())
    # scratch is level with the observers from n=50: not significantly worse, which is not "better"
    scratch = fs["scratch: DSC significantly better than the observers at every n ≥ 50"]
    assert scratch.verdict in (SAME_NS, OPPOSITE_NS)
    rms = fs["scratch: RMS-DTA equivalent to the observers' (±0.1 cm) at every n ≥ 25"]
    assert rms.kind == "equivalence" and rms.verdict == AGREES   # |0.42 − 0.44| cm ≪ 0.1 cm
    first = fs["a pretrained init reaches the observers' DSC (not significantly worse) at a smaller n than scratch"]
    assert first.verdict == UNTESTED_SAME and "pre at n=5" in first.measured
    small = _cases()   # n = 2, 8, 24: the paper's DSC claim starts at n = 50
    d_small = {"dsc": dunnett_vs_observers(small, obs, "dsc"), "rms": pd.DataFrame()}
    assert all(f.agrees is None and "n ≥ 50" in f.note
               for f in observer_findings(d_small, small, obs) if "DSC significantly better" in f.claim)
    none = observer_findings({"dsc": pd.DataFrame(), "rms": pd.DataFrame()})
    assert all(f.agrees is None for f in none)


def test_appendix_c_and_convergence_and_plateau() -> None:
    cases = _cases()
    mwu = mann_whitney_table(cases)
    assert len(mwu) == 3 * 3  # 3 pairs at each of 3 n
    assert mwu["test"].str.startswith("Wilcoxon signed-rank, paired").all()
    mats = mann_whitney_matrices(mwu)
    assert set(mats) == {2, 8, 24} and (np.diag(mats[2].to_numpy()) == 1.0).all()
    assert mats[2].loc["pre", "scratch"] == mats[2].loc["scratch", "pre"] < 1e-5
    conv = convergence_finding(cases)
    assert conv.verdict == AGREES and "at n=2" in conv.measured and conv.n == 20
    plateau = {f.claim.split(":")[0]: f for f in plateau_findings(cases)}
    assert set(plateau) == {"scratch", "pre", "worse"}
    assert "n=24 equivalent to n=8 (±0.02)" in plateau["scratch"].claim
    assert "the paper tests n=125 vs 100" in plateau["scratch"].claim
    assert plateau["scratch"].kind == "equivalence" and "TOST" in plateau["scratch"].test
    assert plateau["pre"].verdict == AGREES    # 0.905 vs 0.90, 20 cases
    # a clear jump between the two largest n disagrees with the plateau
    jump = _cases({("scratch", 100): 0.5, ("scratch", 125): 0.9})
    f = plateau_findings(jump)[0]
    assert f.verdict == DISAGREES and "paper tests" not in f.claim
    # too few cases to show equivalence: inconclusive, not "agrees"
    few = _cases({("scratch", 100): 0.90, ("scratch", 125): 0.90}, n_cases=3)
    assert plateau_findings(few)[0].verdict == INCONCLUSIVE
    assert len(mcsweeney_findings(cases, {"dsc": pd.DataFrame(), "rms": pd.DataFrame()})) == 4 + 2 + 1 + 3


def test_split_design_lines() -> None:
    rows = []
    for run, (fold, n) in enumerate(itertools.product((0, 1), (2, 4))):
        rows += [{"run": str(run), "fold": fold, "subset_draw": 0, "n_train": n, "split": "test",
                  "case_id": c, "patient_id": c} for c in ("t1", "t2")]
        rows += [{"run": str(run), "fold": fold, "subset_draw": 0, "n_train": n, "split": "train",
                  "case_id": f"p{fold}{i}", "patient_id": f"p{fold}{i}"} for i in range(n)]
    text = "\n".join(split_design(pd.DataFrame(rows)))
    assert "identical in every run" in text and "nested" in text
    assert "cannot be checked" in split_design(None)[0]


def test_failed_predictions_are_scored_and_counted() -> None:
    """scratch predicts no muscle on every case at n=2 (DSC 0, RMS-DTA undefined): the cases stay in with the
    study's worst RMS-DTA, are counted, and the RMS-DTA claim is tested on them instead of vanishing."""
    from musclelab.report.mcsweeney import score_failures, summarize_groups

    cases = _cases()
    empty = (cases["init"] == "scratch") & (cases["n_train"] == 2)
    cases.loc[empty, "rms_dta_cm"] = np.nan
    cases.loc[empty, "dsc"] = 0.0
    worst = cases["rms_dta_cm"].max()
    scored, notes = score_failures(cases, _observers())
    assert scored.loc[empty, "rms_dta_cm"].eq(worst).all() and int(scored["failed"].sum()) == 20
    assert "20 of 180 case values failed" in notes[0] and f"{worst:.3f} cm" in notes[0]
    rms = next(f for f in smallest_n_findings(scored) if "pre beats scratch in RMS-DTA" in f.claim)
    assert rms.verdict == AGREES and rms.n_failed == 20 and rms.n == 20
    summary = summarize_groups(scored).set_index(["init", "n_train"])
    assert summary.loc[("scratch", 2), "n_failed"] == 20 and summary.loc[("scratch", 2), "dsc_mean"] == 0.0
    # a metric column that is simply absent is not a failure
    no_rms = _cases().assign(rms_dta_cm=np.nan)
    assert not score_failures(no_rms, None)[0]["failed"].any()


def test_report_has_findings_appendices_and_definitions(tmp_path) -> None:
    import shutil

    from musclelab.report import write_report
    from test_report import make_study

    study = make_study(tmp_path / "study")
    png = next(study.glob("*/test_cases.csv")).parent / "pretext_curve.png"
    shutil.copyfile(Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md", png)  # any file will do
    md = write_report(study, tmp_path / "out", kind="mcsweeney", wandb=False).read_text()
    for section in ("## Findings", "## Split design", "## Appendix C", "## Appendix A", "## Metric definitions"):
        assert section in md
    assert "root mean square of the pooled symmetric surface distances" in md and "equation 4" in md
    findings = pd.read_csv(tmp_path / "out" / "findings.csv")
    assert "at the smallest n, imagenet beats scratch in DSC" in set(findings["claim"])
    row = findings.set_index("claim").loc["at the smallest n, imagenet beats scratch in DSC"]
    assert row["verdict"] == "agrees" and row["n"] == 12 and row["p_holm"] >= row["p_value"]   # 2 folds × 6 cases
    assert {"paper", "test", "unit", "n", "statistic", "p_value", "p_holm", "verdict"} <= set(findings.columns)
    assert "α = 0.05" in md and "test(s) in this section" in md
    assert len(pd.read_csv(tmp_path / "out" / "mannwhitney_rms.csv")) == 2  # one pair at each of 2 n
    assert len(list((tmp_path / "out").glob("fig_pretext_*.png"))) == 1
