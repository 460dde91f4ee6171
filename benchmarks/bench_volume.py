"""Volume path benchmarks (printed as ratios from one run; not tests).

1. patches/s from the volume cache (memory-mapped, patch-sized reads) vs decoding and resampling the NIfTI each
   time (what a pipeline without the cache does per patch); goal >= 20x;
2. data waiting in a 3D training epoch: full-pipeline epoch (cache -> label-class patch -> window -> 3D
   augmentation -> model step) / an epoch over the same patches pre-loaded in memory; goal <= 1.05;
3. sliding-window inference seconds per phantom scan (the smoke UNETR and 3D U-Net);
4. peak resident memory (RSS) of a job that builds the data module and reads one epoch of patches, with 10 vs 40
   volumes (each in a fresh process).

    python benchmarks/bench_volume.py [--threads 1] [--size 96] [--n-slices 64] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("WANDB_MODE", "offline")

SPACING = (10.0, 7.0, 7.0)
PATCH = (32, 32, 32)


def _dm(cache: Path, n: int, size: int, n_slices: int, **kw):
    from musclelab.data.datamodule import SegmentationDataModule

    args = dict(name="thigh_phantom", spatial_dims=3, source=dict(n_volumes=n, size=size, n_slices=n_slices), cache_dir=str(cache),
                window="thigh", spacing=list(SPACING), patch_size=list(PATCH), patches_per_volume=4, batch_size=2,
                val_fraction=0.1, test_fraction=0.1,
                augment=dict(flip_prob=0.5, rotate_deg=10.0, scale=0.1, affine_prob=0.3, intensity_shift=0.05))
    args.update(kw)
    dm = SegmentationDataModule(**args)
    dm.setup()
    return dm


def bench_patches(tmp: Path, size: int, n_slices: int, n_patches: int = 40) -> dict[str, float]:
    """Patches/s: cache vs decode + resample + crop of the NIfTI per patch."""
    from musclelab.data.readers import build_reader
    from musclelab.data.volume_cache import ReaderVolumes, build_or_load
    from musclelab.data.datasets import VolumePatchDataset
    from musclelab.data.volumes import VolumePreprocess, preprocess_volume
    from musclelab.phantoms.thigh import write_thigh_dataset

    root = write_thigh_dataset(tmp / "nifti", n=3, size=size, n_slices=n_slices)
    rdr = build_reader("msd", root)
    pre = VolumePreprocess(SPACING)
    vs = build_or_load(ReaderVolumes(rdr, "msd", tmp / "cache"), pre, tmp / "cache")
    ds = VolumePatchDataset(vs, "thigh", 1, PATCH, 1)
    t = time.perf_counter()
    for i in range(n_patches):
        ds.sample(i % len(vs), seed=i)
    cache_s = (time.perf_counter() - t) / n_patches
    refs = rdr.scan()
    n_dec = max(4, n_patches // 8)
    t = time.perf_counter()
    for i in range(n_dec):     # what the pipeline would do per patch without the cache
        p = preprocess_volume(rdr.load(refs[i % len(refs)]), pre)
        lab = p.case.label
        c = np.argwhere(lab == (i % 30))
        c = c[len(c) // 2] if len(c) else np.array(lab.shape) // 2
        sl = tuple(slice(max(0, int(a) - s // 2), max(0, int(a) - s // 2) + s) for a, s in zip(c, PATCH))
        _ = p.case.image[sl], lab[sl]
    decode_s = (time.perf_counter() - t) / n_dec
    shape = tuple(int(vs.meta.at[0, f"source_{a}"]) for a in "zyx")
    return {"source_shape": str(shape), "cache_patches_per_s": 1 / cache_s, "decode_patches_per_s": 1 / decode_s,
            "cache_speedup": decode_s / cache_s}


def bench_epoch(tmp: Path, size: int, n_slices: int, epochs: int = 2) -> dict[str, float]:
    """Full-pipeline epoch / epoch over the same patches pre-loaded (same model, same steps)."""
    from musclelab.losses import build_loss
    from musclelab.models import build_model

    dm = _dm(tmp / "cache_epoch", 12, size, n_slices)
    torch.manual_seed(0)
    net = build_model("unet", 1, 30, list(PATCH), spatial_dims=3, channels=[8, 16, 32], strides=[2, 2],
                      num_res_units=1, norm="instance")
    loss_fn = build_loss("dice", 30, include_background=False)
    opt = torch.optim.AdamW(net.parameters(), 3e-3)

    def step(batch) -> None:
        opt.zero_grad()
        loss_fn(net(batch["image"]), batch["label"]).backward()
        opt.step()

    loader = dm.train_dataloader()
    pre = [dict(image=b["image"].clone(), label=b["label"].clone()) for b in loader]   # same patch count
    step(pre[0])   # warm-up
    full, cached = [], []
    for _ in range(epochs):
        t = time.perf_counter()
        for b in loader:
            step(b)
        full.append(time.perf_counter() - t)
        t = time.perf_counter()
        for b in pre:
            step(b)
        cached.append(time.perf_counter() - t)
    return {"steps_per_epoch": len(pre), "full_epoch_s": min(full), "preloaded_epoch_s": min(cached),
            "full_over_preloaded": min(full) / min(cached)}


def bench_sliding_window(tmp: Path, size: int, n_slices: int) -> dict[str, float]:
    from musclelab.inference import SlidingWindow, sliding_window_labels
    from musclelab.models import build_model

    dm = _dm(tmp / "cache_sw", 4, size, n_slices)
    item = dm.datasets["train"].volumes
    from musclelab.data.windowing import apply_window

    x = torch.from_numpy(apply_window(np.asarray(item.image(0))[None], "thigh", 1))
    out = {"scan_shape": str(tuple(x.shape[2:]))}
    nets = {"unetr_smoke": build_model("unetr", 1, 30, list(PATCH), spatial_dims=3, feature_size=8, hidden_size=96,
                                       mlp_dim=192, num_heads=4),
            "unet_smoke": build_model("unet", 1, 30, list(PATCH), spatial_dims=3, channels=[8, 16, 32],
                                      strides=[2, 2], num_res_units=1)}
    for name, net in nets.items():
        net.eval()
        sliding_window_labels(net, x, SlidingWindow(PATCH, overlap=0.25))
        t = time.perf_counter()
        for _ in range(2):
            sliding_window_labels(net, x, SlidingWindow(PATCH, overlap=0.25))
        out[f"{name}_s_per_scan"] = (time.perf_counter() - t) / 2
    return out


def rss_job(n: int, cache: Path, size: int, n_slices: int) -> None:
    """Child process: build the data module with ``n`` volumes, read one epoch of patches, print peak RSS (MB)."""
    dm = _dm(cache, n, size, n_slices)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for _ in dm.train_dataloader():
        pass
    print(json.dumps({"n_volumes": n, "rss_after_setup_mb": base,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def bench_rss(tmp: Path, size: int, n_slices: int) -> dict[str, float]:
    out = {}
    for n in (10, 40):
        cache = tmp / f"cache_rss{n}"
        # build the cache first (the build itself holds one volume at a time), then measure a training job
        subprocess.run([sys.executable, __file__, "--rss-child", str(n), "--cache", str(cache), "--size", str(size),
                        "--n-slices", str(n_slices)], check=True, capture_output=True, text=True)
        r = subprocess.run([sys.executable, __file__, "--rss-child", str(n), "--cache", str(cache), "--size",
                            str(size), "--n-slices", str(n_slices)], check=True, capture_output=True, text=True)
        out[f"peak_rss_mb_{n}_volumes"] = json.loads(r.stdout.strip().splitlines()[-1])["peak_rss_mb"]
    out["rss_40_over_10"] = out["peak_rss_mb_40_volumes"] / out["peak_rss_mb_10_volumes"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", type=int, default=64, help="phantom in-plane pixels (epoch, sliding window, RSS)")
    p.add_argument("--n-slices", type=int, default=48)
    p.add_argument("--decode-size", type=int, default=256, help="in-plane pixels of the NIfTI scans decoded in 1.")
    p.add_argument("--decode-slices", type=int, default=200)
    p.add_argument("--out", type=Path, default=None, help="write results.json here")
    p.add_argument("--only", default="patches,epoch,sliding_window,rss", help="comma-separated parts to run")
    p.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--cache", type=Path, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.rss_child is not None:
        return rss_job(a.rss_child, a.cache, a.size, a.n_slices)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        res = {"threads": a.threads, "size": a.size, "n_slices": a.n_slices}
        for name, fn in (("patches", bench_patches), ("epoch", bench_epoch), ("sliding_window", bench_sliding_window),
                         ("rss", bench_rss)):
            if name not in a.only.split(","):
                continue
            t = time.perf_counter()
            big = name == "patches"
            res[name] = fn(tmp, a.decode_size if big else a.size, a.decode_slices if big else a.n_slices)
            res[name]["bench_s"] = round(time.perf_counter() - t, 1)
            print(name, json.dumps(res[name], indent=None, default=str), flush=True)
    print()
    if "patches" in res:
        print(f"patches/s cache vs decode+resample: {res['patches']['cache_speedup']:.0f}x (goal >= 20x)")
    if "epoch" in res:
        print(f"full-pipeline epoch / pre-loaded epoch: {res['epoch']['full_over_preloaded']:.3f} (goal <= 1.05)")
    if "sliding_window" in res:
        sw = res["sliding_window"]
        print(f"sliding window s/scan: UNETR {sw['unetr_smoke_s_per_scan']:.2f}, 3D U-Net {sw['unet_smoke_s_per_scan']:.2f}"
              f" ({sw['scan_shape']})")
    if "rss" in res:
        print(f"peak RSS 10 vs 40 volumes: {res['rss']['peak_rss_mb_10_volumes']:.0f} MB vs "
              f"{res['rss']['peak_rss_mb_40_volumes']:.0f} MB (x{res['rss']['rss_40_over_10']:.2f})")
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "results.json").write_text(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
