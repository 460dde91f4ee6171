"""McSweeney et al. 2022's claims checked against a study's runs: the "Findings" section of the McSweeney report.

Everything here is computed from the pooled per-case test values the report already loads (``cases``: one row
per (run, test case) with ``init``, ``n_train``, ``dsc``, ``rms_dta_cm``) and its Dunnett tables; nothing is
hard-coded but the paper's claims and their expected directions:

* :func:`smallest_n_findings` — at the smallest n, each pretrained init vs scratch (DSC and RMS-DTA,
  two-sided Mann–Whitney U on the pooled per-case values; the paper: pretrained inits are better, Figs. 3–4);
* :func:`observer_findings` — from which n each init reaches the observers (Dunnett's test against the
  observers, Table 1: not significantly worse); the paper: every init by n = 25 (RMS-DTA) / exceeds them in DSC
  from n = 50, pretrained inits earlier than scratch;
* :func:`mann_whitney_table` — Appendix C: inter-model Mann–Whitney U tests of RMS-DTA at every n, and
  :func:`convergence_finding` (differences between inits shrink as n grows, on DSC);
* :func:`plateau_findings` — Appendix D: n = 125 vs n = 100 (here: the two largest n present) per init;
  the paper: no significant difference (p > 0.001).
* :func:`split_design` — the study's split manifests: the same test cases in every run and nested subsets.

Mann–Whitney tests pool per-case values over folds, draws and seeds as the paper pools its 16 models per
group; the values are therefore not independent (the same test case appears once per run), so p-values are
optimistic and read as the paper's were: a description, not a confirmatory test.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from musclelab.data.splits import check_study_splits

from .findings import Finding, direction, not_measurable

SOURCE = "McSweeney 2022"
SCRATCH = "scratch"
ALPHA = 0.05  # our significance level for "reaches the observers" and the counts of differing pairs
PLATEAU_ALPHA = 0.001  # the paper's Appendix D threshold ("p > 0.001")
# metric -> (label, expected sign of "better": +1 higher is better, -1 lower is better, digits)
METRIC_SIGN: dict[str, tuple[str, int, int]] = {"dsc": ("DSC", +1, 3), "rms_dta_cm": ("RMS-DTA (cm)", -1, 3)}
MWU_COLUMNS = ["metric", "n_train", "init_a", "init_b", "n_a", "n_b", "mean_a", "mean_b", "statistic", "p_value"]


def _values(cases: pd.DataFrame, init: str, n: int, metric: str) -> np.ndarray:
    v = cases.loc[(cases["init"] == init) & (cases["n_train"] == n), metric].to_numpy(dtype=np.float64)
    return v[np.isfinite(v)]


def mann_whitney(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided Mann–Whitney U of ``a`` vs ``b`` (``scipy.stats.mannwhitneyu``): ``(U of a, p)``; NaN when
    either is empty."""
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan
    res = stats.mannwhitneyu(a, b, alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


PAPER_INITS: tuple[str, ...] = ("scratch", "imagenet", "coco", "autoencoder", "jigsaw")


def init_order(inits: Sequence[str]) -> list[str]:
    """The paper's order (scratch, imagenet, coco, autoencoder, jigsaw), then any other init alphabetically."""
    present = set(inits)
    return [i for i in PAPER_INITS if i in present] + sorted(present - set(PAPER_INITS))


def _inits(cases: pd.DataFrame) -> list[str]:
    return init_order(list(cases["init"].unique()))


def smallest_n_findings(cases: pd.DataFrame) -> list[Finding]:
    """At the smallest n of the study, every pretrained init against scratch, for DSC and RMS-DTA."""
    claim = "at the smallest n, {init} beats scratch in {label}"
    if cases.empty:
        return [not_measurable("pretrained inits beat scratch at the smallest n", "no complete runs", SOURCE)]
    n0 = int(min(cases["n_train"]))
    others = [i for i in _inits(cases) if i != SCRATCH]
    if SCRATCH not in set(cases.loc[cases["n_train"] == n0, "init"]) or not others:
        return [not_measurable("pretrained inits beat scratch at the smallest n",
                               f"the study has no scratch runs and pretrained runs at n={n0}", SOURCE)]
    out = []
    for init in others:
        for metric, (label, sign, digits) in METRIC_SIGN.items():
            a, s = _values(cases, init, n0, metric), _values(cases, SCRATCH, n0, metric)
            text = claim.format(init=init, label=label)
            if a.size == 0 or s.size == 0:
                rows = {i: cases[(cases["init"] == i) & (cases["n_train"] == n0)] for i in (init, SCRATCH)}
                why = "; ".join(f"{i}: {int(r[metric].isna().sum())} of {len(r)} case values undefined"
                                for i, r in rows.items())
                out.append(not_measurable(
                    text, f"no {label} values at n={n0} ({why}; a distance is undefined when a model predicts no "
                          "muscle)", f"{SOURCE}, Figs. 3–4"))
                continue
            u, p = mann_whitney(a, s)
            diff = float(a.mean() - s.mean())
            out.append(Finding(
                claim=text, source=f"{SOURCE}, Figs. 3–4",
                measured=(f"n={n0}: mean {label} {a.mean():.{digits}f} ({init}, {a.size} case values) vs "
                          f"{s.mean():.{digits}f} (scratch, {s.size}); difference {diff:+.{digits}f}"),
                agrees=direction(diff, sign), test="Mann–Whitney U (two-sided)", statistic=u, p_value=p))
    return out


def _reach_n(d: pd.DataFrame, init: str, sign: int) -> tuple[int | None, float]:
    """The smallest n from which ``init`` is never significantly worse than the observers (Dunnett
    p >= ALPHA, or a difference in the better direction), and the p-value at that n."""
    g = d[d["init"] == init].sort_values("n_train")
    if g.empty:
        return None, math.nan
    ok = [(p >= ALPHA) or (sign * diff > 0) for p, diff in zip(g["p_value"], g["diff"])]
    for k in range(len(g)):
        if all(ok[k:]):
            return int(g.iloc[k]["n_train"]), float(g.iloc[k]["p_value"])
    return None, math.nan


def observer_findings(dunnett: dict[str, pd.DataFrame]) -> list[Finding]:
    """From which n each init reaches the observers (Table 1), and whether pretrained inits get there first."""
    out: list[Finding] = []
    for key, metric in (("dsc", "dsc"), ("rms", "rms_dta_cm")):
        label, sign, _ = METRIC_SIGN[metric]
        d = dunnett.get(key, pd.DataFrame())
        src = f"{SOURCE}, Table 1"
        if d is None or d.empty:
            out.append(not_measurable(f"models reach the observers' {label} as n grows",
                                      "no Dunnett test against observers (no observers.csv)", src))
            continue
        inits = _inits(d)
        reach = {i: _reach_n(d, i, sign) for i in inits}
        n_max = int(d["n_train"].max())
        text = ", ".join(f"{i}: {'n=' + str(n) if n is not None else 'not by n=' + str(n_max)}"
                         for i, (n, _) in reach.items())
        never = [i for i, (n, _) in reach.items() if n is None]
        out.append(Finding(
            claim=f"every init reaches the observers' {label} (not significantly worse) by the largest n",
            measured=f"first n from which not significantly worse than the observers (Dunnett, α={ALPHA}): {text}",
            agrees=not never, source=src, test="Dunnett vs observers",
            note=(f"the paper: all inits from n=25 (RMS-DTA), better than observers in DSC from n=50; "
                  f"{', '.join(never)} not by n={n_max}" if never else "the paper: all inits from n=25 (RMS-DTA), "
                  "better than observers in DSC from n=50")))
        if SCRATCH in reach and len(reach) > 1:
            pre = {i: r for i, r in reach.items() if i != SCRATCH}
            best_init, (best_n, best_p) = min(pre.items(), key=lambda kv: math.inf if kv[1][0] is None else kv[1][0])
            scratch_n = reach[SCRATCH][0]
            claim = f"a pretrained init reaches the observers' {label} at a smaller n than scratch"
            if best_n is None and scratch_n is None:
                out.append(not_measurable(claim, f"no init reaches the observers' {label} up to n={n_max}", src))
                continue
            agrees = best_n is not None and (scratch_n is None or best_n < scratch_n)
            out.append(Finding(
                claim=claim,
                measured=(f"earliest pretrained: {best_init} at "
                          f"{'n=' + str(best_n) if best_n is not None else 'no n'}; scratch at "
                          f"{'n=' + str(scratch_n) if scratch_n is not None else 'no n up to ' + str(n_max)}"),
                agrees=agrees, source=src, test="Dunnett vs observers" if best_n is not None else None,
                p_value=best_p if best_n is not None else None,
                note="the paper: segmentation (COCO) pretraining reaches the observers at n=5 (DSC), scratch at n=25"))
    return out


def mann_whitney_table(cases: pd.DataFrame, metric: str = "rms_dta_cm") -> pd.DataFrame:
    """Appendix C (long form): every pair of inits at every n, two-sided Mann–Whitney U of ``metric``."""
    rows = []
    for n in sorted(cases["n_train"].unique()) if not cases.empty else []:
        present = [i for i in _inits(cases) if _values(cases, i, n, metric).size]
        for a, b in itertools.combinations(present, 2):
            va, vb = _values(cases, a, n, metric), _values(cases, b, n, metric)
            u, p = mann_whitney(va, vb)
            rows.append({"metric": metric, "n_train": int(n), "init_a": a, "init_b": b, "n_a": va.size,
                         "n_b": vb.size, "mean_a": float(va.mean()), "mean_b": float(vb.mean()), "statistic": u,
                         "p_value": p})
    return pd.DataFrame(rows, columns=MWU_COLUMNS)


def mann_whitney_matrices(long: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """Appendix C layout: per n, a symmetric init × init matrix of p-values (1.0 on the diagonal)."""
    out = {}
    for n, g in long.groupby("n_train"):
        inits = list(dict.fromkeys([*g["init_a"], *g["init_b"]]))
        m = pd.DataFrame(1.0, index=inits, columns=inits)
        for r in g.itertuples(index=False):
            m.loc[r.init_a, r.init_b] = m.loc[r.init_b, r.init_a] = r.p_value
        out[int(n)] = m
    return out


def convergence_finding(cases: pd.DataFrame) -> Finding:
    """"As n grows, differences between inits decrease" (the paper: all converge toward DSC ≈ 0.94): the range of
    the inits' mean DSC and the number of init pairs whose DSC differs (Mann–Whitney, α = ALPHA) at the smallest
    vs the largest n. DSC, not RMS-DTA, because it is defined for every case (empty predictions included)."""
    claim = "differences between inits shrink as n grows"
    src = f"{SOURCE}, Results and Appendix C"
    ns = sorted(cases["n_train"].unique()) if not cases.empty else []
    if len(ns) < 2:
        return not_measurable(claim, "needs two or more n", src)
    n0, n1 = int(ns[0]), int(ns[-1])
    means = cases.groupby(["n_train", "init"])["dsc"].mean()
    both = set(means.loc[n0].dropna().index) & set(means.loc[n1].dropna().index)
    if len(both) < 2:
        return not_measurable(claim, f"needs two or more inits with DSC values at both n={n0} and n={n1}", src)
    sub = cases[cases["init"].isin(both)]
    pairs = mann_whitney_table(sub, "dsc")
    spread = {n: float(means.loc[n][list(both)].max() - means.loc[n][list(both)].min()) for n in (n0, n1)}
    sig = {n: (int((pairs.loc[pairs["n_train"] == n, "p_value"] < ALPHA).sum()), int((pairs["n_train"] == n).sum()))
           for n in (n0, n1)}
    return Finding(
        claim=claim, source=src,
        measured=(f"range of the mean DSC of {len(both)} inits {spread[n0]:.3f} at n={n0} vs {spread[n1]:.3f} at "
                  f"n={n1}; init pairs differing (Mann–Whitney on DSC, α={ALPHA}): {sig[n0][0]}/{sig[n0][1]} at "
                  f"n={n0}, {sig[n1][0]}/{sig[n1][1]} at n={n1}"),
        agrees=direction(spread[n0] - spread[n1], +1))


def plateau_findings(cases: pd.DataFrame) -> list[Finding]:
    """Appendix D: per init, the largest n against the next largest (the paper: 125 vs 100, p > 0.001)."""
    ns = sorted(cases["n_train"].unique()) if not cases.empty else []
    src = f"{SOURCE}, Appendix D"
    if len(ns) < 2:
        return [not_measurable("performance plateaus: the largest n does not differ from the next",
                               "needs two or more n", src)]
    lo, hi = int(ns[-2]), int(ns[-1])
    where = "" if (lo, hi) == (100, 125) else f" (the paper tests n=125 vs 100; this study's two largest n)"
    out = []
    for init in _inits(cases):
        a, b = _values(cases, init, hi, "dsc"), _values(cases, init, lo, "dsc")
        text = f"{init}: DSC at n={hi} does not differ from n={lo}{where}"
        if a.size == 0 or b.size == 0:
            out.append(not_measurable(text, f"no DSC values for {init} at n={lo} or n={hi}", src))
            continue
        u, p = mann_whitney(a, b)
        out.append(Finding(
            claim=text, source=src, test="Mann–Whitney U (two-sided)", statistic=u, p_value=p,
            measured=f"mean DSC {a.mean():.3f} (n={hi}) vs {b.mean():.3f} (n={lo}), difference {a.mean() - b.mean():+.3f}",
            agrees=None if math.isnan(p) else bool(p > PLATEAU_ALPHA),
            note=f"agrees when p > {PLATEAU_ALPHA} (the paper's threshold)"))
    return out


def load_manifests(root: Path, used: pd.DataFrame) -> pd.DataFrame | None:
    """Every used run's ``split_manifest.csv`` stacked with ``run, fold, subset_draw, n_train`` (None if none)."""
    frames = []
    for r in used.itertuples(index=False):
        path = root / r.run_dir / "split_manifest.csv"
        if path.exists():
            frames.append(pd.read_csv(path, dtype={"case_id": str, "patient_id": str}).assign(
                run=r.run_dir, fold=r.fold, subset_draw=r.subset_draw, n_train=r.n_train))
    return pd.concat(frames, ignore_index=True) if frames else None


def split_design(manifests: pd.DataFrame | None) -> list[str]:
    """Markdown lines: the study's split design as the manifests show it (test set, folds, nesting)."""
    if manifests is None or manifests.empty:
        return ["_No split_manifest.csv in the runs: the split design cannot be checked._"]
    n_runs = manifests["run"].nunique()
    test = manifests[manifests["split"] == "test"]
    n_test = test.groupby("run")["case_id"].nunique()
    problems = check_study_splits(manifests)
    lines = [f"- {n_runs} runs; test cases per run: {', '.join(str(v) for v in sorted(set(n_test)))}; "
             f"folds: {', '.join(str(f) for f in sorted(manifests['fold'].dropna().unique()))}; "
             f"draws: {', '.join(str(d) for d in sorted(manifests['subset_draw'].dropna().unique()))}."]
    if problems:
        lines += [f"- **problem:** {p}" for p in problems]
    else:
        lines += ["- The test cases are identical in every run (one fixed hold-out test set).",
                  "- For each fold and draw, every training subset of size n lies inside the subset of the next "
                  "larger n (nested subsets)."]
    return lines


def mcsweeney_findings(cases: pd.DataFrame, dunnett: dict[str, pd.DataFrame]) -> list[Finding]:
    """All McSweeney findings, in the order the report lists them."""
    return [*smallest_n_findings(cases), *observer_findings(dunnett), convergence_finding(cases),
            *plateau_findings(cases)]


def mwu_markdown(long: pd.DataFrame, fmt_p) -> list[str]:
    """Appendix C tables as Markdown lines, one per n."""
    from .markdown import md_table

    if long.empty:
        return ["_no pair of inits to compare_", ""]
    lines: list[str] = []
    for n, m in mann_whitney_matrices(long).items():
        text = m.apply(lambda s: s.map(fmt_p))
        lines += [f"**n={n}**", "", md_table(text.rename_axis("init"), index=True), ""]
    return lines


__all__: Sequence[str] = [
    "convergence_finding", "load_manifests", "mann_whitney", "mann_whitney_matrices", "mann_whitney_table",
    "mcsweeney_findings", "mwu_markdown", "observer_findings", "plateau_findings", "smallest_n_findings",
    "split_design",
]
