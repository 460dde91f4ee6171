"""Re-launching a Hydra multirun into its existing sweep directory continues it instead of starting over.

Every sweep job of every launcher (basic, ``local_parallel``/joblib, ``slurm``/submitit, including a SLURM job
requeued after preemption) runs ``train()``, whose first step (:func:`musclelab.resume.before_run`) calls
:func:`prepare_sweep_job` with the job's directory ``<hydra.sweep.dir>/<job number>``. A single run that SLURM
requeued (``SLURM_RESTART_COUNT`` > 0; its directory is ``runs/slurm-<job id>`` by default, see
:mod:`musclelab.slurm`) is treated the same way, so it continues in its own directory:

| what the directory holds                           | what happens                                            |
|----------------------------------------------------|---------------------------------------------------------|
| nothing (new job)                                  | trains                                                  |
| ``complete``, same composed config                 | skipped ("complete with the same config" in the log)    |
| ``interrupted``/``running`` + ``last.ckpt``        | continues from ``last.ckpt`` (exact, see resume.py)     |
| ``failed`` + an intact ``last.ckpt``, same config  | continues from it (an OOM kill, a full disk)            |
| ``interrupted``/``running`` without a checkpoint   | trains again from the start                             |
| ``failed`` (no intact checkpoint, or a new config) | trains again from the start (the config may be fixed)   |
| ``complete``/resumable with a *different* config   | error naming the differing keys; nothing is overwritten |

Ctrl-C is an interruption (``interrupted``), not a failure (:func:`musclelab.resume.is_preemption`).

"Same config" compares the job's resolved config with the ``config_resolved.yaml`` the earlier run saved
(``resume`` ignored). Hydra rewrites the job's ``.hydra/`` files before the job runs; a first launch keeps a
copy in ``.hydra.launch/`` and a refused re-launch puts it back, so ``resume=<job dir>`` keeps working (single
runs do the same through :func:`musclelab.resume.before_run`).
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from musclelab.errors import ConfigError
from musclelab.outputs.status import read_status

log = logging.getLogger(__name__)

SAVED_CONFIG = "config_resolved.yaml"
HYDRA_BACKUP = ".hydra.launch"
# not compared when a run is resumed or re-launched: ``study`` is the transfer study around a chain stage (its
# sequence, strategy, data sets), which train() never reads; a stage shared by several chains (another ordering,
# another strategy's shared stage 0) must resume whichever chain finds it interrupted
IGNORED_KEYS = ("resume", "study")


def _sweep_job() -> tuple[str, str] | None:
    """(name, the job's output dir) inside a Hydra multirun job ("sweep job <number>") or a requeued SLURM single
    run ("SLURM job <id>"), else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ValueError, ImportError):
        return None
    if hc.mode != RunMode.MULTIRUN:
        from musclelab import slurm

        if slurm.in_slurm_job() and slurm.restart_count() > 0:
            return f"SLURM job {slurm.job_id()}", str(hc.runtime.output_dir)
        return None
    return f"sweep job {int(hc.job.num)}", str(hc.runtime.output_dir)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def config_differences(cfg: DictConfig, saved_file: Path) -> list[str]:
    """Dotted keys whose resolved value differs between ``cfg`` and the saved resolved config."""
    new = _flat(OmegaConf.to_container(cfg, resolve=True))
    old = _flat(yaml.safe_load(saved_file.read_text()) or {})
    keys = sorted(k for k in set(new) | set(old) if k.split(".")[0] not in IGNORED_KEYS and new.get(k) != old.get(k))
    return keys


def shown_keys(keys: list[str], n: int = 8) -> str:
    """At most ``n`` keys, comma-separated, and how many more."""
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def intact_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a full training checkpoint that loads (``weights_only``) with its loop state."""
    if not path.is_file():
        return False
    import torch

    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:  # truncated, not a checkpoint, ...: train again
        return False
    return isinstance(ckpt, dict) and {"state_dict", "loops", "optimizer_states"} <= set(ckpt)


def backup_hydra(run_dir: Path) -> None:
    """Keep a copy of the launch's ``.hydra/`` in ``.hydra.launch/``."""
    src, dst = run_dir / ".hydra", run_dir / HYDRA_BACKUP
    if src.is_dir():
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)


def restore_hydra(run_dir: Path) -> None:
    """Put the kept ``.hydra.launch/`` back as ``.hydra/`` (nothing to do without one)."""
    src, dst = run_dir / HYDRA_BACKUP, run_dir / ".hydra"
    if src.is_dir():
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)


def prepare_sweep_job(cfg: DictConfig, run_dir: Path) -> str | None:
    """Decide what a sweep job does with what its directory already holds (see the module table).

    Returns ``None`` outside a multirun (and a requeued SLURM single run), else ``"new"``, ``"complete"`` (the caller skips the job),
    ``"resume"`` (``cfg.resume`` is set to ``run_dir``) or ``"rerun"``; raises :class:`ConfigError` when a
    complete or resumable job would be overwritten by a different config."""
    job = _sweep_job()
    if job is None:
        return None
    name, job_dir = job
    if Path(job_dir).resolve() != Path(run_dir).resolve():
        return None  # a run inside the job (e.g. a transfer chain's stage, which the stage cache manages)
    status = read_status(run_dir)
    if status is None:
        backup_hydra(run_dir)
        return "new"
    saved = run_dir / SAVED_CONFIG
    last = run_dir / "checkpoints" / "last.ckpt"
    keeps_results = status == "complete" or (status in ("running", "interrupted") and last.exists())
    if keeps_results and saved.exists():
        diff = config_differences(cfg, saved)
        if diff:
            restore_hydra(run_dir)
            raise ConfigError(f"{name} ({run_dir}) is {status} with a different config: {shown_keys(diff)} differ; "
                              "re-launch with the same overrides, or use a new hydra.sweep.dir")
    if status == "complete":
        log.info("%s: %s is complete with the same config; skipping it", name, run_dir)
        return "complete"
    if status == "failed" and saved.exists() and not config_differences(cfg, saved) and intact_checkpoint(last):
        log.info("%s: %s failed after saving %s; continuing from it", name, run_dir, last)
        print(f"musclelab: {name}: previous attempt failed; continuing from its intact {last}")
        with open_dict(cfg):
            cfg.resume = str(run_dir)
        return "resume"
    if status in ("running", "interrupted") and last.exists():
        log.info("%s: continuing the interrupted run in %s from %s", name, run_dir, last)
        print(f"musclelab: {name}: continuing the interrupted run from {last}")
        with open_dict(cfg):
            cfg.resume = str(run_dir)
        return "resume"
    log.info("%s: %s was %s; training it again from the start", name, run_dir, status)
    print(f"musclelab: {name}: previous attempt {status}; training it again from the start")
    backup_hydra(run_dir)
    return "rerun"
