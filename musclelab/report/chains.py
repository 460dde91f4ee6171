"""The Yoon et al. 2024 sequential-transfer report: forgetting tables, chain metrics and learning curves.

Reads the outputs of ``musclelab transfer`` (:func:`musclelab.studies.chain.write_chain_outputs`), files only:
a single chain directory, or a study directory holding one sub-directory per ordering (``<a-b-c>/``) and
``study_summary.csv``. Per chain: ``forgetting_matrix.csv`` (stage, trained, final, one column per evaluated
data set: mean test Dice), ``chain.json`` (sequence, datasets, stages), ``chain_metrics.json`` (ACC, BWT,
average forgetting), ``learning_curves.csv`` (stage, dataset, epoch, val_dice, ...) and
``forgetting_heatmap.png``.

Outputs (``<dir>/report/`` by default):

* ``report.md`` — one forgetting table per ordering in the paper's layout (rows: "after a→b", columns:
  evaluated data set, the data set trained last in **bold**), its ACC / BWT / average forgetting and a link to
  its heatmap; chains with a missing or incomplete ``chain.json`` (or matrix) are listed, not dropped;
* ``chains_summary.csv`` — ordering, acc, bwt, avg_forgetting, ``final_<dataset>`` per complete chain;
* ``fig_learning_<dataset>.png`` — validation Dice vs epoch of every stage that trained on that data set, one
  line per ordering prefix (stages shared by several orderings are drawn once).
* ``findings.csv`` and the report's "Findings" section — the paper's claims (forgetting per model, VNet the
  most robust, faster convergence and similar-or-better Dice after transfer) against what the chains measured
  (:func:`chain_findings`).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from musclelab.io import atomic_write_text  # noqa: E402
from musclelab.outputs.figures import save_figure  # noqa: E402
from musclelab.metrics.statistics import ClaimTest, compare, noninferiority, one_sample  # noqa: E402
from musclelab.report.findings import (Finding, findings_markdown, judged, not_measurable,  # noqa: E402
                                       write_findings)
from musclelab.report.design import design_markdown, job_dirs  # noqa: E402
from musclelab.report.markdown import md_table  # noqa: E402
from musclelab.studies.forgetting import average_forgetting, backward_transfer  # noqa: E402

from .runs import _natural_key, report_dir  # noqa: E402
from .strategies import several_strategies, strategies_markdown, strategy_findings, write_strategies  # noqa: E402

KIND = "chains"
TITLE = "Yoon et al. 2024 reproduction: sequential transfer and forgetting"
MATRIX = "forgetting_matrix.csv"
ARROW = "→"
META_COLUMNS = ("stage", "trained", "final")
#: learning speed = epochs until the validation Dice first reaches this fraction of a target: the best validation
#: Dice of the from-scratch stage on the same data set (the same target for every stage on that data set)
SPEED_FRACTION = 0.95
#: the per-epoch Dice the learning-speed rows use, in order of preference: validation Dice; where no chain of the
#: model logged one (the Yoon liver design has no validation set), the training Dice of the same epochs
CURVE_COLUMNS = {"val_dice": "validation Dice", "train_dice": "training Dice"}
CHAIN_METRICS = {"acc": "ACC (average accuracy)", "bwt": "BWT (backward transfer)",
                 "avg_forgetting": "average forgetting"}


def _chain_dirs(study_dir: Path) -> list[Path]:
    """Every directory under ``study_dir`` (itself included) holding a forgetting matrix or a ``chain.json``."""
    found = {Path(d) for d, _, files in os.walk(study_dir) if MATRIX in files or "chain.json" in files}
    return sorted(found, key=lambda p: _natural_key(str(p.relative_to(study_dir))))


def detect(study_dir: str | Path) -> bool:
    """Whether ``study_dir`` holds chain outputs (a ``forgetting_matrix.csv`` in it or below it)."""
    root = Path(study_dir)
    return root.is_dir() and any(MATRIX in files for _, _, files in os.walk(root))


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _float(v: object) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def ordering_label(sequence: list[str]) -> str:
    """``"a→b→c"``."""
    return ARROW.join(sequence)


@dataclass
class Chain:
    """One complete chain read from disk."""

    path: Path  # the chain's output directory
    rel: str  # relative to the study directory
    sequence: list[str]
    datasets: list[str]
    matrix: pd.DataFrame  # forgetting_matrix.csv as read
    metrics: dict
    curves: pd.DataFrame | None
    model: str = ""  # chain.json "model" (empty for chains written before it was recorded)
    strategy: str = "naive"  # chain.json "strategy.name" (absent: naive sequential fine-tuning)
    settings: dict = field(default_factory=dict)  # chain.json "strategy.settings"
    #: per stage, wall seconds of its training (chain.json stages[i].train_seconds + extra_seconds; NaN if absent)
    stage_seconds: list[float] = field(default_factory=list)
    stage_keys: list[str] = field(default_factory=list)  # per stage, its cache key (chain.json stages[i].key)

    @property
    def label(self) -> str:
        return ordering_label(self.sequence)

    def R(self) -> np.ndarray:
        """``R[i, j]``: test Dice after stage ``i`` on the ``j``-th data set of the ordering (T × T; NaN where the
        matrix lacks a cell)."""
        T = len(self.sequence)
        out = np.full((T, T), np.nan)
        for j, d in enumerate(self.sequence):
            if d in self.matrix:
                out[:, j] = [_float(self.matrix.iloc[i][d]) for i in range(T)]
        return out

    @cached_property
    def scores(self) -> dict[str, float]:
        """ACC, BWT and average forgetting of this chain (:data:`CHAIN_METRICS`) from its forgetting matrix, by
        the definitions of :mod:`musclelab.studies.forgetting` that wrote ``chain_metrics.json``: the paper's
        findings and the strategies section read the same numbers, and a chain whose ``chain_metrics.json``
        holds a null (or predates a definition) is scored from the matrix it has."""
        R = self.R()
        final = R[-1]
        return {"acc": float(np.nanmean(final)) if np.isfinite(final).any() else math.nan,
                "bwt": backward_transfer(R), "avg_forgetting": average_forgetting(R)}

    def title(self, with_model: bool, stage: int | None = None) -> str:
        """The ordering up to ``stage`` (default: all of it), prefixed by the model when the study compares
        several (``"unet: a→b"``)."""
        label = self.label if stage is None else ordering_label(self.sequence[: stage + 1])
        return f"{self.model or '?'}: {label}" if with_model else label


@dataclass
class ChainsResult:
    root: Path
    chains: list[Chain]
    problems: pd.DataFrame  # chain, reason
    summary: pd.DataFrame
    per_model: pd.DataFrame  # model_table(chains): chains_models.csv and the report's "Per model" table
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        """Distinct models of the complete chains, in order of appearance."""
        return list(dict.fromkeys(c.model for c in self.chains))

    @property
    def several_models(self) -> bool:
        return len(self.models) > 1

    @property
    def several_strategies(self) -> bool:
        return several_strategies(self.chains)


def paper_chains(chains: list[Chain]) -> list[Chain]:
    """The chains the paper's claims are tested on: naive sequential fine-tuning (Yoon et al. try nothing against
    forgetting); all of them when no chain is naive."""
    naive = [c for c in chains if c.strategy == "naive"]
    return naive or chains


def _load_chain(root: Path, path: Path) -> tuple[Chain | None, str]:
    """The chain in ``path``, or ``(None, reason)`` when its outputs are missing or incomplete."""
    info = _read_json(path / "chain.json")
    if info is None:
        return None, ("no chain.json" if not (path / "chain.json").exists() else "unreadable chain.json")
    seq = info.get("sequence")
    if not isinstance(seq, list) or not seq:
        return None, "chain.json has no sequence"
    seq = [str(s) for s in seq]
    stages = info.get("stages")
    if not isinstance(stages, list) or len(stages) < len(seq):
        n = len(stages) if isinstance(stages, list) else 0
        return None, f"chain.json incomplete: {n} of {len(seq)} stages"
    if not (path / MATRIX).exists():
        return None, f"no {MATRIX}"
    try:
        matrix = pd.read_csv(path / MATRIX)
    except (OSError, ValueError) as err:
        return None, f"unreadable {MATRIX} ({type(err).__name__})"
    if len(matrix) < len(seq):
        return None, f"{MATRIX} incomplete: {len(matrix)} of {len(seq)} stages"
    datasets = [str(d) for d in info.get("datasets") or []] or [c for c in matrix.columns if c not in META_COLUMNS]
    datasets = [d for d in datasets if d in matrix.columns]
    metrics = _read_json(path / "chain_metrics.json") or {}
    curves = None
    if (path / "learning_curves.csv").exists():
        try:
            curves = pd.read_csv(path / "learning_curves.csv")
        except (OSError, ValueError):
            curves = None
    rel = path.relative_to(root).as_posix() or "."
    strategy = info.get("strategy") if isinstance(info.get("strategy"), dict) else {}
    seconds = [_float(st.get("train_seconds")) + _float(st.get("extra_seconds") or 0.0)
               if isinstance(st, dict) else math.nan for st in stages[: len(seq)]]
    keys = [str(st.get("key", "")) if isinstance(st, dict) else "" for st in stages[: len(seq)]]
    return Chain(path=path, rel=rel, sequence=seq, datasets=datasets, matrix=matrix, metrics=metrics,
                 curves=curves, model=str(info.get("model") or ""),
                 strategy=str(strategy.get("name") or "naive"), settings=dict(strategy.get("settings") or {}),
                 stage_seconds=seconds, stage_keys=keys), ""


def _expected_chain_dirs(root: Path) -> list[Path]:
    """Chain directories named by ``study_summary.csv`` files (column ``sequence``, ``a-b-c``): each ordering of
    a study is written to ``<the summary's directory>/<a-b-c>/``."""
    out = []
    for path in sorted(root.rglob("study_summary.csv")):
        try:
            s = pd.read_csv(path)
        except (OSError, ValueError):
            continue
        if "sequence" in s:
            out += [path.parent / str(v) for v in s["sequence"].dropna()]
    return out


