"""Every experiment config composes and runs one training step with its own model and init.

Each experiment runs with the model and init it composes to; every other model and init its sweep names
(``hydra.sweeper.params``) runs once too, in the first experiment that names it. Only the data shrink (a few
cases, one batch of two, one train / val / test batch, small images where the architecture allows); the
networks keep their configured size. ImageNet and COCO inits read weight files the tests generate from
torchvision's constructors (``init.weights_path``: the offline path), and ``init=checkpoint`` transfers from a
run of the experiment that writes its source.
"""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from musclelab.compose import config_dir
from musclelab.outputs.status import read_status
from musclelab.train import train
from musclelab.transfer import REPORT_FILE

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))

# one step on little data, on the CPU (a GPU experiment's trainer preset too): the data shrink, the models do not
ONE_STEP = ["trainer=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1", "data.batch_size=2", "data.eval_batch_size=2", "logger=none",
            "callbacks.overlay_cases=1", "callbacks.progress_bar=false", "cpu_threads=1"]
# per data source: how to make it small (the 3D sources count volumes, the L3 phantom cases)
SMALL_DATA = {"abdomen_phantom": ["data.source.n_volumes=4", "data.source.margin=0"],
              "lumbar_phantom": ["data.source.n_volumes=6"], "thigh_phantom": ["data.source.n_volumes=6", "data.source.size=64",
                                "data.source.n_slices=48", "data.spacing=[10.0,7.0,7.0]", "data.patch_size=[32,32,32]",
                                "data.patches_per_volume=1"],
              "phantom": ["data.source.n_cases=24"]}
FIXED_SIZE = {"paratranscnn": 224}  # architectures that take one input size only
SMALL_SIZE = 64
# pretext stages: one short epoch
PRETEXT_SHORT = ["init.pretext.epochs=1", "init.pretext.patience=1"]


@cache
def composed(name: str) -> DictConfig:
    """Experiment ``name`` composed as a multirun composes it (with its sweep)."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=[f"experiment={name}"], return_hydra_config=True)


def _values(cfg: DictConfig, key: str) -> list[str]:
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    raw = params.get(key)
    return [v.strip() for v in str(raw).split(",") if v.strip()] if raw is not None else []


def cases() -> list[tuple[str, str, str]]:
    """(experiment, model, init): each experiment's own, then each swept model and init not run before."""
    def key(c: DictConfig) -> tuple[str, str, int]:   # a 2D and a 3D network of one name are different models
        return (str(c.model.name), str(OmegaConf.select(c, "init.name") or "scratch"),
                int(OmegaConf.select(c, "data.spatial_dims") or 2))

    out, seen = [], set()
    for name in EXPERIMENTS:
        cfg = composed(name)
        out.append((name, str(cfg.model.name), key(cfg)[1]))
        seen.add(key(cfg))
        for model in _values(cfg, "model"):
            k = key(_compose([f"experiment={name}", f"model={model}"]))
            if k not in seen:
                seen.add(k)
                out.append((name, model, k[1]))
        for init in _values(cfg, "init"):
            k = (key(cfg)[0], init, key(cfg)[2])
            if k not in seen:
                seen.add(k)
                out.append((name, k[0], init))
    return out


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory) -> dict[str, Path]:
    """Torchvision-layout weight files with freshly initialised tensors, for the imagenet / coco inits: the stem
    and first stage of each backbone (and the COCO head), enough to check transfer by name and keep files small."""
    import torchvision

    root = tmp_path_factory.mktemp("weights")
    keep = ("conv1.", "bn1.", "layer1.", "backbone.conv1.", "backbone.bn1.", "backbone.layer1.", "classifier.")
    nets = {"resnet34": torchvision.models.resnet34(), "resnet50": torchvision.models.resnet50(),
            "resnet101": torchvision.models.resnet101(),
            "fcn_resnet101": torchvision.models.segmentation.fcn_resnet101(weights=None, weights_backbone=None,
                                                                            aux_loss=True, num_classes=21),
            "fcn_resnet50": torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None,
                                                                          aux_loss=True, num_classes=21)}
    out = {}
    for name, net in nets.items():
        out[name] = root / f"{name}.pth"
        torch.save({k: v for k, v in net.state_dict().items() if k.startswith(keep)}, out[name])
    return out


