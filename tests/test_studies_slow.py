"""The studies end to end, as a user runs them (slow: minutes; run with ``pytest -m slow``)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import run_cli
from musclelab.outputs.status import read_status


@pytest.mark.slow
def test_mcsweeney2022_smoke_study_and_report(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run_cli(["train", "-m", "experiment=mcsweeney2022_smoke", "callbacks.progress_bar=false",
             f"hydra.sweep.dir={sweep}", f"paths.cache_dir={tmp_path / 'cache'}"], cwd=tmp_path)
    jobs = [p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()]
    assert len(jobs) == 6 and all(read_status(j) == "complete" for j in jobs)
    assert len(list((tmp_path / "cache" / "pretext").glob("*/trunk.pt"))) == 2  # one per pretext task, not per n
    run_cli(["report", str(sweep)], cwd=tmp_path)
    summary = pd.read_csv(sweep / "report" / "summary.csv")
    assert len(summary) == 6
    assert (sweep / "report" / "report.md").exists() and (sweep / "report" / "fig_dsc.png").exists()


@pytest.mark.slow
def test_yoon2024_muscle_smoke_architecture_table(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run_cli(["train", "-m", "experiment=yoon2024_muscle_smoke", "callbacks.progress_bar=false", "logger=none",
             f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    run_cli(["report", str(sweep)], cwd=tmp_path)
    table = pd.read_csv(sweep / "report" / "architectures.csv")
    assert sorted(table["model"]) == ["paratranscnn", "swin_unetr", "threshold", "unet", "unetr", "vnet"]
    nets = table[table["model"] != "threshold"]
    assert (table["inference_ms_per_slice"] > 0).all() and (nets["fit_time_s"] > 0).all()
    assert table.set_index("model").loc["threshold", "fit_time_s"] == 0


@pytest.mark.slow
def test_yoon2024_liver_smoke_forgetting_report(tmp_path: Path) -> None:
    """15 orderings x 4 architectures on the abdominal phantom's three liver sites: 15 stages per model, and a
    report with a forgetting table per (model, ordering) and the per-model table."""
    sweep, cache = tmp_path / "sweep", tmp_path / "cache"
    run_cli(["transfer", "-m", "experiment=yoon2024_liver_smoke", "logger=none", f"hydra.sweep.dir={sweep}",
             f"paths.cache_dir={cache}"], cwd=tmp_path, timeout=2400)  # about 12 min on 2 cores
    stages = [d for d in (cache / "stages").iterdir() if d.is_dir()]
    assert len(stages) == 4 * 15 and all(read_status(d) == "complete" for d in stages)
    run_cli(["report", str(sweep)], cwd=tmp_path)
    summary = pd.read_csv(sweep / "report" / "chains_summary.csv")
    assert len(summary) == 60 and sorted(summary["model"].unique()) == ["swin_unetr", "unet", "unetr", "vnet"]
    models = pd.read_csv(sweep / "report" / "chains_models.csv")
    assert len(models) == 4 and (models["orderings"] == 15).all()
    text = (sweep / "report" / "report.md").read_text()
    assert "### unetr: lits→btcv→chaos" in text and "0 missing or incomplete" in text


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
