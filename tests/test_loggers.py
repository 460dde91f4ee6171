"""Several loggers in one run (``logger=[csv,tensorboard,mlflow,wandb]``) and what each one shows: per-step
training loss and learning rate, per-epoch validation metrics, validation and test overlays as images, tags, the
config and the test_cases table. MLflow is read back with MLflow's own client."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from musclelab.loggers import build_loggers, logger_entries
from musclelab.train import train
from tests.conftest import compose_cfg

ALL = "logger=[csv,tensorboard,mlflow,wandb]"


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("loggers")
    run_dir, outputs = root / "run", root / "outputs"
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        train(compose_cfg(run_dir, [ALL, "trainer=debug", "trainer.max_epochs=2", "data.img_size=64",
                                    "data.source.n_cases=12", "data.batch_size=2", "tags=[phantom,smoke]",
                                    f"paths.log_dir={outputs}", "callbacks.val_overlays.cases=2"]))
    finally:
        mp.undo()
    return run_dir, outputs


def test_mlflow_read_back_with_its_client(logged_run: tuple[Path, Path]) -> None:
    run_dir, outputs = logged_run
    client = MlflowClient(tracking_uri=f"sqlite:///{outputs / 'mlflow.db'}")  # the default local store
    run = client.get_run((run_dir / "mlflow_run_id.txt").read_text().strip())
    steps = client.get_metric_history(run.info.run_id, "train/loss_step")
    assert sorted(m.step for m in steps) == [1, 2, 3, 4]  # 2 epochs x 2 batches, at each optimiser step
    assert len(client.get_metric_history(run.info.run_id, "lr-Adam")) >= 2
    assert len(client.get_metric_history(run.info.run_id, "val/dice")) == 2  # one per epoch
    assert "test/dice" in run.data.metrics
    assert run.data.params["optim/lr"] == "0.003" and run.data.params["data/img_size"] == "64"  # the config
    assert run.data.tags["tag.phantom"] == "true" and run.data.tags["tags"] == "phantom,smoke"
    assert client.get_experiment(run.info.experiment_id).name == "train"
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"test_cases.csv", "config_resolved.yaml", "test_summary.json"} <= names
    images = {a.path for a in client.list_artifacts(run.info.run_id, "images/val_overlay")}
    assert images == {"images/val_overlay/epoch_000.png", "images/val_overlay/epoch_001.png"}
    local = Path(client.download_artifacts(run.info.run_id, "test_cases.csv", str(run_dir.parent / "dl")))
    assert pd.read_csv(local).equals(pd.read_csv(run_dir / "test_cases.csv"))


def test_tensorboard_gets_overlays_as_images(logged_run: tuple[Path, Path]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = logged_run
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"val/overlay", "test/overlay", "learning_curve"} <= set(events.Tags()["images"])
    assert len(events.Images("val/overlay")) == 2
    assert {"train/loss_step", "val/dice"} <= set(events.Tags()["scalars"])


def test_wandb_offline_gets_overlays_table_and_tags(logged_run: tuple[Path, Path]) -> None:
    run_dir, _ = logged_run
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    (offline,) = run_dir.glob(f"wandb/offline-run-*-{run_id}")
    media = offline / "files" / "media"
    assert len(list((media / "images" / "val").glob("overlay_*.png"))) == 2
    assert list((media / "images" / "test").glob("overlay_*.png"))
    (table,) = (media / "table").glob("test_cases_*.table.json")
    data = json.loads(table.read_text())
    assert len(data["data"]) == len(pd.read_csv(run_dir / "test_cases.csv")) and "dice" in data["columns"]
    steps = pd.read_csv(run_dir / "csv" / "metrics.csv")  # the same per-step metrics every logger got
    assert {"train/loss_step", "lr-Adam"} <= set(steps.columns)
    epochs = pd.read_csv(run_dir / "metrics.csv")  # the run's own per-epoch file keeps its columns
    assert list(epochs.columns) == ["epoch", "step", "val_loss", "val_dice", "train_loss", "train_dice", "lr", "time_s"]


def test_wandb_tags_group_and_logger_layouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    (wandb,) = build_loggers({"wandb": {"project": "p", "group": None}}, tmp_path, "run", "sweep-1", {"seed": 0},
                             tags=["a", "b"])
    assert wandb._wandb_init["tags"] == ["a", "b"] and wandb._wandb_init["group"] == "sweep-1"
    assert logger_entries({"name": "wandb", "project": "p"}) == {"wandb": {"project": "p"}}  # old saved configs
    assert logger_entries({"name": "none"}) == {} and logger_entries({}) == {}


def test_csv_alone_gets_step_metrics_but_no_overlay_images(tmp_path: Path) -> None:
    from musclelab.tracking import StepLoss, ValidationOverlays, tracking_callbacks

    csv = build_loggers({"csv": {}}, tmp_path, "run", None, {})
    kinds = {type(c) for c in tracking_callbacks(csv, tmp_path, {"cases": 2})}
    assert kinds == {StepLoss}
    assert tracking_callbacks([], tmp_path, None) == []
    tb = build_loggers({"csv": {}, "tensorboard": {}}, tmp_path, "run", None, {})
    assert ValidationOverlays in {type(c) for c in tracking_callbacks(tb, tmp_path, {"cases": 2})}
