"""DataLoader settings chosen from measurement (``data.num_workers``, ``data.pin_memory``; null = automatic).

Since issue 16 a loader item is only a read from the memory-mapped cache (a slice, or a patch-sized window of a
volume) and its HU window; augmentation runs on whole batches on the device in the task. ``benchmarks/
bench_pipeline.py`` on the default phantom run (2 CPU cores shared with five other engineers' jobs, load ~12, one
training thread), in-memory and full-pipeline epochs alternating inside one fit: the full pipeline costs 0.99x the
in-memory epoch with ``num_workers=0`` and 0.97x with one worker process (both within the noise of the shared
machine; before issue 16, with per-item MONAI augmentation: 1.19x and 1.19x). A worker brings nothing measurable on
a CPU, costs a process start per loader and cannot be started inside daemonic launcher processes, so CPU runs keep
0 workers, no pinning, no persistent workers. On a GPU the step is ~100x shorter than on a CPU, so even the cache
read and windowing could leave it waiting: there, worker processes (persistent across epochs) and pinned memory
(asynchronous host-to-device copies) are the standard remedy (not measured here: no GPU was available;
``benchmarks/gpu.py`` measures the augmentation's share of a GPU step).

Automatic choices: no CUDA device -> 0 workers, no pinning; a CUDA device -> ``min(4, cores - 1)`` persistent
workers and pinned memory. Explicit values are kept.
"""
from __future__ import annotations

import os

GPU_WORKERS = 4


def loader_settings(num_workers: int | None, pin_memory: bool | None) -> tuple[int, bool]:
    """``(num_workers, pin_memory)`` with None replaced by the measured default for this machine."""
    import torch

    cuda = torch.cuda.is_available()
    if num_workers is None:
        num_workers = min(GPU_WORKERS, max(0, (os.cpu_count() or 1) - 1)) if cuda else 0
    if int(num_workers) < 0:
        raise ValueError(f"data.num_workers must be >= 0 or null (automatic), got {num_workers}")
    return int(num_workers), bool(cuda if pin_memory is None else pin_memory)