def _swept_models(root: Path) -> list[str]:
    """The ``model`` values of the study's sweep (``multirun.yaml``), if it sweeps over models."""
    from .runs import expected_grid

    try:
        grid = expected_grid(root)
    except (OSError, ValueError):
        return []
    if grid is None or "model" not in grid.columns:
        return []
    return [str(m) for m in dict.fromkeys(grid["model"].dropna())]


def _job_models(root: Path, chains: list[Chain]) -> set[str]:
    """The ``model=<option>`` overrides (``.hydra/overrides.yaml``) of the sweep jobs holding a complete chain: a
    swept option (``ronneberger_unet_smoke``) is not the ``model.name`` its chains record (``ronneberger_unet``)."""
    import yaml

    out: set[str] = set()
    for c in chains:
        for parent in [c.path, *c.path.parents]:
            path = parent / ".hydra" / "overrides.yaml"
            if path.exists():
                try:
                    items = yaml.safe_load(path.read_text()) or []
                except (OSError, yaml.YAMLError):
                    items = []
                out |= {str(i).split("=", 1)[1] for i in items if str(i).startswith("model=")}
                break
            if parent == root:
                break
    return out


def analyze(study_dir: str | Path) -> ChainsResult:
    """Read every chain under ``study_dir``; incomplete ones go to ``problems``."""
    root = Path(study_dir)
    chains, problems = [], []
    dirs = _chain_dirs(root)
    for path in dirs:
        chain, reason = _load_chain(root, path)
        if chain is None:
            problems.append({"chain": path.relative_to(root).as_posix() or ".", "reason": reason})
        else:
            chains.append(chain)
    seen = {p.resolve() for p in dirs}
    for path in dict.fromkeys(_expected_chain_dirs(root)):
        if path.resolve() not in seen:
            problems.append({"chain": path.relative_to(root).as_posix(),
                             "reason": "listed in study_summary.csv, no chain directory"})
    covered = {c.model for c in chains} | _job_models(root, chains)
    for model in _swept_models(root):   # a sweep job that failed before writing any chain
        if model not in covered:
            problems.append({"chain": f"model={model}", "reason": "in the sweep (multirun.yaml), no complete chain"})
    paper = paper_chains(chains)
    return ChainsResult(root=root, chains=chains, problems=pd.DataFrame(problems, columns=["chain", "reason"]),
                        summary=summarize(chains), per_model=model_table(paper),
                        findings=chain_findings(paper) + strategy_findings(chains))


