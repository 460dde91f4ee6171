"""Calibration of the findings on simulated studies (fabricated run directories, no training).

On null studies — per-case scores with no effect, or, for a claim of no difference, a true difference exactly at
the stated margin — a finding may agree at most as often as α allows; with an effect of the size the paper
reports planted, it must agree in most studies. Each simulated study is written to disk as real runs are and read
back by the report kind's own loaders; seeds are fixed, so the counts are deterministic.

Bounds: with α = 0.05 and N null studies, "agrees" happens at most α/2 (difference claims, two-sided tests) or α
(equivalence / non-inferiority) of the time; we allow up to the 99.9 % quantile of Binomial(N, α), which a
sign-only rule (agreeing about half the time on a null study) exceeds with near certainty.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from scipy import stats

import calibration_studies as cs
from musclelab.report import chains, kawamoto, mcsweeney, mcsweeney_findings
from musclelab.report.findings import ALPHA, Finding, agree_rate
from musclelab.report.runs import load_study

N_NULL, N_PLANTED = 40, 20
NULL_MAX = int(stats.binom.ppf(0.999, N_NULL, ALPHA))   # 7 of 40
PLANTED_MIN = 0.75


def mcsweeney_findings_of(study: Path) -> list[Finding]:
    """The McSweeney report's findings, read from the run directories by the report's own loaders (the tables
    the findings do not use are skipped to keep the simulation fast)."""
    st = load_study(study, mcsweeney.COLUMNS, mcsweeney.IDENTITY)
    cases, _, _, _ = mcsweeney.load_cases(st)
    obs = mcsweeney.load_observers(st)
    cases, _ = mcsweeney.score_failures(cases, obs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        dunnett = {"dsc": mcsweeney.dunnett_vs_observers(cases, obs, "dsc", intervals=False),
                   "rms": mcsweeney.dunnett_vs_observers(cases, obs, "rms_dta_cm", intervals=False)}
    return mcsweeney_findings.mcsweeney_findings(cases, dunnett, obs)


def kawamoto_findings_of(study: Path, seed: int, planted: bool) -> list[Finding]:
    res_study = load_study(study, {"labels": "data.labels", "fold": "data.fold", "seed": "seed", "data": "data.name"},
                           identity=["labels", "fold", "seed", "data"])
    scores, _ = kawamoto.load_scores(res_study)
    scores = scores[scores["level"] == "volume"]
    return kawamoto.compute_findings(scores, kawamoto.wilcoxon_table(scores), cs.kawamoto_merged(seed, planted))


def _simulate(tmp_path: Path, kind: str, planted: bool, n: int) -> dict[str, tuple[int, int]]:
    out = []
    for seed in range(n):
        root = tmp_path / f"{kind}-{'planted' if planted else 'null'}-{seed}"
        if kind == "mcsweeney":
            out.append(mcsweeney_findings_of(cs.mcsweeney_study(root, seed, planted)))
        elif kind == "yoon":
            out.append(chains.analyze(cs.yoon_chains_study(root, seed, planted)).findings)
        elif kind == "strategies":
            out.append(chains.analyze(cs.strategies_study(root, seed, planted)).findings)
        else:
            out.append(kawamoto_findings_of(cs.kawamoto_study(root, seed, planted), seed, planted))
    return agree_rate(out)


CALIBRATED = {
    "mcsweeney": ["at the smallest n, coco beats scratch in DSC",
                  "at the smallest n, coco beats scratch in RMS-DTA (cm)",
                  "coco: DSC significantly better than the observers at every n ≥ 50",
                  "coco: RMS-DTA equivalent to the observers' (±0.1 cm) at every n ≥ 25",
                  "differences between inits shrink as n grows",
                  "coco: DSC at n=125 equivalent to n=100 (±0.02)"],
    "yoon": ["vnet: training on later data sets lowers the Dice on earlier ones (catastrophic forgetting)",
             "vnet: of the earlier data sets, LiTS loses the most Dice after later training",
             "vnet: after transfer a stage converges in fewer epochs than from scratch",
             "vnet: after transfer the Dice on the new data set is similar or better than training on it alone"],
    "strategies": [*[f"unet: {s} reduces forgetting compared with naive fine-tuning" for s in ("replay", "ewc", "lwf")],
                   *[f"unet: {s} keeps ACC similar to or better than naive fine-tuning (±0.02)"
                     for s in ("replay", "ewc", "lwf")],
                   "unet: joint training is the upper bound: it forgets least of the strategies"],
    "kawamoto": ["w/ESM segments the target muscles better than wo/ESM (Dice over all targets' test volumes)",
                 "w/ESM > wo/ESM for quadratus lumborum", "w/ESM > wo/ESM for psoas major",
                 "the ESM is the best partner for quadratus lumborum",
                 "the ESM's own Dice hardly changes when it is learnt with a target (±0.02)",
                 "merged into one region, the w/ESM target muscles reach the paper's Dice (0.902)"],
}


@pytest.mark.parametrize("kind", list(CALIBRATED))
def test_null_studies_agree_at_most_as_often_as_alpha_allows(tmp_path: Path, kind: str) -> None:
    rates = _simulate(tmp_path, kind, planted=False, n=N_NULL)
    for claim in CALIBRATED[kind]:
        agree, judged = rates[claim]
        assert judged == N_NULL, claim
        assert agree <= NULL_MAX, f"{claim}: agrees in {agree} of {N_NULL} null studies"


@pytest.mark.parametrize("kind", list(CALIBRATED))
def test_a_planted_effect_of_the_papers_size_agrees_in_most(tmp_path: Path, kind: str) -> None:
    rates = _simulate(tmp_path, kind, planted=True, n=N_PLANTED)
    for claim in CALIBRATED[kind]:
        agree, judged = rates[claim]
        assert judged == N_PLANTED, claim
        assert agree >= PLANTED_MIN * N_PLANTED, f"{claim}: agrees in only {agree} of {N_PLANTED} planted studies"
