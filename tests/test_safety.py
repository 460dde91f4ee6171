"""Issue 17: nothing a user made is lost or silently replaced. Each test reproduces one fault on tiny data:
shared-machine permissions and locks, predict's output rules, complete runs, Ctrl-C, early stopping in the
checkpoint, caches keyed by the data, untrusted files, devices and sweep prechecks."""
from __future__ import annotations

import errno
import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import compose_cfg, run_cli_here  # noqa: E402

from musclelab.errors import ConfigError  # noqa: E402
from musclelab.outputs.status import read_status  # noqa: E402


@pytest.fixture
def umask002():
    old = os.umask(0o002)
    yield
    os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


# --------------------------------------------------------------------------------------------------------------
# shared machines
# --------------------------------------------------------------------------------------------------------------


def test_atomic_files_and_directories_honour_the_umask(tmp_path, umask002):
    from musclelab.io import atomic_write_text, file_lock, new_directory

    f = atomic_write_text(tmp_path / "run_status.json", "{}")
    assert _mode(f) == 0o664  # mkstemp alone leaves 0600
    with new_directory(tmp_path / "ds", "data set") as d:
        (d / "x.txt").write_text("x")
    assert _mode(tmp_path / "ds") == 0o775  # mkdtemp alone leaves 0700
    with file_lock(tmp_path / "locks" / "a.lock", "test"):
        pass
    assert _mode(tmp_path / "locks" / "a.lock") == 0o664  # the group can take it too


def test_temporary_cache_directories_honour_the_umask(tmp_path, umask002):
    from musclelab.io import make_temp_dir

    assert _mode(make_temp_dir(".x.", tmp_path)) == 0o775


def test_another_users_lock_file_is_taken_read_only(tmp_path, monkeypatch):
    from musclelab import io as mio

    lock = tmp_path / "c.lock"
    lock.write_text("")
    real_open = os.open

    def no_write(path, flags, *a):  # the file belongs to someone else: no write access
        if Path(path) == lock and flags & os.O_RDWR:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *a)

    monkeypatch.setattr(mio.os, "open", no_write)
    with mio.file_lock(lock, "cache"):
        pass
    with mio.try_file_lock(lock) as taken:
        assert taken


def test_a_file_system_without_flock_is_one_line(tmp_path, monkeypatch):
    from musclelab import io as mio

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(mio.fcntl, "flock", no_flock)
    with pytest.raises(ConfigError, match=r"does not support flock.*-o flock"):
        with mio.file_lock(tmp_path / "x.lock", "cache"):
            pass


# --------------------------------------------------------------------------------------------------------------
# predict: never touches user data, ids unique and safe, HU checked, rows on disk as cases finish
# --------------------------------------------------------------------------------------------------------------

SIZE = 64


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A model trained for two batches: enough for predict's bookkeeping."""
    from musclelab.train import train

    run = tmp_path_factory.mktemp("safety_run") / "run"
    train(compose_cfg(run, ["trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "test=false",
                            "logger=none", "cpu_threads=1"]))
    return run


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from musclelab.phantoms.l3 import write_phantom_dataset

    return write_phantom_dataset(tmp_path_factory.mktemp("ds") / "ds", n=3, size=SIZE, seed=0)


def _tree(root: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file())


def test_predict_refuses_an_out_that_overlaps_the_input(tiny_run, dataset, tmp_path):
    from musclelab.predict import predict

    before = _tree(dataset)
    for out, msg in [(dataset, "contains the input"),                   # --out ds for ds/images: ds/masks
                     (dataset / "images", "is the input folder"),
                     (dataset / "images" / "pred", "inside the input folder")]:
        with pytest.raises(ConfigError, match=msg):
            predict(tiny_run, dataset / "images", out, progress=False)
    one = sorted((dataset / "images").iterdir())[0]
    with pytest.raises(ConfigError, match="contains the input"):  # a single file inside --out
        predict(tiny_run, one, dataset / "images", progress=False)
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine")
    with pytest.raises(ConfigError, match="did not write"):  # a folder of someone else's files
        predict(tiny_run, dataset / "images", foreign, progress=False)
    proc = run_cli_here(["predict", str(tiny_run), str(dataset / "images"), "--out", str(dataset)], tmp_path,
                        check=False)
    assert proc.returncode == 2 and "contains the input" in proc.stderr
    assert _tree(dataset) == before


