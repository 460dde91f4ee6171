"""Sweep launchers: the same jobs through worker processes (joblib) give the same numbers; the SLURM preset
composes onto Hydra's submitit launcher (no SLURM here, so it is not submitted)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from conftest import TINY, run_cli, run_cli_here
from musclelab.outputs.status import read_status

# joblib workers run torch with 1 thread; CPU numbers depend on the thread count, so fix it for both
QUIET = [*TINY, "logger=none", "cpu_threads=1"]


def test_local_parallel_launcher_matches_sequential_jobs(tmp_path: Path) -> None:
    parallel, sequential = tmp_path / "parallel", tmp_path / "sequential"
    run_cli(["train", "-m", "hydra/launcher=local_parallel", *QUIET, "seed=0,1", f"hydra.sweep.dir={parallel}"],
            cwd=tmp_path)
    # the sequential jobs in this process (the same entry point); the parallel ones are real worker processes
    run_cli_here(["train", "-m", *QUIET, "seed=0,1", f"hydra.sweep.dir={sequential}"], cwd=tmp_path)
    for job in ("0", "1"):
        assert read_status(parallel / job) == "complete"
        a, b = (pd.read_csv(d / job / "test_cases.csv") for d in (parallel, sequential))
        pd.testing.assert_frame_equal(a, b)
    assert not pd.read_csv(parallel / "0" / "test_cases.csv").equals(pd.read_csv(parallel / "1" / "test_cases.csv"))


def test_slurm_preset_composes_onto_submitit(tmp_path: Path) -> None:
    out = run_cli_here(["train", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra"],
                       cwd=tmp_path).stdout
    launcher = yaml.safe_load(out[out.index("hydra:"):])["hydra"]["launcher"]
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["partition"] == "gpu" and launcher["gpus_per_node"] == 1 and launcher["tasks_per_node"] == 1
    # musclelab's requeue signal (USR1 before the time limit), not submitit's USR2, which ends the job unrequeued
    assert launcher["additional_parameters"]["signal"] == "USR1@120"