def _weights_for(cfg: DictConfig, files: dict[str, Path]) -> Path:
    """The generated file matching the torchvision weight name the init asks for."""
    name = str(OmegaConf.select(cfg, "init.weights") or "").lower()
    arch = next((a for a in files if name.startswith(f"{a}_weights")), None)
    assert arch is not None, f"no generated weights for init.weights={name!r}"
    return files[arch]


def _compose(overrides_: list[str]) -> DictConfig:
    return _compose_cached(tuple(overrides_)).copy()


@cache
def _compose_cached(overrides_: tuple[str, ...]) -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides_))


def overrides(name: str, model: str, init: str, run_root: Path, files: dict[str, Path]) -> list[str]:
    """The command-line overrides that run (experiment, model, init) for one step on little data."""
    out = [f"experiment={name}", f"model={model}", *ONE_STEP]
    cfg = _compose(out)
    if (OmegaConf.select(cfg, "init.name") or "scratch") != init:
        out.append(f"init={init}")
        cfg = _compose(out)
    data = str(cfg.data.name)
    out += SMALL_DATA.get(data, [])
    if data == "phantom" and OmegaConf.select(cfg, "data.source.observer_cases") is not None:
        out.append("data.source.observer_cases=6")
    if "img_size" in cfg.data:   # 2D slices (3D sources are sized by their volumes and patches)
        out.append(f"data.img_size={FIXED_SIZE.get(model, min(int(cfg.data.img_size), SMALL_SIZE))}")
    if init in ("imagenet", "coco") and not cfg.init.get("weights_path"):
        # an experiment that gives an architecture its own pretrained weights (yoon2024_muscle: `pretrained`)
        key = f"pretrained.{model}.weights_path" if OmegaConf.select(cfg, f"pretrained.{model}") else \
            "init.weights_path"
        out.append(f"{key}={_weights_for(cfg, files)}")
    if init in ("autoencoder", "jigsaw"):
        out += [*PRETEXT_SHORT, f"paths.cache_dir={run_root / 'cache'}"]
    given = cfg.init.get("checkpoint")
    if init == "checkpoint" and not (given and Path(str(given)).exists()):
        # null, or the experiment's source_run (mcsweeney2022_smoke) that only its *_source_smoke run writes
        out.append(f"init.checkpoint={source_run(run_root, files)}")
    return out


def run_cfg(run_dir: Path, overrides_: list[str]) -> DictConfig:
    """The training config of ``overrides_`` writing into ``run_dir``."""
    return _compose([*overrides_, f"paths.output_dir={run_dir}"])


def source_run(run_root: Path, files: dict[str, Path]) -> Path:
    """A one-step run of the experiment that writes the checkpoint source (``*_source_smoke``), made once."""
    run_dir = run_root / "source"
    if not (run_dir / "checkpoints" / "best.ckpt").exists():
        source = next(e for e in EXPERIMENTS if e.endswith("source_smoke"))
        train(run_cfg(run_dir, overrides(source, str(composed(source).model.name), "scratch", run_root, files)))
    return run_dir


@pytest.fixture(scope="module")
def run_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("experiments")


@pytest.mark.parametrize(("name", "model", "init"), cases(), ids=lambda v: str(v))
def test_experiment_runs_one_step(run_root: Path, weight_files, name: str, model: str, init: str) -> None:
    run_dir = run_root / f"{name}-{model}-{init}"
    cfg = run_cfg(run_dir, overrides(name, model, init, run_root, weight_files))
    assert cfg.init.name == init
    train(cfg)
    assert read_status(run_dir) == "complete"
    if init != "scratch" and model != "threshold":
        report = json.loads((run_dir / REPORT_FILE).read_text())
        assert report["counts"]["transferred"] > 0