def test_predict_never_replaces_a_file_it_did_not_write(tiny_run, dataset, tmp_path):
    from musclelab.predict import predict

    out = tmp_path / "out"
    ids = sorted(p.name for p in (dataset / "images").iterdir())
    first = tmp_path / "first"
    first.mkdir()
    (first / ids[0]).symlink_to(dataset / "images" / ids[0])
    assert predict(tiny_run, first, out, progress=False).n_failed == 0
    theirs = out / "masks" / ids[1]  # a file the user put there
    theirs.write_bytes(b"mine")
    result = predict(tiny_run, dataset / "images", out, progress=False)  # a re-run into predict's own folder
    status = {r["case_id"]: (r["status"], r["reason"]) for r in result.rows}
    assert status[ids[0].removesuffix(".nii.gz")][0] == "ok"  # predict's own mask: replaced
    case1 = status[ids[1].removesuffix(".nii.gz")]
    assert case1[0] == "failed" and "was not written by predict" in case1[1]
    assert theirs.read_bytes() == b"mine"


def test_case_ids_are_unique_and_stay_inside_out(tiny_run, dataset, tmp_path):
    import SimpleITK as sitk

    from musclelab.data.export import write_dicom_slice
    from musclelab.predict import find_cases, predict, safe_case_id

    inp = tmp_path / "in"
    inp.mkdir()
    src = sorted((dataset / "images").iterdir())[0]
    (inp / "x.nii.gz").write_bytes(src.read_bytes())
    sitk.WriteImage(sitk.ReadImage(str(src)), str(inp / "x.nrrd"))
    hu = np.full((SIZE, SIZE), -1000.0)
    hu[16:48, 16:48] = 40.0
    for s, uid in enumerate(("1.2.3.4.5", "1.2.3/../../../../../../escaped")):  # two series in one folder
        for k in range(2):
            write_dicom_slice(inp / "dicom" / f"s{s}_{k}.dcm", hu, (0.8, 0.8), patient_id="p", series_uid=uid,
                              z_mm=3.0 * k, instance=k + 1)
    ids = [c.case_id for c in find_cases(inp)[0]]
    assert len(ids) == len(set(ids)) == 4 and {"x_nii_gz", "x_nrrd"} <= set(ids)
    assert all(".." not in i.split("/") for i in ids)
    assert safe_case_id("a/../../b") == "a/_/_/b"
    out = tmp_path / "out"
    result = predict(tiny_run, inp, out, progress=False)
    assert result.n_failed == 0, result.rows
    assert (out / "masks" / "x_nii_gz.nii.gz").exists() and (out / "masks" / "x_nrrd.nii.gz").exists()
    assert not list(tmp_path.glob("escaped*")) and not list(tmp_path.parent.glob("escaped*"))


def test_scans_that_are_not_ct_hu_get_a_failed_row(tiny_run, dataset, tmp_path):
    import nibabel as nib

    from musclelab.data.export import write_dicom_slice
    from musclelab.predict import predict

    inp = tmp_path / "in"
    inp.mkdir()
    img = nib.load(str(sorted((dataset / "images").iterdir())[0]))
    data = np.asarray(img.dataobj, np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), str(inp / "nan.nii.gz"))
    hu = np.asarray(img.dataobj, np.float64)[..., 0].T
    write_dicom_slice(inp / "raw.dcm", hu + 1024.0, (0.8, 0.8), patient_id="p", intercept=0.0)  # no -1024
    result = predict(tiny_run, inp, tmp_path / "out", progress=False)
    reasons = {r["case_id"]: r["reason"] for r in result.rows if r["status"] == "failed"}
    assert "NaN" in reasons["nan"]
    assert "-1024 intercept" in reasons["raw"]


