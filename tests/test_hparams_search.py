"""Hyper-parameter search (``hparams_search=optuna``): 3 trials at trainer=debug, each a complete run whose
returned value is its validation Dice; optimization_results.yaml; the stored study continued by a relaunch.
Also what baselines and runs without a metric return to a sweeper."""
from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from musclelab import cli
from musclelab.hparams_search import metric_value, objective
from musclelab.train import train
from tests.conftest import compose_cfg

FAST = ["hparams_search=optuna", "trainer=debug", "trainer.limit_val_batches=1", "data.img_size=64",
        "data.source.n_cases=12", "test=false", "logger=none", "callbacks.progress_bar=false",
        "data.eval_batch_size=4"]


def _search(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``musclelab train -m ...`` in this process (a subprocess would import torch and Lightning again)."""
    from hydra.core.global_hydra import GlobalHydra

    monkeypatch.setattr("sys.argv", ["musclelab"])  # cli.main sets its own for Hydra; restored afterwards
    try:
        cli.main(["train", "-m", *args])
    finally:
        GlobalHydra.instance().clear()


def test_three_trials_then_a_relaunch_continues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = tmp_path / "search"
    _search([*FAST, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}"], monkeypatch)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"optim.lr", "data.batch_size", "loss", "model.params.channels"}
    study = optuna.load_study(study_name="train", storage=f"sqlite:///{sweep}/optuna.db")
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    for trial in trials:  # each trial is a complete run; its value is the run's val Dice at the best epoch
        run = sweep / str(trial.number)
        status = json.loads((run / "run_status.json").read_text())
        assert status["status"] == "complete"
        metrics = pd.read_csv(run / "metrics.csv")
        best = metrics.loc[metrics["val_loss"].idxmin(), "val_dice"]
        assert trial.value == pytest.approx(best) == pytest.approx(status["metrics"]["val/dice"])
        overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
        assert f"loss={trial.params['loss']}" in overrides
    assert results["best_value"] == pytest.approx(max(t.value for t in trials))

    _search([*FAST, "hydra.sweeper.n_trials=4", f"hydra.sweep.dir={sweep}"], monkeypatch)
    study = optuna.load_study(study_name="train", storage=f"sqlite:///{sweep}/optuna.db")
    assert len(study.get_trials()) == 4  # one more trial, not four
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == ["0", "1", "2", "3"]
    assert [t.params for t in study.get_trials()[:3]] == [t.params for t in trials]  # the old trials stay


def test_baseline_returns_its_validation_score(tmp_path: Path) -> None:
    cfg = compose_cfg(tmp_path / "run", ["model=threshold", "optimized_metric=val/dice", "data.source.n_cases=12"])
    result = train(cfg)
    assert 0.0 < result["val/dice"] < 1.0
    assert objective(cfg, result) == result["val/dice"]


def test_objective_and_metric_value(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"optimized_metric": "val/dice"})
    assert math.isnan(objective(cfg, {}))  # a non-zero DDP rank, a run without the metric: float, not None
    assert objective(OmegaConf.create({"optimized_metric": None}), {"best_score": 0.3}) == 0.3
    pd.DataFrame({"epoch": [0, 1, 2], "val_loss": [0.9, 0.5, 0.7], "val_dice": [0.2, 0.6, 0.65]}).to_csv(
        tmp_path / "metrics.csv", index=False)
    assert metric_value(tmp_path, {}, "val/dice", "val/loss", "min") == 0.6  # at the best checkpoint's epoch
    assert metric_value(tmp_path, {}, "val/dice") == 0.65  # no monitor: the last epoch
    assert metric_value(tmp_path, {"test/dice": 0.5}, "test/dice") == 0.5
    assert math.isnan(metric_value(tmp_path, {}, "val/nope"))
