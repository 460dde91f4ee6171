"""End-to-end training: CLI run, multirun, determinism, resume, loggers, DDP, and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import TINY, compose_cfg, run_cli, run_cli_here
from musclelab.outputs.status import read_status
from musclelab.train import train

RUN_FILES = [
    "config_resolved.yaml", "checkpoints/best.ckpt", "metrics.csv", "test_cases.csv",
    "test_summary.json", "learning_curve.png", "test_overlay.png", "split_manifest.csv", "run_status.json",
]


def assert_complete_run(run_dir: Path) -> None:
    for name in RUN_FILES:
        assert (run_dir / name).exists(), f"missing {name} in {run_dir}"
    assert read_status(run_dir) == "complete"
    metrics = pd.read_csv(run_dir / "metrics.csv")
    for col in ("epoch", "train_loss", "val_loss", "val_dice", "train_dice"):
        assert col in metrics.columns, col
    cases = pd.read_csv(run_dir / "test_cases.csv")
    for col in ("case_id", "dice", "precision", "recall", "accuracy", "hd", "hd95", "assd", "rms_dta"):
        assert col in cases.columns, col
    summary = json.loads((run_dir / "test_summary.json").read_text())
    assert summary["n_cases"] == len(cases) and summary["inference_ms_per_slice"] > 0
    status = json.loads((run_dir / "run_status.json").read_text())
    assert status["metrics"]["fit_time_s"] > 0
    assert summary["metrics"]["dice"]["mean"] == pytest.approx(cases["dice"].mean())
    manifest = pd.read_csv(run_dir / "split_manifest.csv")
    by_split = manifest.groupby("split")["patient_id"].apply(set)
    assert not (by_split["train"] & by_split["test"]) and not (by_split["train"] & by_split["val"])
    assert set(cases["case_id"]) == set(manifest.loc[manifest.split == "test", "case_id"])


def test_cli_train_one_epoch(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli(["train", *TINY, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert_complete_run(run_dir)
    assert (run_dir / ".hydra" / "config.yaml").exists()
    assert (run_dir / "csv" / "metrics.csv").exists()  # Lightning's CSV logger, the default
    assert "test dice" in proc.stdout  # the summary table


def test_cli_multirun_two_jobs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run_cli_here(["train", "-m", *TINY, "seed=0,1", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    for job in jobs:
        assert_complete_run(job)
    seeds = [yaml.safe_load((j / "config_resolved.yaml").read_text())["seed"] for j in jobs]
    assert seeds == [0, 1]


def test_same_seed_same_numbers(tmp_path: Path) -> None:
    results = []
    for name in ("a", "b"):
        train(compose_cfg(tmp_path / name, ["logger=none"]))
        results.append(pd.read_csv(tmp_path / name / "test_cases.csv"))
    pd.testing.assert_frame_equal(results[0], results[1])


def test_resume_continues_in_same_dir_and_wandb_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # keep_last: a complete run keeps its full state only when asked (so it can be extended by resume=)
    run_cli_here(["train", *TINY, "trainer.max_epochs=1", "logger=wandb", f"hydra.run.dir={run_dir}",
             "callbacks.checkpoint.keep_last=true"], cwd=tmp_path)
    first_best = (run_dir / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    run_cli_here(["train", f"resume={run_dir}", "trainer.max_epochs=2"], cwd=tmp_path)
    assert_complete_run(run_dir)
    assert (run_dir / "wandb_run_id.txt").read_text().strip() == run_id
    assert len(list(run_dir.glob(f"wandb/offline-run-*-{run_id}"))) == 2  # both sessions log to the same run id
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["epoch"].tolist() == [0, 1]
    assert (run_dir / "checkpoints" / "last.ckpt").stat().st_mtime_ns > first_best  # keep_last carried over
    saved = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    assert "data.img_size=64" in saved  # the original overrides were carried over
    assert not list(tmp_path.glob("outputs"))  # nothing written elsewhere


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    proc = run_cli_here(["train", f"resume={tmp_path / 'nope'}"], cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "overrides.yaml" in proc.stderr + proc.stdout


def test_wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run_dir = tmp_path / "run"
    train(compose_cfg(run_dir, ["logger=wandb"]))
    assert_complete_run(run_dir)
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    offline_runs = list(run_dir.glob(f"wandb/offline-run-*-{run_id}"))
    assert len(offline_runs) == 1, list(run_dir.rglob("*"))
    images = [p.name for p in offline_runs[0].rglob("media/images/**/*.png")]
    assert any(n.startswith("overlay") for n in images) and any(n.startswith("learning_curve") for n in images)


def test_tensorboard_logger(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(compose_cfg(run_dir, ["logger=tensorboard"]))
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_ddp_cpu_two_processes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(compose_cfg(run_dir, ["trainer=ddp_cpu", "trainer.max_epochs=1", "logger=csv"]))
    assert_complete_run(run_dir)


@pytest.mark.parametrize(
    "override, message",
    [
        (["model.name=nonet"], "known models"),
        (["loss.name=nope"], "known losses"),
        (["data.name=nodata"], "known datasets"),
        (["data.n_train=500"], "data.n_train=500 is larger than the training pool"),
        (["model=vnet", "data.img_size=72"], "data.img_size"),
        (["model=swin_unetr", "data.img_size=48"], "data.img_size"),
        (["data.source.target=liver"], "known targets"),
        (["+data.source.sites=b"], "data.source.sites is not a parameter"),
    ],
)
def test_bad_input_fails_early_and_run_is_not_complete(tmp_path: Path, override: list[str], message: str) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(Exception, match=message):
        train(compose_cfg(run_dir, override))
    assert read_status(run_dir) == "failed"
    assert not (run_dir / "checkpoints").exists()
    assert not (run_dir / "test_summary.json").exists()


def test_cli_user_error_is_one_clear_line(tmp_path: Path) -> None:
    proc = run_cli_here(["train", *TINY, "model.name=nonet", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path,
                   check=False)
    assert proc.returncode == 2
    assert "known models: " in proc.stderr and "fcn_resnet101" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # refused before Hydra starts the run (musclelab.config_validation)


def test_phantom_cli_writes_nifti_dataset(tmp_path: Path) -> None:
    out = tmp_path / "ph"
    run_cli_here(["phantom", "--out", str(out), "--n", "3", "--site", "b", "--size", "64"], cwd=tmp_path)
    meta = pd.read_csv(out / "meta.csv")
    assert len(meta) == 3 and (meta["site"] == "b").all()
    assert len(list((out / "images").glob("*.nii.gz"))) == 3 and len(list((out / "masks").glob("*.nii.gz"))) == 3
    again = run_cli_here(["phantom", "--out", str(out), "--n", "3"], cwd=tmp_path, check=False)
    assert again.returncode != 0 and len(list((out / "images").glob("*.nii.gz"))) == 3  # never overwrites


@pytest.mark.slow
def test_default_training_reaches_dice(tmp_path: Path) -> None:
    """``musclelab train`` with no overrides: test Dice for skeletal muscle above 0.85 on the phantom."""
    run_dir = tmp_path / "run"
    run_cli(["train", f"hydra.run.dir={run_dir}", "callbacks.progress_bar=false"], cwd=tmp_path)
    summary = json.loads((run_dir / "test_summary.json").read_text())
    assert summary["metrics"]["dice"]["mean"] > 0.85


def test_body_composition_and_observer_outputs(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(compose_cfg(run_dir, ["eval.body_composition=true", "data.source.n_observers=2", "logger=none"]))
    cases = pd.read_csv(run_dir / "test_cases.csv")
    for col in ("sma_pred", "sma_true", "sma_diff", "smd_pred", "smd_true", "smd_diff", "dice_pp", "rms_dta_cm"):
        assert col in cases, col
    assert (cases["sma_true"] > 50).all()  # phantom L3 muscle areas are tens to hundreds of cm²
    observers = pd.read_csv(run_dir / "observers.csv")
    assert sorted(observers["observer"].unique()) == ["observer_1", "observer_2"]
    assert set(observers["case_id"]) == set(cases["case_id"])
    assert observers["dice"].between(0.8, 1.0).all()
