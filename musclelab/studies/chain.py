"""Sequential transfer across data sets (Yoon et al. 2024): a chain of training stages with a prefix cache.

``run_chain(cfg, ["a", "b", "c"], datasets, stage_root)`` trains on ``a`` (with ``cfg.init``, usually
scratch), then on ``b`` starting from the best checkpoint of the ``a`` stage (``init=checkpoint``, all layers
trainable), then on ``c`` from the ``b`` stage. After every stage its best checkpoint is tested on the test
split of *every* data set of the study (trained on or not): one row of the forgetting matrix.

Prefix cache. A stage is fully determined by the training settings and the ordered prefix of data sets that
led to it, so it is stored once under ``<stage_root>/<data set>-<key16>/`` and shared by every chain with
the same prefix (the 15 orderings of 3 data sets need 15 stage trainings instead of 33), in one process or
across the jobs of a multirun. The key is chained: ``key_i = sha256(json(stage settings_i, key_{i-1}))``
where the stage settings are the resolved ``model``, ``loss``, ``optim``, the trainer fields that change
training (:data:`TRAINER_KEYS`), the checkpoint/early-stopping settings, ``seed``, the data set's resolved
data config (without :data:`DATA_IGNORED`; with the identity of its files for data read from disk) and, for
stage 0, ``init`` (for later stages the parent key stands for the init). Equal keys <=> equal (settings, ordered data prefix, first init); the stage root's
location is not part of it.

A stage is reused when its ``run_status.json`` says ``complete``. Otherwise it is built under a file lock
(``<stage_root>/<name>.lock``: two jobs needing it train it once; the second waits and reuses it): a partial
run with ``checkpoints/last.ckpt`` resumes in place (``train()`` with ``resume``), anything else starts
fresh. Evaluations are cached in the stage directory (``eval_<data set>.json`` + ``eval_<data set>_cases.csv``),
keyed by the evaluated data config, so a reused stage is not evaluated again.

Outputs of a chain (``out_dir``): ``forgetting_matrix.csv`` and ``forgetting_heatmap.png``, ``stage_eval.csv`` (every test metric, long
format), ``learning_curves.csv``, ``chain.json`` and ``chain_metrics.json`` (:mod:`.forgetting`).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf, open_dict

from musclelab.errors import ConfigError
from musclelab.io import atomic_write_json, atomic_write_text, file_lock
from musclelab.outputs.status import read_status
from musclelab.studies.figures import plot_forgetting_heatmap
from musclelab.studies.forgetting import chain_metrics

log = logging.getLogger(__name__)

KEY_VERSION = 2   # 2: phantom site settings enter the key
# trainer fields that change what a stage learns (devices/strategy: DDP changes the effective batch)
TRAINER_KEYS = ("accelerator", "devices", "strategy", "precision", "max_epochs", "min_epochs", "max_steps",
                "limit_train_batches", "limit_val_batches", "gradient_clip_val", "gradient_clip_algorithm",
                "accumulate_grad_batches", "deterministic", "val_check_interval", "check_val_every_n_epoch")
# data fields that do not change a stage's result
DATA_IGNORED = ("cache_dir", "num_workers", "eval_batch_size")
CHECKPOINT_DIR = "checkpoints"
METRIC = "dice"


@dataclass
class StageResult:
    """One stage of a chain: where it lives and what happened to it in this call."""

    index: int
    dataset: str
    key: str
    run_dir: Path
    trained: bool = False   # trained (fresh or resumed) by this call; False = reused from the cache
    resumed: bool = False   # continued an interrupted run from its last.ckpt
    evaluation: dict[str, dict[str, Any]] = field(default_factory=dict)  # evaluated data set -> eval record

    def score(self, dataset: str, metric: str = METRIC) -> float:
        """Mean test ``metric`` of this stage's model on ``dataset`` (NaN when not available)."""
        value = self.evaluation.get(dataset, {}).get("metrics", {}).get(metric)
        return float("nan") if value is None else float(value)


