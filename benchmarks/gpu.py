"""GPU performance of musclelab's 2D architectures and presets, written to one JSON file.

For a machine with an NVIDIA GPU (MONAI reports about 1.9x from mixed precision). Measures:

1. training-step time (forward, loss, backward, Adam step; median after warm-up) and peak GPU memory for UNet,
   UNETR and Swin-UNETR at the sizes of the papers (Yoon 2024: 224 x 224 slices; UNETR with the paper's ViT-B
   encoder: hidden 768, 12 heads, MLP 3072; Swin-UNETR with feature size 48), each in fp32 and bf16-mixed
   (``torch.autocast``), plain, channels-last memory format, and ``torch.compile``;
2. one epoch of ``musclelab train`` with the ``gpu`` preset and with the ``ddp`` preset (all GPUs, ddp_spawn);
3. the batched augmentation (:mod:`musclelab.data.augment`, the task's ``on_after_batch_transfer``) on the device:
   items/s and its time as a fraction of a training step of the same batch — 2D: 8 × 224² with the default flip,
   rotation, zoom and McSweeney's elastic deformation vs the paper UNet's step; 3D: 2 × 96³ Kim patches (flip,
   rotation, zoom, intensity shift) vs the Kim 3D U-Net's step (30 classes).

``--dry-run`` runs everything on the CPU at a tiny size (64 px, small networks, 2 steps; the ``cpu`` and
``ddp_cpu`` presets instead of ``gpu`` and ``ddp``, ``torch.compile`` skipped), to check the script end to end on
a machine without a GPU. Ratios printed: bf16 / fp32 speed-up, channels-last and compile speed-ups, per model.

    python benchmarks/gpu.py --out gpu_benchmark.json            # on a GPU machine
    python benchmarks/gpu.py --dry-run --out /tmp/gpu_dry.json   # anywhere
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from _common import compose

PAPER_MODELS: dict[str, dict[str, Any]] = {
    "unet": {"channels": [32, 64, 128, 256, 512], "strides": [2, 2, 2, 2], "num_res_units": 2},
    "unetr": {"feature_size": 16, "hidden_size": 768, "mlp_dim": 3072, "num_heads": 12},
    "swin_unetr": {"feature_size": 48},
}
DRY_MODELS: dict[str, dict[str, Any]] = {
    "unet": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1},
    "unetr": {"feature_size": 8, "hidden_size": 96, "mlp_dim": 192, "num_heads": 4},
    "swin_unetr": {"feature_size": 12, "depths": [1, 1, 1, 1]},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_benchmark(name: str, params: dict[str, Any], size: int, batch: int, steps: int, device: torch.device,
                   precision: str, variant: str) -> dict[str, Any]:
    """Median training-step seconds and peak memory of one (model, precision, variant)."""
    from musclelab.losses import build_loss
    from musclelab.models import build_model

    torch.manual_seed(0)
    loss_fn = build_loss("ce_dice", 2)
    net = build_model(name, 1, loss_fn.out_channels, size, **params).to(device)
    x = torch.randn(batch, 1, size, size, device=device)
    y = torch.randint(0, 2, (batch, size, size), device=device)
    if variant == "channels_last":
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model = torch.compile(net) if variant == "compile" else net
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps + 2):  # two warm-up steps (compile, cuDNN autotuning)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"model": name, "precision": precision, "variant": variant, "img_size": size, "batch": batch,
            "params_m": sum(p.numel() for p in net.parameters()) / 1e6, "step_s": statistics.median(times[2:]),
            "images_per_s": batch / statistics.median(times[2:]), "peak_mem_mib": peak}


def augment_benchmark(device: torch.device, dry: bool, steps: int) -> list[dict[str, Any]]:
    """Batched augmentation items/s on ``device`` and its share of a training step of the same batch."""
    from musclelab.data.augment import AugmentSettings, BatchAugment
    from musclelab.losses import build_loss
    from musclelab.models import build_model

    cases = [
        ("2d", 2, 64 if dry else 224, 2 if dry else 8, "unet", DRY_MODELS["unet"] if dry else PAPER_MODELS["unet"],
         2, AugmentSettings(flip_prob=0.5, rotate_deg=15, scale=0.1, affine_prob=0.5, elastic_prob=0.5)),
        ("3d", 3, 32 if dry else 96, 2, "unet", DRY_MODELS["unet"] if dry else
         {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2, "norm": "instance"},
         30, AugmentSettings(flip_prob=0.5, rotate_deg=10, scale=0.1, affine_prob=0.3, intensity_shift=0.05)),
    ]
    out = []
    for name, nd, size, batch, model, params, classes, settings in cases:
        torch.manual_seed(0)
        x = torch.rand(batch, 1, *([size] * nd), device=device)
        y = torch.randint(0, classes, (batch, *([size] * nd)), device=device)
        aug = BatchAugment(nd, settings, 0.0, seed=0)
        loss_fn = build_loss("dice" if nd == 3 else "ce_dice", classes)
        net = build_model(model, 1, loss_fn.out_channels, size if nd == 2 else [size] * 3, spatial_dims=nd,
                          **params).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        aug_t, step_t = [], []
        for _ in range(steps + 2):
            t0 = time.perf_counter()
            xa, ya = aug(x, y)
            _sync(device)
            t1 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss_fn(net(xa), ya).backward()
            opt.step()
            _sync(device)
            aug_t.append(t1 - t0)
            step_t.append(time.perf_counter() - t1)
        a, st = statistics.median(aug_t[2:]), statistics.median(step_t[2:])
        out.append({"augment": name, "size": size, "batch": batch, "items_per_s": batch / a, "augment_s": a,
                    "step_s": st, "fraction_of_step": a / st})
    return out


def preset_epoch(preset: str, dry: bool, tmp: Path) -> dict[str, Any]:
    """One epoch of ``musclelab train trainer=<preset>`` (default phantom data; tiny when ``dry``)."""
    from musclelab.train import train

    over = [f"trainer={preset}", "trainer.max_epochs=1", "callbacks.progress_bar=false", "logger=none",
            "test=false"]
    if dry:
        over += ["data.img_size=64", "data.source.n_cases=24", "data.batch_size=4", "model.params.channels=[8,16,32]",
                 "model.params.strides=[2,2]", "model.params.num_res_units=1", "cpu_threads=1"]
    t0 = time.perf_counter()
    result = train(compose(over, tmp / f"preset_{preset}"))
    return {"preset": preset, "epoch_s": time.perf_counter() - t0, "fit_time_s": result.get("fit_time_s")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("gpu_benchmark.json"), help="the JSON file to write")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (no GPU needed)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224, help="slice size in px (the papers': 224)")
    ap.add_argument("--models", default="unet,unetr,swin_unetr")
    args = ap.parse_args()
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py: no CUDA device; use --dry-run to check the script on the CPU")
    device = torch.device("cpu" if dry else "cuda")
    size, batch, steps = (64, 2, 2) if dry else (args.size, args.batch, args.steps)
    if dry:
        torch.set_num_threads(1)
    models = DRY_MODELS if dry else PAPER_MODELS
    variants = ("plain", "channels_last") if dry else ("plain", "channels_last", "compile")
    results: list[dict[str, Any]] = []
    for name in args.models.split(","):
        for precision in ("32-true", "bf16-mixed"):
            for variant in variants:
                try:
                    r = step_benchmark(name, models[name], size, batch, steps, device, precision, variant)
                except Exception as err:  # one failing configuration (e.g. compile) must not lose the others
                    r = {"model": name, "precision": precision, "variant": variant, "error": repr(err)[:300],
                         "traceback": traceback.format_exc(limit=3)}
                results.append(r)
                print(json.dumps({k: v for k, v in r.items() if k != "traceback"}), flush=True)
    ratios: dict[str, float] = {}

    def t(name: str, precision: str, variant: str) -> float | None:
        for r in results:
            if (r["model"], r["precision"], r["variant"]) == (name, precision, variant) and "step_s" in r:
                return r["step_s"]
        return None

    for name in args.models.split(","):
        base = t(name, "32-true", "plain")
        for key, other in (("bf16_speedup", t(name, "bf16-mixed", "plain")),
                           ("channels_last_speedup_bf16", t(name, "bf16-mixed", "channels_last")),
                           ("compile_speedup_bf16", t(name, "bf16-mixed", "compile"))):
            ref = base if key == "bf16_speedup" else t(name, "bf16-mixed", "plain")
            if ref and other:
                ratios[f"{name}/{key}"] = ref / other
    try:
        augment = augment_benchmark(device, dry, steps)
    except Exception as err:
        augment = [{"error": repr(err)[:300], "traceback": traceback.format_exc(limit=3)}]
    for r in augment:
        print(json.dumps({k: v for k, v in r.items() if k != "traceback"}), flush=True)
        if "fraction_of_step" in r:
            ratios[f"augment_{r['augment']}/fraction_of_step"] = r["fraction_of_step"]
    tmp = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    presets = []
    try:
        for preset in (("cpu", "ddp_cpu") if dry else ("gpu", "ddp")):
            try:
                presets.append(preset_epoch(preset, dry, tmp))
            except Exception as err:
                presets.append({"preset": preset, "error": repr(err)[:300]})
            print(json.dumps(presets[-1]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = {
        "dry_run": dry, "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor()
        or "cpu", "n_gpus": torch.cuda.device_count(), "torch": torch.__version__, "img_size": size, "batch": batch,
        "steps": steps, "models": results, "presets": presets, "augment": augment, "ratios": ratios,
    }
    from musclelab.io import atomic_write_json

    atomic_write_json(args.out, report)
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}x")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
