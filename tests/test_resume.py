"""Reliability with real processes: SIGKILL + resume is exact, SIGTERM is `interrupted`, complete runs and sweep
jobs are not redone, NaN losses stop the run, checkpoints are written atomically."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TINY, compose_cfg, run_cli, run_cli_here  # noqa: E402

from musclelab.outputs.status import read_status  # noqa: E402

# a tiny run whose epochs take about a second on one thread
RUN = [*TINY, "cpu_threads=1", "seed=3", "trainer.max_epochs=5", "data.source.n_cases=20"]


def _cli_cmd() -> list[str]:
    script = Path(sys.executable).parent / "musclelab"
    return [str(script)] if script.exists() else [sys.executable, "-m", "musclelab.cli"]


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([*_cli_cmd(), *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _wait_rows(run_dir: Path, proc: subprocess.Popen, n: int, timeout: float = 240) -> None:
    """Wait until ``metrics.csv`` has ``n`` epoch rows (the process still running)."""
    t0 = time.time()
    path = run_dir / "metrics.csv"
    while time.time() - t0 < timeout:
        if path.exists() and len(path.read_text().strip().splitlines()) - 1 >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"run ended before epoch {n}: {proc.stdout.read()[-2000:]}")
        time.sleep(0.02)
    pytest.fail("timed out waiting for metrics.csv")


def _metrics(run_dir: Path) -> tuple[pd.DataFrame, dict[str, float]]:
    rows = pd.read_csv(run_dir / "metrics.csv").drop(columns=["time_s"])
    summary = json.loads((run_dir / "test_summary.json").read_text())["metrics"]
    return rows, {k: v["mean"] for k, v in summary.items() if v["mean"] is not None}


def _max_diff(rows: pd.DataFrame, ref: pd.DataFrame) -> float:
    """Largest difference of two metrics tables with the same columns and the same empty cells (a per-step
    learning-rate column is empty in the first epoch's row of both)."""
    assert list(rows.columns) == list(ref.columns)
    assert (rows.isna().to_numpy() == ref.isna().to_numpy()).all(), "empty cells differ"
    return float(np.nanmax((rows - ref).abs().to_numpy()))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run (in this process: the killed runs below are real processes)."""
    d = tmp_path_factory.mktemp("ref") / "run"
    run_cli_here(["train", *RUN, f"hydra.run.dir={d}"], cwd=d.parent)
    return d


def test_sigkill_then_resume_is_exact(tmp_path, reference):
    run = tmp_path / "run"
    proc = _start(["train", *RUN, f"hydra.run.dir={run}"], tmp_path)
    _wait_rows(run, proc, 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert read_status(run) == "running" and (run / "checkpoints" / "last.ckpt").exists()
    torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)  # never truncated, plain tensors only
    out = run_cli_here(["train", f"resume={run}"], cwd=tmp_path)
    assert "Restored all states" in out.stdout + out.stderr
    assert read_status(run) == "complete"
    rows_ref, test_ref = _metrics(reference)
    rows, test = _metrics(run)
    assert len(rows) == len(rows_ref) == 5
    diff = _max_diff(rows, rows_ref)
    assert diff <= 1e-6, f"metrics.csv differs by {diff}"
    assert test.keys() == test_ref.keys()
    assert max(abs(test[k] - test_ref[k]) for k in test) <= 1e-6

    # resuming the complete run: says so, trains nothing, changes nothing
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()}
    out = run_cli_here(["train", f"resume={run}"], cwd=tmp_path)
    assert "already complete: nothing to resume" in out.stdout
    after = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if not k.endswith(".log")} == \
        {k: v for k, v in before.items() if not k.endswith(".log")}


def test_sigterm_marks_interrupted_and_resumes(tmp_path, reference):
    run = tmp_path / "run"
    proc = _start(["train", *RUN, f"hydra.run.dir={run}"], tmp_path)
    _wait_rows(run, proc, 1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    status = json.loads((run / "run_status.json").read_text())
    assert status["status"] == "interrupted", (status, out[-2000:])
    assert status["resume_from"].endswith("last.ckpt") and "Traceback" not in out
    run_cli_here(["train", f"resume={run}"], cwd=tmp_path)
    rows_ref, test_ref = _metrics(reference)
    rows, test = _metrics(run)
    assert _max_diff(rows, rows_ref) <= 1e-6
    assert max(abs(test[k] - test_ref[k]) for k in test) <= 1e-6


def test_sigusr1_outside_slurm_is_a_preemption(tmp_path):
    run = tmp_path / "run"
    proc = _start(["train", *RUN, f"hydra.run.dir={run}"], tmp_path)
    _wait_rows(run, proc, 1)
    proc.send_signal(signal.SIGUSR1)
    proc.communicate(timeout=120)
    assert read_status(run) == "interrupted"


def test_nan_loss_stops_with_epoch_and_step(tmp_path):
    from musclelab.train import train

    cfg = compose_cfg(tmp_path, ["optim.lr=10", "optim.name=sgd", "+optim.momentum=0.99", "optim.scheduler=none",
                                 "trainer.max_epochs=3", "loss=ce"])
    with pytest.raises(Exception, match=r"training loss is (nan|inf) at epoch \d+, step \d+ .*lower optim.lr"):
        train(cfg)
    assert read_status(tmp_path) == "failed"


def test_atomic_checkpoint_io_keeps_the_old_file(tmp_path, monkeypatch):
    from musclelab.resume import AtomicCheckpointIO

    io_ = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io_.save_checkpoint({"w": torch.ones(3)}, path)

    def boom(*a, **k):
        raise KeyboardInterrupt  # a kill in the middle of the write

    monkeypatch.setattr("musclelab.io.os.replace", boom)
    with pytest.raises(KeyboardInterrupt):
        io_.save_checkpoint({"w": torch.zeros(3)}, path)
    assert torch.equal(io_.load_checkpoint(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left


def _sweep(tmp_path: Path, sweep: Path, extra: list[str], check: bool = True) -> subprocess.CompletedProcess:
    args = ["train", "-m", *RUN, "trainer.max_epochs=2", "seed=1,2,3", "callbacks.checkpoint.keep_last=true",
            f"hydra.sweep.dir={sweep}", *extra]
    if "hydra/launcher=local_parallel" in extra:  # worker processes: the real command
        return run_cli(args, cwd=tmp_path, check=check, timeout=600)
    return run_cli_here(args, cwd=tmp_path, check=check)


@pytest.mark.parametrize("launcher", ["basic", pytest.param("local_parallel", marks=pytest.mark.slow)])
def test_relaunched_sweep_skips_resumes_and_refuses_changes(tmp_path, launcher):
    sweep = tmp_path / "sweep"
    extra = [] if launcher == "basic" else ["hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2"]
    _sweep(tmp_path, sweep, extra)
    assert all(read_status(sweep / j) == "complete" for j in "012")
    done = {j: (sweep / j / "test_summary.json").stat().st_mtime_ns for j in "012"}
    # job 1 as a SIGTERM leaves it (interrupted, last.ckpt kept), job 2 failed
    (sweep / "1" / "run_status.json").write_text(json.dumps({"status": "interrupted"}))
    (sweep / "2" / "run_status.json").write_text(json.dumps({"status": "failed"}))
    (sweep / "2" / "checkpoints" / "last.ckpt").unlink()  # failed before its first checkpoint: trained again

    out = _sweep(tmp_path, sweep, extra)
    log = out.stdout + out.stderr + "".join(p.read_text() for p in sweep.glob("*/train.log"))
    assert "sweep job 0" in log and "complete with the same config" in log
    assert "sweep job 1: continuing the interrupted run" in log
    assert "sweep job 2: previous attempt failed; training it again" in log
    assert (sweep / "0" / "test_summary.json").stat().st_mtime_ns == done["0"]  # not overwritten
    assert all(read_status(sweep / j) == "complete" for j in "012")
    assert (sweep / "2" / "test_summary.json").stat().st_mtime_ns != done["2"]

    out = _sweep(tmp_path, sweep, [*extra, "optim.lr=0.001"], check=False)
    assert out.returncode != 0
    assert "is complete with a different config: optim.lr differ" in out.stdout + out.stderr
    assert (sweep / "0" / "test_summary.json").stat().st_mtime_ns == done["0"]
    assert "optim.lr=0.001" not in (sweep / "0" / ".hydra" / "overrides.yaml").read_text()  # put back


PRETEXT_CHILD = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
from musclelab.cli import main
main(["pretrain", *sys.argv[1:]])
"""


@pytest.mark.slow  # two processes training a ResNet-50 trunk: about 2 min on 2 busy cores
def test_two_processes_build_the_pretext_cache_once(tmp_path):
    cache = tmp_path / "cache"
    args = ["model=fcn_resnet50", "data.img_size=32", "data.channels=3", "init=autoencoder", "init.pretext.epochs=2",
            "init.pretext.patience=1", "init.pretext.batch_size=4", "data.source.n_cases=16",
            "callbacks.progress_bar=false",
            f"paths.cache_dir={cache}", "cpu_threads=1"]
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", PRETEXT_CHILD, *args], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum(o.count(": pretraining ") for o in outs) == 1, outs  # trained once ...
    trunks = {line.split("trunk weights ")[1] for o in outs for line in o.splitlines() if "trunk weights " in line}
    assert len(trunks) == 1  # ... and both got the same file
    entries = sorted(p.name for p in (cache / "pretext").iterdir())
    assert len([e for e in entries if not e.endswith(".lock")]) == 1, entries  # no temp dir left


def test_pretext_build_drops_what_a_killed_build_left(tmp_path):
    from musclelab.pretext.pretrain import _drop_partial

    final = tmp_path / "pretext" / "autoencoder-0123456789abcdef"
    (tmp_path / "pretext" / ".autoencoder-0123456789abcdef.x1y2").mkdir(parents=True)  # a killed build's temp dir
    final.mkdir()
    (final / "trunk.pt").write_bytes(b"trunc")  # a directory without pretext.json is never trusted
    other = tmp_path / "pretext" / "jigsaw-0123456789abcdef"
    other.mkdir()
    _drop_partial(final)
    assert sorted(p.name for p in (tmp_path / "pretext").iterdir()) == ["jigsaw-0123456789abcdef"]


STAGE = [*TINY, "logger=none", "data.source.n_cases=16", "cpu_threads=1", "trainer.max_epochs=4", "seed=3"]
def _stage_plans(root: Path, stage_root: Path):
    from musclelab.studies.chain import plan_chain

    base = compose_cfg(root / "unused", STAGE)
    sites = {s: compose_cfg(root / "unused", [*STAGE, f"data.source.site={s}"]).data for s in ("a", "b")}
    return plan_chain(base, ["a", "b"], sites, stage_root)


def test_chain_stage_killed_then_resumed_is_exact(tmp_path):
    import shutil

    from musclelab.studies.chain import ensure_stage

    plans = _stage_plans(tmp_path, tmp_path / "stages")
    ensure_stage(plans[0])
    shutil.copytree(plans[0].run_dir, tmp_path / "ref" / plans[0].run_dir.name)  # the same stage 0 for the reference
    child = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; import test_resume as T; "
             "from musclelab.studies.chain import ensure_stage; "
             "ensure_stage(T._stage_plans(Path(sys.argv[2]), Path(sys.argv[2]) / 'stages')[1])")
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.Popen([sys.executable, "-c", child, str(Path(__file__).parent), str(tmp_path)], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_rows(plans[1].run_dir, proc, 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert read_status(plans[1].run_dir) == "running"
    resumed = ensure_stage(plans[1])
    assert resumed.resumed and read_status(plans[1].run_dir) == "complete"
    ref = ensure_stage(_stage_plans(tmp_path, tmp_path / "ref")[1])
    assert not ref.resumed
    a = pd.read_csv(plans[1].run_dir / "metrics.csv").drop(columns=["time_s"])
    b = pd.read_csv(ref.run_dir / "metrics.csv").drop(columns=["time_s"])
    assert len(a) == len(b) == 4 and (a - b).abs().to_numpy().max() <= 1e-6


def test_slurm_requeue_is_wired(monkeypatch):
    from lightning_fabric.plugins.environments import SLURMEnvironment

    from musclelab import slurm
    from musclelab.resume import AtomicCheckpointIO, trainer_plugins

    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert [type(p) for p in trainer_plugins()] == [AtomicCheckpointIO]
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_JOB_NAME", "musclelab")
    old = signal.getsignal(signal.SIGUSR1)
    try:
        # a fresh process: earlier in-process runs (Lightning's signal connector) may have left a handler, which
        # install_requeue_handler rightly keeps
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        env = [p for p in trainer_plugins() if isinstance(p, SLURMEnvironment)]
        # musclelab requeues on SIGUSR1 itself; Lightning's auto-requeue (which writes hpc_ckpt_*.ckpt) is off
        assert len(env) == 1 and not env[0].auto_requeue and env[0].requeue_signal == signal.SIGUSR1
        assert signal.getsignal(signal.SIGUSR1) is slurm.requeue
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_nan_voxels_are_refused_before_training(tmp_path):
    import fake_datasets as F

    from musclelab.compose import compose_train_config
    from musclelab.errors import ConfigError
    from musclelab.train import train

    fd = F.make_fake_btcv(tmp_path / "data", n=3)
    F.make_nan_image(fd.image_files[fd.ids[0]])
    run = tmp_path / "run"
    cfg = compose_train_config(["data=btcv", f"data.root={fd.root}", "data.img_size=32", "model=unet",
                                "model.params.channels=[8,16]", "model.params.strides=[2]", "logger=none",
                                f"paths.cache_dir={tmp_path / 'cache'}", f"paths.output_dir={run}",
                                "callbacks.progress_bar=false", "trainer.max_epochs=1"])
    with pytest.raises(ConfigError, match="NaN"):
        train(cfg)
    assert read_status(run) == "failed" and not (run / "checkpoints").exists()
