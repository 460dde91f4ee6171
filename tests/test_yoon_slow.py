"""The Yoon et al. 2024 smoke studies as a user runs them, and the paper's directions they reproduce (slow: tens of
minutes on 2 cores; ``pytest -m slow``). Margins come from the runs of 2026-12-01/02 (numbers in the comments);
directions that did not reproduce are stated in the reports' findings sections, not asserted here.
Those runs predate the paper's designs (issue 20: Ronneberger's U-Net for the UNet, no validation set and the last
epoch kept, every liver slice); the margins are to be re-measured with them."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import run_cli
from musclelab.outputs.status import read_status
from musclelab.report.findings import AGREES, INCONCLUSIVE, NOT_MEASURABLE, SAME_NS, VERDICTS


@pytest.mark.slow
def test_yoon2024_muscle_smoke_architecture_table(tmp_path: Path) -> None:
    """Seven rows (five networks, the threshold with and without the inner abdominal boundary) and the directions
    the smoke reproduces (measured 2026-12-02, test Dice over 8 slices, per-architecture budget of the smoke):
    every network learns the muscle well past the plain HU threshold (VNet 0.828, UNet 0.890, UNETR 0.830,
    Swin-UNETR 0.902, ParaTransCNN 0.897 vs 0.658), and the user's boundary is what makes the semi-automatic tool
    usable (Dice 0.866 with it vs 0.658 without, precision 0.778 vs 0.499; the paper's tool 0.84 / 0.76); every
    network is more precise than the tool with its boundary (0.866-0.962 vs 0.778; the paper: VNet 0.877 vs 0.760).
    Not reproduced, so not asserted (the report's findings say so): VNet best and Table 3's ranking (Swin-UNETR >
    ParaTransCNN > UNet > UNETR > VNet), CNNs >= transformers (0.859 vs 0.866), and every network beating the tool
    with its boundary (UNet, Swin-UNETR, ParaTransCNN above it by 0.02-0.04, Mann-Whitney p >= 0.16; UNETR and
    VNet below it)."""
    sweep = tmp_path / "sweep"
    run_cli(["train", "-m", "experiment=yoon2024_muscle_smoke", "callbacks.progress_bar=false", "logger=none",
             f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=5400)
    run_cli(["report", str(sweep)], cwd=tmp_path)
    table = pd.read_csv(sweep / "report" / "architectures.csv").set_index("model")
    nets = ["paratranscnn", "ronneberger_unet", "swin_unetr", "unetr", "vnet"]
    tools = ["threshold", "threshold_boundary"]
    assert sorted(table.index) == sorted(nets + tools)
    assert (table["inference_ms_per_slice"] > 0).all() and (table.loc[nets, "fit_time_s"] > 0).all()
    assert (table.loc[tools, "fit_time_s"] == 0).all()
    # every network learns, well past the plain threshold (measured: the weakest, VNet, 0.828 vs 0.658; VNet's
    # validation Dice swings 0.65-0.83 between its last epochs, hence half the margin)
    assert (table.loc[nets, "dice_mean"] > table.loc["threshold", "dice_mean"] + 0.08).all()
    # the paper's precision gap (Fig. 6): the networks do not take organs / the spinal canal for muscle
    assert (table.loc[nets, "precision_mean"] > table.loc["threshold_boundary", "precision_mean"] + 0.04).all()
    assert table.loc["threshold_boundary", "dice_mean"] > table.loc["threshold", "dice_mean"] + 0.1
    assert table.loc["threshold_boundary", "precision_mean"] > table.loc["threshold", "precision_mean"] + 0.15
    findings = pd.read_csv(sweep / "report" / "findings.csv")
    assert len(findings) >= 4 and set(findings["verdict"]) <= set(VERDICTS)
    assert "## Findings" in (sweep / "report" / "report.md").read_text()


@pytest.mark.slow
def test_yoon2024_liver_smoke_forgetting_report(tmp_path: Path) -> None:
    """15 orderings x 4 architectures on the abdominal phantom's three liver sites (53 min on 2 shared cores), and
    the directions the smoke reproduces for the UNet (whose stages train to about their plateau; measured
    2026-12-02): training on later sites lowers the Dice on earlier ones (mean BWT -0.033 over the 12
    multi-stage orderings, ACC 0.82); LiTS loses the most (-0.114; LiTS -> BTCV alone -0.19, the paper's Table 7 pattern) while BTCV gains (+0.029, as
    in the paper); a stage that starts from an earlier one converges in fewer epochs (3.7 vs 2.3 epochs to 95 %
    of its best validation Dice) and its Dice is similar or better than training on the data set alone (+0.028)."""
    sweep, cache = tmp_path / "sweep", tmp_path / "cache"
    run_cli(["transfer", "-m", "experiment=yoon2024_liver_smoke", "logger=none", f"hydra.sweep.dir={sweep}",
             f"paths.cache_dir={cache}"], cwd=tmp_path, timeout=5400)
    stages = [d for d in (cache / "stages").iterdir() if d.is_dir() and not d.name.startswith("random_init-")]
    assert len(stages) == 4 * 15 and all(read_status(d) == "complete" for d in stages)
    run_cli(["report", str(sweep)], cwd=tmp_path)
    report = sweep / "report"
    summary = pd.read_csv(report / "chains_summary.csv")
    assert len(summary) == 60 and sorted(summary["model"].unique()) == ["ronneberger_unet", "swin_unetr", "unetr",
                                                                                 "vnet"]
    models = pd.read_csv(report / "chains_models.csv")
    assert len(models) == 4 and (models["orderings"] == 15).all()
    unet = summary[(summary["model"] == "ronneberger_unet") & (summary["length"] > 1)]
    assert unet["acc"].mean() > 0.75  # the UNet learns the liver (measured ACC 0.82)
    assert unet["bwt"].mean() < -0.02  # the bar for forgetting in the smoke (measured -0.033)
    # every architecture learns its sites with the smoke's stage budgets (measured mean ACC: Swin-UNETR 0.85,
    # UNETR 0.73, VNet 0.54); only the UNet's and VNet's BWT are negative (VNet -0.10: some of its CPU-budget
    # stages collapse), so "VNet is the most robust" does not reproduce and is not asserted
    multi = summary[summary["length"] > 1].groupby("model")["acc"].mean()
    assert multi["swin_unetr"] > 0.8 and multi["unetr"] > 0.65 and multi["vnet"] > 0.5
    text = (report / "report.md").read_text()
    assert "### unetr: lits→btcv→chaos" in text and "0 missing or incomplete" in text and "## Findings" in text
    findings = pd.read_csv(report / "findings.csv").set_index("claim")
    # the directions above were measured before verdicts needed significance (issue 18); the verdicts under the
    # rule (significance, fixed convergence target, non-inferiority margin) are what this run measures, so only
    # the direction is asserted: agrees, or the same direction without significance
    forgetting = ("ronneberger_unet: training on later data sets lowers the Dice on earlier ones (catastrophic "
                  "forgetting)")
    assert findings.loc[forgetting, "verdict"] in (AGREES, SAME_NS)
    # no validation set (the paper's split): no per-epoch validation Dice, so learning speed is not measurable
    assert findings.loc["ronneberger_unet: after transfer a stage converges in fewer epochs than from scratch",
                        "verdict"] == NOT_MEASURABLE
    similar = ("ronneberger_unet: after transfer the Dice on the new data set is similar or better than training on "
               "it alone")
    assert findings.loc[similar, "verdict"] in (AGREES, INCONCLUSIVE)
    lits = "ronneberger_unet: of the earlier data sets, LiTS loses the most Dice after later training"
    assert findings.loc[lits, "verdict"] in (AGREES, SAME_NS)
    from musclelab.report.chains import _change_series, analyze

    change = _change_series([c for c in analyze(sweep).chains if c.model == "ronneberger_unet"])
    assert change["lits"].mean() < -0.05 and change["btcv"].mean() > change["lits"].mean() + 0.05


@pytest.mark.slow
def test_yoon2024_site_transfer_smoke_transfer_beats_scratch(tmp_path: Path) -> None:
    """Fig. 7 as the yoon2024_site_transfer_smoke header runs it: a site-a UNet (the muscle smoke's) fine-tuned on
    n = 5 ... 30 site-b images against the same UNet from scratch, then the report. Measured 2026-12-02 (test Dice,
    16 site-b cases; transfer vs scratch): n=5 0.898 vs 0.732, 10 0.917 vs 0.801, 15 0.926 vs 0.831, 20 0.929
    vs 0.866, 25 0.926 vs 0.854, 30 0.935 vs 0.897 (Mann-Whitney p <= 5e-5 at every n, before the findings paired
    by test case; mean gain +0.092); the
    gain shrinks as n grows. 27 min on the shared 2-core machine."""
    out = tmp_path / "outputs"
    run_cli(["train", "experiment=yoon2024_muscle_smoke", "data.source.site=a", "hydra.run.dir=outputs/site_a_smoke",
             "callbacks.progress_bar=false"], cwd=tmp_path, timeout=1800)
    for init in ("checkpoint", "scratch"):
        source = ["init.checkpoint=outputs/site_a_smoke"] if init == "checkpoint" else []
        run_cli(["train", "-m", "experiment=yoon2024_site_transfer_smoke", f"init={init}", *source,
                 f"hydra.sweep.dir=outputs/site_transfer_smoke/{init}", "callbacks.progress_bar=false"],
                cwd=tmp_path, timeout=2400)
    run_cli(["report", "outputs/site_transfer_smoke"], cwd=tmp_path)
    report = out / "site_transfer_smoke" / "report"
    assert "## Findings" in (report / "report.md").read_text()
    findings = pd.read_csv(report / "findings.csv").set_index("claim")
    per_n = {n: findings.loc[f"n = {n}: transfer from another site beats scratch"] for n in (5, 10, 15, 20, 25, 30)}
    gains = {}
    for n, row in per_n.items():
        transfer, scratch = (float(x) for x in row["measured"].removeprefix("Dice ").split(" vs "))
        gains[n] = transfer - scratch
    assert gains[5] > 0.08                                         # measured +0.166 at n = 5 (p = 3e-6)
    assert per_n[5]["verdict"] == "agrees" and per_n[5]["p_value"] < 0.01
    assert sum(g > 0 for g in gains.values()) >= 5 and sum(gains.values()) / 6 > 0.04   # measured 6 of 6, +0.092
    assert gains[5] > gains[30]                                    # measured +0.166 vs +0.038