def summarize(chains: list[Chain]) -> pd.DataFrame:
    """``chains_summary.csv``: one row per chain — chain_dir, ordering, length, acc, bwt, avg_forgetting and
    ``final_<dataset>`` (the last stage's test Dice on every evaluated data set)."""
    datasets: list[str] = []
    for c in chains:
        datasets += [d for d in c.datasets if d not in datasets]
    rows = []
    for c in chains:
        last = c.matrix.iloc[len(c.sequence) - 1]
        row: dict[str, object] = {"chain_dir": c.rel, "model": c.model, "strategy": c.strategy,
                                  "ordering": c.label, "length": len(c.sequence)}
        row.update({k: _score(c, k) for k in CHAIN_METRICS})
        row.update({f"final_{d}": _float(last[d]) if d in c.matrix else math.nan for d in datasets})
        rows.append(row)
    cols = ["chain_dir", "model", "strategy", "ordering", "length", *CHAIN_METRICS,
            *[f"final_{d}" for d in datasets]]
    if not several_strategies(chains):
        cols.remove("strategy")   # single-strategy studies keep the columns they always had
    return pd.DataFrame(rows, columns=cols)


def curve_column(chains: list[Chain]) -> str | None:
    """The first of :data:`CURVE_COLUMNS` with a finite value in any chain's learning curves (``val_dice``, else
    ``train_dice``); ``None`` when no chain has either."""
    for col in CURVE_COLUMNS:
        for c in chains:
            if c.curves is not None and col in c.curves and pd.to_numeric(c.curves[col], errors="coerce").notna().any():
                return col
    return None


