"""Every experiment config composes and runs end to end on tiny data (the sweep over experiment=glob(*))."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import compose_cfg
from musclelab.cli import config_dir
from musclelab.outputs.status import read_status
from musclelab.train import train

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
SMALL_UNET = ["model.params.channels=[8,16,32]", "model.params.strides=[2,2]", "model.params.num_res_units=1"]


# experiments on the 3D abdominal phantom: its size is counted in volumes (about 50 slices each)
DATA_SIZE = {name: ["data.source.n_volumes=4"] for name in EXPERIMENTS if name.startswith("yoon2024_liver")}


def run_experiment(run_dir: Path, name: str, extra: list[str] | None = None) -> Path:
    """One epoch of experiment ``name`` on the tiny phantom with a small UNet."""
    train(compose_cfg(run_dir, [f"experiment={name}", "trainer.max_epochs=1", "logger=none", *SMALL_UNET,
                                *DATA_SIZE.get(name, []), *(extra or [])]))
    return run_dir


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs(tmp_path: Path, name: str) -> None:
    assert read_status(run_experiment(tmp_path / "run", name)) == "complete"


def test_individual_muscles_reports_every_class(tmp_path: Path) -> None:
    run_dir = run_experiment(tmp_path / "run", "individual_muscles")
    cases = pd.read_csv(run_dir / "test_cases.csv")
    for muscle in ("erector_spinae", "quadratus_lumborum", "psoas_major", "obliques", "rectus_abdominis"):
        assert f"dice_{muscle}" in cases and f"hd95_{muscle}" in cases
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert "val_dice_psoas_major" in metrics


def test_domain_shift_tests_on_the_other_site(tmp_path: Path) -> None:
    run_dir = run_experiment(tmp_path / "run", "domain_shift", ["data.source.n_test_cases=6"])
    manifest = pd.read_csv(run_dir / "split_manifest.csv")
    test_ids = manifest.loc[manifest.split == "test", "patient_id"]
    assert len(test_ids) == 6 and test_ids.str.startswith("phantom-b-").all()
    assert manifest.loc[manifest.split != "test", "patient_id"].str.startswith("phantom-a-").all()