def test_predictions_csv_holds_every_finished_case(tiny_run, dataset, tmp_path, monkeypatch):
    import pandas as pd

    import musclelab.predict as P

    real, calls = P.predict_case, []

    def killed_at_the_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process is killed while predicting the third case
        return real(*a, **k)

    monkeypatch.setattr(P, "predict_case", killed_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        P.predict(tiny_run, dataset / "images", tmp_path / "out", progress=False)
    table = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert len(table) == 2 and set(table["status"]) == {"ok"}


# --------------------------------------------------------------------------------------------------------------
# caches key by the data's identity
# --------------------------------------------------------------------------------------------------------------


def test_stage_and_pretext_caches_key_by_the_data_files(tmp_path):
    import fake_datasets as F

    from musclelab.compose import compose_train_config
    from musclelab.pretext.pretrain import pretext_key
    from musclelab.studies.chain import _hash, stage_inputs

    fd = F.make_fake_btcv(tmp_path / "btcv", n=3)
    cfg = compose_train_config(["data=btcv", f"data.root={fd.root}", "init=autoencoder", "model=fcn_resnet50",
                                f"paths.output_dir={tmp_path / 'run'}"])

    def keys() -> tuple[str, str]:
        return _hash(stage_inputs(cfg, 0, None)), pretext_key(cfg)[0]

    first = keys()
    assert keys() == first  # nothing changed: reused
    img = fd.image_files[fd.ids[0]]
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # an edited file
    edited = keys()
    assert edited[0] != first[0] and edited[1] != first[1]
    F.make_fake_btcv(tmp_path / "more", n=4)  # an added case
    for sub in ("img", "label"):
        src = sorted((tmp_path / "more").rglob(f"{sub}0003*"))[0]
        dst = next(p for p in fd.root.rglob(sub) if p.is_dir()) / src.name
        dst.write_bytes(src.read_bytes())
    added = keys()
    assert added[0] != edited[0] and added[1] != edited[1]


# --------------------------------------------------------------------------------------------------------------
# a complete run is never modified except by an explicit extension
# --------------------------------------------------------------------------------------------------------------

RUN = ["trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "test=false", "logger=none", "cpu_threads=1"]


@pytest.fixture(scope="module")
def complete_runs(tmp_path_factory) -> dict[str, Path]:
    """Two finished runs: without last.ckpt (the default policy) and with it (keep_last)."""
    from musclelab.train import train

    root = tmp_path_factory.mktemp("complete")
    runs = {"default": root / "default", "keep_last": root / "keep_last"}
    train(compose_cfg(runs["default"], RUN))
    train(compose_cfg(runs["keep_last"], [*RUN, "callbacks.checkpoint.keep_last=true", "trainer.max_epochs=1"]))
    return runs


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    cfg = (dst / "config_resolved.yaml")
    cfg.write_text(cfg.read_text().replace(str(src), str(dst)))  # as if trained there
    return dst


def _files(run: Path) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}


def test_rerunning_into_a_complete_run_never_replaces_it(complete_runs, tmp_path):
    from musclelab.train import train

    run = _copy(complete_runs["default"], tmp_path / "run")
    (run / "wandb_run_id.txt").write_text("abcd1234\n")
    before = _files(run)
    assert train(compose_cfg(run, RUN)) == json.loads((run / "run_status.json").read_text())["metrics"]
    with pytest.raises(ConfigError, match=r"complete run with a different config \(seed differ"):
        train(compose_cfg(run, [*RUN, "seed=5"]))
    assert _files(run) == before and read_status(run) == "complete"


def test_a_refused_relaunch_keeps_what_resume_replays(tmp_path):
    """Hydra rewrites .hydra/overrides.yaml before train() can refuse: the run's own copy is put back."""
    tiny = ["data.img_size=64", "data.source.n_cases=12", "model.params.channels=[8,16]", "model.params.strides=[2]",
            "trainer.max_epochs=1", "callbacks.progress_bar=false",
            *RUN]
    run = tmp_path / "run"
    run_cli_here(["train", *tiny, f"hydra.run.dir={run}"], tmp_path)
    saved = (run / ".hydra" / "overrides.yaml").read_text()
    proc = run_cli_here(["train", *tiny, f"hydra.run.dir={run}", "seed=5"], tmp_path, check=False)
    assert proc.returncode == 2 and "seed differ" in proc.stderr
    assert (run / ".hydra" / "overrides.yaml").read_text() == saved
    proc = run_cli_here(["train", f"resume={run}", "trainer.max_epochs=2"], tmp_path, check=False)
    assert proc.returncode == 2 and "last.ckpt was deleted" in proc.stderr  # not "seed differ"
    assert read_status(run) == "complete" and (run / ".hydra" / "overrides.yaml").read_text() == saved


def test_resume_refuses_a_changed_split_data_or_test_set(complete_runs, tmp_path):
    from musclelab.train import train

    run = _copy(complete_runs["keep_last"], tmp_path / "run")
    before = _files(run)
    for change, key in [("data.split_seed=9", "data.split_seed"), ("data.test_fraction=0.5", "data.test_fraction"),
                        ("data.source.n_cases=30", "data.source.n_cases")]:
        with pytest.raises(ConfigError, match=rf"{key} differ.*may only change trainer.max_epochs"):
            train(compose_cfg(run, [*RUN, "callbacks.checkpoint.keep_last=true", f"resume={run}", change]))
    assert _files(run) == before
    # an unfinished run too: its checkpoint holds weights trained on the old split
    (run / "run_status.json").write_text(json.dumps({"status": "interrupted"}))
    with pytest.raises(ConfigError, match="data.split_seed differ"):
        train(compose_cfg(run, [*RUN, "callbacks.checkpoint.keep_last=true", f"resume={run}", "data.split_seed=9"]))


def test_an_extension_without_last_ckpt_leaves_the_run_complete(complete_runs, tmp_path):
    from musclelab.train import train

    run = _copy(complete_runs["default"], tmp_path / "run")
    before = _files(run)
    with pytest.raises(ConfigError, match="last.ckpt was deleted"):
        train(compose_cfg(run, [*RUN, f"resume={run}", "trainer.max_epochs=2"]))
    assert read_status(run) == "complete" and _files(run) == before


def test_a_run_trained_again_gets_a_new_wandb_run(complete_runs, tmp_path):
    from musclelab.train import train

    run = _copy(complete_runs["default"], tmp_path / "run")
    (run / "run_status.json").write_text(json.dumps({"status": "failed"}))
    (run / "wandb_run_id.txt").write_text("old00001\n")
    train(compose_cfg(run, [*RUN, "seed=5"]))  # a failed run trained again with a fixed config
    assert not (run / "wandb_run_id.txt").exists() or "old00001" not in (run / "wandb_run_id.txt").read_text()


# --------------------------------------------------------------------------------------------------------------
# Ctrl-C, failed jobs with an intact checkpoint, early stopping
# --------------------------------------------------------------------------------------------------------------


def test_ctrl_c_is_an_interruption(tmp_path):
    import signal
    import subprocess
    import time

    from musclelab.resume import is_preemption, mark_stopped

    try:  # what Lightning does with Ctrl-C inside fit: sys.exit(1) from its except block
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            sys.exit(1)
    except SystemExit as err:
        exit_err = err
    assert is_preemption(exit_err) and not is_preemption(SystemExit(1))
    mark_stopped(tmp_path, exit_err)
    assert read_status(tmp_path) == "interrupted"

    run = tmp_path / "run"  # the real thing: SIGINT to a training process
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    script = Path(sys.executable).parent / "musclelab"
    proc = subprocess.Popen([str(script), "train", "data.img_size=64", "data.source.n_cases=20", "data.batch_size=4",
                             "model.params.channels=[8,16]", "model.params.strides=[2]", "trainer.max_epochs=1000",
                             "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
                             "callbacks.progress_bar=false", "logger=none", "cpu_threads=1",
                             f"hydra.run.dir={run}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while not (run / "checkpoints" / "last.ckpt").exists():
        assert proc.poll() is None and time.time() - t0 < 240, proc.stdout.read()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    status = json.loads((run / "run_status.json").read_text())
    assert status["status"] == "interrupted", (status, out[-2000:])
    assert status["resume_from"].endswith("last.ckpt")


def test_a_failed_sweep_job_with_an_intact_checkpoint_resumes(complete_runs, tmp_path, monkeypatch):
    import musclelab.sweep_resume as S

    run = _copy(complete_runs["keep_last"], tmp_path / "0")
    cfg = compose_cfg(run, [*RUN, "callbacks.checkpoint.keep_last=true"])
    monkeypatch.setattr(S, "_sweep_job", lambda: ("sweep job 0", str(run)))
    (run / "run_status.json").write_text(json.dumps({"status": "failed"}))  # e.g. killed for memory
    assert S.prepare_sweep_job(cfg, run) == "resume" and cfg.resume == str(run)
    cfg.resume = None
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a full disk truncated it
    assert S.prepare_sweep_job(cfg, run) == "rerun" and not cfg.resume


def test_early_stopping_is_restored_from_the_checkpoint(tmp_path):
    import pandas as pd

    from musclelab.train import train

    run = tmp_path / "run"
    es = ["callbacks.early_stopping.enabled=true", "callbacks.early_stopping.patience=1",
          "+callbacks.early_stopping.min_delta=100", "trainer.max_epochs=6", "callbacks.checkpoint.keep_last=true",
          *RUN]
    train(compose_cfg(run, es))
    rows = len(pd.read_csv(run / "metrics.csv"))
    assert rows == 2  # stopped early
    (run / "run_status.json").write_text(json.dumps({"status": "running"}))  # killed while testing
    train(compose_cfg(run, [*es, f"resume={run}"]))
    assert len(pd.read_csv(run / "metrics.csv")) == rows and read_status(run) == "complete"


# --------------------------------------------------------------------------------------------------------------
# devices, ranks, sweep prechecks
# --------------------------------------------------------------------------------------------------------------


def test_several_devices_need_a_spawn_strategy(tmp_path):
    from musclelab.config_validation import validate

    with pytest.raises(ConfigError, match=r"trainer.devices=2 with trainer.strategy=auto.*command line"):
        validate(compose_cfg(tmp_path, ["trainer.devices=2"]))
    with pytest.raises(ConfigError, match="trainer.strategy=ddp:"):
        validate(compose_cfg(tmp_path, ["trainer.devices=2", "+trainer.strategy=ddp"]))
    for preset in ("ddp", "ddp_cpu", "gpu", "cpu", "debug"):  # every shipped preset is safe
        validate(compose_cfg(tmp_path, [f"trainer={preset}"]))


def test_only_rank_zero_writes_status_and_deletes_last_ckpt(tmp_path, monkeypatch):
    import musclelab.train as T

    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(T, "_train", lambda cfg, run_dir: {})
    (tmp_path / "checkpoints").mkdir()
    for name in ("last.ckpt", "best.ckpt"):
        (tmp_path / "checkpoints" / name).write_bytes(b"x")
    T.train(compose_cfg(tmp_path, RUN))
    assert read_status(tmp_path) is None and (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_a_sweep_checks_every_jobs_inputs_before_the_first(tmp_path, capsys):
    from musclelab.compose import precheck

    with pytest.raises(SystemExit) as exc:  # the experiment's grid has init=checkpoint without its source run
        precheck("train", ["-m", "experiment=mcsweeney2022_smoke", f"paths.root_dir={tmp_path}"])
    assert exc.value.code == 2
    assert "init.checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("experiment", ["kawamoto2024_smoke", "kawamoto2024"])
def test_the_sweep_precheck_reads_an_experiments_grid_as_hydra_does(experiment, tmp_path, capsys):
    """A grid written through an interpolation (``data.labels: ${table2.smoke}``) is resolved before it is checked,
    as Hydra's sweeper resolves it: every label set is a valid job, so the precheck passes (it refused the whole
    interpolated string as one value of data.labels, and `musclelab train -m experiment=kawamoto2024_smoke` ran no
    job)."""
    from musclelab.compose import precheck

    precheck("train", ["-m", f"experiment={experiment}", f"paths.root_dir={tmp_path}"])
    assert "data.labels" not in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------------
# untrusted files
# --------------------------------------------------------------------------------------------------------------


def _fake_hub(monkeypatch, state: dict) -> list[dict]:
    import torchvision.models._api as api

    calls: list[dict] = []

    def load(url, *a, **k):
        calls.append(k)
        return state

    monkeypatch.setattr(api, "load_state_dict_from_url", load)
    return calls


def test_hub_weights_load_with_weights_only(monkeypatch):
    from torchvision.models import resnet18
    from torchvision.models.segmentation import fcn_resnet50

    from musclelab.models import build_model
    from musclelab.transfer import load_source

    calls = _fake_hub(monkeypatch, resnet18().state_dict())
    load_source({"name": "imagenet", "weights": "ResNet18_Weights.IMAGENET1K_V1"})
    assert calls and all(c.get("weights_only") is True for c in calls)
    calls = _fake_hub(monkeypatch, fcn_resnet50(weights=None, weights_backbone=None, num_classes=21,
                                                aux_loss=True).state_dict())
    build_model("fcn_resnet50", 1, 2, 64, weights="COCO_WITH_VOC_LABELS_V1")
    assert calls and all(c.get("weights_only") is True for c in calls)


def test_resume_replays_only_musclelabs_own_keys(tmp_path, capsys):
    from musclelab.cli import resume_overrides

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(
        "- seed=3\n- trainer=debug\n- +hydra.callbacks.x._target_=os.system\n- hydra/launcher=slurm\n"
        "- +model.params.net._target_=builtins.eval\n")
    out = resume_overrides([f"resume={tmp_path}"])
    assert "seed=3" in out and "trainer=debug" in out
    assert not any("hydra.callbacks" in o or o.startswith("hydra/") for o in out)
    err = capsys.readouterr().err
    assert "ignoring saved overrides" in err and "hydra.callbacks.x._target_" in err
    assert "plug-ins are imported again: +model.params.net._target_" in err  # musclelab's own, announced


def test_predict_does_not_fetch_a_checkpoints_pretrained_sources(tiny_run):
    from torchvision.models.segmentation import fcn_resnet50

    from musclelab.checkpoint_meta import LoadedCheckpoint, build_network, load_checkpoint
    from musclelab.models import build_model

    meta = dict(load_checkpoint(tiny_run).meta)
    net = build_model("fcn_resnet50", 1, 2, 64)
    meta["model"] = {"name": "fcn_resnet50", "params": {"weights": None, "weights_backbone": None,
                                                        "weights_path": "/training/machine/coco.pth"}}
    built = build_network(LoadedCheckpoint(tiny_run / "checkpoints" / "best.ckpt", meta, net.state_dict()))
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), net.state_dict().values()))
    del fcn_resnet50
