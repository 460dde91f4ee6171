"""The shared statistics layer of the findings: the verdict rule, paired vs unpaired tests on per-case values,
equivalence / non-inferiority, failures scored, Holm's adjustment, and the Markdown/CSV rendering."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from musclelab.metrics.statistics import (all_of, compare, fill_failures, holm, noninferiority, one_sample,
                                          per_case, tost, worst_value)
from musclelab.report.findings import (AGREES, DISAGREES, INCONCLUSIVE, NOT_MEASURABLE, OPPOSITE_NS, SAME_NS,
                                       UNTESTED_SAME, Finding, findings_frame, findings_markdown, format_p, judge,
                                       not_measurable, untested, write_findings)


def test_verdict_rule_direction_times_significance_times_kind() -> None:
    # a claimed difference needs the right direction AND p < alpha
    assert judge("difference", 0.05, +1, p=0.01) == AGREES
    assert judge("difference", 0.05, +1, p=0.20) == SAME_NS            # right direction alone never agrees
    assert judge("difference", -0.05, +1, p=0.01) == DISAGREES
    assert judge("difference", -0.05, +1, p=0.20) == OPPOSITE_NS
    assert judge("difference", -0.2, -1, p=0.001) == AGREES              # lower is the paper's direction
    assert judge("difference", 0.05, +1, p=0.04, alpha=0.01) == SAME_NS  # the stated alpha counts
    assert judge("difference", 0.05, +1, p=None) == UNTESTED_SAME        # no test: never "agrees"
    assert judge("difference", math.nan, +1, p=0.01) == NOT_MEASURABLE
    # a claimed absence of difference needs equivalence shown; a significant difference contradicts it
    assert judge("equivalence", 0.001, +1, p=0.01, margin=0.02) == AGREES
    assert judge("equivalence", 0.001, +1, p=0.30, margin=0.02, p_difference=0.6) == INCONCLUSIVE
    assert judge("equivalence", 0.05, +1, p=0.90, margin=0.02, p_difference=0.001) == DISAGREES
    assert judge("non-inferiority", 0.0, +1, p=0.01, margin=0.02) == AGREES
    assert judge("non-inferiority", -0.01, +1, p=0.3, margin=0.02) == INCONCLUSIVE
    assert judge("non-inferiority", -0.05, +1, p=0.9, margin=0.02) == DISAGREES
    assert judge("descriptive", 1.0, +1) == UNTESTED_SAME
    with pytest.raises(ValueError):
        judge("difference", 1.0, 0, p=0.1)
    with pytest.raises(ValueError):
        judge("bigger", 1.0, 1, p=0.1)


def test_paired_when_cases_are_shared_else_mann_whitney() -> None:
    rng = np.random.default_rng(0)
    ids = [f"c{i}" for i in range(12)]
    a = pd.Series(0.8 + rng.normal(0, 0.02, 12), index=ids)
    b = pd.Series(a.to_numpy() - 0.01 + rng.normal(0, 0.002, 12), index=ids)
    r = compare(a, b)
    assert r.test.startswith("Wilcoxon signed-rank, paired") and r.n == 12
    assert r.p_value == pytest.approx(stats.wilcoxon(a - b).pvalue)
    assert r.estimate == pytest.approx(float((a - b).mean()))
    unpaired = compare(a, b.set_axis([f"d{i}" for i in range(12)]))
    assert unpaired.test.startswith("Mann–Whitney U") and unpaired.n == 24
    assert unpaired.p_value == pytest.approx(stats.mannwhitneyu(a, b).pvalue)
    assert r.p_value < 0.01 < unpaired.p_value   # pairing is what finds the small shift
    assert compare(a, a).p_value == 1.0
    assert math.isnan(compare(a, pd.Series(dtype=float)).p_value)


def test_per_case_means_over_runs_are_the_unit() -> None:
    rows = pd.DataFrame({"case_id": ["a", "b", "a", "b"], "run": [0, 0, 1, 1], "dsc": [0.8, 0.6, 0.9, np.nan]})
    pc = per_case(rows, "dsc")
    assert pc.to_dict() == {"a": pytest.approx(0.85), "b": pytest.approx(0.6)}


def test_equivalence_and_non_inferiority() -> None:
    rng = np.random.default_rng(1)
    d = rng.normal(0.0, 0.01, 30)
    eq = tost(d, None, margin=0.02, unit="test case")
    lo = stats.ttest_1samp(d, -0.02, alternative="greater").pvalue
    hi = stats.ttest_1samp(d, 0.02, alternative="less").pvalue
    assert eq.p_value == pytest.approx(max(lo, hi)) and eq.p_value < 0.05 and eq.margin == 0.02
    assert tost(d + 0.05, None, margin=0.02, unit="test case").p_value > 0.5
    v = 0.91 + rng.normal(0, 0.01, 20)
    ni = noninferiority(v, 0.902, 0.02, "test volume")
    assert ni.p_value == pytest.approx(stats.ttest_1samp(v, 0.882, alternative="greater").pvalue)
    assert ni.estimate == pytest.approx(v.mean() - 0.902)
    assert noninferiority(v - 0.05, 0.902, 0.02, "test volume").p_value > 0.5
    with pytest.raises(ValueError):
        tost(d, None, margin=0.0, unit="x")


def test_failures_are_scored_not_dropped() -> None:
    rms = np.array([0.3, np.nan, 0.5, 1.7])
    worst = worst_value(rms, higher_is_better=False)
    filled, n = fill_failures(rms, worst)
    assert worst == 1.7 and n == 1 and filled.tolist() == [0.3, 1.7, 0.5, 1.7]
    assert worst_value([0.1, np.nan], higher_is_better=True) == 0.1 and math.isnan(worst_value([np.nan], True))


def test_holm_and_intersection_union() -> None:
    p = [0.01, 0.04, np.nan, 0.03, 0.5]
    adj = holm(p)
    # sorted 0.01, 0.03, 0.04, 0.5 with m = 4: 0.04, 0.09, max(0.09, 0.08) = 0.09, 0.5
    assert adj[[0, 3, 1, 4]] == pytest.approx([0.04, 0.09, 0.09, 0.5]) and math.isnan(adj[2])
    assert holm([0.9, 0.8]).tolist() == [1.0, 1.0]
    parts = [one_sample(np.arange(1, 9), "x"), one_sample(np.array([1, -1, 2, -2, 3, 1.5]), "x")]
    both = all_of(parts, "every n")
    assert both.p_value == max(r.p_value for r in parts)


def test_markdown_and_csv(tmp_path) -> None:
    fs = [
        Finding("pretrained beats scratch at n=5", "DSC 0.80 vs 0.70", AGREES, source="Fig. 3",
                paper="pretraining helps", test="Wilcoxon", unit="test case", n=20, statistic=12.0,
                p_value=0.0004),
        Finding("plateau after n=100", "DSC 0.90 vs 0.91", AGREES, kind="equivalence", test="TOST", p_value=0.03),
        untested("VNet has the best single number", "0.9 vs 0.8", 0.1),
        not_measurable("imagenet beats jigsaw", "no imagenet runs"),
    ]
    md = findings_markdown(fs)
    assert md.startswith("## Findings")
    assert "α = 0.05" in md and "2 test(s) in this section" in md and "Holm" in md
    assert "4 claims: 2 agrees, 1 same direction, untested, 1 not measurable." in md
    assert ("- **agrees** — pretrained beats scratch at n=5 (Fig. 3): DSC 0.80 vs 0.70; Wilcoxon, unit: test case, "
            "n = 20, statistic = 12, p = <0.001 (Holm <0.001). Paper: “pretraining helps”.") in md
    assert "**not measurable** — imagenet beats jigsaw: not measured. no imagenet runs" in md
    assert "**same direction, untested** — VNet has the best single number" in md
    path = write_findings(fs, tmp_path)
    back = pd.read_csv(path)
    assert {"paper", "claim", "test", "unit", "n", "statistic", "p_value", "p_holm", "verdict"} <= set(back.columns)
    assert back["verdict"].tolist()[0] == "agrees" and back["verdict"].tolist()[-1] == "not measurable"
    assert back["p_holm"].tolist()[:2] == pytest.approx([2 * 0.0004, 0.03])
    assert findings_frame([]).empty
    assert "No findings" in findings_markdown([])
    assert format_p(0.01234) == "0.0123" and format_p(None) == "–"
    with pytest.raises(ValueError):
        Finding("x", "y", "probably")
