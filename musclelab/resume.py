"""Exact resume, atomic checkpoints and preemption: what makes a killed run continue as if never stopped.

* :class:`RandomStateCheckpoint` stores every random stream in each checkpoint — torch (CPU and CUDA), NumPy,
  Python's ``random``, the batch augmentation's own generator (:mod:`musclelab.data.augment`) and the train loader's shuffling generator
  (when it has one; otherwise shuffling draws from torch's stream) — and restores them when a resumed fit
  starts. Lightning restores weights, optimiser, schedulers and loops but no random state,
  so without this the first resumed epoch shuffles and augments differently (issue 11: test Dice 0.811 vs
  0.823). Restored in ``on_fit_start``: on resume Lightning creates the train iterator (which draws the
  shuffling seed from torch's stream) before the first epoch's hooks run. The states are plain tensors and
  ints, so checkpoints still load with ``weights_only=True``.
* :class:`AtomicCheckpointIO`: Lightning writes a checkpoint by truncating the file and writing into it, so a
  kill during the write leaves a truncated ``last.ckpt`` that the next ``resume=`` trusts; this plug-in writes a
  temporary file (fsynced) and renames it (:func:`musclelab.io.atomic_torch_save`): the previous file or the new one.
* :func:`before_run`: a complete run is never modified. Run again into its directory with the same config, or
  given as ``resume=``, it says so and does nothing; with a different config it is refused naming the keys
  (before any file, W&B id included, is touched). ``resume=`` may only change :data:`RESUME_CHANGES`
  (``trainer.max_epochs``, larger, extends the run from ``last.ckpt``, kept with
  ``callbacks.checkpoint.keep_last``; without it the extension is refused and the run stays ``complete``); a
  changed split, data or test set is refused for unfinished runs too. Jobs of a re-launched sweep go through
  :mod:`musclelab.sweep_resume`.
* :class:`StopRequestCheckpoint`: ``trainer.should_stop`` (early stopping) is part of every checkpoint, so a
  run that stopped early and was killed while testing does not train further epochs on resume.
* :func:`mark_stopped`: a run stopped by SIGTERM, Ctrl-C (which Lightning turns into ``SystemExit(1)``) or
  SLURM's pre-timeout signal is ``interrupted`` —
  resumable from its last complete epoch — not ``failed``. Lightning's signal connector turns SIGTERM into a
  ``SIGTERMException`` at the next batch; SIGUSR1/SIGUSR2 outside SLURM are routed to the same path. In a SLURM
  job SIGUSR1 requeues the job (:mod:`musclelab.slurm`, not Lightning's auto-requeue: no ``hpc_ckpt_*.ckpt``),
  SLURM's SIGTERM stops it, and the requeued job continues from ``last.ckpt`` (:mod:`musclelab.sweep_resume`).

A resumed run goes back to the last *epoch* boundary (``last.ckpt`` is written after each epoch's validation):
mid-epoch checkpoints would need the loader's position inside the epoch, which a map-style DataLoader does not
keep, and would break the equivalence with the uninterrupted run.
"""
from __future__ import annotations

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

from musclelab.io import atomic_torch_save
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


def _augmentation(trainer: pl.Trainer) -> Any:
    """The task's batch augmentation (:class:`musclelab.data.augment.BatchAugment`, with its own generator)."""
    return getattr(getattr(trainer, "lightning_module", None), "augmentation", None)


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
        aug = _augmentation(trainer)
        if aug is not None:
            state["batch_augment"] = aug.state_dict()
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
        aug = _augmentation(trainer)
        if aug is not None and "batch_augment" in state:
            aug.load_state_dict(state["batch_augment"])
        gen = _loader_generator(trainer)
        if gen is not None and "loader_generator" in state:
            gen.set_state(state["loader_generator"])


