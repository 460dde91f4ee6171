"""Yoon et al. 2024 reports: ``architectures`` (Table 3) and ``chains`` (forgetting tables), on fabricated runs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from musclelab.report import REPORTS, detect_kind, write_report
from musclelab.report.findings import OPPOSITE_NS, SAME_NS

MODELS = ["unet", "vnet", "swin_unetr"]
FAILED_MODEL = "vnet"
FIT = {"unet": 120.0, "swin_unetr": 300.0}
INFER = {"unet": 2.5, "swin_unetr": 7.25}


def _arch_cases(model: str) -> pd.DataFrame:
    rng = np.random.default_rng(MODELS.index(model))
    n = 5
    dice = 0.8 + 0.02 * MODELS.index(model) + rng.normal(0, 0.03, n)
    return pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "dice": dice, "hd95": rng.uniform(2, 9, n),
                         "accuracy": rng.uniform(0.95, 0.99, n), "precision": rng.uniform(0.7, 0.9, n),
                         "recall": rng.uniform(0.7, 0.9, n)})


def make_arch_study(root: Path) -> Path:
    """3 models × 1 seed with real-looking configs (init scratch, n_train null); vnet failed."""
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
        "sweeper": {"params": {"model": ",".join(MODELS)}}, "overrides": {"task": ["seed=0", "data=phantom"]}}}))
    for job, model in enumerate(MODELS):
        run = root / str(job)
        run.mkdir()
        cfg = {"model": {"name": model}, "data": {"name": "phantom", "n_train": None}, "seed": 0,
               "init": {"name": "scratch"}}
        (run / "config_resolved.yaml").write_text(yaml.safe_dump(cfg))
        if model == FAILED_MODEL:
            (run / "run_status.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: OOM"}))
            continue
        cases = _arch_cases(model)
        cases.to_csv(run / "test_cases.csv", index=False)
        (run / "test_summary.json").write_text(json.dumps({
            "n_cases": len(cases), "inference_ms_per_slice": INFER[model],
            "metrics": {m: {"mean": float(cases[m].mean()), "sd": float(cases[m].std())} for m in cases.columns[1:]}}))
        (run / "run_status.json").write_text(json.dumps({"status": "complete", "time": "2024-01-01T00:00:00",
                                                          "metrics": {"fit_time_s": FIT[model]}}))
    return root


def test_architectures_report(tmp_path):
    root = make_arch_study(tmp_path / "arch")
    assert detect_kind(root) == "architectures"
    md = write_report(root)
    out = root / "report"
    assert md == out / "report.md"
    assert (out / "fig_architectures.png").stat().st_size > 0
    table = pd.read_csv(out / "architectures.csv").set_index("model")
    assert sorted(table.index) == sorted(m for m in MODELS if m != FAILED_MODEL)
    for model in ("unet", "swin_unetr"):
        cases = _arch_cases(model)
        for m in ("dice", "hd95", "accuracy", "precision", "recall"):
            assert table.loc[model, f"{m}_mean"] == pytest.approx(cases[m].mean())
            assert table.loc[model, f"{m}_sd"] == pytest.approx(cases[m].std(ddof=1))
        assert table.loc[model, "fit_time_s"] == pytest.approx(FIT[model])
        assert table.loc[model, "inference_ms_per_slice"] == pytest.approx(INFER[model])
    text = md.read_text()
    c = _arch_cases("unet")
    row = next(line for line in text.splitlines() if line.startswith("| unet |"))
    assert f"{c['dice'].mean():.3f} ± {c['dice'].std():.3f}" in row and "120.0" in row and "2.50" in row
    header = next(line for line in text.splitlines() if line.startswith("| model | Dice"))
    assert header.split("|")[2:-1] == [" Dice ", " HD95 (mm) ", " accuracy ", " precision ", " failed / cases ",
                                       " training time (s) ", " inference time per slice (ms) "]
    assert "| 0/5 |" in row
    assert "Failed or unfinished runs" in text and "RuntimeError: OOM" in text
    assert "Missing runs" in text and "| vnet |" in text.split("Missing runs")[1]


def test_architectures_sweep_over_model_options_is_not_missing(tmp_path):
    """A sweep over model config options named otherwise than the architecture (yoon2024_muscle_smoke:
    model=yoon2024_unetr_smoke, a run recording model.name unetr) lists no missing run for them; an option that
    never ran still is."""
    from musclelab.report.architectures import analyze

    root = make_arch_study(tmp_path / "arch")
    (root / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"sweeper": {"params": {
        "model": "unet,yoon2024_swin_unetr_smoke,vnet,yoon2024_unetr_smoke", "seed": "0"}}}}))
    for job, option in enumerate(["unet", "vnet", "yoon2024_swin_unetr_smoke"]):
        (root / str(job) / ".hydra").mkdir()
        (root / str(job) / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
            {"hydra": {"runtime": {"choices": {"model": option, "data": "phantom"}}}}))
    missing = analyze(root).study.missing
    assert sorted(missing["model"]) == ["vnet", "yoon2024_unetr_smoke"]   # vnet failed; unetr never ran


def test_architectures_seeds_pool_cases(tmp_path):
    root = make_arch_study(tmp_path / "arch")
    extra = root / "9"
    extra.mkdir()
    (extra / "config_resolved.yaml").write_text(yaml.safe_dump(
        {"model": {"name": "unet"}, "data": {"name": "phantom", "n_train": None}, "seed": 1,
         "init": {"name": "scratch"}}))
    other = _arch_cases("swin_unetr")
    other.to_csv(extra / "test_cases.csv", index=False)
    (extra / "test_summary.json").write_text(json.dumps({"inference_ms_per_slice": 4.5, "metrics": {}}))
    (extra / "run_status.json").write_text(json.dumps({"status": "complete", "metrics": {"fit_time_s": 80.0}}))
    write_report(root, tmp_path / "out", kind="architectures")
    t = pd.read_csv(tmp_path / "out" / "architectures.csv").set_index("model")
    pooled = pd.concat([_arch_cases("unet"), other])["dice"]
    assert t.loc["unet", "n_runs"] == 2 and t.loc["unet", "n_cases"] == 10
    assert t.loc["unet", "dice_mean"] == pytest.approx(pooled.mean())
    assert t.loc["unet", "dice_sd"] == pytest.approx(pooled.std(ddof=1))
    assert t.loc["unet", "fit_time_s"] == pytest.approx(100.0)
    assert t.loc["unet", "inference_ms_per_slice"] == pytest.approx(3.5)


# ---------------------------------------------------------------------------------------------------- chains
DATASETS = ["a", "b"]
# R[stage][dataset]: test Dice after each stage
MATRICES = {("a", "b"): [[0.81, 0.42], [0.70, 0.88]], ("b", "a"): [[0.35, 0.86], [0.83, 0.79]]}


def make_chain(out: Path, seq: tuple[str, ...], complete: bool = True, model: str | None = None) -> Path:
    out.mkdir(parents=True)
    R = MATRICES[seq]
    m = pd.DataFrame(R, columns=DATASETS)
    m.insert(0, "stage", range(len(seq)))
    m.insert(1, "trained", list(seq))
    m.insert(2, "final", [i == len(seq) - 1 for i in range(len(seq))])
    m.to_csv(out / "forgetting_matrix.csv", index=False)
    (out / "forgetting_heatmap.png").write_bytes(b"\x89PNG fake")
    Rt = np.array([[R[i][DATASETS.index(d)] for d in seq] for i in range(len(seq))])
    metrics = {"acc": float(Rt[-1].mean()), "bwt": float(Rt[-1, 0] - Rt[0, 0]),
               "avg_forgetting": float(Rt[0, 0] - Rt[-1, 0])}
    (out / "chain_metrics.json").write_text(json.dumps(metrics))
    curves = pd.DataFrame([{"stage": i, "dataset": d, "epoch": e, "val_dice": 0.3 + 0.1 * e + 0.01 * i}
                           for i, d in enumerate(seq) for e in range(3)])
    curves.to_csv(out / "learning_curves.csv", index=False)
    stages = [{"index": i, "dataset": d, "key": f"k{i}", "run_dir": f"/stages/{d}"} for i, d in enumerate(seq)]
    info = {"sequence": list(seq), "datasets": DATASETS, "stages": stages if complete else stages[:1]}
    if model is not None:
        info["model"] = model
    (out / "chain.json").write_text(json.dumps(info))
    return out


def test_chains_report(tmp_path):
    root = tmp_path / "study"
    make_chain(root / "a-b", ("a", "b"))
    make_chain(root / "b-a", ("b", "a"))
    broken = make_chain(root / "broken", ("a", "b"), complete=False)
    pd.DataFrame({"sequence": ["a-b", "b-a", "a"], "acc": [0, 0, 0]}).to_csv(root / "study_summary.csv",
                                                                              index=False)
    assert broken.exists()
    assert detect_kind(root) == "chains"
    assert {"chains", "mcsweeney", "architectures"} <= set(REPORTS)
    md = write_report(root)
    out = root / "report"
    text = md.read_text()
    lines = text.splitlines()
    # a→b table: rows in training order, columns = data sets, the stage's trained data set in bold
    i = lines.index("### a→b")
    tbl = [line for line in lines[i:i + 10] if line.startswith("|")]
    assert tbl[0] == "| training order | a | b |"
    assert tbl[2] == "| after a | **0.810** | 0.420 |"
    assert tbl[3] == "| after a→b | 0.700 | **0.880** |"
    j = lines.index("### b→a")
    tbl = [line for line in lines[j:j + 10] if line.startswith("|")]
    assert tbl[2] == "| after b | 0.350 | **0.860** |" and tbl[3] == "| after b→a | **0.830** | 0.790 |"
    assert "![forgetting heatmap a→b](../a-b/forgetting_heatmap.png)" in text
    assert "ACC (average accuracy): 0.790" in text  # mean(0.70, 0.88)
    # incomplete and absent chains listed
    assert "| broken | chain.json incomplete: 1 of 2 stages |" in text
    assert "| a | listed in study_summary.csv, no chain directory |" in text
    s = pd.read_csv(out / "chains_summary.csv").set_index("ordering")
    assert list(s.index) == ["a→b", "b→a"]
    assert s.loc["a→b", "acc"] == pytest.approx(0.79) and s.loc["b→a", "bwt"] == pytest.approx(0.79 - 0.86)
    assert s.loc["a→b", "avg_forgetting"] == pytest.approx(0.11)
    assert s.loc["a→b", "final_a"] == pytest.approx(0.70) and s.loc["b→a", "final_b"] == pytest.approx(0.79)
    for d in DATASETS:
        assert (out / f"fig_learning_{d}.png").stat().st_size > 0
        assert f"](fig_learning_{d}.png)" in text
    from musclelab.report.chains import analyze, learning_lines
    lines_by_ds = learning_lines(analyze(root).chains)
    assert sorted(lines_by_ds["a"]) == ["a", "b→a"] and sorted(lines_by_ds["b"]) == ["a→b", "b"]


def test_chains_report_groups_models(tmp_path):
    """A multirun over model.name (the yoon2024_liver layout): one study dir per job, chains titled by model,
    a per-model table with ACC/BWT and learning speed, and a missing ordering located in its own job."""
    from musclelab.report.chains import analyze, epochs_to_fraction, model_table

    root = tmp_path / "multirun"
    for job, model in enumerate(["unet", "vnet"]):
        for seq in [("a", "b"), ("b", "a")]:
            if not (model == "vnet" and seq == ("b", "a")):
                make_chain(root / str(job) / "-".join(seq), seq, model=model)
        pd.DataFrame({"sequence": ["a-b", "b-a"]}).to_csv(root / str(job) / "study_summary.csv", index=False)
    text = write_report(root).read_text()
    assert "### unet: a→b" in text and "### vnet: a→b" in text and "### vnet: b→a" not in text
    assert "| 1/b-a | listed in study_summary.csv, no chain directory |" in text
    table = model_table(analyze(root).chains).set_index("model")
    assert table.loc["unet", "orderings"] == 2 and table.loc["vnet", "orderings"] == 1
    assert table.loc["unet", "acc"] == "0.800 ± 0.014"  # a→b 0.79, b→a mean(0.83, 0.79) = 0.81
    assert table.loc["vnet", "acc"] == "0.790"
    # curves 0.3, 0.4, 0.5 (+0.01 per stage): 95% of the best is first reached at the 3rd epoch
    assert table.loc["unet", "epochs_first_stage"] == "3.0 ± 0.0"  # stages "a" and "b"
    # a→b and b→a, each against b / a from scratch
    assert table.loc["unet", "epochs_after_transfer"] == "3.0 ± 0.0"
    # vnet has only a→b: no from-scratch stage on b, so no fixed target to measure its convergence against
    assert table.loc["vnet", "epochs_after_transfer"] == "–"
    models = pd.read_csv(root / "report" / "chains_models.csv")
    assert list(models["model"]) == ["unet", "vnet"]
    assert epochs_to_fraction(pd.DataFrame({"val_dice": [0.1, 0.9, 0.95, 1.0]})) == 3.0
    assert np.isnan(epochs_to_fraction(pd.DataFrame({"val_dice": [np.nan, np.nan]})))


def test_single_chain_dir(tmp_path):
    chain = make_chain(tmp_path / "job", ("b", "a"))
    md = write_report(chain, tmp_path / "rep")
    assert "### b→a" in md.read_text()
    assert "![forgetting heatmap b→a](../job/forgetting_heatmap.png)" in md.read_text()


def test_mcsweeney_still_detected(tmp_path):
    root = tmp_path / "mc"
    for job, (init, n, model) in enumerate([("scratch", 5, "unet"), ("imagenet", 25, "vnet")]):
        run = root / str(job)
        run.mkdir(parents=True)
        (run / "config_resolved.yaml").write_text(yaml.safe_dump(
            {"init": {"name": init}, "data": {"name": "phantom", "n_train": n}, "model": {"name": model}}))
        (run / "run_status.json").write_text('{"status": "complete"}')
    assert detect_kind(root) == "mcsweeney"


def test_chains_findings_are_computed(tmp_path):
    """The findings section judges each claim from the chains: a→b BWT -0.11, b→a -0.07 -> forgetting agrees
    for unet; vnet (one ordering, BWT -0.11) vs unet (-0.09): VNet most robust disagrees; equal learning speeds
    (3 epochs) -> 'faster after transfer' disagrees; no scratch gains -> not measurable."""
    from musclelab.report.chains import analyze

    root = tmp_path / "multirun"
    for job, model in enumerate(["unet", "vnet"]):
        for seq in [("a", "b"), ("b", "a")]:
            if not (model == "vnet" and seq == ("b", "a")):
                make_chain(root / str(job) / "-".join(seq), seq, model=model)
    found = {f.claim: f for f in analyze(root).findings}
    forget = found["unet: training on later data sets lowers the Dice on earlier ones (catastrophic forgetting)"]
    # two orderings cannot make a Wilcoxon test significant: the right direction alone is not "agrees"
    assert forget.verdict == SAME_NS and "mean BWT -0.090" in forget.measured and forget.n == 2
    robust = found["VNet is the most robust architecture to catastrophic forgetting (highest BWT)"]
    assert robust.verdict == OPPOSITE_NS and "unet -0.090, vnet -0.110" in robust.measured
    speed = found["unet: after transfer a stage converges in fewer epochs than from scratch"]
    assert speed.agrees is False and "from-scratch best" in speed.measured
    similar = "unet: after transfer the Dice on the new data set is similar or better than training on it alone"
    assert found[similar].agrees is None
    text = write_report(root).read_text()
    assert "## Findings" in text and f"**{OPPOSITE_NS}** — VNet is the most robust" in text
    assert len(pd.read_csv(root / "report" / "findings.csv")) == len(found)


@pytest.mark.parametrize("lits_after, verdict", [(0.74, SAME_NS), (0.81, OPPOSITE_NS)])
def test_lits_loses_most_needs_a_loss(tmp_path, monkeypatch, lits_after, verdict):
    """Table 7's "LiTS loses the most": LiTS must have the lowest change on an earlier data set AND lose Dice;
    a LiTS that gains least (+0.01 vs btcv +0.45) points the other way; one ordering each cannot be significant."""
    from musclelab.report.chains import analyze

    monkeypatch.setattr(sys.modules[__name__], "DATASETS", ["lits", "btcv"])
    monkeypatch.setattr(sys.modules[__name__], "MATRICES", {("lits", "btcv"): [[0.80, 0.50], [lits_after, 0.85]],
                                                            ("btcv", "lits"): [[0.40, 0.80], [0.85, 0.82]]})
    root = tmp_path / "multirun"
    for seq in [("lits", "btcv"), ("btcv", "lits")]:
        make_chain(root / "0" / "-".join(seq), seq, model="unet")
    found = {f.claim: f for f in analyze(root).findings}
    assert found["unet: of the earlier data sets, LiTS loses the most Dice after later training"].verdict == verdict


def test_architecture_findings_are_computed(tmp_path):
    """Table 3 claims from the per-model table: swin_unetr (Dice ~0.84) above unet (~0.82) reverses the paper's
    order; vnet failed -> 'VNet best' not measurable; the tool row comes from the threshold baseline."""
    from musclelab.report.architectures import architecture_findings, site_transfer_findings

    root = make_arch_study(tmp_path / "arch")
    write_report(root)
    f = pd.read_csv(root / "report" / "findings.csv").set_index("claim")
    assert f.loc["VNet segments muscle best of the networks (highest Dice)", "verdict"] == "not measurable"
    cmp = ("CNNs (VNet, UNet) are competitive with transformers (UNETR, Swin-UNETR): mean Dice not lower by more "
           "than 0.02")
    assert f.loc[cmp, "verdict"] in ("disagrees", "inconclusive")   # unet ~0.80 vs swin_unetr ~0.84
    assert f.loc[cmp, "kind"] == "non-inferiority" and f.loc[cmp, "unit"].startswith("test case")
    assert "## Findings" in (root / "report" / "report.md").read_text()
    table = pd.DataFrame({"model": ["vnet", "unet", "threshold_boundary"], "dice_mean": [0.9, 0.8, 0.85]})
    jitter = np.linspace(-0.01, 0.01, 8)
    cases = pd.DataFrame({"model": ["vnet"] * 8 + ["unet"] * 8 + ["threshold_boundary"] * 8,
                          "case_id": [f"c{i}" for i in range(8)] * 3, "run_dir": "r",
                          "dice": np.concatenate([0.9 + jitter, 0.8 + jitter[::-1], 0.85 + 0 * jitter])})
    found = {x.claim: x for x in architecture_findings(table, cases)}
    best = found["VNet segments muscle best of the networks (highest Dice)"]
    assert best.verdict == "agrees" and best.n == 8 and "paired" in best.test
    tool = "(threshold_boundary; paper: 0.84)"
    assert found[f"vnet beats the semi-automatic threshold tool {tool}"].verdict == "agrees"
    assert found[f"unet beats the semi-automatic threshold tool {tool}"].verdict == "disagrees"
    st = pd.DataFrame([{"init": init, "n_train": n, "case_id": f"c{i}",
                        "dice": base + 0.002 * i + (0.2 if (init, n) == ("checkpoint", 5) else 0.0)}
                       for init in ("checkpoint", "scratch") for n, base in ((5, 0.6), (30, 0.86)) for i in range(8)])
    res = {x.claim: x for x in site_transfer_findings(st)}
    assert res["n = 5: transfer from another site beats scratch"].verdict == "agrees"
    assert res["n = 30: transfer from another site beats scratch"].agrees is False   # no difference at n = 30
    assert res["Transfer from another site beats scratch at every n in 5 ... 30"].agrees is False


def test_site_transfer_findings_appended_to_the_init_by_n_report(tmp_path):
    """Runs tagged site_transfer (experiment=yoon2024_site_transfer) get Fig. 7's findings appended to the
    McSweeney-style report and its findings.csv; other studies are untouched."""
    from musclelab.report.architectures import add_site_transfer_findings

    root = tmp_path / "site_transfer"
    for i, (init, n, dice) in enumerate([("checkpoint", 5, 0.8), ("scratch", 5, 0.6), ("checkpoint", 10, 0.85),
                                         ("scratch", 10, 0.7)]):
        run = root / init / str(i)
        run.mkdir(parents=True)
        (run / "config_resolved.yaml").write_text(yaml.safe_dump(
            {"init": {"name": init}, "data": {"n_train": n}, "tags": ["yoon2024", "site_transfer"]}))
        (run / "run_status.json").write_text(json.dumps({"status": "complete"}))
        pd.DataFrame({"case_id": [f"c{k}" for k in range(8)], "dice": dice + 0.003 * np.arange(8)}).to_csv(
            run / "test_cases.csv", index=False)
    out = root / "report"
    out.mkdir()
    md = out / "report.md"
    md.write_text("# report\n")
    pd.DataFrame({"claim": ["earlier"], "verdict": ["agrees"]}).to_csv(out / "findings.csv", index=False)
    add_site_transfer_findings(root, md)
    text = md.read_text()
    assert "## Findings: site transfer" in text and "**agrees** — n = 5: transfer from another site" in text
    f = pd.read_csv(out / "findings.csv")
    assert f["claim"].iloc[0] == "earlier" and (f["verdict"] == "agrees").sum() == 4
    other = tmp_path / "other.md"
    other.write_text("x")
    add_site_transfer_findings(tmp_path / "nothing", other)
    assert other.read_text() == "x"


def test_chains_report_lists_swept_models_without_chains(tmp_path):
    """A sweep job that failed before writing any chain (its model has no chains) is listed, not dropped."""
    root = tmp_path / "multirun"
    make_chain(root / "0" / "a-b", ("a", "b"), model="unet")
    (root / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"sweeper": {"params": {"model": "unet,vnet"}}}}))
    text = write_report(root).read_text()
    assert "| model=vnet | in the sweep (multirun.yaml), no complete chain |" in text
    assert "| model=unet |" not in text


def test_convergence_is_measured_against_the_from_scratch_best(tmp_path):
    """A transferred stage that starts on its own plateau (0.5 from epoch 1) reaches 95 % of *its own* best at
    epoch 1, but never reaches the from-scratch stage's best (0.9): measured against that fixed target it is not
    faster, it is censored at its epochs + 1."""
    from musclelab.report.chains import _speed_pairs, analyze

    root = tmp_path / "multirun"
    for seq in [("a", "b"), ("b", "a"), ("a",), ("b",)]:
        out = make_chain(root / "-".join(seq), seq, model="unet") if len(seq) == 2 else None
        if out is None:
            out = root / seq[0]
            out.mkdir(parents=True)
            m = pd.DataFrame({"stage": [0], "trained": [seq[0]], "final": [True], "a": [0.9], "b": [0.4]})
            m.to_csv(out / "forgetting_matrix.csv", index=False)
            (out / "chain.json").write_text(json.dumps({"sequence": list(seq), "datasets": DATASETS, "model": "unet",
                                                        "stages": [{"index": 0, "dataset": seq[0]}]}))
            (out / "chain_metrics.json").write_text(json.dumps({"acc": 0.9}))
        rows = []
        for i, d in enumerate(seq):
            dice = [0.3, 0.6, 0.9] if i == 0 else [0.5, 0.5, 0.5]
            rows += [{"stage": i, "dataset": d, "epoch": e, "val_dice": v} for e, v in enumerate(dice)]
        pd.DataFrame(rows).to_csv(out / "learning_curves.csv", index=False)
    chains_ = analyze(root).chains
    pairs = _speed_pairs(chains_)
    assert pairs["scratch"] == {"a": 3.0, "b": 3.0}
    assert pairs["transfer"]["a→b"] == (4.0, 3.0)   # never reaches 0.95 × 0.9 in 3 epochs
    found = {f.claim: f for f in analyze(root).findings}
    speed = found["unet: after transfer a stage converges in fewer epochs than from scratch"]
    assert speed.agrees is False and "+1.0" in speed.measured


@pytest.mark.parametrize("column", ["val_dice", "train_dice"])
def test_convergence_uses_training_dice_without_a_validation_set(tmp_path, column):
    """The liver design has no validation set: learning speed is then measured on the per-epoch training Dice (the
    target the from-scratch stage's best training Dice), and the finding says so; with a validation Dice, that."""
    from musclelab.report.chains import _speed_pairs, analyze

    root = tmp_path / "multirun"
    for seq in [("a", "b"), ("b", "a")]:
        out = make_chain(root / "-".join(seq), seq, model="unet")
        rows = []
        for i, d in enumerate(seq):
            dice = [0.3, 0.6, 0.9] if i == 0 else [0.88, 0.9, 0.9]
            rows += [{"stage": i, "dataset": d, "epoch": e, column: v,
                      **({"val_dice": float("nan")} if column == "train_dice" else {"train_dice": 0.1})}
                     for e, v in enumerate(dice)]
        pd.DataFrame(rows).to_csv(out / "learning_curves.csv", index=False)
    res = analyze(root)
    pairs = _speed_pairs(res.chains)
    assert pairs["column"] == column and pairs["transfer"]["a→b"] == (1.0, 3.0)
    speed = {f.claim: f for f in res.findings}["unet: after transfer a stage converges in fewer epochs than from scratch"]
    what = "training Dice" if column == "train_dice" else "validation Dice"
    assert what in speed.measured and (("no validation set" in speed.note) == (column == "train_dice"))
    write_report(root)
    text = (root / "report" / "report.md").read_text()
    assert ("measured on the per-epoch training Dice" in text) == (column == "train_dice")
    assert (root / "report" / "fig_learning_a.png").exists()


def test_a_swept_model_option_is_matched_through_the_jobs_overrides(tmp_path):
    """`model=ronneberger_unet_smoke` is swept, its chains record model.name `ronneberger_unet`: the job's
    overrides.yaml ties them, so it is not listed as missing (the liver smoke listed it)."""
    root = tmp_path / "multirun"
    make_chain(root / "0" / "a-b", ("a", "b"), model="ronneberger_unet")
    (root / "0" / ".hydra").mkdir()
    (root / "0" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["model=ronneberger_unet_smoke", "seed=0"]))
    (root / "multirun.yaml").write_text(yaml.safe_dump(
        {"hydra": {"sweeper": {"params": {"model": "ronneberger_unet_smoke,vnet"}}}}))
    text = write_report(root).read_text()
    assert "| model=vnet | in the sweep" in text and "model=ronneberger_unet_smoke |" not in text
