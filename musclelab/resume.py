"""Exact resume, atomic checkpoints and preemption: what makes a killed run continue as if never stopped.

* :class:`RandomStateCheckpoint` stores every random stream in each checkpoint — torch (CPU and CUDA), NumPy,
  Python's ``random``, the augmentation transforms' own generators and the train loader's shuffling generator
  (when it has one; otherwise shuffling draws from torch's stream) — and restores them when a resumed fit
  starts. Lightning restores weights, optimiser, schedulers and loops but no random state,
  so without this the first resumed epoch shuffles and augments differently (issue 11: test Dice 0.811 vs
  0.823). Restored in ``on_fit_start``: on resume Lightning creates the train iterator (which draws the
  shuffling seed from torch's stream) before the first epoch's hooks run. The states are plain tensors and
  ints, so checkpoints still load with ``weights_only=True``.
* :class:`AtomicCheckpointIO`: Lightning writes a checkpoint by truncating the file and writing into it, so a
  kill during the write leaves a truncated ``last.ckpt`` that the next ``resume=`` trusts; this plug-in writes a
  temporary file and renames it (:func:`musclelab.io.atomic_write_bytes`): the previous file or the new one.
* :func:`before_run`: ``resume=`` of a run that is already ``complete`` with the same config says so and does
  nothing (it used to train another epoch and crash in the CSV logger); with changed settings (e.g. a higher
  ``trainer.max_epochs``) it extends the run from ``last.ckpt`` (kept with ``callbacks.checkpoint.keep_last``);
  jobs of a re-launched sweep go through :mod:`musclelab.sweep_resume`.
* :func:`mark_stopped`: a run stopped by SIGTERM (or SLURM's pre-timeout signal) is ``interrupted`` —
  resumable from its last complete epoch — not ``failed``. Lightning's signal connector turns SIGTERM into a
  ``SIGTERMException`` at the next batch; SIGUSR1/SIGUSR2 outside SLURM are routed to the same path. In a SLURM
  job SIGUSR1 requeues the job (:mod:`musclelab.slurm`, not Lightning's auto-requeue: no ``hpc_ckpt_*.ckpt``),
  SLURM's SIGTERM stops it, and the requeued job continues from ``last.ckpt`` (:mod:`musclelab.sweep_resume`).

A resumed run goes back to the last *epoch* boundary (``last.ckpt`` is written after each epoch's validation):
mid-epoch checkpoints would need the loader's position inside the epoch, which a map-style DataLoader does not
keep, and would break the equivalence with the uninterrupted run.
"""
from __future__ import annotations

import io
import logging
import os
import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig

from musclelab.io import atomic_write_bytes
from musclelab.outputs.status import STATUS_FILE, mark_failed, read_status, write_status

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted"


# ---------------------------------------------------------------------------------------------------------------
# random states
# ---------------------------------------------------------------------------------------------------------------


