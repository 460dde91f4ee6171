"""Hyper-parameter search: what a run returns to a sweeper, and an Optuna sweeper whose study a relaunch continues.

``musclelab train -m hparams_search=optuna hydra.sweeper.n_trials=20`` (``conf/hparams_search/optuna.yaml``)
runs Hydra's Optuna sweeper (hydra-optuna-sweeper): every trial is an ordinary sweep job with its own complete
run directory, and the value it returns is ``optimized_metric`` (a config field, ``val/dice`` in the preset) of the
run (:func:`objective`): a validation metric is read from ``metrics.csv`` at the epoch of the best checkpoint (the
model the run keeps), a test metric from the test results.

``ResumableOptunaSweeper`` (``hydra_plugins/musclelab_optuna_sweeper``: Hydra loads sweepers only from the
``hydra_plugins`` package) is the plug-in's sweeper with two additions it lacks: the study lives in an SQLite storage
inside the sweep directory (created before the study is opened), and a relaunch into the same sweep directory
(``hydra.sweep.dir=<it>``) continues the stored study: it runs the trials still missing up to
``hydra.sweeper.n_trials`` (raise it to search further) and numbers new jobs after the existing ones, so no
trial's run directory is reused. Hydra's ``optimization_results.yaml`` (best parameters and value) is written
into the sweep directory after every launch.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

log = logging.getLogger(__name__)


def _column(name: str) -> str:
    from musclelab.callbacks import csv_column

    return csv_column(name)


def metric_value(run_dir: Path, result: Mapping[str, Any], name: str, monitor: str | None = None,
                 mode: str = "min") -> float:
    """The value of metric ``name`` for a finished run: from ``result`` when it is there (test metrics), else
    from ``metrics.csv`` at the epoch where ``monitor`` was best (``mode``; the last epoch without a monitor).
    NaN when the run has no such metric (the sweeper then records a failed trial and goes on)."""
    if name in result and result[name] is not None:
        return float(result[name])
    path = Path(run_dir) / "metrics.csv"
    column = _column(name)
    if not path.is_file():
        return math.nan
    df = pd.read_csv(path)
    if column not in df or df[column].isna().all():
        return math.nan
    mon = _column(monitor) if monitor else None
    if mon and mon in df and df[mon].notna().any():
        row = df[mon].idxmax() if mode == "max" else df[mon].idxmin()
        value = df.loc[row, column]
        if pd.notna(value):
            return float(value)
    return float(df[column].dropna().iloc[-1])


def objective(cfg: Any, result: Mapping[str, Any] | None) -> float | None:
    """What ``musclelab train`` returns to a sweeper: ``result[optimized_metric]`` as a float (NaN when missing,
    e.g. a non-zero DDP rank), or the best checkpoint score when no ``optimized_metric`` is set."""
    result = result or {}
    name = cfg.get("optimized_metric")
    if not name:
        return result.get("best_score")
    value = result.get(name)
    return float(value) if value is not None else math.nan


def storage_file(storage: str | None) -> Path | None:
    if isinstance(storage, str) and storage.startswith("sqlite:///"):
        return Path(storage[len("sqlite:///"):])
    return None


def stored_trials(storage: str | None, study_name: str | None) -> tuple[int, int]:
    """(all trials, finished trials) of a stored study; (0, 0) when there is none yet."""
    import optuna

    file = storage_file(storage)
    if storage is None or (file is not None and not file.is_file()):
        return 0, 0
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # the storage exists but not this study
        return 0, 0
    states = [t.state for t in study.get_trials(deepcopy=False)]
    done = sum(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in states)
    return len(states), done