@dataclass
class ChainResult:
    """All stages of one chain, the evaluated data sets and the chain's metrics."""

    sequence: list[str]
    datasets: list[str]
    stages: list[StageResult]
    metrics: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None
    model: str = ""  # model.name of every stage (reports group chains by it)
    strategy: dict[str, Any] = field(default_factory=lambda: {"name": "naive", "settings": {}})

    @property
    def n_trained(self) -> int:
        """How many stages this call trained (fresh or resumed)."""
        return sum(s.trained for s in self.stages)

    def matrix(self, metric: str = METRIC) -> pd.DataFrame:
        """Stages (rows, indexed by stage number) x every evaluated data set (columns): mean test ``metric``."""
        return pd.DataFrame([[s.score(d, metric) for d in self.datasets] for s in self.stages],
                            columns=self.datasets, index=pd.Index([s.index for s in self.stages], name="stage"))

    def accuracy_matrix(self, metric: str = METRIC) -> np.ndarray:
        """``R[i, j]``: stage ``i``'s score on the data set trained at stage ``j`` (T x T)."""
        return self.matrix(metric)[self.sequence].to_numpy(dtype=float)


@dataclass
class StagePlan:
    """A planned stage: its key, directory and config (``init`` points at the previous stage's directory)."""

    index: int
    dataset: str
    key: str
    run_dir: Path
    cfg: DictConfig
    inputs: dict[str, Any]


# --------------------------------------------------------------------------------------------------
# planning: configs and keys (no training)
# --------------------------------------------------------------------------------------------------


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def data_key_inputs(cfg: DictConfig) -> dict[str, Any]:
    """The resolved data config of ``cfg`` without the fields in :data:`DATA_IGNORED`; for data read from disk
    the identity of its files (:func:`musclelab.data.identity.data_identity`: path, size, mtime of each, as the
    slice cache keys); for a built-in phantom the generator's settings of the sites it draws (a new musclelab
    whose phantom site changed must not reuse stages trained on the old one's images)."""
    from musclelab.data.identity import data_identity

    data = _plain(cfg.data)
    inputs = {k: v for k, v in data.items() if k not in DATA_IGNORED}
    files = data_identity(data)  # data read from disk: an edited or added file is a new stage
    if files is not None:
        inputs["files"] = files
    sites = _phantom_sites(str(data.get("name")))
    if sites is not None:
        source = data.get("source") or {}
        names = sorted({str(source[k]) for k in ("site", "test_site") if source.get(k) is not None})
        inputs["phantom_sites"] = {n: dataclasses.asdict(sites[n]) for n in names if n in sites}
    return inputs


def _phantom_sites(data_name: str) -> Mapping[str, Any] | None:
    """The site table of the built-in phantom called ``data_name`` (None for data read from disk)."""
    if data_name == "abdomen_phantom":
        from musclelab.phantoms.abdomen import LIVER_SITES
        return LIVER_SITES
    if data_name == "phantom":
        from musclelab.phantoms.l3 import SITES
        return SITES
    if data_name == "lumbar_phantom":
        from musclelab.phantoms.lumbar import SITES as LUMBAR_SITES
        return LUMBAR_SITES
    return None


def stage_inputs(cfg: DictConfig, index: int, parent_key: str | None) -> dict[str, Any]:
    """What a stage's key hashes: the settings that change what it learns, plus the parent stage's key
    (stage 0: its ``init`` instead)."""
    trainer = _plain(cfg.trainer)
    cb = cfg.callbacks
    inputs: dict[str, Any] = {
        "version": KEY_VERSION,
        "index": index,
        "model": _plain(cfg.model),
        "loss": _plain(cfg.loss),
        "optim": _plain(cfg.optim),
        "trainer": {k: trainer[k] for k in TRAINER_KEYS if k in trainer},
        "callbacks": {"checkpoint": _plain(cb.checkpoint), "early_stopping": _plain(cb.early_stopping)},
        "seed": cfg.seed,
        "data": data_key_inputs(cfg),
    }
    init = {k: v for k, v in _plain(cfg.init).items() if k not in ("lr", "checkpoint")}
    if index == 0:
        inputs["init"] = init
    else:
        inputs["parent"] = parent_key
        inputs["transfer"] = init  # how the parent's weights are copied (exclude, source_prefix, ...)
    return inputs