def _np_state_to_plain(state: tuple) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = state
    return {"name": name, "keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _np_state_from_plain(d: dict[str, Any]) -> tuple:
    return (d["name"], d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached"])


def _augment_transforms(trainer: pl.Trainer) -> list[Any]:
    """The Randomizable transforms of the training set's augmentation (MONAI ``Compose`` and its members)."""
    dm = getattr(trainer, "datamodule", None)
    ds = getattr(dm, "datasets", {}).get("train") if dm is not None else None
    aug = getattr(ds, "augment", None)
    if aug is None:
        return []
    out = [aug] + list(getattr(aug, "transforms", ()))
    return [t for t in out if isinstance(getattr(t, "R", None), np.random.RandomState)]


def _loader_generator(trainer: pl.Trainer) -> torch.Generator | None:
    loader = getattr(trainer.fit_loop, "_combined_loader", None)
    loaders = getattr(loader, "flattened", None) or []
    for dl in loaders:
        gen = getattr(dl, "generator", None)
        if gen is None:
            gen = getattr(getattr(dl, "sampler", None), "generator", None)
        if isinstance(gen, torch.Generator):
            return gen
    return None


def capture_random_state(trainer: pl.Trainer | None = None) -> dict[str, Any]:
    """Every random stream of this process (and of ``trainer``'s data) as plain tensors and numbers."""
    state: dict[str, Any] = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": _np_state_to_plain(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if trainer is not None:
        state["augment"] = [_np_state_to_plain(t.R.get_state()) for t in _augment_transforms(trainer)]
        gen = _loader_generator(trainer)
        if gen is not None:
            state["loader_generator"] = gen.get_state()
    return state


def restore_random_state(state: dict[str, Any], trainer: pl.Trainer | None = None) -> None:
    """Put back what :func:`capture_random_state` recorded."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(_np_state_from_plain(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if trainer is not None:
        for t, s in zip(_augment_transforms(trainer), state.get("augment", [])):
            t.R.set_state(_np_state_from_plain(s))
        gen = _loader_generator(trainer)
        if gen is not None and "loader_generator" in state:
            gen.set_state(state["loader_generator"])


class RandomStateCheckpoint(pl.Callback):
    """Saves all random states with every checkpoint; restores them when a resumed fit starts (after Lightning
    has restored this callback, before the train loader draws its shuffling order)."""

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None
        self._pending: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        return capture_random_state(self._trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after Lightning restored this callback's state, before the fit loop creates the train loader's
        # iterator (on resume Lightning creates it once in setup_data, drawing the shuffling seed)
        self._apply(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply(trainer)  # strategies that restore callbacks only after setup

    def _apply(self, trainer: pl.Trainer) -> None:
        if self._pending is not None:
            restore_random_state(self._pending, trainer)
            self._pending = None


# ---------------------------------------------------------------------------------------------------------------
# atomic checkpoint files
# ---------------------------------------------------------------------------------------------------------------


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same folder and renames it over the old one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        atomic_write_bytes(path, buf.getvalue())

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        # weights_only: only tensors and plain values are unpickled (no code from a checkpoint file runs)
        kwargs = {} if map_location is None else {"map_location": map_location}
        return super().load_checkpoint(path, weights_only=True if weights_only is None else weights_only, **kwargs)


def trainer_plugins() -> list[Any]:
    """Lightning plug-ins for every training run: atomic checkpoints, and in a SLURM job the SLURM environment
    with musclelab's requeue on SIGUSR1 instead of Lightning's (no ``hpc_ckpt_*.ckpt``: :mod:`musclelab.slurm`);
    the requeued job resumes from ``last.ckpt``."""
    from musclelab.slurm import cluster_plugins

    return [AtomicCheckpointIO(), *cluster_plugins()]


def trainer_callbacks() -> list[pl.Callback]:
    """Callbacks every training run gets from this module (and the NaN/inf stop from :mod:`musclelab.callbacks`)."""
    from musclelab.callbacks import NonFiniteLossStop

    return [RandomStateCheckpoint(), NonFiniteLossStop(), PreemptionSignals()]


# ---------------------------------------------------------------------------------------------------------------
# preemption and run status
# ---------------------------------------------------------------------------------------------------------------


class PreemptionSignals(pl.Callback):
    """Outside SLURM, SIGUSR1/SIGUSR2 (a scheduler's "time is almost up") stop the run like SIGTERM: at the next
    batch, status ``interrupted``, resumable from ``last.ckpt``. In a SLURM job SIGUSR1 requeues the job
    (:mod:`musclelab.slurm`) and SLURM's SIGTERM then stops the run."""

    SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self) -> None:
        self._old: dict[int, Any] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from lightning_fabric.plugins.environments import SLURMEnvironment

        if SLURMEnvironment.detect() or os.name == "nt":
            return
        for sig in self.SIGNALS:
            if signal.getsignal(sig) in (None, signal.SIG_DFL):
                self._old[sig] = signal.signal(sig, self._as_sigterm)

    @staticmethod
    def _as_sigterm(signum: int, frame: Any) -> None:
        log.info("received signal %d: stopping like SIGTERM (the run is resumable)", signum)
        os.kill(os.getpid(), signal.SIGTERM)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


def is_preemption(err: BaseException) -> bool:
    """Whether ``err`` means "stopped from outside" (SIGTERM via Lightning, Ctrl-C) rather than a failure."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    return isinstance(err, (SIGTERMException, KeyboardInterrupt))


def mark_stopped(run_dir: str | Path, err: BaseException) -> None:
    """``interrupted`` (resumable, with the last complete epoch's ``last.ckpt``) or ``failed``."""
    if is_preemption(err):
        last = Path(run_dir) / "checkpoints" / "last.ckpt"
        write_status(run_dir, INTERRUPTED, reason=type(err).__name__, resume_from=str(last) if last.exists() else None,
                     hint=f"continue with: musclelab train resume={run_dir}")
        log.warning("run %s interrupted; continue with: musclelab train resume=%s", run_dir, run_dir)
    else:
        mark_failed(run_dir, err)


def before_run(cfg: DictConfig, run_dir: Path) -> dict[str, float] | None:
    """Called first by ``train()``: the saved result when there is nothing to do (a complete run given as
    ``resume=``, or a complete job of a re-launched sweep), else ``None`` (``cfg.resume`` may be set to continue
    an interrupted sweep job)."""
    from musclelab.sweep_resume import SAVED_CONFIG, config_differences, prepare_sweep_job

    if cfg.get("resume") and read_status(run_dir) == "complete":
        saved = run_dir / SAVED_CONFIG
        changed = config_differences(cfg, saved) if saved.exists() else []
        if not changed:
            return _complete_result(run_dir, f"run {run_dir} is already complete: nothing to resume")
        # new settings given with resume= (e.g. trainer.max_epochs raised): extend the run from last.ckpt
        log.info("run %s is complete; continuing it with changed %s", run_dir, ", ".join(changed))
    if prepare_sweep_job(cfg, run_dir) == "complete":
        return _complete_result(run_dir, f"sweep job {run_dir} is complete with the same config: skipped")
    return None


def _complete_result(run_dir: Path, message: str) -> dict[str, float]:
    import json

    log.info(message)
    print(f"musclelab: {message}")
    status = json.loads((run_dir / STATUS_FILE).read_text())
    return dict(status.get("metrics") or {})
