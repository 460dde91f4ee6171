"""A full-pipeline epoch of ``musclelab train`` vs the same epoch on batches already in memory (goal <= 1.05).

Both sides run the default config through the same SegmentationTask, Trainer and callbacks; only the batches'
origin differs:

(a) in memory: one epoch of training and validation batches, produced once by the datamodule (augmented,
    windowed, collated) and replayed from a list;
(b) full pipeline: the datamodule's own loaders (windowing and MONAI augmentation per item, collation), with
    ``data.num_workers`` = each value of ``--workers`` (persistent workers when > 0; ``pin_memory`` from
    ``data.pin_memory``).

nnU-Net reports data loading at 5-8 % of an epoch. Within one fit, epochs alternate a, b, a, b, ... (loaders reloaded
every epoch, so both see the same machine load) and the first pair is warm-up; printed: median seconds per whole epoch (training + validation + epoch-end callbacks)
and the ratio b / a for each worker count.

    python benchmarks/bench_pipeline.py [--epochs 3 --threads 1 --workers 0,1,2] [extra Hydra overrides]
"""
from __future__ import annotations

import argparse
import copy
import shutil
import tempfile
from pathlib import Path

from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from _common import EpochTimer, build_task, compose, median

GOAL = 1.05


class Alternating(pl.LightningDataModule):
    """Hands the Trainer the in-memory loaders on even epochs and the datamodule's own on odd ones (the Trainer
    reloads loaders every epoch), so both sides see the same machine load, epoch by epoch."""

    def __init__(self, mem: tuple[DataLoader, DataLoader], pipe: Any) -> None:
        super().__init__()
        self.mem, self.epoch = mem, -1
        self.pipe = (pipe.train_dataloader(), pipe.val_dataloader())  # created once: persistent workers stay up

    def train_dataloader(self) -> DataLoader:
        self.epoch += 1
        return self.mem[0] if self.epoch % 2 == 0 else self.pipe[0]

    def val_dataloader(self) -> DataLoader:
        return self.mem[1] if self.epoch % 2 == 0 else self.pipe[1]


def fit(cfg, task_template, init_state, run_dir: Path, data: Alternating, epochs: int) -> tuple[float, float]:
    """Median whole-epoch seconds (in memory, full pipeline) over ``epochs`` pairs of alternating epochs (the
    first pair is warm-up), through the run's task, Trainer and callbacks."""
    from musclelab.train import _params, build_callbacks

    task = copy.deepcopy(task_template)
    task.load_state_dict(init_state)
    callbacks, _ = build_callbacks(cfg, run_dir)
    timer = EpochTimer()
    kwargs = {**_params(cfg.trainer, ()), "max_epochs": 2 * epochs, "reload_dataloaders_every_n_epochs": 1}
    trainer = pl.Trainer(default_root_dir=str(run_dir), logger=False, callbacks=[*callbacks, timer],
                         enable_progress_bar=False, enable_model_summary=False, **kwargs)
    trainer.fit(task, datamodule=data)
    return median(timer.full_s[0::2]), median(timer.full_s[1::2])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per configuration (plus one warm-up)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads of the training process")
    ap.add_argument("--workers", default="0,1,2", help="data.num_workers values to measure")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the default training config")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    try:
        import pytorch_lightning as pl

        from musclelab.train import build_datamodule

        base = [f"cpu_threads={args.threads}", "callbacks.progress_bar=false", *args.overrides]
        cfg = compose(base, tmp)
        pl.seed_everything(0, workers=True)
        dm = build_datamodule(cfg)
        dm.setup("fit")
        train_mem, val_mem = list(dm.train_dataloader()), list(dm.val_dataloader())
        task = build_task(cfg, list(dm.class_names))
        init = copy.deepcopy(task.state_dict())
        n = args.epochs + 1
        print(f"model {cfg.model.name}, {len(train_mem)} train + {len(val_mem)} val batches at {cfg.data.img_size}px, "
              f"{args.threads} training thread(s), {torch.get_num_threads()} set; {args.epochs} timed epochs each")
        rows = []
        for w in [int(v) for v in args.workers.split(",")]:
            cfg_w = compose([*base, f"data.num_workers={w}"], tmp)
            dm_w = build_datamodule(cfg_w)
            dm_w.setup("fit")
            mem_loaders = (DataLoader(train_mem, batch_size=None), DataLoader(val_mem, batch_size=None))
            mem, pipe = fit(cfg_w, task, init, tmp / f"run{w}", Alternating(mem_loaders, dm_w), n)
            rows.append((w, mem, pipe))
            print(f"num_workers={w}: in memory {mem:7.3f} s/epoch, full pipeline {pipe:7.3f} s/epoch, "
                  f"ratio {pipe / mem:5.3f} -> {'PASS' if pipe / mem <= GOAL else 'FAIL'} (goal <= {GOAL})",
                  flush=True)
        best = min(rows, key=lambda r: r[2] / r[1])
        print(f"best: num_workers={best[0]} (ratio {best[2] / best[1]:.3f})")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