def test_experiments_cover_every_swept_model_and_init() -> None:
    """The parametrisation above is not empty-handed: the Yoon architectures and McSweeney inits are in it."""
    runs = cases()
    models = {m for _, m, _ in runs}
    inits = {i for _, _, i in runs}
    assert {"vnet", "unetr", "swin_unetr", "paratranscnn", "threshold", "fcn_resnet101"} <= models
    assert {"scratch", "imagenet", "coco", "autoencoder", "jigsaw", "checkpoint"} <= inits


def test_individual_muscles_reports_every_class(run_root: Path, weight_files) -> None:
    run_dir = run_root / "individual_muscles-classes"
    train(run_cfg(run_dir, overrides("individual_muscles", "unet", "scratch", run_root, weight_files)))
    cases_ = pd.read_csv(run_dir / "test_cases.csv")
    for muscle in ("erector_spinae", "quadratus_lumborum", "psoas_major", "obliques", "rectus_abdominis"):
        assert f"dice_{muscle}" in cases_ and f"hd95_{muscle}" in cases_
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert "val_dice_psoas_major" in metrics


def test_domain_shift_tests_on_the_other_site(run_root: Path, weight_files) -> None:
    run_dir = run_root / "domain_shift-sites"
    train(run_cfg(run_dir, [*overrides("domain_shift", "unet", "scratch", run_root, weight_files),
                                "data.source.n_test_cases=6", "trainer.limit_test_batches=1.0"]))
    manifest = pd.read_csv(run_dir / "split_manifest.csv")
    test_ids = manifest.loc[manifest.split == "test", "patient_id"]
    assert len(test_ids) == 6 and test_ids.str.startswith("phantom-b-").all()
    assert manifest.loc[manifest.split != "test", "patient_id"].str.startswith("phantom-a-").all()


# the experiments' phantom settings (conf/experiment_phantom/) apply to their phantom only: the same experiment on
# a user's folder (the README's `experiment=<x> data=<source> data.root=DIR`) composes without phantom parameters
USER_SOURCE = {"phantom": "l3_folder", "lumbar_phantom": "msd", "thigh_phantom": "msd", "abdomen_phantom": "lits"}


def _source_params_unknown_to(cfg: DictConfig) -> list[str]:
    import inspect

    from musclelab.data.sources import SUPPLIED, source_form

    name, dims = str(cfg.data.name), int(cfg.data.spatial_dims)
    params = inspect.signature(source_form(name, dims)).parameters
    known = {k for k, p in params.items() if p.kind is not p.VAR_KEYWORD}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):  # a reader's volume form accepts (and ignores)
        known |= set(inspect.signature(source_form(name, 2)).parameters)  # its data yaml's slice-only keys
    known -= set(SUPPLIED)
    return sorted(set(cfg.data.get("source") or {}) - known)


@pytest.mark.parametrize("name", sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml")))
def test_experiment_runs_on_a_user_folder_without_phantom_parameters(name: str) -> None:
    from musclelab.compose import compose_train_config

    own = compose_train_config([f"experiment={name}"])
    assert _source_params_unknown_to(own) == []
    user = USER_SOURCE[str(own.data.name)]
    cfg = compose_train_config([f"experiment={name}", f"data={user}", "data.root=/data/x"])
    assert str(cfg.data.name) == user
    assert _source_params_unknown_to(cfg) == [], f"experiment={name} data={user}"
    OmegaConf.to_container(cfg.design, resolve=True) if "design" in cfg else None  # its records resolve


def test_experiment_phantom_settings_apply_to_their_phantom_and_yield_to_the_command_line() -> None:
    from musclelab.compose import compose_train_config

    assert compose_train_config(["experiment=mcsweeney2022"]).data.source.n_cases == 204
    smoke = compose_train_config(["experiment=mcsweeney2022_source_smoke"]).data.source
    assert (smoke.site, smoke.n_cases, smoke.native_size) == ("b", 40, 128)
    assert compose_train_config(["experiment=kim2024_thigh_smoke"]).data.source.size == 64
    assert compose_train_config(["experiment=mcsweeney2022", "data.source.n_cases=90"]).data.source.n_cases == 90
    assert "n_cases" not in compose_train_config(["experiment=mcsweeney2022", "data=l3_folder"]).data.source