def epochs_to_fraction(curve: pd.DataFrame, fraction: float = SPEED_FRACTION, target: float | None = None,
                       column: str = "val_dice") -> float:
    """Learning speed of one stage: the first epoch (counted from 1) whose Dice ``column`` (validation, or training
    where there is no validation set) reaches ``fraction`` of ``target`` (default: the stage's own best); NaN
    without a usable curve. A stage that never reaches it counts as one epoch more than it trained (censored: it
    failed within its budget)."""
    dice = pd.to_numeric(curve.get(column), errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(dice)
    if not ok.any() or np.nanmax(dice) <= 0:
        return math.nan
    goal = fraction * (np.nanmax(dice) if target is None else target)
    hit = np.flatnonzero(ok & (dice >= goal))
    return float(hit[0] + 1) if hit.size else float(len(dice) + 1)


def model_table(chains: list[Chain]) -> pd.DataFrame:
    """One row per model: mean ± sd over its complete orderings of ACC, BWT and average forgetting (chains of
    two or more stages), and learning speed — mean epochs to reach :data:`SPEED_FRACTION` of the from-scratch
    stage's best validation Dice on the same data set, for stages trained from the initial weights (first stage)
    and for stages that start from an earlier stage (after transfer); each shared stage counted once."""
    rows = []
    for model in dict.fromkeys(c.model for c in chains):
        mine = [c for c in chains if c.model == model]
        multi = [c for c in mine if len(c.sequence) > 1]
        row: dict[str, object] = {"model": model or "?", "orderings": len(mine)}
        for key in CHAIN_METRICS:
            vals = np.array([_score(c, key) for c in multi], dtype=float)
            vals = vals[np.isfinite(vals)]
            row[key] = _mean_sd(vals)
        first, later = _speeds(mine)
        row["epochs_first_stage"] = _mean_sd(first, 1)
        row["epochs_after_transfer"] = _mean_sd(later, 1)
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", "orderings", *CHAIN_METRICS, "epochs_first_stage",
                                       "epochs_after_transfer"])


def _mean_sd(values: np.ndarray, digits: int = 3) -> str:
    if len(values) == 0:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


# -------------------------------------------------------------------------------------------------- findings
SOURCE = "Yoon et al. 2024"
#: a model "learns" when its mean ACC over orderings clears this; forgetting is judged only for such models
LEARNS_ACC = 0.5
#: BWT within this of 0 is "no forgetting" for the robustness ranking; the forgetting claim needs BWT < -margin
BWT_MARGIN = 0.0
#: "similar or better" Dice after transfer: the gain over training on the data set alone may be down to -this
SIMILAR_DICE = 0.02


def _stage_curves(chains: list[Chain], column: str = "val_dice") -> dict[str, pd.DataFrame]:
    """Ordering prefix ("a→b") → that stage's curve sorted by epoch, each stage (prefix) once."""
    out: dict[str, pd.DataFrame] = {}
    for c in chains:
        if c.curves is None or not {"stage", "epoch", column} <= set(c.curves.columns):
            continue
        for stage, g in c.curves.groupby("stage", sort=True):
            if 0 <= int(stage) < len(c.sequence):
                out.setdefault(ordering_label(c.sequence[: int(stage) + 1]), g.sort_values("epoch"))
    return out


def _speeds(chains: list[Chain]) -> tuple[np.ndarray, np.ndarray]:
    """Epochs to :data:`SPEED_FRACTION` of the target (the from-scratch stage's best validation Dice on the same
    data set): (first stages, stages after transfer), each stage (ordering prefix) once."""
    pairs = _speed_pairs(chains)
    first = np.array([v for k, v in pairs["scratch"].items() if np.isfinite(v)])
    later = np.array([v for v, _ in pairs["transfer"].values() if np.isfinite(v)])
    return first, later


def _speed_pairs(chains: list[Chain]) -> dict[str, dict]:
    """``{"scratch": data set → epochs of its first stage, "transfer": prefix → (epochs, the scratch epochs on the
    same data set), "column": the Dice used}``, every stage measured against the from-scratch stage's best
    validation Dice on its data set (training Dice where no chain logged a validation Dice, :func:`curve_column`).
    Transferred stages without a from-scratch stage on their data set are left out (listed in ``"no_target"``)."""
    column = curve_column(chains)
    if column is None:
        return {"scratch": {}, "transfer": {}, "no_target": [], "column": None}
    curves = _stage_curves(chains, column)
    best = {k: float(np.nanmax(pd.to_numeric(g[column], errors="coerce"))) for k, g in curves.items()
            if ARROW not in k and pd.to_numeric(g[column], errors="coerce").notna().any()}
    scratch = {k: epochs_to_fraction(g, target=best[k], column=column) for k, g in curves.items() if k in best}
    transfer, no_target = {}, []
    for k, g in curves.items():
        if ARROW not in k:
            continue
        d = k.split(ARROW)[-1]
        if d not in best:
            no_target.append(k)
            continue
        transfer[k] = (epochs_to_fraction(g, target=best[d], column=column), scratch[d])
    return {"scratch": scratch, "transfer": transfer, "no_target": no_target, "column": column}


