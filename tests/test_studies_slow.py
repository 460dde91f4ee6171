"""The studies end to end, as a user runs them (slow: minutes; run with ``pytest -m slow``)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import run_cli
from musclelab.outputs.status import read_status


@pytest.mark.slow
def test_mcsweeney2022_smoke_study_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The McSweeney smoke study as a user runs it (source model, sweep, report, notebook; ~30 min on 2 cores):
    the paper's split, and the direction it reproduces: a pretrained source beats scratch at the smallest n."""
    monkeypatch.delenv("MUSCLELAB_ROOT", raising=False)  # the source model goes to ./outputs (source_run)
    sweep, cache = tmp_path / "sweep", tmp_path / "cache"
    common = ["callbacks.progress_bar=false", f"paths.cache_dir={cache}", "cpu_threads=1"]  # the numbers below
    run_cli(["train", "experiment=mcsweeney2022_source_smoke", *common], cwd=tmp_path, timeout=1800)
    assert read_status(tmp_path / "outputs" / "mcsweeney2022_smoke" / "source") == "complete"
    run_cli(["train", "-m", "experiment=mcsweeney2022_smoke", f"hydra.sweep.dir={sweep}", *common], cwd=tmp_path,
            timeout=5400)
    jobs = [p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()]
    assert len(jobs) == 12 and all(read_status(j) == "complete" for j in jobs)
    stages = list((cache / "pretext").glob("*/trunk.pt"))
    assert len(stages) == 2  # one per pretext task, not per n
    for stage in stages:  # early-stopped stages with their Appendix A curve
        assert (stage.parent / "curve.png").exists() and len(pd.read_csv(stage.parent / "curve.csv")) >= 1
    run_cli(["report", str(sweep)], cwd=tmp_path)
    report = sweep / "report"
    text = (report / "report.md").read_text()
    assert "The test cases are identical in every run" in text and "nested subsets" in text
    summary = pd.read_csv(report / "summary.csv").set_index(["init", "n_train"])["dsc_mean"]
    assert len(summary) == 12
    findings = pd.read_csv(report / "findings.csv").set_index("claim")
    # reproduced (measured 2026-12-01, cpu_threads=1): at n = 2 every pretrained init beats scratch in DSC
    # (scratch 0.000; checkpoint 0.389, jigsaw 0.316, autoencoder 0.269), with margins of 0.2 / 0.1 / 0.1
    for init, margin in (("checkpoint", 0.2), ("jigsaw", 0.1), ("autoencoder", 0.1)):
        assert summary[(init, 2)] - summary[("scratch", 2)] > margin, init
        claim = f"at the smallest n, {init} beats scratch in DSC"
        assert findings.loc[claim, "verdict"] == "agrees" and findings.loc[claim, "p_value"] < 0.001
    # the notebook walks through this study
    from test_notebooks import NOTEBOOK_DIR, run_cells

    monkeypatch.setenv("STUDY_DIR", str(sweep))
    run_cells(NOTEBOOK_DIR / "02_study_walkthrough.ipynb")
    assert (sweep / "notebook_fig_dsc.png").exists()


@pytest.mark.slow
def test_kawamoto2024_smoke_study_and_report(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run_cli(["train", "-m", "experiment=kawamoto2024_smoke", "logger=none", f"hydra.sweep.dir={sweep}"],
            cwd=tmp_path, timeout=3600)
    jobs = [p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()]
    assert len(jobs) == 18 and all(read_status(j) == "complete" for j in jobs)
    run_cli(["report", str(sweep)], cwd=tmp_path)
    table1 = pd.read_csv(sweep / "report" / "table1.csv")
    assert list(table1["stat"]) == ["Mean", "SD", "Mean", "SD"] and {"Q DC", "O DC", "Average DC"} <= set(table1)
    findings = pd.read_csv(sweep / "report" / "findings.csv")
    assert findings["claim"].str.contains("w/ESM > wo/ESM for quadratus lumborum").any()
    assert (sweep / "report" / "fig2_violin.png").exists()
    assert len(pd.read_csv(sweep / "report" / "merged_dice.csv")) == 2 * 9   # wo/ESM and w/ESM, 9 test volumes