def stage_config(base_cfg: DictConfig, data: DictConfig | Mapping[str, Any], run_dir: Path,
                 parent_dir: Path | None) -> DictConfig:
    """``base_cfg`` for one stage: ``data`` replaced, ``init`` = base init (stage 0) or ``checkpoint`` of
    ``parent_dir``, output into ``run_dir``, no test inside ``train()`` (the chain evaluates itself)."""
    from musclelab.transfer import init_defaults, paper_lr

    cfg = copy.deepcopy(base_cfg)
    with open_dict(cfg):
        cfg.data = copy.deepcopy(data) if OmegaConf.is_config(data) else OmegaConf.create(dict(data))
        if parent_dir is not None:
            cfg.init = OmegaConf.create({**init_defaults("checkpoint"), "checkpoint": str(parent_dir),
                                         "lr": paper_lr("checkpoint")})
        cfg.paths.output_dir = str(run_dir)
        cfg.resume = None
        cfg.test = False
    return cfg


def _check(sequence: Sequence[str], datasets: Mapping[str, Any]) -> list[str]:
    sequence = [str(s) for s in sequence]
    if not sequence:
        raise ConfigError("study.sequence is empty: give the data sets in training order, e.g. "
                          "study.sequence=[lits,btcv,chaos]")
    missing = [s for s in sequence if s not in datasets]
    if missing:
        raise ConfigError(f"study.sequence names unknown data set(s) {missing}; known: {sorted(datasets)}")
    if len(set(sequence)) != len(sequence):
        raise ConfigError(f"study.sequence must not repeat a data set, got {sequence}")
    return sequence


def plan_chain(base_cfg: DictConfig, sequence: Sequence[str], datasets: Mapping[str, Any],
               stage_root: str | Path) -> list[StagePlan]:
    """Keys, directories and configs of every stage of ``sequence`` (pure: nothing is read or trained).

    ``study.strategy`` (:mod:`musclelab.strategies`): stage 0 is the same for every strategy; a later stage of a
    strategy other than ``naive`` gets ``chain_stage`` in its config and ``strategy`` (name + settings) in its
    key, so naive keys are those of the chains before strategies existed."""
    from musclelab.strategies import strategy_of

    sequence = _check(sequence, datasets)
    strategy, settings = strategy_of(base_cfg.get("study"))
    stage_root = Path(stage_root).expanduser().resolve()
    plans: list[StagePlan] = []
    parent: StagePlan | None = None
    for i, name in enumerate(sequence):
        # the directory is only known after hashing, and the config needs it: hash with a placeholder
        cfg = stage_config(base_cfg, datasets[name], stage_root / "pending", parent.run_dir if parent else None)
        inputs = stage_inputs(cfg, i, parent.key if parent else None)
        if i > 0 and strategy != "naive":
            inputs["strategy"] = {"name": strategy, "settings": settings}
            with open_dict(cfg):
                cfg.chain_stage = {"strategy": strategy, "settings": settings, "index": i, "earlier": [
                    {"dataset": p.dataset, "data": _plain(p.cfg.data), "run_dir": str(p.run_dir)} for p in plans]}
        key = _hash(inputs)
        run_dir = stage_root / f"{name}-{key[:16]}"
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)
        parent = StagePlan(i, name, key, run_dir, cfg, inputs)
        plans.append(parent)
    return plans


# --------------------------------------------------------------------------------------------------
# running stages
# --------------------------------------------------------------------------------------------------


def _complete(run_dir: Path) -> bool:
    return read_status(run_dir) == "complete" and (run_dir / CHECKPOINT_DIR / "best.ckpt").exists()


