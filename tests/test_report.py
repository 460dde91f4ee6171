"""The study report (musclelab.report) on a fabricated McSweeney multirun directory: files, numbers, layout."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from musclelab.errors import ConfigError
from musclelab.metrics.statistics import dunnett_vs_control, mean_ci
from musclelab.report import REPORTS, main_report, write_report
from musclelab.report.mcsweeney import analyze, pvalue_table, standard_case_metrics
from musclelab.report.runs import expected_grid, parse_sweep_values, supersede_duplicates

INITS = ["scratch", "imagenet"]
NS = [5, 25]
FOLDS = [0, 1]
N_CASES = 6
FAILED = ("scratch", 25, 1)  # run exists, status failed
ABSENT = ("imagenet", 25, 1)  # expected by multirun.yaml, no directory at all
BASE_DICE = {("scratch", 5): 0.60, ("imagenet", 5): 0.85, ("scratch", 25): 0.88, ("imagenet", 25): 0.915}


def _cases(init: str, n: int, fold: int) -> pd.DataFrame:
    rng = np.random.default_rng(1000 * INITS.index(init) + 10 * n + fold)
    ids = [f"f{fold}c{i}" for i in range(N_CASES)]
    dice = BASE_DICE[(init, n)] + rng.normal(0, 0.02, N_CASES)
    sma_true = 140.0 + 10 * np.arange(N_CASES) + fold
    smd_true = 35.0 + np.arange(N_CASES) - fold
    sma_pred = sma_true + (-12.0 if (init, n) == ("scratch", 5) else 0.0) + rng.normal(0, 2, N_CASES)
    smd_pred = smd_true + rng.normal(0, 1, N_CASES)
    return pd.DataFrame({
        "case_id": ids, "dice": dice, "rms_dta": (1 - dice) * 25.0, "dice_pp": dice + 0.005,
        "rms_dta_cm": (1 - dice) * 2.0, "sma_pred": sma_pred, "sma_true": sma_true,
        "sma_diff": sma_pred - sma_true, "sma_abs_diff": np.abs(sma_pred - sma_true),
        "smd_pred": smd_pred, "smd_true": smd_true, "smd_diff": smd_pred - smd_true,
    })


def _observers(fold: int) -> pd.DataFrame:
    rng = np.random.default_rng(100 + fold)  # identical in every run of the fold
    rows = []
    for i, obs in itertools.product(range(N_CASES), ("obs1", "obs2")):
        d = 0.92 + rng.normal(0, 0.01)
        rows.append({"case_id": f"f{fold}c{i}", "observer": obs, "dice": d, "rms_dta_cm": (1 - d) * 2.0,
                     "sma": 150.0, "smd": 35.0, "sma_diff": rng.normal(0, 2), "sma_abs_diff": 1.0,
                     "smd_diff": rng.normal(0, 1)})
    return pd.DataFrame(rows)


def make_study(root: Path, observers: bool = True, multirun: bool = True) -> Path:
    """A tiny Hydra multirun: 2 inits × 2 n × 2 folds × 1 draw × 1 seed; one failed run, one absent."""
    root.mkdir(parents=True, exist_ok=True)
    if multirun:
        (root / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
            "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                        "params": {"init": "scratch,imagenet", "data.n_train": "5,25", "data.fold": "0,1"}},
            "overrides": {"task": ["data.subset_draw=0", "seed=0", "model=unet"]},
        }}))
    for job, (init, n, fold) in enumerate(itertools.product(INITS, NS, FOLDS)):
        if (init, n, fold) == ABSENT:
            continue
        run = root / str(job)
        run.mkdir()
        cfg = {"init": {"name": init}, "data": {"name": "phantom", "n_train": n, "fold": fold, "subset_draw": 0},
               "seed": 0, "model": {"name": "unet"}}
        (run / "config_resolved.yaml").write_text(yaml.safe_dump(cfg))
        if (init, n, fold) == FAILED:
            (run / "run_status.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: boom"}))
            continue
        _cases(init, n, fold).to_csv(run / "test_cases.csv", index=False)
        if observers:
            _observers(fold).to_csv(run / "observers.csv", index=False)
        (run / "run_status.json").write_text(json.dumps({"status": "complete", "time": "2024-01-01T00:00:00"}))
    return root


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = make_study(tmp_path_factory.mktemp("study") / "multirun")
    return root, write_report(root)


def _pooled(root: Path, init: str, n: int, col: str = "dice_pp") -> np.ndarray:
    return np.concatenate([_cases(init, n, f)[col].to_numpy() for f in FOLDS
                           if (init, n, f) not in (FAILED, ABSENT)])


def _obs_pooled(col: str = "dice") -> np.ndarray:
    """The observers' per-case values: the mean over the observers of each case (the unit of analysis)."""
    return pd.concat([_observers(f) for f in FOLDS]).groupby("case_id", sort=False)[col].mean().to_numpy()


