"""The chains report's Strategies section on a hand-built multirun (fabricated chain directories, no training)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from musclelab.report import write_report
from musclelab.report.chains import analyze
from musclelab.report.findings import NOT_MEASURABLE, SAME_NS

DATASETS = ["a", "b"]
# strategy -> ordering -> R[stage][dataset column a, b]
MATRICES = {
    "naive": {("a", "b"): [[0.80, 0.40], [0.60, 0.90]], ("b", "a"): [[0.30, 0.85], [0.90, 0.65]]},
    "replay": {("a", "b"): [[0.80, 0.40], [0.75, 0.88]], ("b", "a"): [[0.30, 0.85], [0.89, 0.80]]},
}
# stage wall seconds (train_seconds, extra_seconds); the first stage is the same cached training for both
SECONDS = {"naive": {("a", "b"): [(10, None), (20, None)], ("b", "a"): [(12, None), (18, None)]},
           "replay": {("a", "b"): [(10, None), (30, 2)], ("b", "a"): [(12, None), (28, None)]}}
FWT = {"naive": {("a", "b"): 0.1, ("b", "a"): 0.2}, "replay": {("a", "b"): None, ("b", "a"): None}}


def make_chain(out: Path, seq: tuple[str, ...], strategy: str | None, model: str = "unet") -> Path:
    name = strategy or "naive"
    R = MATRICES[name][seq]
    out.mkdir(parents=True)
    m = pd.DataFrame(R, columns=DATASETS)
    m.insert(0, "stage", range(len(seq)))
    m.insert(1, "trained", list(seq))
    m.insert(2, "final", [i == len(seq) - 1 for i in range(len(seq))])
    m.to_csv(out / "forgetting_matrix.csv", index=False)
    (out / "chain_metrics.json").write_text(json.dumps({"acc": 0.0, "bwt": 0.0, "avg_forgetting": 0.0,
                                                        "fwt": FWT[name][seq]}))
    stages = []
    for i, d in enumerate(seq):
        train, extra = SECONDS[name][seq][i]
        st = {"index": i, "dataset": d, "key": ">".join(seq[: i + 1]) + (f"|{name}" if i else ""),
              "train_seconds": float(train)}
        if extra is not None:
            st["extra_seconds"] = float(extra)
        stages.append(st)
    info = {"sequence": list(seq), "datasets": DATASETS, "stages": stages, "model": model}
    if strategy is not None:
        info["strategy"] = {"name": strategy, "settings": {"per_site": 4} if strategy == "replay" else {}}
    (out / "chain.json").write_text(json.dumps(info))
    return out


def make_study(root: Path, strategies=(None, "replay")) -> Path:
    for strategy in strategies:
        for seq in [("a", "b"), ("b", "a")]:
            make_chain(root / f"unet_{strategy or 'naive'}" / "-".join(seq), seq, strategy)
    return root


def test_strategies_section_and_csv_numbers(tmp_path):
    root = make_study(tmp_path / "multirun")
    out = write_report(root)
    text = (out / "report.md").read_text() if out.is_dir() else out.read_text()
    rdir = root / "report"
    assert "## Strategies" in text and (rdir / "fig_stability_unet.png").exists()
    t = pd.read_csv(rdir / "strategies.csv").set_index("strategy")
    assert list(t.index) == ["naive", "replay"]
    # naive: a→b ACC (0.60+0.90)/2, BWT 0.60-0.80, forgetting 0.80-0.60; b→a ACC (0.65+0.90)/2, BWT/forgetting ∓0.20
    assert t.loc["naive", "acc_mean"] == pytest.approx(0.7625)
    assert t.loc["naive", "acc_sd"] == pytest.approx(np.std([0.75, 0.775], ddof=1))
    assert t.loc["naive", "bwt_mean"] == pytest.approx(-0.20)
    assert t.loc["naive", "forgetting_mean"] == pytest.approx(0.20)
    assert t.loc["naive", "fwt_mean"] == pytest.approx(0.15)
    assert t.loc["replay", "acc_mean"] == pytest.approx((0.815 + 0.845) / 2)
    assert t.loc["replay", "bwt_mean"] == pytest.approx(-0.05)
    assert t.loc["replay", "forgetting_mean"] == pytest.approx(0.05)
    assert np.isnan(t.loc["replay", "fwt_mean"])   # no random-init baseline: null
    assert t.loc["naive", "ordering_list"] == "a→b; b→a" and t.loc["naive", "orderings"] == 2
    # stability: the first data set after stages 1 and 2, mean over the two orderings
    assert t.loc["naive", "first_after_stage_1"] == pytest.approx(0.825)
    assert t.loc["naive", "first_after_stage_2"] == pytest.approx(0.625)
    assert t.loc["replay", "first_after_stage_2"] == pytest.approx(0.775)
    # seconds per stage after the first (stage 0 is shared), median: naive (20, 18); replay (30 + 2 extra, 28)
    assert t.loc["naive", "seconds_per_stage"] == pytest.approx(19.0)
    assert t.loc["replay", "seconds_per_stage"] == pytest.approx(30.0)
    assert t.loc["replay", "cost_vs_naive"] == pytest.approx(30.0 / 19.0)
    assert json.loads(t.loc["replay", "settings"]) == {"per_site": 4}
    assert "0.762 ± 0.018" in text and "1.58" in text
    found = {f.claim: f for f in analyze(root).findings}
    fgt = found["unet: replay reduces forgetting compared with naive fine-tuning"]
    assert fgt.verdict == SAME_NS and fgt.n == 2 and "Wilcoxon" in (fgt.test or "")   # 2 pairs cannot reach α
    assert "unet: replay keeps ACC similar to or better than naive fine-tuning (±0.02)" in found
    assert "strategy" in pd.read_csv(rdir / "chains_summary.csv").columns
    assert "unet: ewc reduces forgetting compared with naive fine-tuning" not in found   # not in the study
    fc = pd.read_csv(rdir / "findings.csv")
    assert fc["p_holm"].notna().any()


def test_joint_needs_every_comparison(tmp_path):
    MATRICES["joint"] = {("a", "b"): [[0.80, 0.40], [0.80, 0.88]], ("b", "a"): [[0.30, 0.85], [0.90, 0.85]]}
    SECONDS["joint"] = {k: [(10, None), (40, None)] for k in SECONDS["naive"]}
    FWT["joint"] = dict.fromkeys(FWT["naive"])
    try:
        root = make_study(tmp_path / "m", strategies=(None, "replay", "joint"))
        found = {f.claim: f for f in analyze(root).findings}
        joint = found["unet: joint training is the upper bound: it forgets least of the strategies"]
        assert "largest p of 2" in joint.test and joint.verdict != NOT_MEASURABLE
        assert joint.note.endswith("independent") and "replay" in joint.note   # replay is the closest
    finally:
        for d in (MATRICES, SECONDS, FWT):
            d.pop("joint")


def test_single_strategy_report_has_no_strategies_section(tmp_path):
    root = make_study(tmp_path / "old", strategies=(None,))
    write_report(root)
    text = (root / "report" / "report.md").read_text()
    assert "Strategies" not in text and not (root / "report" / "strategies.csv").exists()
    assert "strategy" not in pd.read_csv(root / "report" / "chains_summary.csv").columns


def test_strategy_without_naive_is_not_measurable(tmp_path):
    root = make_study(tmp_path / "r", strategies=("replay",))
    MATRICES["ewc"], SECONDS["ewc"], FWT["ewc"] = MATRICES["naive"], SECONDS["naive"], FWT["naive"]
    try:
        for seq in [("a", "b"), ("b", "a")]:
            make_chain(root / "unet_ewc" / "-".join(seq), seq, "ewc")
        found = {f.claim: f for f in analyze(root).findings}
        assert found["unet: ewc reduces forgetting compared with naive fine-tuning"].verdict == NOT_MEASURABLE
    finally:
        for d in (MATRICES, SECONDS, FWT):
            d.pop("ewc")


def test_paper_findings_and_strategies_read_the_same_matrix(tmp_path):
    # chain_metrics.json says 0 (or null) where the matrix says otherwise: both sections score the matrix
    root = make_study(tmp_path / "multirun")
    for p in root.rglob("chain_metrics.json"):
        p.write_text(json.dumps({"acc": None, "bwt": None, "avg_forgetting": None, "fwt": None}))
    res = analyze(root)
    s = res.summary.set_index(["strategy", "ordering"])
    assert s.loc[("naive", "a→b"), "bwt"] == pytest.approx(0.60 - 0.80)
    assert s.loc[("naive", "b→a"), "avg_forgetting"] == pytest.approx(0.85 - 0.65)
    assert s.loc[("replay", "a→b"), "acc"] == pytest.approx((0.75 + 0.88) / 2)
    forget = [f for f in res.findings if f.claim.startswith("unet: training on later data sets")]
    assert len(forget) == 1 and forget[0].verdict != NOT_MEASURABLE
    assert "mean BWT -0.200" in forget[0].measured   # the naive chains (the paper's claim): (-0.20 - 0.20) / 2
