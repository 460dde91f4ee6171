"""Multi-stage studies: sequential transfer across data sets / sites (Yoon et al. 2024).

``musclelab transfer [overrides] [-m]`` (:func:`main_transfer`) composes the training config, reads the
``study`` group (``conf/study/chain.yaml``)::

    study:
      sequence: [lits, btcv, chaos]   # training order; "all": every ordering of study.datasets;
                                      # a list of lists: several chains in one process
      datasets:                       # every data set of the study: name -> {config: <data config>, overrides}
        lits: {root: /data/LiTS}      # config defaults to the name (data=lits)
      stage_root: ${paths.cache_dir}/stages

and runs :func:`musclelab.studies.chain.run_chain` for each sequence into the Hydra job directory. Each data
set's data config is composed like ``musclelab train data=<config> <your overrides>`` (so shared ``data.*``
overrides apply to every data set) and then the entry's own fields are merged on top. Stages are cached in
``study.stage_root`` by a hash of their settings and data prefix, so a multirun over orderings
(``-m 'study.sequence=[a],[b],[a,b],[b,a]'``) trains every shared prefix once.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from musclelab.studies.forgetting import (average_forgetting, backward_transfer, chain_metrics, forgetting,
                                          forward_transfer)
from musclelab.studies.orderings import all_orderings

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from musclelab.studies.chain import ChainResult

__all__ = ["TRANSFER_DEFAULTS", "all_orderings", "average_forgetting", "backward_transfer", "chain_metrics",
           "forgetting", "forward_transfer", "main_transfer", "run_chain", "run_study", "study_datasets",
           "study_sequences", "transfer_overrides"]

_DATA_CHOICE = re.compile(r"^[~+]*data=")
_STUDY_CHOICE = re.compile(r"^[~+]*study=")


def __getattr__(name: str) -> Any:
    if name == "run_chain":  # imports Lightning: only when asked for
        from musclelab.studies.chain import run_chain

        return run_chain
    raise AttributeError(name)


def study_datasets(cfg: DictConfig, overrides: Sequence[str],
                   compose: Callable[[list[str]], DictConfig]) -> dict[str, DictConfig]:
    """Name -> resolved data config for every data set of the study (``study.datasets`` in order, then
    names of ``study.sequence`` without an entry). ``compose(overrides)`` composes the training config."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from musclelab.errors import ConfigError

    specs = OmegaConf.to_container(cfg.study.get("datasets") or OmegaConf.create({}), resolve=False)
    if not isinstance(specs, dict):
        raise ConfigError(f"study.datasets must map names to data overrides, got {specs!r}")
    names = list(specs)
    for seq in _raw_sequences(cfg):
        names += [n for n in seq if n not in names]
    base = [o for o in overrides if not _DATA_CHOICE.match(o)]
    out: dict[str, DictConfig] = {}
    for name in names:
        spec = specs.get(name) or {}
        if not isinstance(spec, dict):
            raise ConfigError(f"study.datasets.{name} must be a mapping ({{config: <data config>, <data "
                              f"fields>}}), got {spec!r}")
        spec = dict(spec)
        group = str(spec.pop("config", None) or name)
        try:
            composed = compose([*base, f"data={group}"])
            if spec:
                composed = OmegaConf.merge(composed, {"data": spec})
            data = OmegaConf.create(OmegaConf.to_container(composed.data, resolve=True))
        except (OmegaConfBaseException, ValueError, KeyError) as err:
            raise ConfigError(f"study data set '{name}' (data={group}): {err}".strip()) from err
        except Exception as err:  # Hydra's composition errors (unknown data config, override not in it)
            if type(err).__module__.startswith("hydra"):
                raise ConfigError(f"study data set '{name}' (data={group}): {err}; put settings of only some "
                                  f"data sets under study.datasets.<name> instead of data.*") from err
            raise
        _check_root(name, group, data)
        OmegaConf.set_struct(data, True)
        out[name] = data
    return out


def _check_root(name: str, group: str, data: DictConfig) -> None:
    """Fail before any stage trains when a data set that is read from disk has no ``root``."""
    from musclelab.data.sources import SOURCES
    from musclelab.errors import ConfigError

    if str(data.get("name")) in SOURCES and SOURCES.get(str(data.name)).reads_files and not data.get("root"):
        raise ConfigError(f"study data set '{name}' (data={group}) is read from disk but has no folder: add "
                          f"study.datasets.{name}.root=/path/to/{name}")


def _raw_sequences(cfg: DictConfig) -> list[list[str]]:
    from omegaconf import OmegaConf

    seq = cfg.study.get("sequence")
    if seq is None or seq == "all":
        return []
    seq = OmegaConf.to_container(seq, resolve=True) if OmegaConf.is_config(seq) else seq
    if isinstance(seq, str):
        return [[seq]]
    if seq and all(isinstance(s, (list, tuple)) for s in seq):
        return [[str(x) for x in s] for s in seq]
    return [[str(x) for x in seq]]


def study_sequences(cfg: DictConfig, datasets: Sequence[str]) -> list[tuple[str, ...]]:
    """The chains to run: ``study.sequence`` (one list, or a list of lists), or every ordering of
    ``datasets`` for ``study.sequence=all``."""
    from musclelab.errors import ConfigError

    if cfg.study.get("sequence") == "all":
        if not datasets:
            raise ConfigError("study.sequence=all needs study.datasets")
        return all_orderings(list(datasets))
    seqs = [tuple(s) for s in _raw_sequences(cfg) if s]
    if not seqs:
        raise ConfigError("study.sequence is empty: give the data sets in training order, e.g. "
                          "study.sequence=[lits,btcv,chaos], or study.sequence=all")
    return seqs