def ensure_stage(plan: StagePlan, train_fn: Callable[[DictConfig], Any] | None = None) -> StageResult:
    """Reuse, resume or train one stage; returns its :class:`StageResult` (without evaluations)."""
    from musclelab.train import train

    train_fn = train_fn or train
    result = StageResult(plan.index, plan.dataset, plan.key, plan.run_dir)
    if _complete(plan.run_dir):
        log.info("stage %d (%s): reusing %s", plan.index, plan.dataset, plan.run_dir)
        return result
    with file_lock(plan.run_dir.with_name(plan.run_dir.name + ".lock"), what=f"stage {plan.run_dir.name}"):
        if _complete(plan.run_dir):  # another job built it while we waited
            log.info("stage %d (%s): reusing %s (built by another job)", plan.index, plan.dataset, plan.run_dir)
            return result
        cfg = copy.deepcopy(plan.cfg)
        if (plan.run_dir / CHECKPOINT_DIR / "last.ckpt").exists():
            log.info("stage %d (%s): resuming the interrupted run in %s", plan.index, plan.dataset, plan.run_dir)
            with open_dict(cfg):
                cfg.resume = str(plan.run_dir)
            result.resumed = True
        else:
            if plan.run_dir.exists():  # a run that died before its first checkpoint: nothing to keep
                shutil.rmtree(plan.run_dir)
            log.info("stage %d (%s): training into %s", plan.index, plan.dataset, plan.run_dir)
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(plan.run_dir / "stage.json", {"key": plan.key, "dataset": plan.dataset,
                                                        "index": plan.index, "inputs": plan.inputs})
        before = _stage_seconds(plan.run_dir) if result.resumed else {}
        (plan.run_dir / "strategy_cost.json").unlink(missing_ok=True)  # written anew by this attempt's train()
        t0, started = time.perf_counter(), time.time()
        try:
            train_fn(cfg)
        except BaseException:  # an interrupted attempt: only the time up to its last checkpoint is kept
            _record_seconds(plan.run_dir, before, time.perf_counter() - t0, kept=_kept_seconds(plan.run_dir, started))
            raise
        _record_seconds(plan.run_dir, before, time.perf_counter() - t0)
        result.trained = True
        if _complete(plan.run_dir):
            _drop_resume_checkpoint(plan.run_dir)
    if not _complete(plan.run_dir):
        raise RuntimeError(f"stage {plan.run_dir} did not complete (see its run_status.json)")
    return result


TIME_FILE = "stage_time.json"


def _stage_seconds(run_dir: Path) -> dict[str, float]:
    """``{"train_seconds", "extra_seconds"}`` recorded when the stage was trained (older stages: the fit time
    of their ``run_status.json``)."""
    path = run_dir / TIME_FILE
    if path.exists():
        return json.loads(path.read_text())
    status = run_dir / "run_status.json"
    if status.exists():
        fit = (json.loads(status.read_text()).get("metrics") or {}).get("fit_time_s")
        if fit is not None:
            return {"train_seconds": float(fit)}
    return {}


def _kept_seconds(run_dir: Path, started: float) -> float:
    """Wall seconds of an interrupted attempt (begun at epoch time ``started``) that the stage keeps: up to the
    last write of ``last.ckpt``, where the next attempt resumes (0 when this attempt wrote none)."""
    last = run_dir / CHECKPOINT_DIR / "last.ckpt"
    return max(0.0, last.stat().st_mtime - started) if last.exists() else 0.0


def _record_seconds(run_dir: Path, before: Mapping[str, float], wall: float, kept: float | None = None) -> None:
    """A stage's cost into ``stage_time.json``: ``train_seconds`` (the wall seconds of the training the finished
    stage is made of: the finishing attempt's wall time plus, of every earlier interrupted attempt, the time up to
    its last checkpoint -- the epochs the resume continued from; lost epochs and waiting are not training cost),
    ``extra_seconds`` (the strategy's own work, Fisher, memory, ...: ``strategy_cost.json`` of each attempt, summed),
    ``attempts`` and ``attempt_seconds`` (every attempt's whole wall time, for the record). ``kept``: this attempt
    was interrupted and keeps that many seconds (``None``: it finished)."""
    cost_file = run_dir / "strategy_cost.json"
    cost = json.loads(cost_file.read_text()) if cost_file.exists() else None
    extra = float(cost["extra_seconds"]) if cost is not None else 0.0
    used = wall if kept is None else min(kept, wall)
    record: dict[str, Any] = {
        "train_seconds": round(float(before.get("train_seconds", 0.0)) + max(used - extra, 0.0), 3),
        "attempts": int(before.get("attempts", 1 if before.get("train_seconds") is not None else 0)) + 1,
        "attempt_seconds": [*before.get("attempt_seconds", []), round(wall, 3)]}
    if cost is not None:
        record["extra_seconds"] = round(float(before.get("extra_seconds", 0.0)) + extra, 3)
        notes = {k: v for k, v in cost.items() if k != "extra_seconds"}
        if notes:
            record["strategy_notes"] = notes
    if run_dir.exists():
        atomic_write_json(run_dir / TIME_FILE, record)