def test_report_files(study):
    root, md = study
    assert md == root / "report" / "report.md"
    for name in ("report.md", "summary.csv", "dunnett_dsc.csv", "dunnett_rms.csv", "dunnett_sma.csv",
                 "dunnett_smd.csv", "fig_dsc.png", "fig_rms.png", "fig_sma_smd.png"):
        assert (md.parent / name).stat().st_size > 0, name
    text = md.read_text()
    for fig in ("fig_dsc.png", "fig_rms.png", "fig_sma_smd.png"):
        assert f"]({fig})" in text
    assert not list(md.parent.glob(".*.tmp"))


def test_summary_numbers(study):
    root, md = study
    s = pd.read_csv(md.parent / "summary.csv")
    assert list(s[["init", "n_train"]].itertuples(index=False, name=None)) == [
        ("scratch", 5), ("scratch", 25), ("imagenet", 5), ("imagenet", 25)]
    row = s[(s.init == "imagenet") & (s.n_train == 5)].iloc[0]
    v = _pooled(root, "imagenet", 5)
    assert (row.n_runs, row.n_cases, row.n_missing) == (2, 2 * N_CASES, 0)
    assert row.dsc_mean == pytest.approx(v.mean(), abs=1e-12)
    assert (row.dsc_ci_low, row.dsc_ci_high) == pytest.approx(mean_ci(v)[1:], abs=1e-12)
    assert row.rms_dta_cm_mean == pytest.approx(_pooled(root, "imagenet", 5, "rms_dta_cm").mean())
    part = s[(s.init == "scratch") & (s.n_train == 25)].iloc[0]
    assert (part.n_runs, part.n_cases, part.n_missing) == (1, N_CASES, 1)


def test_missing_and_failed_listed(study):
    root, md = study
    text = md.read_text()
    res = analyze(root)
    assert len(res.study.missing) == 2 and len(res.study.failed) == 1 and res.study.n_expected == 8
    assert "no run directory" in text  # imagenet n=25 fold 1: expected, never started
    failed_dir = res.study.failed.iloc[0]["run_dir"]
    assert f"failed ({failed_dir})" in text and "RuntimeError: boom" in text
    assert "### Missing runs" in text and "### Failed or unfinished runs" in text
    absent = res.study.missing[res.study.missing["found"] == "no run directory"].iloc[0]
    assert (absent["init"], int(absent["n_train"]), int(absent["fold"])) == ABSENT


def test_dunnett_layout_and_values(study):
    root, md = study
    long = pd.read_csv(md.parent / "dunnett_dsc.csv")
    wide = pvalue_table(long)
    assert wide.shape == (2, 2) and list(wide.index) == ["scratch", "imagenet"] and list(wide.columns) == NS
    direct = dunnett_vs_control({i: _pooled(root, i, 5) for i in INITS}, _obs_pooled(), rng=0)
    assert wide.loc["imagenet", 5] == pytest.approx(direct.set_index("group").loc["imagenet", "p_value"], abs=1e-12)
    assert wide.loc["scratch", 5] < 0.001  # scratch at n=5 is far below the observers
    text = md.read_text()
    assert "| init | n=5 | n=25 |" in text and "<0.001" in text
    # Table 2: predicted SMA vs the reference values of the same cases (each case once)
    sma = pvalue_table(pd.read_csv(md.parent / "dunnett_sma.csv"))
    ref = np.concatenate([_cases("scratch", 5, f)["sma_true"].to_numpy() for f in FOLDS])
    d = dunnett_vs_control({i: _pooled(root, i, 5, "sma_pred") for i in INITS}, ref, rng=0)
    assert sma.loc["scratch", 5] == pytest.approx(d.set_index("group").loc["scratch", "p_value"], abs=1e-12)
    assert set(pd.read_csv(md.parent / "dunnett_rms.csv")["metric"]) == {"rms_dta_cm"}


