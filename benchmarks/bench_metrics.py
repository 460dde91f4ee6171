"""Cost of the training/validation Dice per step: torchmetrics (the old path) vs per-class bincounts (EpochDice).

For each kind of run users have — 2D binary and multi-class slices (8 × 128²), 3D with 30 classes (2 × 32³ smoke
patches, 2 × 96³ Kim patches) — one update of:

(a) the old training Dice: ``MulticlassConfusionMatrix.update`` (num_classes² bins; under deterministic algorithms,
    as in every CPU preset, torchmetrics compares each voxel with every bin);
(b) the old validation Dice: ``DiceScore(input_format="index")`` (one-hot of both maps);
(c) ``EpochDice.update`` (three ``torch.bincount`` passes).

The old confusion matrix is not run where its fallback would not fit in memory (printed nan). Printed: milliseconds per update (median of ``--repeats``) and the ratios old / new, measured in the same run with
deterministic algorithms on.

    python benchmarks/bench_metrics.py [--threads 1 --repeats 5]
"""
from __future__ import annotations

import argparse

import torch
from torchmetrics.classification import MulticlassConfusionMatrix
from torchmetrics.segmentation import DiceScore

from _common import median_time
from musclelab.tasks.train_metrics import EpochDice

CASES = [("2D binary", 2, (8, 128, 128)), ("2D multi-class (muscles)", 6, (8, 128, 128)),
         ("2D 30 classes", 30, (8, 128, 128)), ("3D 2 classes", 2, (2, 32, 32, 32)),
         ("3D 30 classes (smoke)", 30, (2, 32, 32, 32)), ("3D 30 classes (Kim 96³)", 30, (2, 96, 96, 96))]


def ms(fn, repeats: int) -> float:
    return 1000 * median_time(fn, repeats)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-bins", type=float, default=4e8,
                    help="voxels × classes² above which the old confusion matrix is not run (its fallback holds an "
                         "int64 tensor of that many elements: 2 × 96³ × 30² would be 13 GB)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    print(f"{args.threads} thread(s), deterministic algorithms on (as the CPU presets); ms per update")
    print(f"{'case':28s} {'classes':>7s} {'confmat':>9s} {'DiceScore':>9s} {'EpochDice':>9s} "
          f"{'confmat/new':>11s} {'Dice/new':>8s}")
    for name, c, shape in CASES:
        g = torch.Generator().manual_seed(0)
        target = torch.randint(0, c, shape, generator=g)
        pred = torch.where(torch.rand(shape, generator=g) < 0.7, target, torch.randint(0, c, shape, generator=g))
        cm = MulticlassConfusionMatrix(num_classes=c, validate_args=False)
        ds = DiceScore(num_classes=c, include_background=False, average="none", aggregation_level="global",
                       input_format="index")
        ed = EpochDice(c)
        big = pred.numel() * c * c > args.max_bins
        t_cm = float("nan") if big else ms(lambda: cm.update(pred.reshape(-1), target.reshape(-1)), args.repeats)
        t_ds = ms(lambda: ds.update(pred, target), args.repeats)
        t_ed = ms(lambda: ed.update(pred, target), args.repeats)
        print(f"{name:28s} {c:7d} {t_cm:9.2f} {t_ds:9.2f} {t_ed:9.2f} {t_cm / t_ed:11.1f} {t_ds / t_ed:8.1f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