def _score(c: Chain, key: str) -> float:
    """``key`` of one chain: ACC / BWT / average forgetting from its matrix (:attr:`Chain.scores`), any other
    key (``avg_scratch_gain``, ``fwt``) from its ``chain_metrics.json``."""
    return c.scores[key] if key in CHAIN_METRICS else _float(c.metrics.get(key))


def _metric(chains: list[Chain], key: str) -> np.ndarray:
    vals = np.array([_score(c, key) for c in chains if len(c.sequence) > 1], dtype=float)
    return vals[np.isfinite(vals)]


PAPER = {
    "forget": "catastrophic forgetting occurs: performance on previously learned data sets decreases after training "
              "on new ones (Tables 7-9)",
    "lits": "LiTS shows the largest decrease; BTCV is preserved and CHAOS slightly lower (Table 7)",
    "vnet": "VNet is the most robust to catastrophic forgetting",
    "speed": "transfer learning accelerates convergence (Figs. 8-10)",
    "similar": "after transfer, the performance on the new data set is similar to or better than training from scratch",
}


def _by_ordering(chains: list[Chain], key: str) -> pd.Series:
    """``key`` (:func:`_score`) per ordering label, chains of two or more stages."""
    vals = {c.label: _score(c, key) for c in chains if len(c.sequence) > 1}
    return pd.Series(vals, dtype=float).dropna()


def _change_series(chains: list[Chain]) -> dict[str, pd.Series]:
    """Data set -> R[final, j] - R[j, j] per ordering (label) in which it was trained before the last stage."""
    out: dict[str, dict[str, float]] = {}
    for c in chains:
        T = len(c.sequence)
        for j, d in enumerate(c.sequence[:-1]):
            if d in c.matrix:
                delta = _float(c.matrix.iloc[T - 1][d]) - _float(c.matrix.iloc[j][d])
                if np.isfinite(delta):
                    out.setdefault(d, {})[c.label] = delta
    return {d: pd.Series(v, dtype=float) for d, v in out.items()}


