"""SLURM requeue for every musclelab job, without Lightning's ``hpc_ckpt_*.ckpt`` files.

Inside a SLURM job Lightning gives every ``Trainer`` a ``SLURMEnvironment(auto_requeue=True)``, which

1. on SIGUSR1 saves the trainer's state *mid-epoch* to ``<default_root_dir>/hpc_ckpt_<n>.ckpt`` and calls
   ``scontrol requeue``, and
2. makes every later ``fit``/``test``/``predict`` with ``ckpt_path=None`` in a SLURM job load the newest
   ``hpc_ckpt_*`` of its ``default_root_dir`` instead of the model it was given.

musclelab resumes from ``last.ckpt`` (an epoch boundary, exact: :mod:`musclelab.resume`) and its test phase
passes the best checkpoint's model; (2) made a requeued job test the interrupted attempt's mid-epoch weights
(test Dice 0.1515 against 0.2240 for the same job left alone, ``tests/test_slurm.py``), and (1) left a full
training state in the run directory. So every musclelab ``Trainer`` gets :func:`cluster_plugins`
(``auto_requeue=False``: no hpc checkpoint is ever written) and this module requeues instead: SIGUSR1 (SLURM's
pre-timeout signal, ``--signal=USR1@<s>``) runs ``scontrol requeue <job>`` once, from rank 0; SLURM then sends
SIGTERM, which stops the run at the next batch as ``interrupted``, and the requeued job continues from
``last.ckpt`` — a sweep job by :mod:`musclelab.sweep_resume`, a single run too, in the same directory:
:func:`run_stamp` names a SLURM batch job's run directory by its job id, which a requeue keeps.

Lightning has no switch for "requeue without the hpc checkpoint", hence this small module.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import subprocess
import threading
from typing import Any

log = logging.getLogger(__name__)

REQUEUE_SIGNAL = signal.SIGUSR1  # SLURM: sbatch --signal=USR1@<seconds before the time limit>
HPC_CKPT_GLOB = "hpc_ckpt_*.ckpt"  # Lightning's requeue checkpoints (never written by musclelab)

_requeued = False


def in_slurm_job() -> bool:
    """Whether this process runs in a SLURM job that can be requeued: ``SLURM_JOB_ID`` is set and the job is not an
    interactive allocation (Lightning's test: job name ``bash`` or ``interactive``). Unlike Lightning's
    ``SLURMEnvironment.detect()`` this includes ``musclelab train`` run directly in a batch script, without srun."""
    return bool(os.environ.get("SLURM_JOB_ID")) and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def job_id() -> str | None:
    """The id ``scontrol requeue`` takes: ``<array job>_<task>`` for an array task (a Hydra sweep job), else the
    job id; ``None`` outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def restart_count() -> int:
    """How many times SLURM has requeued this job (``SLURM_RESTART_COUNT``; 0 on the first attempt)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def run_stamp(fmt: str = "%Y-%m-%d_%H-%M-%S-%f") -> str:
    """The last part of a single run's default directory (``${run_stamp:}`` in ``conf/hydra/default.yaml``):
    ``slurm-<job id>`` in a SLURM batch job, so that a requeued job finds its run again, else the local time."""
    if in_slurm_job() and (jid := job_id()):
        return f"slurm-{jid}"
    return dt.datetime.now().strftime(fmt)


def register_resolvers() -> None:
    """Register ``${run_stamp:}`` with OmegaConf (idempotent; cached so every use in one process agrees)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("run_stamp"):
        OmegaConf.register_new_resolver("run_stamp", run_stamp, use_cache=True)


def _is_rank_zero() -> bool:
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0" \
        and os.environ.get("SLURM_PROCID", "0") == "0"


def requeue(signum: int, frame: Any) -> None:
    """The :data:`REQUEUE_SIGNAL` handler: ask SLURM once to requeue this job (SLURM then stops it with SIGTERM)."""
    global _requeued
    jid = job_id()
    if _requeued or jid is None or not _is_rank_zero():
        return
    _requeued = True
    log.info("received signal %d: requeueing SLURM job %s (it continues from last.ckpt)", signum, jid)
    try:  # scontrol ignores the SIGTERM with which SLURM stops this job once it is requeued, to report success
        rc = subprocess.call(["scontrol", "requeue", jid],
                             preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
    except OSError as err:
        rc = f"{err}"
    if rc == 0:
        log.info("requeued SLURM job %s", jid)
    else:
        log.warning("scontrol requeue %s failed (%s): the job is not requeued", jid, rc)


def install_requeue_handler() -> bool:
    """Route :data:`REQUEUE_SIGNAL` to :func:`requeue` for the rest of this process (main thread only; a handler
    someone else installed is kept). Returns whether the signal is now handled by :func:`requeue`."""
    if threading.current_thread() is not threading.main_thread():
        return False
    current = signal.getsignal(REQUEUE_SIGNAL)
    if current is requeue:
        return True
    if current not in (None, signal.SIG_DFL):
        return False
    signal.signal(REQUEUE_SIGNAL, requeue)
    return True


def cluster_plugins() -> list[Any]:
    """The cluster environment every musclelab ``Trainer`` gets: in a SLURM job, Lightning's SLURM environment
    without its auto-requeue (no ``hpc_ckpt_*.ckpt``), with :func:`requeue` handling the signal; else none."""
    if not in_slurm_job():
        return []
    from lightning_fabric.plugins.environments import SLURMEnvironment

    install_requeue_handler()
    if not SLURMEnvironment.detect():  # a batch script without srun: Lightning does not use its SLURM environment
        return []
    return [SLURMEnvironment(auto_requeue=False, requeue_signal=REQUEUE_SIGNAL)]