def test_summary_paragraph_names_winner(study):
    _, md = study
    text = md.read_text()
    assert "At the smallest training set (n=5), **imagenet** has the highest mean DSC" in text
    assert "first reaches the band's lower bound for imagenet at n=25, while scratch never does" in text


def test_observers_absent_and_no_multirun(tmp_path):
    root = make_study(tmp_path / "study", observers=False, multirun=False)
    md = write_report(root, tmp_path / "out")
    text = md.read_text()
    assert "Skipped: no observers.csv" in text and "no observer band" in text
    assert pd.read_csv(md.parent / "dunnett_dsc.csv").empty
    assert pvalue_table(pd.read_csv(md.parent / "dunnett_sma.csv")).shape == (2, 2)
    assert "### Failed or unfinished runs" in text and "### Missing runs" not in text  # no grid to miss from
    assert (md.parent / "fig_dsc.png").exists()


def test_empty_dir_is_config_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match=f"no run_status.json under {tmp_path}"):
        write_report(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main_report([str(tmp_path)])
    assert exc.value.code == 2 and "no run_status.json" in capsys.readouterr().err


def test_unrecognised_study(tmp_path):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "run_status.json").write_text('{"status": "complete"}')
    (tmp_path / "0" / "config_resolved.yaml").write_text("data: {name: phantom}\n")
    assert "mcsweeney" in REPORTS
    with pytest.raises(ConfigError, match="match no report kind"):
        write_report(tmp_path)
    with pytest.raises(ConfigError, match="unknown report kind"):
        write_report(tmp_path, kind="nope")


def test_main_report_prints_path(study, tmp_path, capsys):
    root, _ = study
    main_report([str(root), "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert str(tmp_path / "r" / "report.md") in out and "imagenet" in out


def test_metric_fallbacks():
    raw = pd.DataFrame({"case_id": ["a", "b"], "dice": [0.8, 0.9], "rms_dta": [5.0, 3.0],
                        "sma_pred": [10.0, 12.0], "sma_true": [11.0, 12.0]})
    m, src = standard_case_metrics(raw)
    assert m["dsc"].tolist() == [0.8, 0.9] and m["rms_dta_cm"].tolist() == [0.5, 0.3]
    assert m["sma_diff"].tolist() == [-1.0, 0.0] and m["smd_diff"].isna().all()
    assert src["dsc"] == "dice" and src["rms_dta_cm"] == "rms_dta / 10"


def test_sweep_parsing_and_duplicates(tmp_path):
    assert parse_sweep_values("5,10,25") == [5, 10, 25]
    assert parse_sweep_values("range(0,3)") == [0, 1, 2]
    assert parse_sweep_values("choice(scratch,imagenet)") == ["scratch", "imagenet"]
    assert parse_sweep_values(3) == [3]
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"sweeper": {"params": None}, "overrides": {
        "task": ["init=scratch,coco", "seed=0", "data.fold=range(0,2)"]}}}))
    grid = expected_grid(tmp_path)
    assert list(grid.columns) == ["init", "data.fold"] and len(grid) == 4
    runs = pd.DataFrame({"run_dir": ["a", "b", "c"], "status": ["complete"] * 3, "time": ["t1", "t2", "t1"],
                         "init": ["x", "x", "y"]})
    used, superseded = supersede_duplicates(runs, ["init"])
    assert sorted(used["run_dir"]) == ["b", "c"] and superseded["run_dir"].tolist() == ["a"]
