"""The "Strategies" section of the chains report: strategies against forgetting compared over every ordering.

Reads the :class:`~musclelab.report.chains.Chain` objects of a study whose chains were trained with several
``study.strategy`` values (chain.json ``"strategy": {"name", "settings"}``; absent = ``naive``). Per model ×
strategy, over its orderings of two or more stages (chains of the same model, strategy and ordering — several
seeds — are averaged first: the unit of analysis is the ordering):

* ACC, BWT and forgetting computed from each chain's forgetting matrix (:attr:`Chain.scores`, the definitions
  of :mod:`musclelab.studies.forgetting`, as Avalanche computes them; test Dice ``R[i, j]`` after stage ``i`` on
  the ``j``-th data set of the ordering, ``T`` stages): ACC = mean_j R[T, j];
  BWT = mean_{j<T} (R[T, j] − R[j, j]); forgetting of j = max_{j≤l<T} R[l, j] − R[T, j], averaged over j < T;
  forward transfer (Lopez-Paz & Ranzato 2017) from ``chain_metrics.json`` ``fwt`` (needs a random-init baseline);
* the stability curve: the test Dice on the ordering's first data set after every stage (orderings of the full
  length), a table and ``fig_stability_<model>.png`` (one line per strategy);
* training cost: the median wall seconds of a stage after the first (chain.json ``train_seconds`` +
  ``extra_seconds``, each cached stage once; stage 0 is the same shared training for every strategy, so it is left
  out) and its ratio to naive's. The median, not the mean: on a shared machine one stage trained under load
  can take ten times the others and would decide a mean (``train_seconds`` of a resumed stage counts its kept
  epochs only, :func:`musclelab.studies.chain._record_seconds`);
* findings (:func:`strategy_findings`), paired by ordering (the same ordering under two strategies is a pair).

``strategies.csv`` holds one row per model × strategy. No torch import.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from musclelab.metrics.statistics import ClaimTest, compare, noninferiority  # noqa: E402
from musclelab.outputs.figures import save_figure  # noqa: E402
from musclelab.report.findings import Finding, judged, not_measurable  # noqa: E402
from musclelab.report.markdown import md_table  # noqa: E402

#: a :class:`musclelab.report.chains.Chain` (not imported: chains imports this module)
Chain = Any

__all__ = ["STRATEGY_ORDER", "chain_scores", "several_strategies", "strategy_table", "stability_table",
           "strategy_findings", "strategies_markdown", "write_strategies"]

#: the order strategies are listed in (others follow alphabetically); ``naive`` is the reference
STRATEGY_ORDER = ("naive", "replay", "ewc", "lwf", "joint")
#: strategies that try to prevent forgetting and are each compared with naive
PREVENTING = ("replay", "ewc", "lwf")
#: "ACC similar or better than naive": the ACC may be lower by at most this (Dice), as the chains' "similar" claim
SIMILAR_ACC = 0.02
SOURCE = "issue 21 (beyond Yoon et al. 2024)"
METRICS = {"acc": "ACC", "bwt": "BWT", "forgetting": "forgetting", "fwt": "forward transfer"}
UNIT = "ordering (the same ordering under both strategies; mean over seeds)"
NOTE_DEP = ("orderings that share a prefix share its stages, and every strategy's first stage is the same "
            "training, so the pairs are not fully independent")
PAPER = {"forget": "(not in the paper: Yoon et al. measure forgetting and do not try to prevent it)",
         "joint": "joint (cumulative) training is the usual upper bound of continual learning",
         "acc": "a strategy against forgetting should not cost accuracy on the data sets"}


def several_strategies(chains: list[Chain]) -> bool:
    """Whether the chains were trained with more than one strategy (only then is there a Strategies section)."""
    return len({c.strategy for c in chains}) > 1


def _strategies(chains: list[Chain]) -> list[str]:
    names = {c.strategy for c in chains}
    return [s for s in STRATEGY_ORDER if s in names] + sorted(names - set(STRATEGY_ORDER))


def chain_scores(chain: Chain) -> dict[str, float]:
    """ACC, BWT and forgetting of one chain from its matrix (:attr:`Chain.scores`: the definitions the paper's
    findings use too) and ``fwt`` from its ``chain_metrics.json`` (NaN when absent or null)."""
    own = chain.scores
    try:
        fwt = float(chain.metrics.get("fwt"))
    except (TypeError, ValueError):
        fwt = math.nan
    return {"acc": own["acc"], "bwt": own["bwt"], "forgetting": own["avg_forgetting"], "fwt": fwt}


def _by_ordering(chains: list[Chain], model: str, strategy: str, key: str) -> pd.Series:
    """``key`` per ordering label for one model × strategy (orderings of two or more stages; the mean over the
    chains of the same ordering, e.g. seeds)."""
    vals: dict[str, list[float]] = {}
    for c in chains:
        if c.model == model and c.strategy == strategy and len(c.sequence) > 1:
            vals.setdefault(c.label, []).append(chain_scores(c)[key])
    s = pd.Series({k: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan for k, v in vals.items()},
                  dtype=float)
    return s.dropna()


def _stage_seconds(chains: list[Chain]) -> np.ndarray:
    """Wall seconds of every stage after the first of ``chains`` that recorded it, each cached stage (key) once
    (stage 0 is the same shared training for every strategy: it says nothing about a strategy's cost)."""
    seen: dict[str, float] = {}
    for c in chains:
        for i, sec in enumerate(c.stage_seconds):
            if i == 0:
                continue
            key = c.stage_keys[i] if i < len(c.stage_keys) and c.stage_keys[i] else f"{c.rel}#{i}"
            if np.isfinite(sec):
                seen.setdefault(key, float(sec))
    return np.array(list(seen.values()), dtype=float)


def _mean_sd(v: pd.Series | np.ndarray, digits: int = 3) -> str:
    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    if not v.size:
        return "–"
    if v.size == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def stability_table(chains: list[Chain]) -> pd.DataFrame:
    """Per model × strategy, the mean test Dice on the ordering's first data set after every stage
    (``after_stage_<k>``, k from 1), over the orderings of the model's full length (mean over seeds first)."""
    rows = []
    for model in dict.fromkeys(c.model for c in chains):
        mine = [c for c in chains if c.model == model]
        T = max(len(c.sequence) for c in mine)
        for strategy in _strategies(mine):
            per: dict[str, list[np.ndarray]] = {}
            for c in mine:
                if c.strategy == strategy and len(c.sequence) == T:
                    per.setdefault(c.label, []).append(c.R()[:, 0])
            if not per:
                continue
            curves = np.array([np.nanmean(np.array(v), axis=0) for v in per.values()])
            row: dict[str, object] = {"model": model or "?", "strategy": strategy, "orderings": len(per)}
            row.update({f"after_stage_{k + 1}": float(np.nanmean(curves[:, k])) for k in range(T)})
            rows.append(row)
    return pd.DataFrame(rows)


def strategy_table(chains: list[Chain]) -> pd.DataFrame:
    """``strategies.csv``: one row per model × strategy — settings, orderings (count and list), mean and sd over
    orderings of ACC, BWT, forgetting and forward transfer, the stability curve (first data set's Dice after
    every stage), seconds per stage (the median over its stages after the first, each cached stage once) and its
    ratio to naive's."""
    stab = stability_table(chains)
    rows = []
    for model in dict.fromkeys(c.model for c in chains):
        mine = [c for c in chains if c.model == model]
        naive_sec = _stage_seconds([c for c in mine if c.strategy == "naive"])
        for strategy in _strategies(mine):
            these = [c for c in mine if c.strategy == strategy]
            row: dict[str, object] = {"model": model or "?", "strategy": strategy,
                                      "settings": json.dumps(these[0].settings, sort_keys=True)}
            series = {k: _by_ordering(mine, model, strategy, k) for k in METRICS}
            orderings = list(series["acc"].index)
            row["orderings"] = len(orderings)
            row["ordering_list"] = "; ".join(orderings)
            for k, s in series.items():
                row[f"{k}_mean"] = float(s.mean()) if len(s) else math.nan
                row[f"{k}_sd"] = float(s.std(ddof=1)) if len(s) > 1 else math.nan
            st = stab[(stab["model"] == (model or "?")) & (stab["strategy"] == strategy)] if len(stab) else stab
            for col in [c for c in stab.columns if c.startswith("after_stage_")]:
                row[f"first_{col}"] = float(st[col].iloc[0]) if len(st) else math.nan
            sec = _stage_seconds(these)
            row["stages_timed"] = int(sec.size)
            row["seconds_per_stage"] = float(np.median(sec)) if sec.size else math.nan
            row["cost_vs_naive"] = (float(np.median(sec) / np.median(naive_sec)) if sec.size and naive_sec.size
                                    and np.median(naive_sec) > 0 else math.nan)
            rows.append(row)
    return pd.DataFrame(rows)


# -------------------------------------------------------------------------------------------------- findings
def _paired(a: pd.Series, b: pd.Series) -> tuple[pd.Series, pd.Series]:
    shared = a.index.intersection(b.index)
    return a.loc[shared], b.loc[shared]


def strategy_findings(chains: list[Chain]) -> list[Finding]:
    """Per model, verdicts by :func:`musclelab.report.findings.judge`, unit of analysis the ordering, every test
    paired (Wilcoxon signed-rank via :func:`musclelab.metrics.statistics.compare`, or a paired t-test for
    non-inferiority) over the orderings both strategies ran:

    * ``<s>`` (replay, EWC, LwF) reduces forgetting compared with naive fine-tuning: forgetting(s) − forgetting
      (naive) < 0;
    * ``<s>`` keeps ACC similar to or better than naive: ACC(s) − ACC(naive) > −:data:`SIMILAR_ACC`
      (non-inferiority);
    * joint training is the upper bound, it forgets least: joint's forgetting below every other strategy's —
      the intersection–union test (each pair tested; p = the largest p, the estimate the least favourable
      difference).
    """
    out: list[Finding] = []
    if not several_strategies(chains):
        return out
    for model in dict.fromkeys(c.model for c in chains):
        mine = [c for c in chains if c.model == model]
        name = model or "?"
        present = _strategies(mine)
        fgt = {s: _by_ordering(mine, model, s, "forgetting") for s in present}
        acc = {s: _by_ordering(mine, model, s, "acc") for s in present}
        for s in PREVENTING:
            if s not in present:
                continue
            claim = f"{name}: {s} reduces forgetting compared with naive fine-tuning"
            claim_acc = f"{name}: {s} keeps ACC similar to or better than naive fine-tuning (±{SIMILAR_ACC:g})"
            a, b = _paired(fgt[s], fgt.get("naive", pd.Series(dtype=float)))
            if "naive" not in present or not len(a):
                why = ("no naive chains of this model" if "naive" not in present
                       else f"no ordering of two or more stages under both {s} and naive")
                out += [not_measurable(claim, why, SOURCE, PAPER["forget"]),
                        not_measurable(claim_acc, why, SOURCE, PAPER["acc"])]
                continue
            out.append(judged(claim, f"mean forgetting {s} {a.mean():.3f} vs naive {b.mean():.3f} "
                                     f"({int((a < b).sum())} of {len(a)} orderings lower)",
                              compare(a, b, UNIT), "difference", -1, SOURCE, PAPER["forget"],
                              note="forgetting = max over earlier stages of a data set's Dice minus its final Dice, "
                                   "averaged over the data sets before the last (Avalanche); " + NOTE_DEP))
            x, y = _paired(acc[s], acc["naive"])
            out.append(judged(claim_acc, f"mean ACC {s} {x.mean():.3f} vs naive {y.mean():.3f} "
                                         f"(mean paired difference {(x - y).mean():+.3f})",
                              noninferiority(x, y, SIMILAR_ACC, UNIT), "non-inferiority", +1, SOURCE, PAPER["acc"],
                              note=f"similar = ACC not lower than naive's by more than {SIMILAR_ACC:g} Dice "
                                   "(non-inferiority margin); " + NOTE_DEP))
        if "joint" in present:
            claim = f"{name}: joint training is the upper bound: it forgets least of the strategies"
            others = [s for s in present if s != "joint"]
            parts = []
            for s in others:
                a, b = _paired(fgt["joint"], fgt[s])
                if len(a):
                    parts.append((s, a, b, compare(a, b, UNIT)))
            if not parts:
                out.append(not_measurable(claim, "no other strategy ran an ordering of two or more stages that "
                                                 "joint ran", SOURCE, PAPER["joint"]))
                continue
            ps = [r.p_value if np.isfinite(r.p_value) else math.inf for _, _, _, r in parts]
            worst = max(parts, key=lambda t: t[3].estimate)   # the least favourable difference (joint − other)
            p = max(ps)
            r = ClaimTest(f"Wilcoxon signed-rank, paired, two-sided, joint vs each of {', '.join(others)} "
                          f"(largest p of {len(parts)})", UNIT, worst[3].n, worst[3].estimate, worst[3].statistic,
                          p if math.isfinite(p) else math.nan)
            measured = "mean forgetting " + ", ".join(
                [f"joint {parts[0][1].mean():.3f}"] + [f"{s} {b.mean():.3f}" for s, _, b, _ in parts])
            out.append(judged(claim, measured, r, "difference", -1, SOURCE, PAPER["joint"],
                              note=f"agrees only when joint forgets significantly less than every other strategy "
                                   f"(intersection–union: the largest p; estimate: the closest strategy, "
                                   f"{worst[0]}); " + NOTE_DEP))
    return out


# ---------------------------------------------------------------------------------------------------- output
def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)


