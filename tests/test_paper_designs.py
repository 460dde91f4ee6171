"""The papers' designs in the composed full and smoke experiment configs (issue 20): networks, input sizes, label
sets, splits, slices, stopping rules and model selection, checked from what Hydra composes, as a run sees it."""
from __future__ import annotations

from functools import cache

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.plugins import Plugins
from omegaconf import DictConfig, OmegaConf

from musclelab.compose import config_dir
from musclelab.errors import ConfigError


@cache
def _composed(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def sweep(cfg: DictConfig, key: str) -> list[str]:
    """The values a multirun sweeps ``key`` over, as Hydra's sweeper sees them (interpolations resolved)."""
    params = Plugins.instance()._instantiate(cfg.hydra.sweeper).params
    raw = str(params[key])
    if raw.lstrip().startswith("["):    # a list of lists: split at the top level only
        out, depth, cur = [], 0, ""
        for ch in raw:
            depth += ch == "["
            depth -= ch == "]"
            if ch == "," and depth == 0:
                out.append(cur.strip())
                cur = ""
            else:
                cur += ch
        return [*out, cur.strip()]
    return [v.strip() for v in raw.split(",")]


def design(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg.design, resolve=True)


# ------------------------------------------------------------------------------------------------ Kawamoto 2024
TABLE2 = ["quadratus_lumborum", "psoas_major", "obliques", "rectus_abdominis", "trapezius", "supraspinatus"]


def _sets(cfg: DictConfig) -> set[tuple[str, ...]]:
    return {tuple(s.strip("[]").split(",")) for s in sweep(cfg, "data.labels")}


def test_kawamoto_full_runs_the_papers_unet_at_512_with_every_table2_pairing() -> None:
    cfg = _composed("experiment=kawamoto2024", "data=msd", "data.root=/data/x")
    assert cfg.model.name == "ronneberger_unet" and cfg.model.params.features == 64 and cfg.model.params.depth == 4
    assert cfg.data.img_size == 512
    sets = _sets(cfg)
    alone = {(m,) for m in TABLE2}
    with_esm = {(m, "erector_spinae") for m in TABLE2}
    pairs = {(a, b) for i, a in enumerate(TABLE2) for b in TABLE2[i + 1:]}
    assert sets == alone | with_esm | pairs | {("erector_spinae",)} and len(sets) == 28
    assert sweep(cfg, "data.fold") == ["0", "1", "2"]
    # no validation set (the paper names none): the last epoch is the model
    assert cfg.callbacks.checkpoint.monitor is None and cfg.data.val_fraction == 0.0


def test_kawamoto_on_the_lumbar_phantom_runs_the_l3_sets_and_refuses_missing_muscles() -> None:
    from musclelab.data.sources import check_labels_early

    cfg = _composed("experiment=kawamoto2024")
    sets = _sets(cfg)
    assert len(sets) == 15 and not any({"trapezius", "supraspinatus"} & set(s) for s in sets)
    assert "l3" in design(cfg)["label sets"]["value"]
    data = OmegaConf.merge(cfg.data, {"labels": ["trapezius", "erector_spinae"]})
    with pytest.raises(ConfigError, match=r"data.labels: 'trapezius' is not a class"):
        check_labels_early(data)


def test_kawamoto_smoke_keeps_the_design_at_cpu_size() -> None:
    full, smoke = _composed("experiment=kawamoto2024"), _composed("experiment=kawamoto2024_smoke")
    assert smoke.model.name == "ronneberger_unet" and smoke.model.params.depth == 4
    assert smoke.model.params.features < full.model.params.features and smoke.data.img_size % 16 == 0
    for key in ("callbacks.checkpoint.monitor", "data.val_fraction", "data.split", "data.n_folds", "loss.name"):
        assert OmegaConf.select(smoke, key) == OmegaConf.select(full, key), key
    assert _sets(smoke) <= _sets(full)


# ------------------------------------------------------------------------------------------------ Yoon 2024
def _net(name: str, **overrides: str) -> tuple[str, dict]:
    """(model.name, params) of conf/model/<name>.yaml as an experiment's sweep composes it."""
    cfg = _composed(f"model={name}")
    return cfg.model.name, OmegaConf.to_container(cfg.model.params)


def test_yoon_networks_are_the_cited_ones() -> None:
    for exp in ("yoon2024_muscle", "yoon2024_liver"):
        models = sweep(_composed(f"experiment={exp}"), "model")
        assert "ronneberger_unet" in models and "yoon2024_unetr" in models and "unet" not in models, exp
    name, unet = _net("ronneberger_unet")
    assert name == "ronneberger_unet" and (unet["features"], unet["depth"]) == (64, 4)        # 64 -> 1024
    name, unetr = _net("yoon2024_unetr")
    assert name == "unetr" and (unetr["hidden_size"], unetr["num_heads"], unetr["mlp_dim"]) == (768, 12, 3072)
    smoke = sweep(_composed("experiment=yoon2024_muscle_smoke"), "model")
    assert "ronneberger_unet_smoke" in smoke and _net("ronneberger_unet_smoke")[0] == "ronneberger_unet"


def _liver_splits(*overrides: str) -> dict[str, tuple[int, int, int]]:
    """(train, val, test) volumes per data set of the liver study, from the composed data configs."""
    from musclelab.compose import compose_train_config
    from musclelab.data.splits import make_splits
    from musclelab.studies import study_datasets, transfer_overrides

    args = transfer_overrides(["experiment=yoon2024_liver", *overrides])
    datasets = study_datasets(compose_train_config(args), args, compose_train_config)
    out = {}
    for name, data in datasets.items():
        assert data.source.slices == "all", name                          # every slice, not target +- 2
        assert data.val_fraction == 0.0 and data.split == "holdout", name
        n = {"lits": 131, "btcv": 30, "chaos": 20}[name]                  # the public volumes the paper used
        s = make_splits([f"p{i}" for i in range(n)], split="holdout", seed=0, val_fraction=data.val_fraction,
                        test_fraction=data.test_fraction)
        out[name] = (len(s["train"]), len(s["val"]), len(s["test"]))
    return out


def test_yoon_liver_uses_every_slice_and_the_papers_volume_splits() -> None:
    paper = {"lits": (118, 0, 13), "btcv": (26, 0, 4), "chaos": (17, 0, 3)}
    assert _liver_splits() == paper                                         # phantom sites
    assert _liver_splits("study=liver", "study.datasets.lits.root=/d/l", "study.datasets.btcv.root=/d/b",
                         "study.datasets.chaos.root=/d/c") == paper         # the real data sets
    cfg = _composed("experiment=yoon2024_liver")
    assert cfg.study.volumes == {"lits": 131, "btcv": 30, "chaos": 20}
    assert cfg.callbacks.checkpoint.monitor is None                         # no validation set: the last epoch


@pytest.mark.parametrize("exp", ["yoon2024_muscle", "yoon2024_muscle_smoke", "yoon2024_site_transfer",
                                 "yoon2024_site_transfer_smoke", "yoon2024_liver", "yoon2024_liver_smoke"])
def test_yoon_keeps_the_last_epoch_without_validation(exp: str) -> None:
    cfg = _composed(f"experiment={exp}")
    assert cfg.callbacks.checkpoint.monitor is None and cfg.data.val_fraction == 0.0
    assert cfg.trainer.limit_val_batches == 0


def test_yoon_muscle_splits_six_sets_five_train_one_tests() -> None:
    from musclelab.data.splits import make_splits

    for exp in ("yoon2024_muscle", "yoon2024_muscle_smoke"):
        d = _composed(f"experiment={exp}").data
        assert (d.split, d.n_folds, d.fold) == ("kfold_test", 6, 0), exp
        s = make_splits([f"p{i}" for i in range(60)], split=d.split, seed=0, val_fraction=d.val_fraction,
                        n_folds=d.n_folds, fold=d.fold)
        assert (len(s["train"]), len(s["val"]), len(s["test"])) == (50, 0, 10)


# ------------------------------------------------------------------------------------------------ the report part
def test_design_section_renders_the_record_as_run(tmp_path) -> None:
    """The report's Design table comes from a run's saved config; a job's unresolved .hydra/config.yaml is
    resolved against itself; runs without a record give no section."""
    import yaml

    from musclelab.report.design import design_markdown, job_dirs

    assert design_markdown([tmp_path]) == []
    job = tmp_path / "0" / ".hydra"
    job.mkdir(parents=True)
    cfg = _composed("experiment=kawamoto2024_smoke")
    raw = OmegaConf.to_container(cfg, resolve=False)
    raw.pop("hydra")
    (job / "config.yaml").write_text(yaml.safe_dump({"data": raw["data"], "model": raw["model"],
                                                     "design": raw["design"]}))
    lines = design_markdown(job_dirs(tmp_path))
    assert lines[0] == "## Design"
    row = next(line for line in "\n".join(lines).splitlines() if line.startswith("| input size"))
    assert "| 48 px |" in row and "III.A" in row


# ------------------------------------------------------------------------------------------------ McSweeney 2022
def test_saturation_stops_when_both_losses_have_saturated_not_one() -> None:
    from musclelab.stopping import SaturationStop

    stop = SaturationStop(["train/loss", "val/loss"], patience=2, min_delta=0.01)
    # the training loss keeps falling while the validation loss is flat: not saturated
    epochs = [(1.0, 1.0), (0.9, 1.0), (0.8, 1.0), (0.7, 1.0)]
    assert [stop.update({"train/loss": t, "val/loss": v}) for t, v in epochs] == [False] * 4
    # now the training loss flattens too (0.5 % steps are below the 1 % tolerance): two epochs later both have
    assert [stop.update({"train/loss": t, "val/loss": 1.0}) for t in (0.697, 0.694)] == [False, True]
    resumed = SaturationStop(["train/loss", "val/loss"], patience=2, min_delta=0.01)
    resumed.load_state_dict(stop.state_dict())
    assert resumed.saturated() and resumed.best == stop.best


def test_mcsweeney_trains_until_saturation_in_full_and_smoke() -> None:
    for exp in ("mcsweeney2022", "mcsweeney2022_smoke"):
        cfg = _composed(f"experiment={exp}")
        sat = cfg.callbacks.saturation
        assert sat.enabled and list(sat.monitors) == ["train/loss", "val/loss"], exp
        assert cfg.callbacks.checkpoint.monitor == "val/loss" and not cfg.callbacks.early_stopping.enabled
        assert cfg.trainer.max_epochs >= 4 * sat.patience, exp     # a cap, not the stopping rule
    assert _composed("experiment=mcsweeney2022").trainer.max_epochs == 1000


def test_saturation_callback_ends_a_run(tmp_path) -> None:
    """A tiny run with the rule on stops before trainer.max_epochs, and metrics.csv says where."""
    import pandas as pd

    from conftest import compose_cfg
    from musclelab.train import train

    cfg = compose_cfg(tmp_path / "run", ["data.img_size=32", "data.source.n_cases=8", "trainer.max_epochs=30",
                                         "callbacks.saturation.enabled=true", "callbacks.saturation.patience=1",
                                         "callbacks.saturation.min_delta=0.5", "logger=none", "test=false"])
    train(cfg)
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert 2 <= len(metrics) < 30       # patience 1 with a 50 % tolerance: saturated after the second epoch


def test_pretext_trains_once_on_every_non_test_patient(tmp_path) -> None:
    from musclelab.data.datamodule import SegmentationDataModule
    from musclelab.pretext.pretrain import pretext_key, pretext_split

    def key(*ov: str) -> str:
        return pretext_key(_composed("experiment=mcsweeney2022_smoke", "init=autoencoder", *ov))[0]

    assert key("data.fold=0") == key("data.fold=1") == key("data.fold=3")   # once, not per fold
    assert key("data.test_set=fraction") != key()                             # another test set: other data
    dm = SegmentationDataModule("phantom", img_size=32, split="kfold_val", test_set="fraction", n_folds=4,
                                test_fraction=0.25, source={"n_cases": 16}, cache_dir=str(tmp_path))
    dm.setup()
    test = set(dm.datasets["test"].slices.meta["patient_id"])
    pool = set(dm.pretext_pool.meta["patient_id"])
    assert len(test) == 4 and pool == set(dm.manifest["patient_id"]) - test and len(pool) == 12
    tr, va = pretext_split(dm.pretext_pool, 0)
    assert set(tr.meta["patient_id"]) | set(va.meta["patient_id"]) == pool and len(set(va.meta["patient_id"])) == 1


def _observer_folder(root) -> None:
    """12 single-slice cases; observers in two groups: a1-a3 contoured cases 0-3, b1-b3 cases 4-7 (case 7 has
    only b1, b2: "three images only had four observer segmentations"); cases 8-11 have none (training data)."""
    import numpy as np

    import fake_datasets as F

    for i in range(12):
        cid = f"c{i:02d}"
        F.write_nifti(root / "images" / f"{cid}.nii.gz", F.expected_slice(i), F.SPACING_2D, "LPS", np.int16)
        lab = F.l3_mask(i)
        F.write_png(root / "masks" / f"{cid}.png", lab * 255)
        group = ["a1", "a2", "a3"] if i < 4 else ["b1", "b2", "b3"] if i < 7 else ["b1", "b2"] if i == 7 else []
        for j, name in enumerate(group):
            F.write_png(root / "observers" / name / f"{cid}.png", np.roll(lab, j + 1, axis=1) * 255)


def test_observers_with_per_image_sets_make_the_test_set_and_are_scored_on_their_images(tmp_path) -> None:
    import pandas as pd

    from musclelab.data.datamodule import SegmentationDataModule
    from musclelab.train import write_observer_agreement

    root = tmp_path / "l3"
    _observer_folder(root)
    dm = SegmentationDataModule("l3_folder", img_size=16, root=str(root), cache_dir=str(tmp_path / "cache"),
                                split="kfold_val", test_set="observers", n_folds=2)
    dm.setup()
    test = dm.datasets["test"].slices
    assert sorted(test.meta["case_id"]) == [f"c{i:02d}" for i in range(8)]     # the observed images only
    assert sorted(test.observers) == ["a1", "a2", "a3", "b1", "b2", "b3"]       # nobody annotated every image
    write_observer_agreement(test, tmp_path)
    rows = pd.read_csv(tmp_path / "observers.csv")
    per_case = rows.groupby("case_id")["observer"].apply(lambda s: ",".join(sorted(s))).to_dict()
    assert per_case == {**{f"c{i:02d}": "a1,a2,a3" for i in range(4)},
                        **{f"c{i:02d}": "b1,b2,b3" for i in range(4, 7)}, "c07": "b1,b2"}
    assert (rows["dice"] > 0.5).all()       # each scored on an image they contoured (not an empty mask)
    # scored like a model too: after the >175 HU bone post-processing (the report compares those with dice_pp)
    assert {"dice_pp", "rms_dta_cm_pp", "sma_diff_pp", "smd_diff_pp"} <= set(rows.columns)
    # on the slices as acquired, re-read from data.root (the cache holds them at 16 px)
    assert (rows["bc_grid"] == "original").all()
    orig = test.originals("c00")
    assert orig.hu.shape == (32, 32) and test.images[0].shape == (16, 16)
    assert sorted(orig.observers) == ["a1", "a2", "a3"]
    # a slice set without originals (a cache read by code that cannot re-read them) falls back, saying so
    from dataclasses import replace

    write_observer_agreement(replace(test, originals=None), tmp_path)
    assert (pd.read_csv(tmp_path / "observers.csv")["bc_grid"] == "network").all()


def test_mcsweeney_bone_removal_runs_on_the_acquired_slice_for_models_and_observers(tmp_path) -> None:
    """The phantom acquired at native_size, the network at img_size: the smoke's and the full design's grids,
    every test slice's body composition scored on the original (test_cases.csv and observers.csv alike)."""
    import numpy as np
    import pandas as pd

    from conftest import compose_cfg
    from musclelab.data.phantom_sources import l3_slices
    from musclelab.data.preprocess import resize_slices
    from musclelab.train import train

    full, smoke = _composed("experiment=mcsweeney2022"), _composed("experiment=mcsweeney2022_smoke")
    assert (full.data.source.native_size, full.data.img_size) == (512, 224)
    assert (smoke.data.source.native_size, smoke.data.img_size) == (128, 64)
    assert "on the original slice" in design(full)["bone removal"]["value"]
    pool = l3_slices(img_size=32, native_size=64, n_cases=6, n_observers=2, observer_cases=2).pool
    o = pool.originals(str(pool.meta["case_id"][5]))
    assert o.hu.shape == (64, 64) and np.allclose(o.spacing, pool.spacing[5] / 2)
    np.testing.assert_allclose(resize_slices(o.hu[None], None, 32)[0][0], pool.images[5], atol=1e-3)
    assert sorted(o.observers) == ["observer_1", "observer_2"] and not pool.originals("phantom-a-0000").observers
    run = tmp_path / "run"
    train(compose_cfg(run, ["data.img_size=32", "data.source.native_size=64", "eval.body_composition=true",
                            "data.source.n_observers=2", "logger=none", "data.source.n_cases=12"]))
    cases, obs = pd.read_csv(run / "test_cases.csv"), pd.read_csv(run / "observers.csv")
    assert (cases["bc_grid"] == "original").all() and (obs["bc_grid"] == "original").all()
    assert np.allclose(cases["bc_spacing_row_mm"], cases["spacing_row_mm"] / 2)
    assert {"dice_pp", "dice_raw", "sma_pred_raw", "smd_pred_raw"} <= set(cases.columns)
    assert {"dice", "dice_pp", "sma_diff_pp"} <= set(obs.columns)


def test_dunnett_control_is_the_per_image_observer_mean() -> None:
    import numpy as np
    import pandas as pd

    from musclelab.report import mcsweeney as M

    obs = pd.DataFrame({"case_id": ["x", "x", "x", "y"], "observer": ["a", "b", "c", "d"],
                        "dsc": [0.9, 0.8, 0.7, 0.5], "rms_dta_cm": [0.1, 0.2, 0.3, 0.4]})
    cases = pd.DataFrame({"case_id": ["x", "y"] * 2, "init": ["scratch"] * 4, "n_train": [5] * 4,
                          "dsc": [0.6, 0.7, 0.65, 0.75]})
    seen = {}

    def fake_rows(metric, n, groups, control, *args, **kwargs):
        seen["control"] = np.sort(control)
        return []

    orig = M._dunnett_rows
    M._dunnett_rows = fake_rows
    try:
        M.dunnett_vs_observers(cases, obs, "dsc")
    finally:
        M._dunnett_rows = orig
    np.testing.assert_allclose(seen["control"], [0.5, 0.8])   # image y: 0.5; image x: mean(0.9, 0.8, 0.7)


# ------------------------------------------------------------------------------------------------ Kim 2024
def test_kim_cross_validation_predicts_every_participant_once() -> None:
    from musclelab.data.splits import make_splits

    for exp, n, per_fold in (("kim2024_thigh", 72, 12), ("kim2024_thigh_smoke", 12, 6)):
        cfg = _composed(f"experiment={exp}")
        d = cfg.data
        folds = [int(f) for f in sweep(cfg, "data.fold")]
        assert d.split == "kfold_test" and folds == list(range(d.n_folds)) and d.val_fraction == 0.0, exp
        assert cfg.data.source.n_volumes == n
        ids = [f"s{i}" for i in range(n)]
        tests = [make_splits(ids, split=d.split, seed=0, val_fraction=0.0, n_folds=d.n_folds, fold=f)["test"]
                 for f in folds]
        assert all(len(t) == per_fold for t in tests) and sorted(sum(tests, [])) == sorted(ids), exp
        assert cfg.callbacks.checkpoint.monitor == "train/loss"     # never selected on the scored scans


def test_predicted_volumes_per_muscle_group_and_height() -> None:
    import pandas as pd

    from musclelab.outputs.predicted_volumes import predicted_volumes

    rows = pd.DataFrame({"case_id": ["a", "b"], "sex": ["F", "M"], "height_m": [1.6, 2.0], "sarcopenic": [1, 0],
                         "vol_pred_sartorius_ml": [100.0, 200.0], "vol_ref_sartorius_ml": [110.0, 190.0],
                         "vol_pred_gracilis_ml": [50.0, 80.0], "vol_ref_gracilis_ml": [55.0, 70.0],
                         "vol_pred_femur_ml": [300.0, 400.0], "vol_ref_femur_ml": [300.0, 400.0]})
    t = predicted_volumes(rows, ("background", "femur", "sartorius", "gracilis"),
                          {"model": "unetr", "seed": 1, "fold": 2})
    assert set(t["structure"]) == {"femur", "sartorius", "gracilis", "anterior", "medial"}
    b = t[t["case_id"] == "b"].set_index("structure")
    assert b.loc["sartorius", "volume_per_height2"] == pytest.approx(200.0 / 4.0)
    assert b.loc["anterior", "level"] == "group" and b.loc["anterior", "volume_ml"] == 200.0   # its one muscle
    assert b.loc["medial", "reference_ml"] == 70.0 and b.loc["femur", "level"] == "structure"
    assert (t["model"] == "unetr").all() and (t["seed"] == 1).all() and (t["fold"] == 2).all()
