"""The cluster path on a real one-node SLURM cluster (``.ci/slurm_up.sh``): a two-job sweep through
``hydra/launcher=slurm``; one job gets SLURM's pre-timeout signal (``scancel --signal=USR1 --full``), requeues,
continues from its last epoch and must end with exactly the per-epoch metrics, test result and checkpoint files of
the job left alone (same config). Skipped where ``slurmctld`` is not installed or the cluster cannot be started.

The cluster test is marked ``cluster``: outside the fast suite (about 2.5 min of job start-ups), run by ``.ci/run`` as
its own step (``python -m pytest -m cluster``); the unit tests of the requeue path below run in the fast suite."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY
from musclelab.outputs.status import read_status

REPO = Path(__file__).resolve().parents[1]
MAX_EPOCHS = 8  # ~0.5 s each here: the signal after epoch 1 lands well before the end
# both jobs the same config (seed=0 twice): job 0 is the uninterrupted reference of job 1 and of a single run
TRAIN = [*TINY, "logger=none", "cpu_threads=1", f"trainer.max_epochs={MAX_EPOCHS}"]
SWEEP = [*TRAIN, "seed=0,0", "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=null",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]

needs_slurm = pytest.mark.skipif(shutil.which("slurmctld") is None,
                                 reason="slurmctld not installed (.ci/slurm_up.sh installs it, as root)")


def _sh(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout


@pytest.fixture
def batch_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as task 3 of SLURM array job 41 (a Hydra sweep job), for tests without a cluster."""
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    for key, value in {"SLURM_JOB_ID": "44", "SLURM_ARRAY_JOB_ID": "41", "SLURM_ARRAY_TASK_ID": "3",
                       "SLURM_JOB_NAME": "cli", "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}.items():
        monkeypatch.setenv(key, value)


def test_finished_run_keeps_no_lightning_hpc_checkpoint(tmp_path: Path) -> None:
    from musclelab.checkpoint_policy import finalize_checkpoints

    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for f in (ckpts / "best.ckpt", ckpts / "last.ckpt", tmp_path / "hpc_ckpt_1.ckpt", tmp_path / "hpc_ckpt_2.ckpt"):
        f.write_bytes(b"x" * 10)
    assert finalize_checkpoints(ckpts, keep_last=True) == 20
    assert sorted(p.name for p in tmp_path.rglob("*.ckpt")) == ["best.ckpt", "last.ckpt"]


def test_single_run_directory_of_a_slurm_job_is_named_by_its_job_id(batch_job: None, monkeypatch) -> None:
    """A requeued batch job resolves ``hydra.run.dir`` again: by job id it finds its run; by time it would not."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from musclelab.compose import config_dir

    def run_dir() -> str:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("train", return_hydra_config=True)
        return str(OmegaConf.select(cfg, "hydra.run.dir"))

    assert run_dir().endswith("outputs/train/runs/slurm-41_3")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    assert run_dir().endswith("outputs/train/runs/slurm-44")
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # salloc: not requeueable, a new directory per run
    assert re.search(r"runs/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}$", run_dir())


def test_requeue_signal_asks_slurm_once_and_writes_no_checkpoint(batch_job: None, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGUSR1 in a SLURM job: ``scontrol requeue <array>_<task>`` once (a fake scontrol records its arguments);
    every musclelab Trainer has Lightning's auto-requeue (its mid-epoch hpc checkpoint) off."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    from musclelab import slurm

    calls = tmp_path / "calls.txt"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(slurm, "_requeued", False)
    old = signal.getsignal(signal.SIGUSR1)
    try:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        env = slurm.cluster_plugins()
        assert len(env) == 1 and isinstance(env[0], SLURMEnvironment) and not env[0].auto_requeue
        assert signal.getsignal(signal.SIGUSR1) is slurm.requeue
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR1)  # scancel --full and srun's forwarding: the same signal twice
        time.sleep(0.2)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert calls.read_text().splitlines() == ["requeue 41_3"]


@pytest.fixture(scope="module")
def slurm_cluster() -> None:
    """The one-node cluster, started by ``.ci/slurm_up.sh`` unless ``sinfo`` already shows a node idle."""
    if "idle" in _sh("sinfo", "-h", "-o", "%t").split():
        return
    if os.geteuid() != 0:
        pytest.skip("no idle SLURM node and not root: run .ci/slurm_up.sh as root")
    proc = subprocess.run([str(REPO / ".ci" / "slurm_up.sh")], capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "SLURM_UP_NO_INSTALL": "1"})
    if proc.returncode != 0:
        pytest.skip(f"one-node SLURM cluster not available: {proc.stdout.strip()} {proc.stderr.strip()}")


def _wait(cond, what: str, timeout: float, driver: subprocess.Popen | None) -> None:
    t0 = time.monotonic()
    while not cond():
        if driver is not None and driver.poll() is not None:
            raise AssertionError(f"the sweep ended before {what}: {driver.communicate()}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def _epochs_done(run: Path) -> int:
    try:
        return len(pd.read_csv(run / "metrics.csv"))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


def _sbatch_single_run(cwd: Path, env: dict[str, str]) -> str:
    """Job id of ``musclelab train`` (job 0's config, default run directory) submitted as a plain batch job."""
    run = [*TRAIN, "seed=0"]
    wrap = " ".join(["exec", shlex.quote(sys.executable), "-m", "musclelab.cli", "train", *map(shlex.quote, run)])
    out = subprocess.run(["sbatch", "--parsable", "--requeue", "--cpus-per-task=1", "--mem=1G", "--time=10",
                          "--signal=B:USR1@120", f"--chdir={cwd}", f"--output={cwd}/single.log", "--open-mode=append",
                          "--job-name=musclelab-single", f"--wrap={wrap}"],
                         capture_output=True, text=True, check=True, env=env, timeout=30).stdout
    return out.strip().split(";")[0]


def _wait_for_epoch_then_signal(run_dir, job: str, driver: subprocess.Popen | None) -> int:
    """Send ``job`` SLURM's pre-timeout signal once its first epoch's ``last.ckpt`` is written; returns the
    epochs it had finished then."""
    _wait(lambda: 1 <= _epochs_done(run_dir()) and (run_dir() / "checkpoints" / "last.ckpt").exists(),
          f"job {job}'s first epoch", 300, driver)
    done = _epochs_done(run_dir())
    assert done < MAX_EPOCHS - 1, f"job {job} trained too fast to be interrupted mid-run"
    subprocess.run(["scancel", "--signal=USR1", "--full", job], check=True, timeout=30)
    return done


def _single_run_dir(cwd: Path) -> Path:
    runs = sorted((cwd / "outputs" / "train" / "runs").glob("*"))
    return runs[0] if runs else cwd / "none-yet"


def _assert_same_run(ref: Path, run: Path) -> None:
    for r in (ref, run):
        assert read_status(r) == "complete", (r / "run_status.json").read_text()
        assert not list(r.rglob("hpc_ckpt_*.ckpt")), f"Lightning's hpc checkpoints left in {r}"
        assert sorted(p.name for p in (r / "checkpoints").iterdir()) == ["best.ckpt"]
    a, b = (pd.read_csv(r / "metrics.csv").drop(columns="time_s") for r in (ref, run))
    assert list(b["epoch"]) == list(range(MAX_EPOCHS))  # one row per epoch: none lost, none repeated
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(*(pd.read_csv(r / "test_cases.csv") for r in (ref, run)))
    s_ref, s_run = (json.loads((r / "test_summary.json").read_text()) for r in (ref, run))
    assert s_ref["metrics"] == s_run["metrics"]
    assert Path(s_run["checkpoint"]) == run / "checkpoints" / "best.ckpt"


@pytest.mark.cluster
@needs_slurm
def test_requeued_jobs_match_the_uninterrupted_job(slurm_cluster: None, tmp_path: Path) -> None:
    """Sweep job 1 and a single run (``sbatch``), each sent USR1 mid-training, requeue and end exactly like sweep
    job 0 (same config, left alone); the single run continues in its own directory."""
    sweep, single = tmp_path / "sweep", tmp_path / "single"
    single.mkdir()
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    driver = subprocess.Popen([sys.executable, "-m", "musclelab.cli", "train", "-m", *SWEEP,
                               f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    array_id, single_id = None, None
    try:
        def submitted() -> bool:
            nonlocal array_id
            names = [p.name for p in (sweep / ".submitit").glob("*_1")] if (sweep / ".submitit").is_dir() else []
            array_id = names[0].split("_")[0] if names else None
            return array_id is not None

        _wait(submitted, "the array job's submission", 120, driver)
        single_id = _sbatch_single_run(single, env)  # queued behind the sweep's two jobs (2 CPUs)
        _wait_for_epoch_then_signal(lambda: sweep / "1", f"{array_id}_1", driver)
        _wait_for_epoch_then_signal(lambda: _single_run_dir(single), single_id, None)
        out, _ = driver.communicate(timeout=600)
        _wait(lambda: "COMPLETED" in _sh("scontrol", "show", "job", single_id) or "FAILED" in _sh(
            "scontrol", "show", "job", single_id), "the single run's end", 300, driver=None)
    finally:
        if driver.poll() is None:
            driver.send_signal(signal.SIGINT)
        for job in (array_id, single_id):
            if job is not None:
                subprocess.run(["scancel", job], timeout=30)
    assert driver.returncode == 0, out

    for job in (f"{array_id}_1", single_id):
        info = _sh("scontrol", "show", "job", job)
        assert re.search(r"Restarts=1\b", info) and "JobState=COMPLETED" in info, info  # requeued once, then done
    script = next((sweep / ".submitit").rglob("*_submission.sh")).read_text()
    assert "#SBATCH --signal=USR1@120" in script and "trap 'true' USR1" in script  # the preset's pre-timeout signal
    log = "".join(p.read_text() for p in (sweep / ".submitit" / f"{array_id}_1").glob("*_log.*"))
    assert "sweep job 1: continuing the interrupted run" in log, log[-3000:]
    single_log = (single / "single.log").read_text()
    assert f"SLURM job {single_id}: continuing the interrupted run" in single_log, single_log[-3000:]

    runs = sorted((single / "outputs" / "train" / "runs").iterdir())
    assert [r.name for r in runs] == [f"slurm-{single_id}"]  # the requeued single run stayed in its directory
    _assert_same_run(sweep / "0", sweep / "1")
    _assert_same_run(sweep / "0", runs[0])
