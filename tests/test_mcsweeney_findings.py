"""McSweeney findings computed from per-case values: directions, tests, Appendix C/D, split design."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

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


def test_smallest_n_pretrained_vs_scratch_with_mann_whitney() -> None:
    cases = _cases()
    found = {(f.claim, f.measured.split(":")[0]): f for f in smallest_n_findings(cases)}
    pre_dsc = next(f for f in smallest_n_findings(cases) if "pre beats scratch in DSC" in f.claim)
    assert pre_dsc.agrees is True and pre_dsc.p_value < 1e-6 and "n=2" in pre_dsc.measured
    a = cases.query("init == 'pre' and n_train == 2")["dsc"]
    s = cases.query("init == 'scratch' and n_train == 2")["dsc"]
    assert pre_dsc.statistic == stats.mannwhitneyu(a, s, alternative="two-sided").statistic
    worse_rms = next(f for f in smallest_n_findings(cases) if "worse beats scratch in RMS-DTA" in f.claim)
    assert worse_rms.agrees is False  # higher RMS-DTA than scratch: the direction disagrees
    assert len(found) == 4
    no_scratch = smallest_n_findings(cases[cases["init"] != "scratch"])
    assert len(no_scratch) == 1 and no_scratch[0].agrees is None


def test_observer_reach_and_pretrained_first() -> None:
    cases = _cases()
    d = {"dsc": dunnett_vs_observers(cases, _observers(), "dsc"),
         "rms": dunnett_vs_observers(cases, _observers(), "rms_dta_cm")}
    fs = observer_findings(d)
    every = next(f for f in fs if f.claim.startswith("every init reaches the observers' DSC"))
    assert every.agrees is True and "pre: n=2" in every.measured and "scratch: n=8" in every.measured
    first = next(f for f in fs if f.claim.startswith("a pretrained init reaches the observers' DSC"))
    assert first.agrees is True and "pre at n=2; scratch at n=8" in first.measured
    none = observer_findings({"dsc": pd.DataFrame(), "rms": pd.DataFrame()})
    assert all(f.agrees is None for f in none)
    high = _observers().assign(dsc=lambda d: d["dsc"] + 0.2, rms_dta_cm=lambda d: d["rms_dta_cm"] / 20)  # unreachable
    d_high = {"dsc": dunnett_vs_observers(cases, high, "dsc"), "rms": dunnett_vs_observers(cases, high, "rms_dta_cm")}
    unreached = [f for f in observer_findings(d_high) if f.claim.startswith("a pretrained init reaches")]
    assert unreached and all(f.agrees is None and "no init reaches" in f.note for f in unreached)
    assert all(f.agrees is False for f in observer_findings(d_high) if f.claim.startswith("every init"))


def test_appendix_c_and_convergence_and_plateau() -> None:
    cases = _cases()
    mwu = mann_whitney_table(cases)
    assert len(mwu) == 3 * 3  # 3 pairs at each of 3 n
    mats = mann_whitney_matrices(mwu)
    assert set(mats) == {2, 8, 24} and (np.diag(mats[2].to_numpy()) == 1.0).all()
    assert mats[2].loc["pre", "scratch"] == mats[2].loc["scratch", "pre"] < 1e-6
    conv = convergence_finding(cases)
    assert conv.agrees is True and "at n=2" in conv.measured
    plateau = {f.claim.split(":")[0]: f for f in plateau_findings(cases)}
    assert set(plateau) == {"scratch", "pre", "worse"}
    assert "n=24 does not differ from n=8" in plateau["scratch"].claim
    assert "the paper tests n=125 vs 100" in plateau["scratch"].claim
    # a clear jump between the two largest n disagrees with the plateau
    jump = _cases({("scratch", 100): 0.5, ("scratch", 125): 0.9})
    f = plateau_findings(jump)[0]
    assert f.agrees is False and f.p_value < 0.001 and "paper tests" not in f.claim
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


def test_undefined_distances_are_not_measurable_with_the_reason() -> None:
    cases = _cases()
    empty = (cases["init"] == "scratch") & (cases["n_train"] == 2)
    cases.loc[empty, "rms_dta_cm"] = np.nan  # scratch predicted no muscle at n=2
    rms = next(f for f in smallest_n_findings(cases) if "pre beats scratch in RMS-DTA" in f.claim)
    assert rms.agrees is None and "scratch: 20 of 20 case values undefined" in rms.note


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
    assert findings.set_index("claim").loc["at the smallest n, imagenet beats scratch in DSC", "verdict"] == "agrees"
    assert len(pd.read_csv(tmp_path / "out" / "mannwhitney_rms.csv")) == 2  # one pair at each of 2 n
    assert len(list((tmp_path / "out").glob("fig_pretext_*.png"))) == 1