def plot_stability(model: str, stab: pd.DataFrame, path: str | Path) -> Path:
    """The first data set's test Dice after every stage, one line per strategy (mean over orderings)."""
    cols = [c for c in stab.columns if c.startswith("after_stage_")]
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for _, row in stab.iterrows():
        y = row[cols].to_numpy(dtype=float)
        ok = np.isfinite(y)
        ax.plot(np.arange(1, len(cols) + 1)[ok], y[ok], marker="o", lw=1.5,
                label=f"{row['strategy']} (n = {row['orderings']})")
    ax.set_xticks(range(1, len(cols) + 1))
    ax.set_xlabel("after stage")
    ax.set_ylabel("test Dice on the first data set")
    ax.set_title(f"{model}: stability (mean over orderings)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def write_strategies(chains: list[Chain], out: Path) -> dict[str, str]:
    """Write ``strategies.csv`` and one ``fig_stability_<model>.png`` per model into ``out`` (nothing when only
    one strategy ran); returns model → figure file name."""
    from musclelab.io import atomic_write_text

    if not several_strategies(chains):
        return {}
    atomic_write_text(out / "strategies.csv", strategy_table(chains).to_csv(index=False))
    stab = stability_table(chains)
    figures = {}
    for model in dict.fromkeys(stab["model"]):
        name = f"fig_stability_{_safe(model)}.png"
        plot_stability(model, stab[stab["model"] == model], out / name)
        figures[model] = name
    return figures


def _fmt(x: float, digits: int = 3) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def strategies_markdown(chains: list[Chain], figures: dict[str, str]) -> list[str]:
    """The report's "Strategies" section (empty when only one strategy ran)."""
    if not several_strategies(chains):
        return []
    table = strategy_table(chains)
    lines = ["## Strategies", "",
             "Strategies against forgetting, per model, over the orderings of two or more stages (mean ± sd; "
             "several seeds of an ordering averaged first). From each chain's forgetting matrix R[i, j] (test "
             "Dice after stage i on the ordering's j-th data set, T stages), as Avalanche computes them: ACC = "
             "mean_j R[T, j]; BWT = mean_{j<T} (R[T, j] − R[j, j]); forgetting = mean_{j<T} (max_{j≤l<T} "
             "R[l, j] − R[T, j]); forward transfer (Lopez-Paz & Ranzato 2017) = mean_{i≥2} (R[i−1, i] − b_i), "
             "b_i a random-init model's Dice (`chain_metrics.json` `fwt`; – without a baseline). s / stage: the "
             "median wall seconds of a stage after the first (its training plus the strategy's own work, e.g. "
             "the Fisher or the memory; each cached stage once; the first stage is the same shared training for "
             "every strategy and left out; a resumed stage counts its kept epochs only), and its ratio to "
             "naive's. Wall times: measured on whatever load the machine had.", ""]
    shown = []
    for model in dict.fromkeys(c.model for c in chains):
        mine = [c for c in chains if c.model == model]
        for strategy in _strategies(mine):
            row: dict[str, str] = {"model": model or "?", "strategy": strategy}
            for k, label in METRICS.items():
                row[label] = _mean_sd(_by_ordering(mine, model, strategy, k).to_numpy())
            r = table[(table["model"] == (model or "?")) & (table["strategy"] == strategy)].iloc[0]
            row["orderings"] = str(int(r["orderings"]))
            row["s / stage"] = _fmt(r["seconds_per_stage"], 1)
            row["× naive"] = _fmt(r["cost_vs_naive"], 2)
            shown.append(row)
    lines += [md_table(pd.DataFrame(shown)), ""]
    lines += ["Orderings per model × strategy: " + "; ".join(
        f"{r['model']} {r['strategy']}: {r['ordering_list'] or '–'}" for _, r in table.iterrows()), ""]
    stab = stability_table(chains)
    if len(stab):
        s = stab.copy()
        for col in [c for c in s.columns if c.startswith("after_stage_")]:
            s[col] = s[col].map(_fmt)
        s.columns = [c.replace("after_stage_", "after stage ") for c in s.columns]
        lines += ["### Stability: the first data set after every stage", "",
                  "Mean test Dice on the ordering's first data set after every stage (orderings of the full "
                  "length).", "", md_table(s), ""]
        lines += [f"![stability {m}]({f})" for m, f in figures.items()]
        lines.append("")
    return lines