def _drop_resume_checkpoint(run_dir: Path) -> None:
    """A complete stage needs only ``best.ckpt`` (the next stage's init and every evaluation); ``last.ckpt``
    exists to resume an interrupted stage. Removing it halves the stage cache on disk (a 60-stage smoke study:
    ~12 GB with both)."""
    best, last = run_dir / CHECKPOINT_DIR / "best.ckpt", run_dir / CHECKPOINT_DIR / "last.ckpt"
    if best.exists() and last.exists():
        last.unlink()


# --------------------------------------------------------------------------------------------------
# evaluation of a stage on every data set
# --------------------------------------------------------------------------------------------------


def _eval_key(cfg: DictConfig, ckpt: Path) -> str:
    return _hash({"data": data_key_inputs(cfg), "limit_test_batches": cfg.trainer.get("limit_test_batches", 1.0),
                  "body_composition": bool(cfg.get("eval", {}).get("body_composition", False)),
                  "checkpoint": ckpt.name, "checkpoint_size": ckpt.stat().st_size})


def _best_checkpoint(run_dir: Path) -> Path:
    best = run_dir / CHECKPOINT_DIR / "best.ckpt"
    return best if best.exists() else run_dir / CHECKPOINT_DIR / "last.ckpt"


def _read_eval(path: Path, key: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return record if record.get("eval_key") == key else None


def evaluate_stage(plan: StagePlan, datasets: Mapping[str, Any],
                   datamodules: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Test the stage's best checkpoint on the test split of every data set in ``datasets`` (one device, each
    case once); cached as ``eval_<name>.json`` / ``eval_<name>_cases.csv`` in the stage directory."""
    ckpt = _best_checkpoint(plan.run_dir)
    cfgs = {name: stage_config(plan.cfg, data, plan.run_dir, None) for name, data in datasets.items()}
    keys = {name: _eval_key(c, ckpt) for name, c in cfgs.items()}
    out = {name: r for name in datasets if (r := _read_eval(plan.run_dir / f"eval_{name}.json", keys[name]))}
    if len(out) == len(datasets):
        return out
    with file_lock(plan.run_dir.with_name(plan.run_dir.name + ".lock"), what=f"evaluation of {plan.run_dir.name}"):
        model = None
        for name in datasets:
            if name in out:
                continue
            path = plan.run_dir / f"eval_{name}.json"
            if (record := _read_eval(path, keys[name])) is None:
                if model is None:
                    from musclelab.evaluation.tester import load_for_test
                    from musclelab.train import spatial_dims

                    model = load_for_test(ckpt, spatial_dims(plan.cfg))
                record = _evaluate(model, cfgs[name], name, ckpt, keys[name], datamodules)
            out[name] = record
    return {name: out[name] for name in datasets}


def _evaluate(model: Any, cfg: DictConfig, name: str, ckpt: Path, key: str,
              datamodules: dict[str, Any] | None) -> dict[str, Any]:
    from musclelab.evaluation.tester import run_test
    from musclelab.metrics import summarize
    from musclelab.train import build_datamodule

    run_dir = Path(cfg.paths.output_dir)
    dm_key = _hash(data_key_inputs(cfg))
    dm = datamodules.get(dm_key) if datamodules is not None else None
    if dm is None:
        dm = build_datamodule(cfg)
        dm.setup("test")
        if datamodules is not None:
            datamodules[dm_key] = dm
    record: dict[str, Any] = {"eval_key": key, "dataset": name, "checkpoint": str(ckpt), "metrics": {},
                              "n_cases": 0, "skipped": None}
    if tuple(dm.class_names) != tuple(model.class_names):
        record["skipped"] = (f"classes differ: model {list(model.class_names)}, data set {list(dm.class_names)}")
        log.warning("evaluation of %s on %s skipped: %s", run_dir.name, name, record["skipped"])
    elif len(dm.datasets["test"]) == 0:
        record["skipped"] = "empty test split"
    else:
        model.hparams.body_composition = bool(cfg.get("eval", {}).get("body_composition", False))
        run_test(model, dm, cfg, run_dir)
        rows = pd.DataFrame(model.test_rows)
        atomic_write_text(run_dir / f"eval_{name}_cases.csv", rows.to_csv(index=False))
        summary = summarize(rows.drop(columns=["case_id"]))
        record.update(n_cases=len(rows), summary=summary,
                      metrics={k: v["mean"] for k, v in summary.items() if not k.startswith("spacing")})
    atomic_write_json(run_dir / f"eval_{name}.json", record)
    return record


# --------------------------------------------------------------------------------------------------
# the chain
# --------------------------------------------------------------------------------------------------


def run_chain(base_cfg: DictConfig, sequence: Sequence[str], datasets: Mapping[str, Any],
              stage_root: str | Path, out_dir: str | Path | None = None,
              baseline: Mapping[str, float] | None = None, scratch: Mapping[str, float] | None = None,
              train_fn: Callable[[DictConfig], Any] | None = None,
              datamodules: dict[str, Any] | None = None) -> ChainResult:
    """Train (or reuse) every stage of ``sequence`` and evaluate each on every data set of ``datasets``.

    Args:
        base_cfg: the composed training config (model, optim, trainer, seed, init of stage 0, ...).
        sequence: data set names (keys of ``datasets``) in training order, no repeats.
        datasets: every data set of the study, name -> data config (what ``cfg.data`` would hold).
        stage_root: the shared stage cache (``study.stage_root``).
        out_dir: where the chain's tables go (the Hydra job directory); nothing is written when None.
        baseline: optional random-initialisation score per data set (GEM's forward transfer, ``fwt``).
        scratch: optional score of the single-data-set (from scratch) model per data set (``scratch_gain``).
        train_fn: the training function (``musclelab.train.train``; replaceable in tests).
        datamodules: optional cache of set-up datamodules shared between chains of one process.
    """
    plans = plan_chain(base_cfg, sequence, datasets, stage_root)
    dm_cache: dict[str, Any] = {} if datamodules is None else datamodules
    stages = []
    for plan in plans:
        stage = ensure_stage(plan, train_fn)
        stage.evaluation = evaluate_stage(plan, datasets, dm_cache)
        stages.append(stage)
    result = ChainResult(sequence=[p.dataset for p in plans], datasets=list(datasets), stages=stages,
                         model=str(OmegaConf.select(base_cfg, "model.name", default="") or ""))
    from musclelab.strategies import strategy_of

    name, settings = strategy_of(base_cfg.get("study"))
    result.strategy = {"name": name, "settings": settings}
    result.metrics = chain_metrics(result.accuracy_matrix(), result.sequence, baseline, scratch)
    result.metrics["held_out"] = {d: stages[-1].score(d) for d in result.datasets if d not in result.sequence}
    if out_dir is not None:
        write_chain_outputs(result, Path(out_dir), Path(stage_root))
    return result


def learning_curves(stages: Sequence[StageResult]) -> pd.DataFrame:
    """Every stage's per-epoch validation curve (from its ``metrics.csv``): stage, dataset, epoch, val_dice,
    val_loss (and train_loss / train_dice when logged)."""
    frames = []
    cols = ["epoch", "val_dice", "val_loss", "train_loss", "train_dice"]
    for s in stages:
        path = s.run_dir / "metrics.csv"
        if not path.exists():
            continue
        m = pd.read_csv(path)
        frames.append(m[[c for c in cols if c in m.columns]].assign(stage=s.index, dataset=s.dataset))
    if not frames:
        return pd.DataFrame(columns=["stage", "dataset", *cols])
    df = pd.concat(frames, ignore_index=True)
    return df[["stage", "dataset", *[c for c in cols if c in df.columns]]]


def write_chain_outputs(result: ChainResult, out_dir: Path, stage_root: Path) -> None:
    """``forgetting_matrix.csv`` (+ ``forgetting_heatmap.png``), ``stage_eval.csv``, ``learning_curves.csv``,
    ``chain.json`` and ``chain_metrics.json`` of one chain into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    last = len(result.stages) - 1
    matrix = result.matrix().reset_index()
    matrix.insert(1, "trained", [s.dataset for s in result.stages])  # the data set this row was last trained on
    matrix.insert(2, "final", [s.index == last for s in result.stages])
    atomic_write_text(out_dir / "forgetting_matrix.csv", matrix.to_csv(index=False))
    plot_forgetting_heatmap(matrix, list(result.matrix().columns), out_dir / "forgetting_heatmap.png")
    rows = [{"stage": s.index, "trained": s.dataset, "evaluated": d, "seen": d in result.sequence[: s.index + 1],
             "metric": m, "value": v, "n_cases": rec.get("n_cases", 0)}
            for s in result.stages for d, rec in s.evaluation.items() for m, v in rec.get("metrics", {}).items()]
    atomic_write_text(out_dir / "stage_eval.csv", pd.DataFrame(rows).to_csv(index=False))
    atomic_write_text(out_dir / "learning_curves.csv", learning_curves(result.stages).to_csv(index=False))
    atomic_write_json(out_dir / "chain.json", {
        "sequence": result.sequence, "datasets": result.datasets, "model": result.model,
        "strategy": result.strategy,
        "stage_root": str(Path(stage_root).resolve()),
        "n_trained": result.n_trained,
        "stages": [{"index": s.index, "dataset": s.dataset, "key": s.key, "run_dir": str(s.run_dir),
                    "trained": s.trained, "resumed": s.resumed, **_stage_seconds(s.run_dir),
                    "skipped_evaluations": {d: r["skipped"] for d, r in s.evaluation.items() if r.get("skipped")}}
                   for s in result.stages],
    })
    atomic_write_json(out_dir / "chain_metrics.json", result.metrics)


# --------------------------------------------------------------------------------------------------
# the random-initialisation baseline of forward transfer
# --------------------------------------------------------------------------------------------------


def random_baseline(base_cfg: DictConfig, first: str, datasets: Mapping[str, Any], stage_root: str | Path,
                    datamodules: dict[str, Any] | None = None) -> dict[str, float]:
    """Mean test Dice on every data set of a randomly initialised, untrained model (the stage-0 config of
    ``first`` with ``init=scratch``, seeded): ``b_j`` of GEM's forward transfer (Lopez-Paz & Ranzato 2017, as
    Avalanche computes it). Stored once per study under ``stage_root`` like a stage (``random_init-<key16>``)."""
    import pytorch_lightning as pl
    import torch

    from musclelab.checkpoint_meta import add_to_checkpoint
    from musclelab.outputs.status import write_status
    from musclelab.train import build_datamodule, build_task

    stage_root = Path(stage_root).expanduser().resolve()
    cfg = stage_config(base_cfg, datasets[first], stage_root / "pending", None)
    inputs = {"kind": "random_init", "version": KEY_VERSION, "model": _plain(cfg.model), "loss": _plain(cfg.loss),
              "seed": cfg.seed, "data": data_key_inputs(cfg)}
    key = _hash(inputs)
    run_dir = stage_root / f"random_init-{key[:16]}"
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    plan = StagePlan(-1, first, key, run_dir, cfg, inputs)
    if not _complete(run_dir):
        with file_lock(run_dir.with_name(run_dir.name + ".lock"), what=f"stage {run_dir.name}"):
            if not _complete(run_dir):
                dm = build_datamodule(cfg)
                dm.setup("fit")
                pl.seed_everything(int(cfg.seed), workers=True)
                task = build_task(cfg, list(dm.class_names))
                ckpt = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
                        "pytorch-lightning_version": pl.__version__}
                add_to_checkpoint(ckpt, task.hparams)
                (run_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
                from musclelab.io import atomic_torch_save

                atomic_torch_save(ckpt, run_dir / CHECKPOINT_DIR / "best.ckpt")
                atomic_write_json(run_dir / "stage.json", {"key": key, "kind": "random_init", "inputs": inputs})
                write_status(run_dir, "complete", metrics={})
    evaluation = evaluate_stage(plan, datasets, datamodules)
    return {name: float(rec.get("metrics", {}).get(METRIC, float("nan"))) for name, rec in evaluation.items()}
