"""How much of a run's training state stays on disk: the checkpoint policy (``callbacks.checkpoint``).

Two files, two jobs:

- ``best.ckpt`` (best ``callbacks.checkpoint.monitor``): what testing, transfer (``init=checkpoint``), the stage
  cache and ``musclelab predict`` read. With ``save_weights_only: true`` (the default) it holds the network's
  weights, the hyperparameters and the inference description of :mod:`musclelab.checkpoint_meta` — no optimiser
  moments, which for Adam are twice the weights (a default UNet: 1.6 MB instead of 4.9 MB).
- ``last.ckpt``: the full training state (optimiser, schedulers, loops, callbacks) that ``resume=<run dir>``
  continues from. It is written every epoch while the run is unfinished and, with ``keep_last: false`` (the
  default), deleted once ``run_status.json`` says ``complete`` — a finished run keeps ``best.ckpt`` only.

Every training run and every job of a study (Hydra multirun, transfer chains) goes through ``train()`` and so
uses this policy by default.
"""
from __future__ import annotations

from pathlib import Path

from pytorch_lightning.callbacks import ModelCheckpoint

LAST_NAME = "last"


def last_checkpoint_callback(ckpt_dir: str | Path) -> ModelCheckpoint:
    """Writes only ``last.ckpt`` (full training state, for resume) at the end of every epoch: without a monitor,
    Lightning's top-1 checkpoint is the latest one (``save_last`` alone would only copy a top-k save)."""
    # mode="max" is unused without a monitor; it only keeps this callback's state_key distinct from a best-checkpoint
    # callback that has no monitor either (callbacks.checkpoint.monitor=null: the last epoch is the model)
    return ModelCheckpoint(dirpath=str(ckpt_dir), filename=LAST_NAME, monitor=None, mode="max", save_top_k=1,
                           save_last=False, save_weights_only=False, enable_version_counter=False)


def finalize_checkpoints(ckpt_dir: str | Path, keep_last: bool) -> int:
    """After a run is complete: delete ``last.ckpt`` unless ``keep_last`` (only when a best checkpoint exists to
    keep). Returns the bytes freed."""
    ckpt_dir = Path(ckpt_dir)
    last, best = ckpt_dir / f"{LAST_NAME}.ckpt", ckpt_dir / "best.ckpt"
    if keep_last or not last.exists() or not best.exists():
        return 0
    size = last.stat().st_size
    last.unlink()
    return size


def directory_bytes(path: str | Path) -> int:
    """Bytes of every file under ``path`` (for disk-use reports)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
