"""Training learns: a short run of the default model must segment far better than the same model untrained.

CI fails here when learning breaks (a loss that no longer reaches the weights, labels shuffled against images,
an optimiser that does not step, a broken windowing): every other fast test only checks that runs complete.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl
import torch

from conftest import compose_cfg
from musclelab.tasks.segmentation import SegmentationTask
from musclelab.train import build_datamodule, train

# the default model (conf/train.yaml: unet with its own channels) and loss, on the tiny phantom at 64 px
LEARN = ["model=unet", "data.source.n_cases=32", "trainer.max_epochs=6", "logger=none", "cpu_threads=1",
         "callbacks.overlay_cases=0"]
MIN_DICE = 0.45       # 6 short epochs reach about 0.64 on 2 CPU threads; an untrained network about 0.04
MIN_GAIN = 0.35       # ... so the learnt mask must beat the untrained one by at least this much


def _untrained_dice(cfg, best_ckpt: Path) -> float:
    """Mean test Dice of the run's network with fresh weights, through the same test step and split."""
    trained = SegmentationTask.load_from_checkpoint(str(best_ckpt), map_location="cpu")
    pl.seed_everything(cfg.seed)
    fresh = SegmentationTask(**trained.hparams)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
               deterministic=True).test(fresh, datamodule=dm, verbose=False)
    dice = [float(r["dice"]) for r in fresh.test_rows]
    return float(torch.tensor(dice).nanmean())


def test_default_model_learns(tmp_path: Path) -> None:
    cfg = compose_cfg(tmp_path / "run", LEARN)
    assert cfg.model.params.channels == [16, 32, 64, 128]  # the default network, not the tests' tiny one
    train(cfg)
    summary = json.loads((tmp_path / "run" / "test_summary.json").read_text())
    learnt = summary["metrics"]["dice"]["mean"]
    untrained = _untrained_dice(cfg, tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert learnt > MIN_DICE and learnt - untrained > MIN_GAIN, (learnt, untrained)
