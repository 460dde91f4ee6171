"""The augmentation alone: per-item MONAI (the pipeline musclelab ran in its loaders before issue 16) vs the batched
grid of :mod:`musclelab.data.augment`, items per second, measured in the same run.

Settings (every transform forced on, so both sides do the full work per item):

* 2D, 128² (the default run): flip, rotation ±15°, zoom ±0.1 (``RandFlipd``, ``RandAffined``), and the same plus an
  elastic deformation (``Rand2DElasticd``, spacing 20 px, magnitude 2 px: McSweeney 2022) — batches of 8;
* 3D, 96³ (Kim 2024 patches): flip, rotation ±10° about each axis, zoom ±0.1, intensity shift (``RandFlipd``,
  ``RandAffined``, ``RandShiftIntensityd``) — batches of 2.

MONAI side: one item at a time, metadata tracking off (as the loaders ran it). Batched side: one call per batch on
the CPU (and on CUDA when there is one; ``benchmarks/gpu.py`` measures it against a training step). Printed:
items/s of each and the ratio batched / per-item.

    python benchmarks/bench_augment.py [--threads 1 --repeats 3]
"""
from __future__ import annotations

import argparse
import math

import torch

from _common import median_time
from musclelab.data.augment import AugmentSettings, BatchAugment


def monai_pipeline(nd: int, elastic: bool):
    from monai.transforms import Compose, Rand2DElasticd, RandAffined, RandFlipd, RandShiftIntensityd

    keys = ("image", "label")
    if nd == 2:
        t = [RandFlipd(keys, prob=1.0, spatial_axis=1),
             RandAffined(keys, prob=1.0, rotate_range=(math.radians(15),), scale_range=(0.1, 0.1),
                         mode=("bilinear", "nearest"), padding_mode="zeros")]
        if elastic:
            t.append(Rand2DElasticd(keys, spacing=(20.0, 20.0), magnitude_range=(0.0, 2.0), prob=1.0,
                                    mode=("bilinear", "nearest"), padding_mode="zeros"))
    else:
        r = math.radians(10)
        t = [RandFlipd(keys, prob=1.0, spatial_axis=2),
             RandAffined(keys, prob=1.0, rotate_range=(r, r, r), scale_range=(0.1,) * 3,
                         mode=("bilinear", "nearest"), padding_mode="zeros"),
             RandShiftIntensityd("image", offsets=0.05, prob=1.0)]
    return Compose(t)


def batched(nd: int, elastic: bool) -> BatchAugment:
    if nd == 2:
        s = AugmentSettings(flip_prob=1.0, rotate_deg=15, scale=0.1, affine_prob=1.0,
                            elastic_prob=1.0 if elastic else 0.0, elastic_spacing=20, elastic_magnitude=2)
    else:
        s = AugmentSettings(flip_prob=1.0, rotate_deg=10, scale=0.1, affine_prob=1.0, intensity_shift=0.05)
    return BatchAugment(nd, s, 0.0, seed=0)


def rate(fn, items: int, repeats: int) -> float:
    return items / median_time(fn, repeats)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from monai.data import set_track_meta

    set_track_meta(False)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"{args.threads} thread(s); items/s")
    for name, nd, size, batch, elastic in (("2D 128² flip+affine", 2, 128, 8, False),
                                           ("2D 128² flip+affine+elastic", 2, 128, 8, True),
                                           ("3D 96³ flip+affine+shift", 3, 96, 2, False)):
        shape = (batch, 1, *([size] * nd))
        g = torch.Generator().manual_seed(0)
        image = torch.rand(shape, generator=g)
        label = torch.randint(0, 30, (batch, *shape[2:]), generator=g)
        pipe = monai_pipeline(nd, elastic)
        pipe.set_random_state(seed=0)

        def per_item() -> None:
            for i in range(batch):
                pipe({"image": image[i], "label": label[i][None]})

        r_monai = rate(per_item, batch, args.repeats)
        line = f"{name:30s} MONAI per item {r_monai:8.1f}"
        for dev in devices:
            aug = batched(nd, elastic)
            x, y = image.to(dev), label.to(dev)

            def once() -> None:
                aug(x, y)
                if dev == "cuda":
                    torch.cuda.synchronize()

            r = rate(once, batch, args.repeats)
            line += f" | batched {dev} {r:9.1f} ({r / r_monai:6.1f}x)"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