def chain_findings(chains: list[Chain]) -> list[Finding]:
    """The paper's sequential-transfer claims, per model, against the chains' numbers (never assumed); verdicts
    by :func:`musclelab.report.findings.judge` (unit of analysis: the ordering, or the stage for convergence):

    * forgetting: after training on later data sets the earlier ones score lower (Tables 7-9): BWT < 0,
      Wilcoxon signed-rank of BWT vs 0 over the orderings; judged only for models that learn (mean ACC >
      :data:`LEARNS_ACC`);
    * LiTS is the earlier data set that loses the most (Table 7): its change is below the next-worst data set's
      (Wilcoxon, paired by ordering where both were trained before the last stage) *and* below 0 — both must hold
      (the larger p counts);
    * VNet is the most robust to forgetting: its BWT is higher than the best other learning model's (Wilcoxon,
      paired by ordering);
    * transfer converges faster (Figs. 8-10): epochs to :data:`SPEED_FRACTION` of a *fixed* target — the
      from-scratch stage's best validation Dice on the same data set — for each stage after transfer minus the
      from-scratch stage's epochs (Wilcoxon signed-rank over the transferred stages);
    * transfer gives similar or better final performance: the gain of a stage over the same data set trained
      alone (``avg_scratch_gain`` per ordering) non-inferior with margin :data:`SIMILAR_DICE` (one-sided t-test).
    """
    out: list[Finding] = []
    models = list(dict.fromkeys(c.model for c in chains))
    multi = [c for c in chains if len(c.sequence) > 1]
    if not multi:
        return [not_measurable("Training on later data sets lowers performance on earlier ones (forgetting)",
                               "no chain of two or more stages", f"{SOURCE}, Tables 7-9", PAPER["forget"])]
    bwt_by_model: dict[str, pd.Series] = {}
    note_dep = "orderings that share a prefix share its stages, so they are not fully independent"
    for model in models:
        mine = [c for c in chains if c.model == model]
        name = model or "?"
        bwt, acc, fgt = _metric(mine, "bwt"), _metric(mine, "acc"), _metric(mine, "avg_forgetting")
        claim = f"{name}: training on later data sets lowers the Dice on earlier ones (catastrophic forgetting)"
        src = f"{SOURCE}, Tables 7-9"
        if not len(bwt):
            out.append(not_measurable(claim, "no chain of two or more stages", src, PAPER["forget"]))
            continue
        measured = (f"mean BWT {bwt.mean():+.3f} (min {bwt.min():+.3f}, {int((bwt < 0).sum())} of {len(bwt)} "
                    f"orderings negative), mean forgetting {fgt.mean() if len(fgt) else math.nan:.3f}, "
                    f"mean ACC {acc.mean() if len(acc) else math.nan:.3f}")
        if not len(acc) or acc.mean() <= LEARNS_ACC:
            out.append(Finding(claim, measured, "not measurable", src, PAPER["forget"],
                               note=f"not judged: the model did not learn (mean ACC <= {LEARNS_ACC})"))
            continue
        bwt_by_model[name] = _by_ordering(mine, "bwt")
        out.append(judged(claim, measured, one_sample(bwt, "ordering"), "difference", -1, src, PAPER["forget"],
                          note=note_dep))
    for model in models:   # which earlier data set loses most (Table 7: LiTS; BTCV preserved; CHAOS slightly)
        change = _change_series([c for c in chains if c.model == model])
        name = model or "?"
        claim = f"{name}: of the earlier data sets, LiTS loses the most Dice after later training"
        src = f"{SOURCE}, Table 7"
        if "lits" not in change or len(change) < 2:
            out.append(not_measurable(claim, "needs LiTS and another data set trained before a later one", src,
                                      PAPER["lits"]))
            continue
        other = min((d for d in change if d != "lits"), key=lambda d: change[d].mean())
        vs_other = compare(change["lits"], change[other], "ordering")
        vs_zero = one_sample(change["lits"].to_numpy(float), "ordering")
        p = max(vs_other.p_value, vs_zero.p_value) if np.isfinite(vs_other.p_value) and \
            np.isfinite(vs_zero.p_value) else math.nan
        r = ClaimTest(f"{vs_other.test} vs {other}, and {vs_zero.test} (both; larger p)", "ordering",
                       vs_other.n, max(vs_other.estimate, vs_zero.estimate), vs_other.statistic, p)
        out.append(judged(claim, "mean change on an earlier data set after the later stages: " + ", ".join(
            f"{d} {v.mean():+.3f} (n = {len(v)})" for d, v in sorted(change.items())), r, "difference", -1, src,
            PAPER["lits"], note="change = R[final, j] - R[j, j] over the orderings where j is not last; agrees when "
                                f"LiTS's is significantly below {other}'s (the next lowest) and below 0"))
    claim = "VNet is the most robust architecture to catastrophic forgetting (highest BWT)"
    src = f"{SOURCE}, Tables 7-9 and conclusion"
    if "vnet" not in bwt_by_model or len(bwt_by_model) < 2:
        why = ("VNet did not learn or is not in the study" if "vnet" not in bwt_by_model
               else "fewer than two models learnt")
        out.append(not_measurable(claim, why, src, PAPER["vnet"]))
    else:
        means = {m: float(v.mean()) for m, v in bwt_by_model.items()}
        order = sorted(means, key=means.get, reverse=True)
        best_other = max((m for m in means if m != "vnet"), key=means.get)
        out.append(judged(claim, "mean BWT " + ", ".join(f"{m} {means[m]:+.3f}" for m in order),
                          compare(bwt_by_model["vnet"], bwt_by_model[best_other], "ordering"), "difference", +1,
                          src, PAPER["vnet"], note=f"VNet against the best other model that learns ({best_other}; "
                                                   f"mean ACC > {LEARNS_ACC}), paired by ordering"))
    for model in models:
        mine = [c for c in chains if c.model == model]
        name = model or "?"
        sp = _speed_pairs(mine)
        claim = f"{name}: after transfer a stage converges in fewer epochs than from scratch"
        src = f"{SOURCE}, Figs. 8-10"
        pairs = {k: v for k, v in sp["transfer"].items() if np.isfinite(v[0]) and np.isfinite(v[1])}
        col = sp["column"]
        what = CURVE_COLUMNS.get(col or "", "")
        if not pairs:
            why = ("no learning curves (validation or training Dice per epoch) of first stages and of later stages"
                   if not sp["no_target"] else
                   "no transferred stage has a from-scratch stage on its data set: "
                   + ", ".join(sp["no_target"]))
            out.append(not_measurable(claim, why, src, PAPER["speed"]))
        else:
            d = np.array([a - b for a, b in pairs.values()])
            first = np.array(list(sp["scratch"].values()), dtype=float)
            r = one_sample(d, "stage after transfer (paired with the from-scratch stage on its data set)")
            out.append(judged(
                claim, f"epochs to {SPEED_FRACTION:.0%} of the from-scratch best {what}: "
                f"{np.nanmean(first):.1f} from scratch (n = {len(first)}), "
                f"{np.mean([a for a, _ in pairs.values()]):.1f} after transfer (n = {len(pairs)}); mean paired "
                f"difference {d.mean():+.1f}", r, "difference", -1, src, PAPER["speed"],
                note=("the target is fixed per data set (the from-scratch stage's best), not each stage's own best; "
                      "a stage that never reaches it counts as its epochs + 1; every stage trains the same number "
                      "of epochs" + ("" if col == "val_dice" else
                                     "; measured on the per-epoch training Dice (train/dice of the stage's own "
                                     "training data): these chains have no validation set, so the target is the "
                                     "from-scratch stage's best training Dice on the same data set"))))
        gain = _metric(mine, "avg_scratch_gain")
        claim = f"{name}: after transfer the Dice on the new data set is similar or better than training on it alone"
        if not len(gain):
            out.append(not_measurable(claim, "no single-data-set chains to compare with", src, PAPER["similar"]))
        else:
            r = noninferiority(gain, None, SIMILAR_DICE, "ordering")
            out.append(judged(claim, f"mean gain over the data set trained alone {gain.mean():+.3f} "
                                     f"({int((gain > 0).sum())} of {len(gain)} orderings better)", r,
                              "non-inferiority", +1, src, PAPER["similar"],
                              note=f"similar = not lower by more than {SIMILAR_DICE} Dice (non-inferiority margin); every "
                                   "ordering's gain is against the same from-scratch model per data set, so the "
                                   "orderings are not independent and the t-test is optimistic (on simulated null "
                                   "chains at the margin it agreed in 7 of 40, α = 0.05)"))
    return out


