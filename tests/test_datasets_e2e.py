"""Every real-data source trains end to end through the CLI on tiny fakes in its real on-disk layout, and
``musclelab data verify|prepare`` work on them."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import fake_datasets as fake
from conftest import run_cli_here as run_cli  # in-process: the console script is tested in test_train, test_config_validation
from musclelab.outputs.status import read_status

SMALL = ["data.img_size=32", "model=unet", "model.params.channels=[8,16,32]", "model.params.strides=[2,2]",
         "model.params.num_res_units=1", "trainer.max_epochs=1", "callbacks.progress_bar=false",
         "callbacks.overlay_cases=2", "data.batch_size=4"]

MAKERS = {
    "lits": lambda root: fake.make_fake_lits(root, n=4),
    "btcv": lambda root: fake.make_fake_btcv(root, n=4),
    "chaos": lambda root: fake.make_fake_chaos(root, n_patients=4),
    "l3_folder": lambda root: fake.make_fake_l3_folder(root),
    "msd": lambda root: fake.make_fake_msd(root, n=4),  # 30 thigh classes, as in Kim 2024
}


@pytest.mark.parametrize("dataset", sorted(MAKERS))
def test_dataset_trains_through_cli(tmp_path: Path, dataset: str) -> None:
    data = MAKERS[dataset](tmp_path / "data")
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    run_cli(["train", f"data={dataset}", f"data.root={data.root}", f"paths.cache_dir={cache}", *SMALL,
             f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert read_status(run_dir) == "complete"
    manifest = pd.read_csv(run_dir / "split_manifest.csv")
    by_split = manifest.groupby("split")["patient_id"].apply(set)
    assert not (by_split["train"] & by_split["test"]) and not (by_split["train"] & by_split["val"])
    assert len(list(cache.iterdir())) >= 1  # the slice cache was built on first use
    if dataset == "l3_folder":  # its observers/<name>/ annotations are scored against the reference
        observers = pd.read_csv(run_dir / "observers.csv")
        assert sorted(observers["observer"].unique()) == ["obs1", "obs2"]
        assert observers["dice"].lt(1.0).all()  # the fake observers' masks are shifted copies


def test_data_verify_and_prepare_cli(tmp_path: Path) -> None:
    data = fake.make_fake_lits(tmp_path / "lits", n=3)
    ok = run_cli(["data", "verify", "lits", "--root", str(data.root)], cwd=tmp_path)
    assert ok.returncode == 0
    cache = tmp_path / "cache"
    prep = run_cli(["data", "prepare", "lits", "--root", str(data.root), f"paths.cache_dir={cache}",
                    "data.img_size=32"], cwd=tmp_path)
    assert "slices per split" in prep.stdout and any(cache.iterdir())
    broken = next(iter(data.label_files.values()))
    fake.truncate_file(broken)
    bad = run_cli(["data", "verify", "lits", "--root", str(data.root)], cwd=tmp_path, check=False)
    assert bad.returncode == 1 and broken.name in bad.stdout + bad.stderr
    refused = run_cli(["train", "data=lits", f"data.root={data.root}", f"paths.cache_dir={cache}", *SMALL,
                       f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, check=False)
    assert refused.returncode == 2 and broken.name in refused.stderr
    assert "Traceback" not in refused.stderr
