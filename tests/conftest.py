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


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)
