"""An epoch of ``musclelab train`` ÷ a bare PyTorch loop with the same steps and validation passes (goal <= 1.05).

For each kind of run users have (``--kinds``):

* ``2d_binary``: the default ``musclelab train`` (phantom muscle, UNet, 128², augmentation on);
* ``2d_multiclass``: the same with ``data.source.target=muscles`` (6 classes);
* ``3d_30``: the Kim smoke's 3D U-Net (``experiment=kim2024_thigh_smoke model=kim2024_unet_smoke``: label-class
  patches from the memory-mapped cache, 3D augmentation, 30 classes, sliding-window validation).

(a) bare loop: the task's own network, loss and optimiser (same initial weights) over one epoch of training batches
    held in memory (collated once from the loader, so no loading, windowing, augmentation, metrics, logging or
    callbacks), then the same validation passes (2D: forward + loss per validation batch; 3D: the same sliding
    window + loss per validation volume) under ``no_grad``;
(b) ``musclelab train``: the datamodule's loaders, the task (batched augmentation on the device, training and
    validation Dice, logging), the Trainer from the ``trainer`` preset and the run's callbacks (best + last
    checkpoints, metrics.csv) and CSV logger.

Both sides run in this process, interleaved (a, b, a), with the same thread count (the config's ``cpu_threads``,
else ``--threads``) and deterministic algorithms as the preset; the first epoch of each side is warm-up. Printed:
median seconds per whole epoch and the ratio b / a. On a machine shared with other jobs, the ratio (both sides
under the same load) is the number to read.

    python benchmarks/bench_epoch.py [--epochs 3 --threads 2 --kinds 2d_binary,2d_multiclass,3d_30]
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from _common import EpochTimer, build_task, compose, median

GOAL = 1.05
KINDS = {
    "2d_binary": [],
    "2d_multiclass": ["data.source.target=muscles"],
    "3d_30": ["experiment=kim2024_thigh_smoke", "model=kim2024_unet_smoke"],
}


def _strip(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}


def bare_loop(task_template, init_state, train_b, val_b, epochs: int, volume: bool) -> list[float]:
    """Whole-epoch seconds of the plain loop (training steps + validation passes)."""
    from musclelab.inference import SlidingWindow, sliding_window_logits

    task = copy.deepcopy(task_template)
    task.load_state_dict(init_state)
    net, loss_fn = task.net, task.loss_fn
    opt = task.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    window = None
    if volume:
        h = task.hparams
        window = SlidingWindow(tuple(int(p) for p in h.patch_size), **(h.sliding_window or {}))
    out = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        net.train()
        for b in train_b:
            opt.zero_grad(set_to_none=True)
            loss_fn(net(b["image"]), b["label"]).backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            for b in val_b:
                logits = sliding_window_logits(net, b["image"], window) if volume else net(b["image"])
                loss_fn(logits, b["label"])
        out.append(time.perf_counter() - t0)
    return out


def musclelab_epochs(cfg, task_template, init_state, dm, epochs: int, run_dir: Path) -> list[float]:
    import pytorch_lightning as pl

    from musclelab import loggers
    from musclelab.train import _params, build_callbacks

    task = copy.deepcopy(task_template)
    task.load_state_dict(init_state)
    callbacks, _ = build_callbacks(cfg, run_dir)
    timer = EpochTimer()
    section = cfg.get("logger")   # the run's loggers (build_loggers; an older checkout: build_logger by name)
    if hasattr(loggers, "build_loggers"):
        logger = loggers.build_loggers(section, run_dir, "bench", None, {}) or False
    else:
        logger = loggers.build_logger((section.get("name") if section is not None else None) or "csv", run_dir,
                                      "bench", None, {},
                                      **(_params(section) if section is not None and section.get("name") else {}))
    kwargs = {**_params(cfg.trainer, ()), "max_epochs": epochs}
    trainer = pl.Trainer(default_root_dir=str(run_dir), logger=logger if logger else False,
                         callbacks=[*callbacks, timer], enable_progress_bar=False, enable_model_summary=False,
                         **kwargs)
    trainer.fit(task, datamodule=dm)
    return timer.full_s


def bench_kind(kind: str, epochs: int, threads: int, tmp: Path) -> dict:
    import pytorch_lightning as pl

    from musclelab.train import build_datamodule

    cfg = compose([*KINDS[kind], "callbacks.progress_bar=false", f"paths.cache_dir={tmp / 'cache'}"],
                  tmp / kind)
    n_threads = int(cfg.get("cpu_threads") or threads)
    torch.set_num_threads(n_threads)
    pl.seed_everything(0, workers=True)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    train_b = [_strip(b) for b in dm.train_dataloader()]
    val_b = [_strip(b) for b in dm.val_dataloader()]
    task = build_task(cfg, list(dm.class_names))
    init = copy.deepcopy(task.state_dict())
    volume = int(cfg.data.get("spatial_dims", 2)) == 3
    det = bool(cfg.trainer.get("deterministic", False))
    torch.use_deterministic_algorithms(det)
    n = epochs + 1
    a1 = bare_loop(task, init, train_b, val_b, n, volume)
    b = musclelab_epochs(cfg, task, init, dm, n, tmp / f"{kind}_run")
    torch.use_deterministic_algorithms(det)
    a2 = bare_loop(task, init, train_b, val_b, n, volume)
    bare, ml = median(a1[1:] + a2[1:], 0), median(b)
    return {"kind": kind, "threads": n_threads, "train_batches": len(train_b), "val_batches": len(val_b),
            "classes": len(dm.class_names), "bare_s": bare, "musclelab_s": ml, "ratio": ml / bare}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per side (plus one warm-up)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads where the config sets no cpu_threads")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_epoch_"))
    rows = []
    try:
        for kind in args.kinds.split(","):
            r = bench_kind(kind, args.epochs, args.threads, tmp)
            rows.append(r)
            print(f"{kind:14s} {r['classes']:2d} classes, {r['train_batches']} train + {r['val_batches']} val "
                  f"batches, {r['threads']} thread(s): bare {r['bare_s']:.3f} s/epoch, musclelab "
                  f"{r['musclelab_s']:.3f} s/epoch, ratio {r['ratio']:.3f} -> "
                  f"{'PASS' if r['ratio'] <= GOAL else 'FAIL'} (goal <= {GOAL})", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