# ---------------------------------------------------------------------------------------------------- output
def _fmt(x: float, digits: int = 3) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def forgetting_table(chain: Chain) -> pd.DataFrame:
    """The paper's layout as text: rows "after a→b" (training order), columns the evaluated data sets, mean test
    Dice (3 decimals), the data set trained last at that stage in bold."""
    rows = []
    for i in range(len(chain.sequence)):
        r = chain.matrix.iloc[i]
        trained = chain.sequence[i]
        cells = {"training order": f"after {ordering_label(chain.sequence[: i + 1])}"}
        for d in chain.datasets:
            text = _fmt(_float(r[d]))
            cells[d] = f"**{text}**" if d == trained and text != "–" else text
        rows.append(cells)
    return pd.DataFrame(rows, columns=["training order", *chain.datasets])


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)


def learning_lines(chains: list[Chain]) -> dict[str, dict[str, pd.DataFrame]]:
    """Target data set → ordering prefix ("a→b", or "model: a→b" when the chains have several models) → that
    stage's curve (epoch, val_dice); each prefix once."""
    several = len({c.model for c in chains}) > 1
    out: dict[str, dict[str, pd.DataFrame]] = {}
    column = curve_column(chains)
    for c in chains:
        if column is None or c.curves is None or not {"stage", "epoch", column} <= set(c.curves.columns):
            continue
        for stage, g in c.curves.groupby("stage", sort=True):
            i = int(stage)
            if not 0 <= i < len(c.sequence):
                continue
            prefix = c.title(several, stage=i)
            curve = g[["epoch", column]].apply(pd.to_numeric, errors="coerce").dropna().sort_values("epoch")
            if len(curve):
                out.setdefault(c.sequence[i], {}).setdefault(prefix, curve)
    return out


