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
* a findings section (:mod:`musclelab.report.findings`) saying, with the numbers, whether w/ESM > wo/ESM
  appears in this study — computed, never assumed.

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

from .findings import Finding, direction, findings_markdown, not_measurable, write_findings
from .markdown import md_table
from .runs import MISSING, Study, config_value, find_run_dirs, load_config, load_study, report_dir

KIND = "kawamoto"
TITLE = "Kawamoto et al. 2024: simultaneous learning of the erector spinae (w/ESM vs wo/ESM)"
ESM = "erector_spinae"
SOURCE = "Kawamoto 2024"
SHORT = {"erector_spinae": "E", "quadratus_lumborum": "Q", "psoas_major": "P", "obliques": "O",
         "rectus_abdominis": "R"}
ORDER = ["quadratus_lumborum", "psoas_major", "obliques", "rectus_abdominis", "erector_spinae"]
METRICS = {"dice": "DC", "recall": "RC", "precision": "PC"}
LEVELS = ("volume", "l3_slice", "slice")
PAPER_TABLE1 = {  # mean Dice wo/ESM, w/ESM (their Table 1)
    "quadratus_lumborum": (0.381, 0.832), "psoas_major": (0.901, 0.913), "obliques": (0.746, 0.849),
    "rectus_abdominis": (0.823, 0.829),
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
        n = sub[sub["muscle"].isin(targets)].groupby("muscle")["dice"].count()
        mean_row["n volumes"] = ", ".join(f"{SHORT.get(k, k)} {v}" for k, v in n.items()) or "0"
        sd_row["n volumes"] = ""
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
        rows.append({"ESM trained": partner, "DC mean": _f(mu), "DC SD": _f(sd), "n volumes": n})
    return pd.DataFrame(rows).sort_values("ESM trained", key=lambda s: s != "alone", kind="stable") \
        if rows else pd.DataFrame(columns=["ESM trained", "DC mean", "DC SD", "n volumes"])


def paired(scores: pd.DataFrame, muscle: str, mode_a: str = "w/ESM", mode_b: str = "alone") -> pd.DataFrame:
    """Per test volume Dice of ``muscle`` under two modes, matched on (fold, case_id)."""
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


def compute_findings(scores: pd.DataFrame, wil: pd.DataFrame, merged: pd.DataFrame) -> list[Finding]:
    """The paper's claims checked against this study's numbers."""
    out: list[Finding] = []
    targets = [m for m in _muscles(scores) if m != ESM]
    a = scores[(scores["mode"] == "w/ESM") & scores["muscle"].isin(targets)]["dice"]
    b = scores[(scores["mode"] == "alone") & scores["muscle"].isin(targets)]["dice"]
    claim = "w/ESM segments the target muscles better than wo/ESM (mean Dice over all targets)"
    if len(a) and len(b):
        (ma, sa, na), (mb, sb, nb) = _ms(a), _ms(b)
        out.append(Finding(claim=claim, source=f"{SOURCE}, Table 1 (0.864 vs 0.637)",
                           measured=f"DC {ma:.3f} (SD {sa:.3f}, n={na}) w/ESM vs {mb:.3f} (SD {sb:.3f}, n={nb}) "
                                    f"wo/ESM, difference {ma - mb:+.3f}",
                           agrees=direction(ma - mb, +1)))
    else:
        out.append(not_measurable(claim, "the study has no wo/ESM or no w/ESM runs", SOURCE))
    for r in wil.to_dict("records"):
        paper = PAPER_TABLE1.get(r["muscle"])
        src = f"{SOURCE}, Table 1" + (f" ({paper[1]:.3f} vs {paper[0]:.3f})" if paper else "")
        claim = f"w/ESM > wo/ESM for {r['muscle'].replace('_', ' ')}"
        n = int(r["n pairs"])
        if n == 0:
            out.append(not_measurable(claim, "no test volume scored both wo/ESM and w/ESM", src))
            continue
        out.append(Finding(claim=claim, source=src,
                           measured=f"DC {r['w/ESM DC']:.3f} w/ESM vs {r['wo/ESM DC']:.3f} wo/ESM over {n} paired "
                                    f"volumes (w/ESM better in {r['w/ESM better in']})",
                           agrees=direction(r["mean difference"], +1), test="Wilcoxon signed-rank, two-sided",
                           statistic=None if math.isnan(r["W"]) else r["W"],
                           p_value=None if math.isnan(r["p"]) else r["p"],
                           note="" if n >= 6 else "Too few pairs for p < 0.05 with this test."))
    # ESM is the best partner (Table 2)
    for m in targets:
        sub = scores[scores["muscle"] == m]
        means = sub.groupby("mode")["dice"].mean()
        pairs = {k: v for k, v in means.items() if k not in ("alone",)}
        claim = f"the ESM is the best partner for {m.replace('_', ' ')}"
        if "w/ESM" not in pairs or len(pairs) < 2:
            continue
        best = max(pairs, key=pairs.get)
        others = ", ".join(f"{k} {v:.3f}" for k, v in pairs.items() if k != "w/ESM")
        out.append(Finding(claim=claim, source=f"{SOURCE}, Table 2",
                           measured=f"DC w/ESM {pairs['w/ESM']:.3f}; {others}; best: {best}",
                           agrees=best == "w/ESM"))
    esm = scores[scores["muscle"] == ESM]
    if len(esm[esm["mode"] == "alone"]) and len(esm[esm["mode"] != "alone"]):
        alone, _, _ = _ms(esm[esm["mode"] == "alone"]["dice"])
        paired_, _, _ = _ms(esm[esm["mode"] != "alone"]["dice"])
        out.append(Finding(claim="the ESM's own Dice hardly changes when it is learnt with a target",
                           source=f"{SOURCE}, Discussion (0.930 alone, 0.922-0.928 paired)",
                           measured=f"DC {paired_:.3f} paired vs {alone:.3f} alone ({paired_ - alone:+.3f})",
                           agrees=direction(paired_ - alone, 0, margin=0.02), note="Margin ±0.02 Dice."))
    if len(merged):
        mm = merged.groupby("mode")["dice"].mean()
        if {"alone", "w/ESM"} <= set(mm.index):
            out.append(Finding(claim="merged into one region, the w/ESM muscles reach a high Dice",
                               source=f"{SOURCE}, Discussion (0.902 in 3D)",
                               measured=f"DC {mm['w/ESM']:.3f} w/ESM vs {mm['alone']:.3f} wo/ESM",
                               agrees=direction(mm["w/ESM"] - mm["alone"], +1),
                               note="Judged as w/ESM > wo/ESM; the paper gives no wo/ESM merged value."))
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
        mm = res.merged.groupby("mode")["dice"].agg(["mean", "std", "count"]).reset_index()
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