def run_study(cfg: DictConfig, overrides: Sequence[str], out_dir: Path,
              compose: Callable[[list[str]], DictConfig]) -> list[ChainResult]:
    """Every chain of the study into ``out_dir`` (one chain: directly; several: ``out_dir/<a-b-c>/`` each plus
    ``study_summary.csv``). With ``sequence=all`` the single-data-set chains come first and their scores are
    the from-scratch reference (``scratch_gain``) of the longer chains."""
    import pandas as pd
    from omegaconf import OmegaConf

    from musclelab.io import atomic_write_text
    from musclelab.studies.chain import random_baseline, run_chain
    from musclelab.strategies import strategy_of

    from musclelab.baselines import BASELINES
    from musclelab.errors import ConfigError

    if cfg.model.name in BASELINES:
        raise ConfigError(f"model={cfg.model.name} is a non-learning baseline: it has no weights to carry from one "
                          "stage to the next; choose a trainable model for a transfer study")
    strategy_of(cfg.get("study"))  # an unknown study.strategy: one line, before any data is read
    datasets = study_datasets(cfg, overrides, compose)
    sequences = study_sequences(cfg, list(datasets))
    stage_root = Path(str(OmegaConf.select(cfg, "study.stage_root") or Path(cfg.paths.cache_dir) / "stages"))
    datamodules: dict[str, Any] = {}
    results: list[ChainResult] = []
    scratch: dict[str, float] = {}
    # forward transfer's b_j: an untrained, seeded model scored once per study on every data set
    baseline = random_baseline(cfg, sequences[0][0], datasets, stage_root, datamodules)
    for seq in sequences:
        target = out_dir if len(sequences) == 1 else out_dir / "-".join(seq)
        result = run_chain(cfg, list(seq), datasets, stage_root, target, baseline=baseline,
                           scratch=scratch or None, datamodules=datamodules)
        if len(seq) == 1:
            scratch[seq[0]] = result.stages[0].score(seq[0])
        results.append(result)
        print(f"chain {' -> '.join(seq)}: {result.n_trained} stage(s) trained, {len(seq) - result.n_trained} "
              f"reused; test dice per stage:\n{result.matrix().round(4).to_string()}")
    if len(sequences) > 1:
        rows = [{"sequence": "-".join(r.sequence), "length": len(r.sequence), "n_trained": r.n_trained,
                 "acc": r.metrics["acc"], "bwt": r.metrics["bwt"], "avg_forgetting": r.metrics["avg_forgetting"],
                 "avg_scratch_gain": r.metrics.get("avg_scratch_gain"),
                 **{f"final_{d}": r.stages[-1].score(d) for d in r.datasets}}
                for r in results]
        atomic_write_text(out_dir / "study_summary.csv", pd.DataFrame(rows).to_csv(index=False))
    return results


#: stage training of Yoon et al. 2024 (Adam 5e-4, cross-entropy, constant rate), used by ``musclelab transfer``
#: unless an ``experiment=`` is chosen (it sets its own) or the key is given on the command line
TRANSFER_DEFAULTS: dict[str, str] = {"loss": "ce", "optim": "adam", "optim.lr": "0.0005", "optim.scheduler": "none"}


def transfer_overrides(args: Sequence[str]) -> list[str]:
    """The command line for the transfer app: ``study`` selected (``+study=chain`` while train.yaml has no
    ``study`` default), and unless an experiment is chosen (it sets its own) :data:`TRANSFER_DEFAULTS` and
    ``task_name=transfer`` (keys given on the command line win)."""
    import yaml

    from musclelab.compose import config_dir

    args = list(args)
    defaults = yaml.safe_load((config_dir() / "train.yaml").read_text()).get("defaults") or []
    has_default = any(isinstance(d, dict) and "study" in d for d in defaults)
    if not has_default:
        chosen = [a for a in args if _STUDY_CHOICE.match(a)]
        args = ["+" + a.lstrip("+~") if _STUDY_CHOICE.match(a) else a for a in args]
        if not chosen:
            args = ["+study=chain", *args]
    keys = {a.split("=", 1)[0].lstrip("+~") for a in args if "=" in a and not a.startswith("-")}
    added = []
    if "experiment" not in keys:  # an experiment sets its own; otherwise the paper's stage training
        # a key the user gives wins; choosing another optimiser (optim=sgd) keeps that optimiser's own settings
        added = [f"{k}={v}" for k, v in TRANSFER_DEFAULTS.items()
                 if k not in keys and not (k.split(".")[0] in keys and "." in k)]
    if "task_name" not in keys and "experiment" not in keys:  # experiments name their own output folder
        added.append("task_name=transfer")
    # next to the user's first override, so that flags (-m, --cfg job) stay where they were
    at = next((i for i, a in enumerate(args) if "=" in a and not a.startswith("-")), len(args))
    return args[:at] + added + args[at:]


def main_transfer(args: list[str]) -> None:
    """``musclelab transfer [overrides] [-m]``: the Hydra app running the chains of ``study`` (see module doc);
    a mistake is one line (exit 2) before any stage trains."""
    from hydra.core.hydra_config import HydraConfig

    from musclelab.compose import compose_in_app, run_app

    def main(cfg: DictConfig) -> float | None:
        hc = HydraConfig.get()
        results = run_study(cfg, list(hc.overrides.task), Path(hc.runtime.output_dir), compose_in_app)
        return results[-1].metrics.get("acc") if results else None

    run_app("transfer", transfer_overrides(args), main)