class StopRequestCheckpoint(pl.Callback):
    """Keeps ``trainer.should_stop`` in the checkpoint: a run whose early stopping (or any callback) ended
    training is restored as stopped, so a run killed during its test phase is not trained further on resume.
    Lightning restores ``EarlyStopping``'s counters but not the stop itself."""

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None
        self._stopped = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        return {"should_stop": bool(self._trainer is not None and self._trainer.should_stop)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._stopped = bool(state_dict.get("should_stop", False))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._stopped:  # before the fit loop's first "done?" check
            log.info("the checkpoint's run had stopped (early stopping): no further epochs")
            trainer.should_stop = True
            self._stopped = False


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
        # streamed into the temporary file: no second copy of the checkpoint in memory (a 640 MB Adam state of
        # FCN-ResNet101 took 5.6 s through a BytesIO on a fresh process, 0.9 s streamed)
        atomic_torch_save(checkpoint, path)

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

    return [RandomStateCheckpoint(), StopRequestCheckpoint(), NonFiniteLossStop(), PreemptionSignals()]


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
    """Whether ``err`` means "stopped from outside" (SIGTERM via Lightning, Ctrl-C) rather than a failure.

    Lightning turns a ``KeyboardInterrupt`` inside ``fit``/``test`` into ``sys.exit(1)`` from its ``except``
    block, so the exit's context chain is followed: a ``SystemExit`` raised while handling an interruption is
    one too."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        if isinstance(e, (SIGTERMException, KeyboardInterrupt)):
            return True
        if not isinstance(e, SystemExit):
            return False
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def is_rank_zero() -> bool:
    """Whether this process is global rank 0 (or not part of a multi-process job): the environment variables
    a launcher sets for its ranks (``RANK``, ``LOCAL_RANK``, ``SLURM_PROCID``), in Lightning's order."""
    for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(var)
        if value is not None:
            try:
                return int(value) == 0
            except ValueError:
                return True
    return True


def mark_stopped(run_dir: str | Path, err: BaseException) -> None:
    """``interrupted`` (resumable, with the last complete epoch's ``last.ckpt``) or ``failed``."""
    if is_preemption(err):
        last = Path(run_dir) / "checkpoints" / "last.ckpt"
        write_status(run_dir, INTERRUPTED, reason=type(err).__name__, resume_from=str(last) if last.exists() else None,
                     hint=f"continue with: musclelab train resume={run_dir}")
        log.warning("run %s interrupted; continue with: musclelab train resume=%s", run_dir, run_dir)
    else:
        mark_failed(run_dir, err)


#: what ``resume=`` may change in a run: the extension (``trainer.max_epochs``) and what only decides what stays
#: on disk or is shown; anything else (split, data, test set, model, seed, ...) would mix weights, manifests
#: and test outputs of two different runs
RESUME_CHANGES = ("trainer.max_epochs", "callbacks.checkpoint.keep_last", "callbacks.progress_bar")


def before_run(cfg: DictConfig, run_dir: Path) -> dict[str, float] | None:
    """Called first by ``train()``, before anything is written: the saved result when there is nothing to do,
    else ``None`` (``cfg.resume`` may be set to continue an interrupted or failed sweep job). A complete run is
    never modified except by an explicit extension (:data:`RESUME_CHANGES` through ``resume=``); everything else
    is a :class:`~musclelab.errors.ConfigError` naming the differing keys, leaving the run as it was."""
    from musclelab.sweep_resume import prepare_sweep_job

    sweep = prepare_sweep_job(cfg, run_dir)
    if sweep == "complete":
        return _complete_result(run_dir, f"sweep job {run_dir} is complete with the same config: skipped")
    if sweep is not None:
        return None
    # Hydra rewrites the run's .hydra/ (overrides.yaml: what resume= replays) before train() runs: a refused or
    # no-op launch puts the accepted launch's copy back; a launch that trains becomes the new record
    from musclelab.errors import ConfigError
    from musclelab.sweep_resume import backup_hydra, restore_hydra

    try:
        result = _single_run(cfg, run_dir)
    except ConfigError:
        restore_hydra(run_dir)
        raise
    if result is None:
        backup_hydra(run_dir)
    else:
        restore_hydra(run_dir)
    return result


def _single_run(cfg: DictConfig, run_dir: Path) -> dict[str, float] | None:
    from musclelab.errors import ConfigError
    from musclelab.sweep_resume import SAVED_CONFIG, config_differences, shown_keys

    status = read_status(run_dir)
    saved = run_dir / SAVED_CONFIG
    if status is None or not saved.exists():
        if cfg.get("resume") and status is None:
            raise ConfigError(f"resume={run_dir}: no run_status.json there; give the directory of a run made by "
                              "`musclelab train`")
        return None
    changed = config_differences(cfg, saved)
    if status == "complete" and not cfg.get("resume"):
        if not changed:
            return _complete_result(run_dir, f"run {run_dir} is already complete with the same config: nothing to do")
        raise ConfigError(f"{run_dir} holds a complete run with a different config ({shown_keys(changed)} differ); "
                          "it is never overwritten: choose a new hydra.run.dir (or extend it with "
                          f"resume={run_dir} trainer.max_epochs=<more>)")
    if not cfg.get("resume"):
        return None  # an unfinished run trained again from the start in its own directory
    refused = [k for k in changed if k not in RESUME_CHANGES]
    if refused:
        raise ConfigError(f"resume={run_dir}: {shown_keys(refused)} differ from the run's config; resume= continues "
                          f"the same run and may only change {', '.join(RESUME_CHANGES)}: train a new run "
                          "(a new hydra.run.dir) for other settings")
    if status != "complete":
        return None  # interrupted / failed / running: continues from last.ckpt
    if "trainer.max_epochs" not in changed:
        return _complete_result(run_dir, f"run {run_dir} is already complete: nothing to resume")
    import yaml

    old_epochs = (yaml.safe_load(saved.read_text()) or {}).get("trainer", {}).get("max_epochs")
    if old_epochs is not None and int(cfg.trainer.max_epochs) <= int(old_epochs):
        raise ConfigError(f"resume={run_dir}: trainer.max_epochs={cfg.trainer.max_epochs} does not extend the "
                          f"complete run (trained for {old_epochs}); give a larger value")
    if not (run_dir / "checkpoints" / "last.ckpt").exists():
        raise ConfigError(f"resume={run_dir}: the run is complete and its checkpoints/last.ckpt was deleted "
                          "(callbacks.checkpoint.keep_last=false), so it cannot be extended; train a new run with "
                          f"trainer.max_epochs={cfg.trainer.max_epochs} (the complete run is left as it is)")
    log.info("run %s is complete; extending it: %s", run_dir, ", ".join(changed))
    return None


def _complete_result(run_dir: Path, message: str) -> dict[str, float]:
    import json

    log.info(message)
    print(f"musclelab: {message}")
    status = json.loads((run_dir / STATUS_FILE).read_text())
    return dict(status.get("metrics") or {})