def plot_learning(dataset: str, lines: dict[str, pd.DataFrame], path: str | Path) -> Path:
    """Validation (or, without a validation set, training) Dice vs epoch of every stage that trained on
    ``dataset``: one line per ordering prefix, one panel per model when the labels carry one (``"model: a→b"``)."""
    panels: dict[str, dict[str, pd.DataFrame]] = {}
    for label, curve in lines.items():
        model, _, prefix = label.rpartition(": ")
        panels.setdefault(model, {})[prefix] = curve
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1.3, 3.6), sharey=True, squeeze=False)
    for ax, (model, curves) in zip(axes[0], panels.items()):
        for prefix in sorted(curves, key=lambda p: (p.count(ARROW), p)):
            curve = curves[prefix]
            col = next(c for c in curve.columns if c != "epoch")
            ax.plot(curve["epoch"], curve[col], marker="o", ms=3, lw=1, label=prefix)
        ax.set_xlabel("epoch")
        ax.set_title(f"{model}: training on {dataset}" if model else f"Training on {dataset}, by ordering prefix",
                     fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    cols = {next(c for c in cv.columns if c != "epoch") for cv in lines.values()}
    axes[0][0].set_ylabel(" / ".join(CURVE_COLUMNS.get(c, c) for c in sorted(cols)))
    return save_figure(fig, path)


def render_markdown(res: ChainsResult, out: Path, figures: dict[str, str],
                    stability: dict[str, str] | None = None) -> str:
    lines = [f"# {TITLE}", "", f"Study directory: `{res.root}`", "",
             f"{len(res.chains)} complete chain(s); {len(res.problems)} missing or incomplete.", ""]
    if len(res.problems):
        lines += ["## Missing or incomplete chains (not in any table)", "", md_table(res.problems), ""]
    lines += design_markdown(job_dirs(res.root))
    if len(res.summary):
        s = res.summary.copy()
        for col in [c for c in s.columns if c in CHAIN_METRICS or c.startswith("final_")]:
            s[col] = s[col].map(_fmt)
        if not res.several_models:
            s = s.drop(columns=["model"])
        lines += ["## Summary", "", "ACC, BWT and average forgetting (`chain_metrics.json`) and the final model's "
                  "mean test Dice per data set.", "", md_table(s.drop(columns=["chain_dir"])), ""]
        col = curve_column(paper_chains(res.chains))
        dice = CURVE_COLUMNS.get(col or "val_dice", "validation Dice")
        which = ("Naive sequential fine-tuning (the paper's setting; the other strategies under \"Strategies\"): "
                 "mean ± sd" if res.several_strategies else "Mean ± sd")
        no_val = (" These chains logged no validation Dice (no validation set), so learning speed is measured on "
                  "the per-epoch training Dice." if col == "train_dice" else "")
        lines += ["## Per model", "",
                  f"{which} over orderings of two or more stages; learning speed = epochs until the {dice} "
                  f"first reaches {SPEED_FRACTION:.0%} of a fixed target per data set — the best {dice} "
                  "of the from-scratch stage on it — for first stages (from the initial weights) and for stages "
                  f"that start from an earlier stage (a stage that never reaches it counts as its epochs + 1).{no_val}",
                  "", md_table(res.per_model), ""]
    lines += strategies_markdown(res.chains, stability or {})
    lines += [findings_markdown(res.findings, intro="The paper's sequential-transfer claims against these chains "
                                "(computed from the files above; a claim is judged only where the runs can tell).")]
    lines += ["## Forgetting tables", "",
              "Mean test Dice after each stage (rows: training order) on every data set (columns); the data "
              "set trained at that stage in **bold**.", ""]
    for c in res.chains:
        strat = f" ({c.strategy})" if res.several_strategies else ""
        lines += [f"### {c.title(res.several_models)}{strat}", "", f"Chain directory: `{c.rel}`", "",
                  md_table(forgetting_table(c)), ""]
        lines.append(" · ".join(f"{name}: {_fmt(_score(c, k))}" for k, name in CHAIN_METRICS.items()))
        lines.append("")
        heat = c.path / "forgetting_heatmap.png"
        if heat.exists():
            rel = Path(os.path.relpath(heat, out)).as_posix()
            lines += [f"![forgetting heatmap {c.title(res.several_models)}]({rel})", ""]
        else:
            lines += ["_No forgetting_heatmap.png in this chain directory._", ""]
    lines += ["## Learning curves", ""]
    if figures:
        col = curve_column(paper_chains(res.chains))
        lines += [f"{CURVE_COLUMNS.get(col or 'val_dice', 'Dice')[0].upper()}{CURVE_COLUMNS.get(col or 'val_dice', 'Dice')[1:]} per epoch of every stage that "
                  "trained on the data set, one line per ordering prefix (stages shared by several orderings drawn "
                  "once)" + (", naive chains" if res.several_strategies else "")
                  + ("; these chains have no validation set" if col == "train_dice" else "") + ".", ""]
        lines += [f"![learning curves on {d}]({f})" for d, f in figures.items()]
        lines.append("")
    else:
        lines += ["_No learning_curves.csv with stage, epoch and val_dice (or train_dice) in any complete chain._",
                  ""]
    if res.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in res.notes], ""]
    files = ["chains_summary.csv", "chains_models.csv", "findings.csv", *figures.values()]
    if res.several_strategies:
        files += ["strategies.csv", *(stability or {}).values()]
    lines += ["## Files", "", ", ".join(f"`{f}`" for f in files), ""]
    return "\n".join(lines)


def write(study_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the chains report of ``study_dir`` into ``out_dir`` (default ``<study_dir>/report``)."""
    res = analyze(study_dir)
    out = report_dir(study_dir, out_dir)
    atomic_write_text(out / "chains_summary.csv", res.summary.to_csv(index=False))
    atomic_write_text(out / "chains_models.csv", res.per_model.to_csv(index=False))
    write_findings(res.findings, out)
    figures = {}
    stability = write_strategies(res.chains, out)
    for dataset, lines in sorted(learning_lines(paper_chains(res.chains)).items()):
        name = f"fig_learning_{_safe(dataset)}.png"
        plot_learning(dataset, lines, out / name)
        figures[dataset] = name
    return atomic_write_text(out / "report.md", render_markdown(res, out, figures, stability))
