"""Shared fixtures: compose the real Hydra config for tiny, fast runs that write into tmp_path."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from musclelab.compose import config_dir

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# a tiny phantom run: 24 subjects at 64x64, a small UNet, CPU
TINY = [
    "data.img_size=64",
    "data.source.n_cases=24",
    "data.batch_size=4",
    "model=unet",
    "model.params.channels=[8,16,32]",
    "model.params.strides=[2,2]",
    "model.params.num_res_units=1",
    "trainer.max_epochs=1",
    "callbacks.progress_bar=false",
    "callbacks.overlay_cases=2",
]


def compose_cfg(run_dir: Path, overrides: list[str] | None = None) -> DictConfig:
    """The real training config with the tiny overrides, writing into ``run_dir``.

    Choosing another model (``model=...``) drops the tiny UNet's parameters; giving
    ``data.source.n_volumes`` (the abdominal phantom's size) drops the L3 phantom's ``n_cases``.
    """
    overrides = list(overrides or [])
    base = TINY
    if any(o.startswith("data.source.n_volumes=") for o in overrides):  # the 3D abdominal phantom: no n_cases
        base = [o for o in base if not o.startswith("data.source.n_cases=")]
    if any(o.startswith("model=") for o in overrides):
        base = [o for o in base if not o.startswith(("model=", "model.params."))]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=[*base, f"paths.output_dir={run_dir}", *overrides])


def run_cli(args: list[str], cwd: Path, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the installed ``musclelab`` console script in a subprocess (killed after ``timeout`` s) and return
    the result."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    script = Path(sys.executable).parent / "musclelab"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "musclelab.cli"]
    proc = subprocess.run([*cmd, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"musclelab {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_cli_here(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """``musclelab <args>`` in this process: the same entry point as :func:`run_cli` (:func:`musclelab.cli.main`,
    Hydra's app, its exit status, stdout and stderr), without the ~5 s start-up of a new Python importing torch,
    Lightning and MONAI. For tests whose promise is not the process boundary; signals, the console script and
    worker processes keep :func:`run_cli`. A ``SystemExit`` is the exit status (a message: printed, status 1, as
    Python does); any other exception is its traceback on stderr and status 1. What a run changes in this process
    is put back: cwd, argv, environment, logging handlers and levels, signal handlers, torch's thread count and
    Hydra's global state."""
    import contextlib
    import io
    import logging
    import signal
    import traceback

    import torch
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from musclelab.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_cwd, saved_env = list(sys.argv), os.getcwd(), dict(os.environ)
    loggers = [logging.getLogger(), *(lg for lg in logging.root.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    saved_logging = {lg: (list(lg.handlers), lg.level, lg.propagate, lg.disabled) for lg in loggers}
    signals = [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1]
    saved_signals = {s: signal.getsignal(s) for s in signals}
    saved_threads = torch.get_num_threads()
    code = 0
    os.environ.update({"WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"})
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exit_:
                if exit_.code is None or isinstance(exit_.code, int):
                    code = int(exit_.code or 0)
                else:
                    print(exit_.code, file=sys.stderr)
                    code = 1
            except Exception:  # noqa: BLE001 -- what the interpreter would print and exit with
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        for lg in [logging.getLogger(), *(lg for lg in logging.root.manager.loggerDict.values()
                                          if isinstance(lg, logging.Logger))]:
            handlers, level, propagate, disabled = saved_logging.get(lg, ([], logging.NOTSET, True, False))
            for h in lg.handlers:
                if h not in handlers:
                    h.close()
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate, lg.disabled = propagate, disabled
        for s, handler in saved_signals.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        torch.set_num_threads(saved_threads)
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
    proc = subprocess.CompletedProcess(["musclelab", *args], code, out.getvalue(), err.getvalue())
    if check and proc.returncode != 0:
        raise AssertionError(f"musclelab {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)
