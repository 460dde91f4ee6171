"""The Kawamoto et al. 2024 report: does learning the erector spinae (ESM) alongside a target muscle help?

Reads the runs of ``experiment=kawamoto2024`` (each run: one label subset ``data.labels`` — a muscle alone, or a
target and its partner — one fold, ``test_cases.csv`` with a ``level`` column) and writes:

* **Table 1** — per target muscle Dice (DC), recall (RC), precision (PC), mean and SD over the test volumes of
  all folds, wo/ESM (trained alone) vs w/ESM (trained with the ESM), and their average over the muscles;
* **Table 2** — every pairing: each muscle's DC/RC/PC alone, with the ESM and with each other muscle (a pair's
  run scores both of its muscles, as the paper's rows "Q & P");
* **Figure 2** — violin plots of the per-volume Dice, wo/ESM vs w/ESM, per muscle;
* the Dice of all target muscles merged into one region (per test volume: the union of the targets' predicted
  masks of the w/ESM — or wo/ESM — runs against the union of their references; needs ``eval.save_volumes``);
* the ESM's own Dice trained alone vs paired with each target;
* a paired Wilcoxon signed-rank test of w/ESM vs wo/ESM per muscle (pairs = the same test volume);
* a findings section (:mod:`musclelab.report.findings`) testing each claim — computed, never assumed. Unit of
  analysis: the test volume (its Dice averaged over the runs of the same label set and fold, e.g. seeds); w/ESM
  and wo/ESM score the same volumes, so they are compared paired (Wilcoxon signed-rank). A failed volume (Dice 0)
  stays in and is counted in Table 1.

Scores are per test volume in 3D (``level=volume``) when the runs have them, with the L3 slice alone
(``level=l3_slice``) as a second Table 1; runs scored per slice only (``eval.level=slice``) are reported per slice.
No torch import.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from musclelab.io import atomic_write_text

from musclelab.metrics.statistics import ClaimTest, compare, noninferiority, tost

from .design import design_markdown
from .findings import Finding, findings_markdown, not_measurable, judged, write_findings
from .markdown import md_table
from .runs import MISSING, Study, config_value, find_run_dirs, load_config, load_study, report_dir

KIND = "kawamoto"
TITLE = "Kawamoto et al. 2024: simultaneous learning of the erector spinae (w/ESM vs wo/ESM)"
ESM = "erector_spinae"
SOURCE = "Kawamoto 2024"
SHORT = {"erector_spinae": "E", "quadratus_lumborum": "Q", "psoas_major": "P", "obliques": "O",
         "rectus_abdominis": "R", "trapezius": "T", "supraspinatus": "S"}
ORDER = ["quadratus_lumborum", "psoas_major", "obliques", "rectus_abdominis", "trapezius", "supraspinatus",
         "erector_spinae"]
METRICS = {"dice": "DC", "recall": "RC", "precision": "PC"}
LEVELS = ("volume", "l3_slice", "slice")
PAPER_TABLE1 = {  # mean Dice wo/ESM, w/ESM (their Table 1)
    "quadratus_lumborum": (0.381, 0.832), "psoas_major": (0.901, 0.913), "obliques": (0.746, 0.849),
    "rectus_abdominis": (0.823, 0.829), "trapezius": (0.527, 0.876), "supraspinatus": (0.259, 0.883),
}


def _labels(value: Any) -> tuple[str, ...] | None:
    """``data.labels`` of a run as a tuple of names; None when unset (or missing from the config)."""
    if value is None or value is MISSING or isinstance(value, (int, float, bool)):
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        return None
    return tuple(str(v) for v in value) or None


def detect(study_dir: str | Path) -> bool:
    """A Kawamoto study: complete runs with at least two different ``data.labels`` subsets and
    ``loss.name=kawamoto`` (or the ``kawamoto2024`` tag)."""
    subsets, kawamoto = set(), False
    for run_dir in find_run_dirs(study_dir):
        try:
            status = json.loads((run_dir / "run_status.json").read_text()).get("status")
        except (OSError, ValueError, AttributeError):
            continue
        if status != "complete":
            continue
        cfg = load_config(run_dir)
        labels = _labels(config_value(cfg, "data.labels") if cfg else None)
        if labels:
            subsets.add(labels)
        tags = cfg.get("tags") or []
        kawamoto |= config_value(cfg, "loss.name") == "kawamoto" or any("kawamoto" in str(t) for t in tags)
    return kawamoto and len(subsets) >= 2


def mode_of(labels: tuple[str, ...], muscle: str) -> str:
    """How ``muscle`` was trained in a run with ``labels``: ``alone``, ``w/ESM`` or ``with <partner>``."""
    others = [m for m in labels if m != muscle]
    if not others:
        return "alone"
    if others == [ESM]:
        return "w/ESM"
    return "with " + " + ".join(others)


@dataclass
class KawamotoResult:
    study: Study
    scores: pd.DataFrame            # one row per (run, test case, level, muscle): dice/recall/precision
    level: str                      # the level of the main tables
    table1: pd.DataFrame
    table1_l3: pd.DataFrame | None
    table2: pd.DataFrame
    esm: pd.DataFrame
    wilcoxon: pd.DataFrame
    merged: pd.DataFrame
    findings: list[Finding]
    notes: list[str] = field(default_factory=list)


def load_scores(study: Study) -> tuple[pd.DataFrame, list[str]]:
    """Per-muscle scores of every used run: columns run_dir, labels, fold, case_id, level, muscle, mode,
    dice, recall, precision."""
    frames, notes = [], []
    for r in study.used.itertuples(index=False):
        run = study.root / r.run_dir
        labels = _labels(r.labels)
        path = run / "test_cases.csv"
        if not labels or not path.exists():
            notes.append(f"{r.run_dir}: no data.labels or no test_cases.csv; left out")
            continue
        cases = pd.read_csv(path)
        if "level" not in cases.columns:
            cases["level"] = "slice"
        for muscle in labels:
            cols = {f"{m}_{muscle}": m for m in METRICS}   # per-class columns (case_metrics)
            missing = [c for c in cols if c not in cases.columns]
            if missing:
                notes.append(f"{r.run_dir}: test_cases.csv lacks {', '.join(missing)}; left out")
                continue
            part = cases[["case_id", "level", *cols]].rename(columns=cols)
            part = part.assign(run_dir=r.run_dir, labels=" & ".join(SHORT.get(m, m) for m in labels),
                               fold=r.fold, muscle=muscle, mode=mode_of(labels, muscle),
                               target=labels[0], partner=labels[1] if len(labels) > 1 else None)
            frames.append(part)
    if not frames:
        return pd.DataFrame(columns=["run_dir", "labels", "fold", "case_id", "level", "muscle", "mode",
                                     *METRICS]), notes
    return pd.concat(frames, ignore_index=True), notes


def _ms(values: pd.Series) -> tuple[float, float, int]:
    v = pd.to_numeric(values, errors="coerce").dropna().to_numpy(float)
    return (float(v.mean()) if len(v) else math.nan, float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v))


def _f(x: float, d: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"


def _muscles(scores: pd.DataFrame) -> list[str]:
    present = set(scores["muscle"])
    return [m for m in ORDER if m in present] + sorted(present - set(ORDER))


def table1(scores: pd.DataFrame) -> pd.DataFrame:
    """Table 1: rows ``wo/ESM`` / ``w/ESM`` x ``Mean`` / ``SD``; columns ``<muscle> DC|RC|PC`` and the
    average over the target muscles (mean of all their per-volume values, as the paper's "Average")."""
    targets = [m for m in _muscles(scores) if m != ESM]
    rows = []
    for method, mode in (("Baseline (wo/ESM)", "alone"), ("Proposed (w/ESM)", "w/ESM")):
        sub = scores[scores["mode"] == mode]
        mean_row: dict[str, Any] = {"method": method, "stat": "Mean"}
        sd_row: dict[str, Any] = {"method": "", "stat": "SD"}
        for m in [*targets, "Average"]:
            part = sub[sub["muscle"].isin(targets)] if m == "Average" else sub[sub["muscle"] == m]
            for key, short in METRICS.items():
                mu, sd, _ = _ms(part[key])
                mean_row[f"{SHORT.get(m, m)} {short}"] = _f(mu)
                sd_row[f"{SHORT.get(m, m)} {short}"] = _f(sd)
        part = sub[sub["muscle"].isin(targets)]
        n = part.groupby("muscle")["dice"].count()
        failed = (pd.to_numeric(part["dice"], errors="coerce") == 0).groupby(part["muscle"]).sum()
        mean_row["n volumes (failed: Dice 0)"] = ", ".join(f"{SHORT.get(k, k)} {v} ({int(failed.get(k, 0))})"
                                                          for k, v in n.items()) or "0"
        sd_row["n volumes (failed: Dice 0)"] = ""
        rows += [mean_row, sd_row]
    return pd.DataFrame(rows)


def table2(scores: pd.DataFrame) -> pd.DataFrame:
    """Table 2: one row per trained label set (``Q``, ``Q & E``, ``Q & P``...), per muscle ``DC/RC/PC`` as
    ``mean (SD)``; ``–`` where the muscle was not in that run."""
    muscles = _muscles(scores)
    rows = []
    order = {lab: i for i, lab in enumerate(sorted(set(scores["labels"]), key=lambda s: (s.count("&"),
                                                                                          "E" not in s, s)))}
    for lab in sorted(order, key=order.get):
        sub = scores[scores["labels"] == lab]
        row: dict[str, Any] = {"trained together": lab}
        for m in muscles:
            part = sub[sub["muscle"] == m]
            for key, short in METRICS.items():
                mu, sd, n = _ms(part[key]) if len(part) else (math.nan, math.nan, 0)
                row[f"{SHORT.get(m, m)} {short}"] = f"{_f(mu)} ({_f(sd)})" if n else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def esm_table(scores: pd.DataFrame) -> pd.DataFrame:
    """The ESM's own Dice trained alone and paired with each target (their Discussion: 0.930 alone)."""
    sub = scores[scores["muscle"] == ESM]
    rows = []
    for mode, part in sub.groupby("mode", sort=False):
        mu, sd, n = _ms(part["dice"])
        partner = "alone" if mode == "alone" else "with " + ", ".join(sorted(set(part["target"]) - {ESM}))
        rows.append({"ESM trained": partner, "DC mean": _f(mu), "DC SD": _f(sd), "n volumes": n,
                     "failed (Dice 0)": int((pd.to_numeric(part["dice"], errors="coerce") == 0).sum())})
    return pd.DataFrame(rows).sort_values("ESM trained", key=lambda s: s != "alone", kind="stable") \
        if rows else pd.DataFrame(columns=["ESM trained", "DC mean", "DC SD", "n volumes", "failed (Dice 0)"])


def paired(scores: pd.DataFrame, muscle: str, mode_a: str = "w/ESM", mode_b: str = "alone") -> pd.DataFrame:
    """Per test volume Dice of ``muscle`` under two modes (each the mean over that mode's runs of the volume, e.g.
    seeds), matched on (fold, case_id)."""
    sub = scores[scores["muscle"] == muscle]
    a = sub[sub["mode"] == mode_a].groupby(["fold", "case_id"])["dice"].mean()
    b = sub[sub["mode"] == mode_b].groupby(["fold", "case_id"])["dice"].mean()
    return pd.concat({"a": a, "b": b}, axis=1).dropna()


def wilcoxon_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Paired Wilcoxon signed-rank test (two-sided, SciPy) of w/ESM vs wo/ESM Dice per target muscle."""
    from scipy.stats import wilcoxon

    rows = []
    for m in [m for m in _muscles(scores) if m != ESM]:
        p = paired(scores, m)
        diff = (p["a"] - p["b"]).to_numpy(float)
        stat = pval = math.nan
        if len(diff) >= 1 and np.any(diff != 0):
            res = wilcoxon(p["a"], p["b"])
            stat, pval = float(res.statistic), float(res.pvalue)
        rows.append({"muscle": m, "n pairs": len(diff), "wo/ESM DC": float(p["b"].mean()) if len(p) else math.nan,
                     "w/ESM DC": float(p["a"].mean()) if len(p) else math.nan,
                     "mean difference": float(diff.mean()) if len(diff) else math.nan,
                     "w/ESM better in": int((diff > 0).sum()), "W": stat, "p": pval})
    return pd.DataFrame(rows)


def merged_dice(study: Study, scores: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Dice of all target muscles merged into one region, per (mode, fold, test volume), from the runs' saved
    ``test_volumes/<case>_pred.nii.gz`` / ``_label.nii.gz`` (the target is class 1 in every run)."""
    from musclelab.evaluation.volume_from_slices import LABEL_SUFFIX, PRED_SUFFIX, VOLUME_DIR
    from musclelab.metrics import dice
    from musclelab.outputs.nifti import load_nifti

    notes: list[str] = []
    runs = scores[(scores["muscle"] == scores["target"]) & (scores["target"] != ESM)
                  & scores["mode"].isin(["alone", "w/ESM"])][["run_dir", "fold", "mode", "target"]].drop_duplicates()
    rows = []
    every = set(runs["target"])
    for (mode, fold), group in runs.groupby(["mode", "fold"]):
        if set(group["target"]) != every:
            notes.append(f"merged Dice: {mode}, fold {fold} lacks runs of "
                         f"{', '.join(sorted(every - set(group['target'])))}; not computed there")
            continue
        dirs = [study.root / d / VOLUME_DIR for d in group["run_dir"]]
        if not all(d.is_dir() for d in dirs):
            notes.append("merged Dice needs eval.save_volumes=true (test_volumes/ in every run); not computed "
                         f"for {mode}, fold {fold}")
            continue
        cases = sorted({p.name[: -len(PRED_SUFFIX)] for p in dirs[0].glob(f"*{PRED_SUFFIX}")})
        for case in cases:
            pred = gt = None
            for d in dirs:
                if not (d / f"{case}{PRED_SUFFIX}").exists():
                    break
                p, _ = load_nifti(d / f"{case}{PRED_SUFFIX}")
                t, _ = load_nifti(d / f"{case}{LABEL_SUFFIX}")
                pred = (p == 1) if pred is None else pred | (p == 1)
                gt = (t == 1) if gt is None else gt | (t == 1)
            else:
                rows.append({"mode": mode, "fold": fold, "case_id": case, "n_muscles": len(dirs),
                             "muscles": ", ".join(SHORT.get(t, t) for t in sorted(group["target"])),
                             "dice": dice(pred, gt)})
    return pd.DataFrame(rows, columns=["mode", "fold", "case_id", "n_muscles", "muscles", "dice"]), notes


def plot_violin(scores: pd.DataFrame, path: Path) -> Path:
    """Figure 2: per-volume Dice, wo/ESM (red) vs w/ESM (blue), per target muscle."""
    import matplotlib.pyplot as plt

    from musclelab.outputs.figures import save_figure

    targets = [m for m in _muscles(scores) if m != ESM]
    fig, ax = plt.subplots(figsize=(1.9 * max(len(targets), 1) + 1.5, 3.6))
    for i, m in enumerate(targets):
        for j, (mode, color) in enumerate((("alone", "tab:red"), ("w/ESM", "tab:blue"))):
            v = pd.to_numeric(scores[(scores["muscle"] == m) & (scores["mode"] == mode)]["dice"],
                              errors="coerce").dropna().to_numpy(float)
            if len(v) == 0:
                continue
            x = i + (j - 0.5) * 0.38
            if len(v) > 1 and np.ptp(v) > 0:
                parts = ax.violinplot([v], positions=[x], widths=0.36, showmeans=True)
                for b in parts["bodies"]:
                    b.set_facecolor(color)
                    b.set_alpha(0.45)
                for k in ("cmeans", "cmins", "cmaxes", "cbars"):
                    if k in parts:
                        parts[k].set_color(color)
            ax.scatter(np.full(len(v), x), v, s=8, color=color, zorder=3)
    ax.set_xticks(range(len(targets)), [m.replace("_", " ") for m in targets], fontsize=8)
    ax.set_ylabel("Dice per test volume")
    ax.set_ylim(-0.02, 1.02)
    ax.scatter([], [], color="tab:red", label="wo/ESM")
    ax.scatter([], [], color="tab:blue", label="w/ESM")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Figure 2: Dice wo/ESM vs w/ESM", fontsize=9)
    return save_figure(fig, path)


PAPER = {
    "all": "the proposed method (w/ESM) improved the average Dice of the target muscles from 0.637 to 0.864",
    "muscle": "simultaneous learning with the ESM improved the Dice of {m} (Table 1)",
    "partner": "learning with the ESM gave higher accuracy than learning with the other muscles (Table 2)",
    "esm": "the ESM's own Dice stayed almost the same (0.930 alone, 0.922-0.928 paired)",
    "merged": "merged into one region, the target muscles reach a Dice of 0.902 in 3D",
}
#: the paper's merged-region Dice and the margin of the non-inferiority test against it
PAPER_MERGED_DICE, MERGED_MARGIN = 0.902, 0.02
#: "hardly changes": the ESM's paired Dice within ± this of its Dice alone (equivalence margin)
ESM_MARGIN = 0.02


def _indexed(p: pd.DataFrame, col: str, prefix: str = "") -> pd.Series:
    return pd.Series(p[col].to_numpy(float), index=[f"{prefix}{f}|{c}" for f, c in p.index])


def _mode_cases(scores: pd.DataFrame, muscle: str, mode: str) -> pd.Series:
    sub = scores[(scores["muscle"] == muscle) & (scores["mode"] == mode)]
    g = sub.groupby(["fold", "case_id"])["dice"].mean()
    return pd.Series(g.to_numpy(float), index=[f"{f}|{c}" for f, c in g.index])


def _failed(*series: pd.Series) -> int:
    return int(sum((s == 0).sum() for s in series))


def compute_findings(scores: pd.DataFrame, wil: pd.DataFrame, merged: pd.DataFrame) -> list[Finding]:
    """The paper's claims tested on this study's per-volume Dice (verdicts by
    :func:`musclelab.report.findings.judge`):

    * w/ESM > wo/ESM over all targets and per target: Wilcoxon signed-rank paired by test volume;
    * the ESM is the best partner: w/ESM vs the best other partner of the same target, paired — "not measurable"
      with the reason when the study has no other pairing;
    * the ESM's own Dice hardly changes: paired TOST, margin :data:`ESM_MARGIN`;
    * the merged region reaches the paper's 0.902: a number from another data set cannot be matched exactly, so
      the test is non-inferiority — the w/ESM merged Dice's one-sided lower 95 % confidence bound must exceed
      0.902 − :data:`MERGED_MARGIN` (one-sided t-test over test volumes).
    """
    out: list[Finding] = []
    targets = [m for m in _muscles(scores) if m != ESM]
    claim = "w/ESM segments the target muscles better than wo/ESM (Dice over all targets' test volumes)"
    src = f"{SOURCE}, Table 1 (0.864 vs 0.637)"
    a = pd.concat([_indexed(paired(scores, m), "a", f"{m}|") for m in targets]) if targets else pd.Series(dtype=float)
    b = pd.concat([_indexed(paired(scores, m), "b", f"{m}|") for m in targets]) if targets else pd.Series(dtype=float)
    if len(a) and len(b):
        r = compare(a, b, "test volume × target muscle (mean over runs)")
        r = ClaimTest(r.test, r.unit, r.n, r.estimate, r.statistic, r.p_value, n_failed=_failed(a, b))
        out.append(judged(claim, f"DC {a.mean():.3f} w/ESM vs {b.mean():.3f} wo/ESM over {len(a)} paired "
                                 f"(volume, muscle) values, difference {r.estimate:+.3f}", r, "difference", +1, src,
                          PAPER["all"]))
    else:
        out.append(not_measurable(claim, "no test volume scored both wo/ESM and w/ESM", src, PAPER["all"]))
    for m in targets:
        paper = PAPER_TABLE1.get(m)
        src = f"{SOURCE}, Table 1" + (f" ({paper[1]:.3f} vs {paper[0]:.3f})" if paper else "")
        claim = f"w/ESM > wo/ESM for {m.replace('_', ' ')}"
        p = paired(scores, m)
        words = PAPER["muscle"].format(m=m.replace("_", " "))
        if not len(p):
            out.append(not_measurable(claim, "no test volume scored both wo/ESM and w/ESM", src, words))
            continue
        va, vb = _indexed(p, "a"), _indexed(p, "b")
        r = compare(va, vb, "test volume (mean over runs)")
        r = ClaimTest(r.test, r.unit, r.n, r.estimate, r.statistic, r.p_value, n_failed=_failed(va, vb))
        out.append(judged(claim, f"DC {va.mean():.3f} w/ESM vs {vb.mean():.3f} wo/ESM over {len(p)} paired volumes "
                                 f"(w/ESM better in {int((va > vb).sum())})", r, "difference", +1, src, words))
    for m in targets:   # ESM is the best partner (Table 2)
        claim = f"the ESM is the best partner for {m.replace('_', ' ')}"
        src = f"{SOURCE}, Table 2"
        sub = scores[scores["muscle"] == m]
        modes = [k for k in dict.fromkeys(sub["mode"]) if k not in ("alone", "w/ESM")]
        if "w/ESM" not in set(sub["mode"]):
            out.append(not_measurable(claim, f"no run trains {m} with the ESM", src, PAPER["partner"]))
            continue
        if not modes:
            out.append(not_measurable(claim, f"no run pairs {m} with a muscle other than the ESM, so there is no "
                                             "partner to compare with (Table 2 needs data.labels=[<target>, "
                                             "<other muscle>] runs)", src, PAPER["partner"]))
            continue
        esm = _mode_cases(scores, m, "w/ESM")
        best = max(modes, key=lambda k: _mode_cases(scores, m, k).mean())
        other = _mode_cases(scores, m, best)
        r = compare(esm, other, "test volume (mean over runs)")
        r = ClaimTest(r.test, r.unit, r.n, r.estimate, r.statistic, r.p_value, n_failed=_failed(esm, other))
        others = ", ".join(f"{k} {_mode_cases(scores, m, k).mean():.3f}" for k in modes)
        out.append(judged(claim, f"DC w/ESM {esm.mean():.3f}; {others}", r, "difference", +1, src,
                          PAPER["partner"], note=f"w/ESM against the best other partner ({best})"))
    claim = f"the ESM's own Dice hardly changes when it is learnt with a target (±{ESM_MARGIN:g})"
    src = f"{SOURCE}, Discussion (0.930 alone, 0.922-0.928 paired)"
    alone = _mode_cases(scores, ESM, "alone")
    with_target = scores[(scores["muscle"] == ESM) & (scores["mode"] != "alone")]
    if len(alone) and len(with_target):
        g = with_target.groupby(["fold", "case_id"])["dice"].mean()
        paired_ = pd.Series(g.to_numpy(float), index=[f"{f}|{c}" for f, c in g.index])
        unit = "test volume (ESM Dice, mean over the runs that learn it)"
        r = tost(paired_, alone, ESM_MARGIN, unit)
        r = ClaimTest(r.test, r.unit, r.n, r.estimate, r.statistic, r.p_value, r.margin, _failed(paired_, alone))
        out.append(judged(claim, f"DC {paired_.mean():.3f} paired vs {alone.mean():.3f} alone ({r.estimate:+.3f})", r,
                          "equivalence", +1, src, PAPER["esm"], p_difference=compare(paired_, alone, unit).p_value,
                          note=f"equivalence margin ±{ESM_MARGIN:g} Dice"))
    else:
        out.append(not_measurable(claim, "needs ESM-alone runs and runs that pair the ESM with a target", src,
                                  PAPER["esm"]))
    claim = f"merged into one region, the w/ESM target muscles reach the paper's Dice ({PAPER_MERGED_DICE})"
    src = f"{SOURCE}, Discussion ({PAPER_MERGED_DICE} in 3D)"
    w = merged[merged["mode"] == "w/ESM"] if len(merged) else merged
    if len(w):
        v = w.groupby(["fold", "case_id"])["dice"].mean()
        r = noninferiority(v.to_numpy(float), PAPER_MERGED_DICE, MERGED_MARGIN, "test volume (merged targets)")
        r = ClaimTest(r.test, r.unit, r.n, r.estimate, r.statistic, r.p_value, r.margin, int((v == 0).sum()))
        wo = merged[merged["mode"] == "alone"]["dice"]
        out.append(judged(claim, f"merged DC {v.mean():.3f} w/ESM over {len(v)} volumes"
                                 + (f" ({wo.mean():.3f} wo/ESM)" if len(wo) else ""), r, "non-inferiority", +1, src,
                          PAPER["merged"],
                          note=f"agrees when the one-sided lower 95% confidence bound of the mean exceeds "
                               f"{PAPER_MERGED_DICE} − {MERGED_MARGIN} = {PAPER_MERGED_DICE - MERGED_MARGIN:.3f}"))
    else:
        out.append(not_measurable(claim, "no merged w/ESM Dice (needs eval.save_volumes=true and w/ESM runs of every "
                                         "target in a fold)", src, PAPER["merged"]))
    return out


def analyze(study_dir: str | Path) -> KawamotoResult:
    study = load_study(study_dir, {"labels": "data.labels", "fold": "data.fold", "seed": "seed",
                                   "data": "data.name"}, identity=["labels", "fold", "seed", "data"])
    scores_all, notes = load_scores(study)
    level = next((lv for lv in LEVELS if (scores_all["level"] == lv).any()), "volume")
    scores = scores_all[scores_all["level"] == level]
    l3 = scores_all[scores_all["level"] == "l3_slice"]
    wil = wilcoxon_table(scores)
    merged, merge_notes = merged_dice(study, scores) if level == "volume" else (pd.DataFrame(), [])
    return KawamotoResult(study=study, scores=scores_all, level=level, table1=table1(scores),
                          table1_l3=table1(l3) if len(l3) and level != "l3_slice" else None,
                          table2=table2(scores), esm=esm_table(scores), wilcoxon=wil, merged=merged,
                          findings=compute_findings(scores, wil, merged), notes=notes + merge_notes)


def _wil_md(wil: pd.DataFrame) -> pd.DataFrame:
    out = wil.copy()
    for c in ("wo/ESM DC", "w/ESM DC", "mean difference"):
        out[c] = out[c].map(lambda x: _f(x))
    out["W"] = out["W"].map(lambda x: _f(x, 1))
    out["p"] = out["p"].map(lambda x: "–" if math.isnan(x) else ("<0.001" if x < 0.001 else f"{x:.3g}"))
    return out


def render_markdown(res: KawamotoResult, figure: str) -> str:
    st = res.study
    level_text = {"volume": "per test volume in 3D (every slice predicted and stacked; surface metrics use the "
                            "slice thickness)", "l3_slice": "on the L3 slice of each test volume",
                  "slice": "per test slice"}[res.level]
    folds = sorted({str(v) for v in st.used["fold"].dropna()})
    lines = [f"# {TITLE}", "", f"Study directory: `{st.root}` · data: "
             f"{', '.join(sorted({str(v) for v in st.used['data'].dropna()}))} · folds: {', '.join(folds)}", "",
             f"Runs: {len(st.used)} complete and used of {st.n_expected} expected; {len(st.failed)} failed or "
             f"unfinished; {len(st.missing)} missing; {len(st.superseded)} superseded.", ""]
    if len(st.missing):
        lines += ["### Missing runs (not in the tables)", "", md_table(st.missing), ""]
    if len(st.failed):
        f = st.failed[["run_dir", "status", "labels", "fold", "error"]].copy()
        f["error"] = f["error"].map(lambda e: (e[:160] + "…") if isinstance(e, str) and len(e) > 160 else e)
        lines += ["### Failed or unfinished runs (not in the tables)", "", md_table(f), ""]
    lines += design_markdown(find_run_dirs(st.root))
    lines += [findings_markdown(res.findings, intro="Computed from this study's runs; the paper's numbers are in "
                                "parentheses after each source."), "",
              f"## Table 1: wo/ESM vs w/ESM ({res.level})", "",
              f"Mean and SD (sample) {level_text}, pooled over the folds. Q quadratus lumborum, P psoas major, "
              "O obliques, R rectus abdominis; DC Dice, RC recall, PC precision.", "",
              md_table(res.table1), ""]
    if res.table1_l3 is not None:
        lines += ["### Table 1 on the L3 slice alone", "", md_table(res.table1_l3), ""]
    lines += ["## Table 2: every pairing", "", "Each row is one label set trained together (E erector spinae); "
              "each muscle of the set is scored from that run. Mean (SD).", "", md_table(res.table2), "",
              "## Figure 2", "", f"![Dice per test volume, wo/ESM vs w/ESM]({figure})", "",
              "## Paired test per muscle (Wilcoxon signed-rank, w/ESM vs wo/ESM, same test volumes)", "",
              md_table(_wil_md(res.wilcoxon)), "", "## The ESM's own Dice, alone vs paired", "",
              md_table(res.esm), ""]
    if len(res.merged):
        mm = res.merged.groupby("mode")["dice"].agg(["mean", "std", "count", lambda v: int((v == 0).sum())])
        mm = mm.set_axis(["mean", "std", "count", "failed (Dice 0)"], axis=1).reset_index()
        mm["mode"] = mm["mode"].map({"alone": "wo/ESM", "w/ESM": "w/ESM"})
        mm = mm.rename(columns={"mean": "DC mean", "std": "DC SD", "count": "n volumes"})
        for c in ("DC mean", "DC SD"):
            mm[c] = mm[c].map(lambda x: _f(x))
        lines += ["## All target muscles merged into one region", "",
                  "Per test volume, the union of the target masks of the runs of one mode (muscles: "
                  f"{res.merged['muscles'].iloc[0]}) against the union of their references.", "", md_table(mm), ""]
    if res.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in res.notes], ""]
    lines += ["## Files", "", f"`table1.csv`, `table2.csv`, `wilcoxon.csv`, `esm.csv`, `merged_dice.csv`, "
              f"`scores.csv` (every per-muscle score), `findings.csv`, `runs.csv`, `{figure}`.", ""]
    return "\n".join(lines)


def write(study_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the Kawamoto report of ``study_dir`` into ``out_dir`` (default ``<study_dir>/report``)."""
    res = analyze(study_dir)
    out = report_dir(study_dir, out_dir)
    for name, df in (("table1", res.table1), ("table2", res.table2), ("wilcoxon", res.wilcoxon),
                     ("esm", res.esm), ("merged_dice", res.merged), ("scores", res.scores),
                     ("runs", res.study.runs)):
        atomic_write_text(out / f"{name}.csv", df.to_csv(index=False))
    if res.table1_l3 is not None:
        atomic_write_text(out / "table1_l3_slice.csv", res.table1_l3.to_csv(index=False))
    write_findings(res.findings, out)
    figure = "fig2_violin.png"
    plot_violin(res.scores[res.scores["level"] == res.level], out / figure)
    return atomic_write_text(out / "report.md", render_markdown(res, figure))
