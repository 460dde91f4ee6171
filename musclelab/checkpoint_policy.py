"""How much of a run's training state stays on disk: the checkpoint policy (``callbacks.checkpoint``).

Two files, two jobs:

- ``best.ckpt`` (best ``callbacks.checkpoint.monitor``): what testing, transfer (``init=checkpoint``), the stage
  cache and ``musclelab predict`` read. With ``save_weights_only: true`` (the default) it holds the network's
  weights, the hyperparameters and the inference description of :mod:`musclelab.checkpoint_meta` — no optimiser
  moments, which for Adam are twice the weights (a default UNet: 1.6 MB instead of 4.9 MB).
- ``last.ckpt``: the full training state (optimiser, schedulers, loops, callbacks) that ``resume=<run dir>``
  continues from. It is written every epoch while the run is unfinished and, with ``keep_last: false`` (the
  default), deleted once ``run_status.json`` says ``complete`` — a finished run keeps ``best.ckpt`` only.
- Lightning's own ``hpc_ckpt_<n>.ckpt`` (its SLURM auto-requeue saves one mid-epoch into the run directory and
  any later ``fit``/``test`` without ``ckpt_path`` in a SLURM job loads it) are not written: every musclelab
  ``Trainer`` has auto-requeue off and :mod:`musclelab.slurm` requeues instead. Any found in a run directory
  (left by a run of an older version) are deleted when the run completes, as ``last.ckpt`` is.

Every training run and every job of a study (Hydra multirun, transfer chains) goes through ``train()`` and so
uses this policy by default.
"""
from __future__ import annotations

from pathlib import Path

from pytorch_lightning.callbacks import ModelCheckpoint

from musclelab.slurm import HPC_CKPT_GLOB

LAST_NAME = "last"


def last_checkpoint_callback(ckpt_dir: str | Path) -> ModelCheckpoint:
    """Writes only ``last.ckpt`` (full training state, for resume) at the end of every epoch: without a monitor,
    Lightning's top-1 checkpoint is the latest one (``save_last`` alone would only copy a top-k save)."""
    # mode="max" is unused without a monitor; it only keeps this callback's state_key distinct from a best-checkpoint
    # callback that has no monitor either (callbacks.checkpoint.monitor=null: the last epoch is the model)
    return ModelCheckpoint(dirpath=str(ckpt_dir), filename=LAST_NAME, monitor=None, mode="max", save_top_k=1,
                           save_last=False, save_weights_only=False, enable_version_counter=False)


def hpc_checkpoints(run_dir: str | Path) -> list[Path]:
    """Lightning's SLURM requeue checkpoints (``hpc_ckpt_<n>.ckpt``) in ``run_dir``, where Lightning puts them."""
    return sorted(Path(run_dir).glob(HPC_CKPT_GLOB))


def finalize_checkpoints(ckpt_dir: str | Path, keep_last: bool) -> int:
    """After a run is complete: delete ``last.ckpt`` unless ``keep_last`` (only when a best checkpoint exists to
    keep), and any Lightning ``hpc_ckpt_*.ckpt`` of the run directory (``ckpt_dir``'s parent). Returns the bytes
    freed."""
    ckpt_dir = Path(ckpt_dir)
    last, best = ckpt_dir / f"{LAST_NAME}.ckpt", ckpt_dir / "best.ckpt"
    stale = hpc_checkpoints(ckpt_dir.parent)  # never read by musclelab: a full training state each
    if not keep_last and last.exists() and best.exists():
        stale.append(last)
    size = 0
    for path in stale:
        size += path.stat().st_size
        path.unlink()
    return size


def directory_bytes(path: str | Path) -> int:
    """Bytes of every file under ``path`` (for disk-use reports)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
