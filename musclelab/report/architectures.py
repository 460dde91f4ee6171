"""The Yoon et al. 2024 architecture comparison (Table 3): one row per model, mean ± sd over test cases.

Reads the run directories of a multirun over ``model`` (optionally × ``seed``), files only:

* ``config_resolved.yaml`` — ``model.name``, ``data.name``, ``seed``, ``data.n_train``;
* ``run_status.json`` — ``status`` and ``metrics.fit_time_s`` (training time);
* ``test_summary.json`` — ``inference_ms_per_slice`` (and ``metrics.<name>.mean/sd`` as a fallback);
* ``test_cases.csv`` — per-case Dice, HD95 (mm), accuracy, precision, recall.

Per model, case values of all its complete runs are pooled (several seeds: their cases together) and
summarised as mean ± sd (sample sd); training and inference times are means over the model's runs. A failed
case (empty prediction: HD95 undefined) stays in: its HD95 is the worst HD95 of the study, and Table 3 counts
the failures (n failed / n). The findings test per-case values averaged over a model's seeds, paired by test
case (every model scores the same test cases): Wilcoxon signed-rank, verdicts by
:func:`musclelab.report.findings.judge`. When a run
has no ``test_cases.csv`` its ``test_summary.json`` mean/sd are used (a single run only; noted).

Outputs: ``architectures.csv`` (one row per model), ``fig_architectures.png`` (Dice with sd error bars),
``runs.csv``, ``findings.csv`` and ``report.md`` (Table 3 layout; missing and failed runs listed; a "Findings"
section: the paper's ranking, networks vs the semi-automatic threshold tool, CNNs vs transformers —
:func:`architecture_findings`). :func:`site_transfer_findings` judges the site-transfer claim (Fig. 7: transfer
beats training from scratch at n = 5 ... 30) on per-case results of an init × n study.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from musclelab.io import atomic_write_text  # noqa: E402
from musclelab.outputs.figures import save_figure  # noqa: E402
from musclelab.metrics.statistics import (ClaimTest, compare, fill_failures, noninferiority,  # noqa: E402
                                          per_case, worst_value)
from musclelab.report.findings import (Finding, findings_markdown, not_measurable, judged,  # noqa: E402
                                       untested, write_findings)
from musclelab.report.design import design_markdown  # noqa: E402
from musclelab.report.markdown import md_table  # noqa: E402

from .runs import (MISSING, Study, config_value, expected_grid, find_run_dirs, load_config, load_study,  # noqa: E402
                   report_dir)
from .findings import FINDINGS_FILE, findings_frame, with_holm  # noqa: E402

KIND = "architectures"
TITLE = "Yoon et al. 2024 reproduction: segmentation architectures compared (Table 3)"

COLUMNS: dict[str, str] = {"model": "model.name", "dataset": "data.name", "seed": "seed",
                           "n_train": "data.n_train", "init": "init.name"}
IDENTITY: tuple[str, ...] = ("model", "dataset", "seed", "n_train", "init")
# case metric -> Table 3 column header
METRICS: dict[str, str] = {"dice": "Dice", "hd95": "HD95 (mm)", "accuracy": "accuracy", "precision": "precision",
                           "recall": "recall"}
TABLE_METRICS = ("dice", "hd95", "accuracy", "precision")  # the paper's Table 3 columns (recall in the csv)
DIGITS: dict[str, int] = {"dice": 3, "hd95": 2, "accuracy": 3, "precision": 3, "recall": 3}
# sweep keys that make a study a McSweeney (init × n) layout rather than an architecture comparison
NON_ARCH_SWEEPS = ("init", "init.name", "data.n_train")


def _distinct(values: list) -> set[str]:
    return {str(v) for v in values if v is not MISSING and v is not None}


def detect(study_dir: str | Path) -> bool:
    """Whether the study compares architectures: complete runs with at least two ``model.name`` values, no
    sweep over ``init`` or ``data.n_train`` (neither in ``multirun.yaml`` nor differing between the runs'
    configs), and no chain outputs (``forgetting_matrix.csv``)."""
    root = Path(study_dir)
    if next(root.rglob("forgetting_matrix.csv"), None) is not None:
        return False
    cfgs = []
    for run_dir in find_run_dirs(root):
        try:
            status = json.loads((run_dir / "run_status.json").read_text()).get("status")
        except (OSError, ValueError, AttributeError):
            continue
        if status == "complete":
            cfgs.append(load_config(run_dir))
    if len(_distinct([config_value(c, "model.name") for c in cfgs])) < 2:
        return False
    if len(_distinct([config_value(c, "init.name") for c in cfgs])) > 1:
        return False
    if len(_distinct([config_value(c, "data.n_train") for c in cfgs])) > 1:
        return False
    try:
        grid = expected_grid(root)
    except (OSError, yaml.YAMLError):
        grid = None
    if grid is not None:
        for key in NON_ARCH_SWEEPS:
            if key in grid.columns and grid[key].nunique() > 1:
                return False
    return True


# ---------------------------------------------------------------------------------------------------- reading
def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _float(value: object) -> float:
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return f


@dataclass
class ArchitecturesResult:
    """Everything the report shows."""

    study: Study
    cases: pd.DataFrame  # run_dir, model, seed, case_id + METRICS
    per_run: pd.DataFrame  # run_dir, model, seed, fit_time_s, inference_ms_per_slice, n_cases, source
    table: pd.DataFrame  # one row per model (architectures.csv)
    excluded: pd.DataFrame  # complete runs without test results
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def load_runs(study: Study) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, dict]]:
    """``(cases, per_run, excluded, summaries)`` of the study's used runs (``summaries``: run_dir → the
    ``test_summary.json`` metrics of runs without ``test_cases.csv``)."""
    frames, runs, excluded, summaries = [], [], [], {}
    for run in study.used.itertuples(index=False):
        run_dir = study.root / run.run_dir
        status = _read_json(run_dir / "run_status.json")
        summary = _read_json(run_dir / "test_summary.json")
        source = "test_cases.csv"
        if (run_dir / "test_cases.csv").exists():
            try:
                raw = pd.read_csv(run_dir / "test_cases.csv")
            except (OSError, ValueError) as err:
                excluded.append({**run._asdict(), "reason": f"unreadable test_cases.csv ({type(err).__name__})"})
                continue
            df = pd.DataFrame({"case_id": raw["case_id"].astype(str) if "case_id" in raw
                               else [str(i) for i in range(len(raw))]})
            for m in METRICS:
                df[m] = pd.to_numeric(raw[m], errors="coerce") if m in raw else np.nan
            frames.append(df.assign(run_dir=run.run_dir, model=str(run.model), seed=run.seed))
            n_cases = len(df)
        elif summary.get("metrics"):
            source, n_cases = "test_summary.json", int(summary.get("n_cases") or 0)
            summaries[run.run_dir] = summary["metrics"]
        else:
            excluded.append({**run._asdict(), "reason": "status complete but no test_cases.csv / test_summary.json"})
            continue
        runs.append({"run_dir": run.run_dir, "model": str(run.model), "dataset": run.dataset, "seed": run.seed,
                     "fit_time_s": _float((status.get("metrics") or {}).get("fit_time_s")),
                     "inference_ms_per_slice": _float(summary.get("inference_ms_per_slice")),
                     "n_cases": n_cases, "source": source})
    cols = ["run_dir", "model", "seed", "case_id", *METRICS]
    cases = pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)
    cases = score_failures(cases)
    per_run = pd.DataFrame(runs, columns=["run_dir", "model", "dataset", "seed", "fit_time_s",
                                          "inference_ms_per_slice", "n_cases", "source"])
    excl = pd.DataFrame(excluded, columns=[*study.used.columns, "reason"])
    return cases, per_run, excl, summaries


def score_failures(cases: pd.DataFrame) -> pd.DataFrame:
    """``cases`` with ``failed`` (HD95 undefined and Dice 0: the model predicted no muscle) and those HD95 values
    scored as the worst HD95 of the study (mm), so failures stay in every mean and test."""
    cases = cases.copy()
    hd = pd.to_numeric(cases["hd95"], errors="coerce")
    cases["failed"] = (hd.isna() & (pd.to_numeric(cases["dice"], errors="coerce") == 0)).to_numpy(bool)
    worst = worst_value(hd.to_numpy(float), higher_is_better=False)
    if cases["failed"].any() and np.isfinite(worst):
        cases.loc[cases["failed"], "hd95"], _ = fill_failures(hd[cases["failed"]].to_numpy(float), worst)
    return cases


def _mean_sd(values: np.ndarray) -> tuple[float, float, int]:
    v = values[np.isfinite(values)]
    mean = float(v.mean()) if v.size else math.nan
    sd = float(v.std(ddof=1)) if v.size > 1 else math.nan
    return mean, sd, int(v.size)


def summarize_models(cases: pd.DataFrame, per_run: pd.DataFrame, summaries: Mapping[str, dict],
                     notes: list[str] | None = None) -> pd.DataFrame:
    """One row per model (order of first appearance, sorted by name): ``model, n_runs, n_cases`` and per metric
    ``<m>_mean, <m>_sd``, then ``fit_time_s`` and ``inference_ms_per_slice`` (means over runs)."""
    rows = []
    for model in sorted(per_run["model"].unique()):
        runs = per_run[per_run["model"] == model]
        c = cases[cases["model"] == model]
        row: dict[str, object] = {"model": model, "n_runs": len(runs),
                                  "n_cases": int(runs["n_cases"].sum()),
                                  "n_failed": int(c["failed"].sum()) if "failed" in c else 0}
        from_summary = [r for r in runs["run_dir"] if r in summaries]
        for m in METRICS:
            mean, sd, _ = _mean_sd(c[m].to_numpy(dtype=np.float64))
            if from_summary and not len(c):
                stats = summaries[from_summary[0]].get(m) or {}
                mean, sd = _float(stats.get("mean")), _float(stats.get("sd"))
            row[f"{m}_mean"], row[f"{m}_sd"] = mean, sd
        if from_summary and notes is not None:
            notes.append(f"{model}: {len(from_summary)} run(s) without test_cases.csv; "
                         + ("their test_summary.json mean/sd are shown" if not len(c)
                            else "only the runs with per-case values are pooled"))
        row["fit_time_s"] = float(np.nanmean(runs["fit_time_s"])) if runs["fit_time_s"].notna().any() else math.nan
        inf = runs["inference_ms_per_slice"]
        row["inference_ms_per_slice"] = float(np.nanmean(inf)) if inf.notna().any() else math.nan
        rows.append(row)
    cols = ["model", "n_runs", "n_cases", "n_failed", *[f"{m}_{s}" for m in METRICS for s in ("mean", "sd")],
            "fit_time_s", "inference_ms_per_slice"]
    return pd.DataFrame(rows, columns=cols)


def analyze(study_dir: str | Path) -> ArchitecturesResult:
    """Collect the runs of ``study_dir`` and compute the per-model table."""
    study = load_study(study_dir, COLUMNS, IDENTITY)
    cases, per_run, excluded, summaries = load_runs(study)
    notes = list(study.notes)
    table = summarize_models(cases, per_run, summaries, notes)
    return ArchitecturesResult(study=study, cases=cases, per_run=per_run, table=table, excluded=excluded,
                               findings=architecture_findings(table, cases), notes=notes)


# ---------------------------------------------------------------------------------------------------- findings
SOURCE = "Yoon et al. 2024, Table 3"
#: the paper's Table 3 Dice (muscle, 512 px; ParaTransCNN 224 px); "BMI TOOL" is the semi-automatic tool
PAPER_DICE: dict[str, float] = {"vnet": 0.8846, "unet": 0.8737, "unetr": 0.8663, "paratranscnn": 0.8637,
                                "swin_unetr": 0.8595}
PAPER_DICE["ronneberger_unet"] = PAPER_DICE["unet"]   # the paper's "vanilla UNet" as the experiment builds it
PAPER_TOOL_DICE = 0.84
#: the semi-automatic tool: the threshold with its user's inner abdominal boundary when run, else without
TOOLS = ("threshold_boundary", "threshold")
CNNS, TRANSFORMERS = ("vnet", "unet", "ronneberger_unet"), ("unetr", "swin_unetr")


def _case_dice(cases: pd.DataFrame, model: str) -> pd.Series:
    """Per-case Dice of ``model``, averaged over its runs (seeds)."""
    return per_case(cases[cases["model"] == model], "dice")


def _unit(cases: pd.DataFrame, *models: str) -> str:
    if "run_dir" not in cases:
        return "test case"
    runs = sorted({int(cases.loc[cases["model"] == m, "run_dir"].nunique()) for m in models})
    return f"test case (mean over {'/'.join(map(str, runs))} seed run{'s' if runs != [1] else ''})"


def _failed(cases: pd.DataFrame, *models: str) -> int:
    return int(cases.loc[cases["model"].isin(models), "failed"].sum()) if "failed" in cases else 0


def _pair(cases: pd.DataFrame, a: str, b: str) -> ClaimTest:
    r = compare(_case_dice(cases, a), _case_dice(cases, b), _unit(cases, a, b))
    return ClaimTest(r.test, r.unit, r.n, r.estimate, r.statistic, r.p_value, n_failed=_failed(cases, a, b))


PAPER_WORDS = {
    "vnet": "VNet achieved the highest Dice coefficient (0.8846)",
    "rank": "VNet 0.8846, UNet 0.8737, UNETR 0.8663, ParaTransCNN 0.8637, Swin-UNETR 0.8595 (Table 3)",
    "tool": "the networks outperform the semi-automatic BMI tool (Dice 0.84)",
    "cnn": "CNN-based models remain competitive with transformer-based models",
}
#: "competitive" = the CNNs' mean per-case Dice not lower than the transformers' by more than this (non-inferiority)
COMPETITIVE_MARGIN = 0.02


def architecture_findings(table: pd.DataFrame, cases: pd.DataFrame) -> list[Finding]:
    """Table 3's claims against the runs (never assumed), on per-case Dice averaged over each model's seeds:
    VNet has the highest Dice (paired Wilcoxon vs the best other network); the networks' ranking follows the
    paper's (Kendall's tau, unit: model); every network beats the semi-automatic threshold tool (paired
    Wilcoxon); CNNs (VNet, UNet) are competitive with transformers (UNETR, Swin-UNETR): per case, the CNNs' mean
    Dice minus the transformers', non-inferior with margin :data:`COMPETITIVE_MARGIN`."""
    from scipy import stats

    dice = {str(r.model): float(r.dice_mean) for r in table.itertuples(index=False) if np.isfinite(r.dice_mean)}
    nets = {m: d for m, d in dice.items() if m in PAPER_DICE}
    per_case_ok = {"model", "case_id", "dice"} <= set(cases.columns)
    out: list[Finding] = []
    claim = "VNet segments muscle best of the networks (highest Dice)"
    if "vnet" not in nets or len(nets) < 2:
        out.append(not_measurable(claim, "VNet and at least one other network of Table 3 are needed", SOURCE,
                                  PAPER_WORDS["vnet"]))
    else:
        best_other = max((d, m) for m, d in nets.items() if m != "vnet")
        measured = f"Dice VNet {nets['vnet']:.3f}, best other {best_other[1]} {best_other[0]:.3f}"
        if per_case_ok and len(_case_dice(cases, "vnet")) and len(_case_dice(cases, best_other[1])):
            out.append(judged(claim, measured, _pair(cases, "vnet", best_other[1]), "difference", +1, SOURCE,
                              PAPER_WORDS["vnet"], note=f"tested against the best other network ({best_other[1]})"))
        else:
            out.append(untested(claim, measured, nets["vnet"] - best_other[0], +1, SOURCE, PAPER_WORDS["vnet"],
                                note="no per-case values to test"))
    claim = "The networks rank by Dice as in Table 3 (VNet > UNet > UNETR > ParaTransCNN > Swin-UNETR)"
    if len(nets) < 3:
        out.append(not_measurable(claim, "fewer than three networks of Table 3 have results", SOURCE,
                                  PAPER_WORDS["rank"]))
    else:
        ms = sorted(nets, key=nets.get, reverse=True)
        tau = stats.kendalltau([PAPER_DICE[m] for m in nets], [nets[m] for m in nets])
        r = ClaimTest("Kendall's tau vs the paper's Dice, two-sided", "model", len(nets), float(tau.statistic),
                       float(tau.statistic), float(tau.pvalue))
        out.append(judged(claim, "measured ranking " + " > ".join(f"{m} {nets[m]:.3f}" for m in ms), r,
                          "difference", +1, SOURCE, PAPER_WORDS["rank"],
                          note="with n models, tau can reach p < 0.05 only from 4 models on"))
    tool = next((t for t in TOOLS if t in dice), None)
    if tool is None:
        out.append(not_measurable("Every network beats the semi-automatic threshold tool (Dice)",
                                  "no threshold baseline in the study", SOURCE, PAPER_WORDS["tool"]))
    for m in nets if tool is not None else ():
        claim = f"{m} beats the semi-automatic threshold tool ({tool}; paper: {PAPER_TOOL_DICE})"
        measured = f"Dice {nets[m]:.3f} vs {dice[tool]:.3f}"
        if per_case_ok and len(_case_dice(cases, m)) and len(_case_dice(cases, tool)):
            out.append(judged(claim, measured, _pair(cases, m, tool), "difference", +1, SOURCE, PAPER_WORDS["tool"]))
        else:
            out.append(untested(claim, measured, nets[m] - dice[tool], +1, SOURCE, PAPER_WORDS["tool"],
                                note="no per-case values to test"))
    claim = (f"CNNs (VNet, UNet) are competitive with transformers (UNETR, Swin-UNETR): mean Dice not lower by "
             f"more than {COMPETITIVE_MARGIN:g}")
    cnn, tr = [m for m in CNNS if m in nets], [m for m in TRANSFORMERS if m in nets]
    if not cnn or not tr:
        out.append(not_measurable(claim, "needs at least one CNN and one transformer of Table 3", SOURCE,
                                  PAPER_WORDS["cnn"]))
    else:
        measured = (f"mean Dice CNNs {np.mean([nets[m] for m in cnn]):.3f}, transformers "
                    f"{np.mean([nets[m] for m in tr]):.3f}")
        if per_case_ok:
            a = pd.concat([_case_dice(cases, m) for m in cnn], axis=1).mean(axis=1)
            b = pd.concat([_case_dice(cases, m) for m in tr], axis=1).mean(axis=1)
            r = noninferiority(a, b, COMPETITIVE_MARGIN, _unit(cases, *cnn, *tr) + ", mean over the models")
            r = ClaimTest(r.test, r.unit, r.n, r.estimate, r.statistic, r.p_value, r.margin,
                           _failed(cases, *cnn, *tr))
            out.append(judged(claim, measured, r, "non-inferiority", +1, SOURCE, PAPER_WORDS["cnn"]))
        else:
            out.append(untested(claim, measured, np.mean([nets[m] for m in cnn]) - np.mean([nets[m] for m in tr])
                                + COMPETITIVE_MARGIN, +1, SOURCE, PAPER_WORDS["cnn"]))
    return out


def site_transfer_findings(cases: pd.DataFrame, n_range: tuple[int, int] = (5, 30),
                           transfer: str = "checkpoint", scratch: str = "scratch") -> list[Finding]:
    """Fig. 7's claim — a model trained at another site and fine-tuned on n = 5 ... 30 new-site images beats one
    trained on them from scratch — on per-case results with columns ``init``, ``n_train``, ``dice`` (and
    ``case_id``): one finding per n (per-case Dice averaged over runs, paired Wilcoxon) and one over all n in
    ``n_range`` (it must hold at every n: the largest p counts)."""
    source = "Yoon et al. 2024, Fig. 7"
    words = "transfer learning from another site outperforms training from scratch with 5 to 30 images"
    out: list[Finding] = []
    need = {"init", "n_train", "dice"}
    if not need <= set(cases.columns) or not {transfer, scratch} <= set(cases["init"].astype(str)):
        return [not_measurable("Transfer from another site beats training from scratch at n = 5 ... 30",
                               f"needs per-case Dice of init={transfer} and init={scratch} runs", source, words)]
    c = cases.assign(init=cases["init"].astype(str), n_train=pd.to_numeric(cases["n_train"], errors="coerce"))
    if "case_id" not in c:
        c = c.assign(case_id=c.groupby(["init", "n_train"]).cumcount().astype(str))
    c = c[(c["n_train"] >= n_range[0]) & (c["n_train"] <= n_range[1])]
    parts: list[ClaimTest] = []
    for n in sorted(c["n_train"].dropna().unique()):
        a = per_case(c[(c["n_train"] == n) & (c["init"] == transfer)], "dice")
        b = per_case(c[(c["n_train"] == n) & (c["init"] == scratch)], "dice")
        if not len(a) or not len(b):
            continue
        r = compare(a, b, "test case (mean over runs)")
        parts.append(r)
        out.append(judged(f"n = {int(n)}: transfer from another site beats scratch",
                          f"Dice {a.mean():.3f} vs {b.mean():.3f}", r, "difference", +1, source, words))
    claim = f"Transfer from another site beats scratch at every n in {n_range[0]} ... {n_range[1]}"
    if not parts:
        out.append(not_measurable(claim, "no n with both inits", source, words))
    else:
        worst = min(parts, key=lambda r: r.estimate)
        p = max(r.p_value if np.isfinite(r.p_value) else math.inf for r in parts)
        r = ClaimTest(f"{worst.test}, at every n (largest p of {len(parts)})", worst.unit, worst.n,
                       worst.estimate, worst.statistic, p if math.isfinite(p) else math.nan)
        better = sum(x.estimate > 0 for x in parts)
        out.append(judged(claim, f"mean Dice gain {np.mean([x.estimate for x in parts]):+.3f}; transfer better at "
                                 f"{better} of {len(parts)} n", r, "difference", +1, source, words))
    return out


def site_transfer_cases(study_dir: str | Path) -> pd.DataFrame | None:
    """Per-case Dice of the complete runs of a site-transfer study (configs tagged ``site_transfer``, as
    ``experiment=yoon2024_site_transfer``): columns ``init``, ``n_train``, ``dice``; None for other studies."""
    frames = []
    for run_dir in find_run_dirs(study_dir):
        cfg = load_config(run_dir)
        if "site_transfer" not in [str(t) for t in (cfg.get("tags") or [])]:
            continue
        done = _read_json(run_dir / "run_status.json").get("status") == "complete"
        if not done or not (run_dir / "test_cases.csv").exists():
            continue
        raw = pd.read_csv(run_dir / "test_cases.csv")
        if "dice" in raw:
            ids = raw["case_id"].astype(str) if "case_id" in raw else pd.Series(range(len(raw))).astype(str)
            frames.append(pd.DataFrame({"init": str(config_value(cfg, "init.name")),
                                        "n_train": config_value(cfg, "data.n_train"), "case_id": ids,
                                        "dice": raw["dice"], "run_dir": str(run_dir)}))
    return pd.concat(frames, ignore_index=True) if frames else None


def add_site_transfer_findings(study_dir: str | Path, report_md: Path) -> Path:
    """For a site-transfer study (reported as init x n), append Fig. 7's findings to ``report_md`` and to the
    ``findings.csv`` beside it; other studies are left as they are. Returns ``report_md``."""
    cases = site_transfer_cases(study_dir)
    if cases is None:
        return report_md
    found = site_transfer_findings(cases)
    path = report_md.parent / FINDINGS_FILE
    old = pd.read_csv(path) if path.exists() else None
    frame = findings_frame(found) if old is None else with_holm(pd.concat([old, findings_frame(found)],
                                                                          ignore_index=True))
    atomic_write_text(path, frame.to_csv(index=False))
    text = report_md.read_text().rstrip("\n") + "\n\n" + findings_markdown(
        found, title="Findings: site transfer (Yoon et al. 2024, Fig. 7)",
        intro="Fine-tuning a model from another site (init=checkpoint) vs training from scratch on n new-site images.")
    return atomic_write_text(report_md, text)


# ---------------------------------------------------------------------------------------------------- output
def _fmt(x: float, digits: int) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _pm(mean: float, sd: float, digits: int) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if np.isfinite(sd) else f"{mean:.{digits}f}"


def table3(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 3 as text: rows = model; Dice, HD95 (mm), accuracy, precision (mean ± sd), training
    time (s), inference time per slice (ms)."""
    out = pd.DataFrame({"model": table["model"]})
    for m in TABLE_METRICS:
        out[METRICS[m]] = [_pm(r[f"{m}_mean"], r[f"{m}_sd"], DIGITS[m]) for _, r in table.iterrows()]
    out["failed / cases"] = [f"{int(r.n_failed)}/{int(r.n_cases)}" for r in table.itertuples(index=False)]
    out["training time (s)"] = [_fmt(v, 1) for v in table["fit_time_s"]]
    out["inference time per slice (ms)"] = [_fmt(v, 2) for v in table["inference_ms_per_slice"]]
    return out


def plot_dice(table: pd.DataFrame, path: str | Path) -> Path:
    """Bar chart of mean Dice per model with sd error bars."""
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(table) + 1.5), 3.6))
    x = np.arange(len(table))
    mean = table["dice_mean"].to_numpy(dtype=float)
    sd = np.nan_to_num(table["dice_sd"].to_numpy(dtype=float))
    ax.bar(x, np.nan_to_num(mean), yerr=sd, capsize=4, color="tab:blue", alpha=0.8)
    ax.set_xticks(x, [str(m) for m in table["model"]], rotation=30 if len(table) > 4 else 0)
    ax.set_ylabel("Dice (mean ± sd over cases)")
    ax.set_ylim(0, 1.05)
    ax.set_title("Test Dice per architecture")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def render_markdown(res: ArchitecturesResult, figure: str) -> str:
    st = res.study
    datasets = sorted({str(v) for v in res.per_run["dataset"].dropna()})
    seeds = sorted({str(v) for v in res.per_run["seed"].dropna()})
    lines = [f"# {TITLE}", "",
             f"Study directory: `{st.root}`" + (f" · data: {', '.join(datasets)}" if datasets else "")
             + (f" · seeds: {', '.join(seeds)}" if seeds else ""), "",
             "## Runs", "", "| | runs |", "|---|---|",
             f"| expected ({'multirun.yaml grid' if st.grid is not None else 'no multirun.yaml: runs found'}) "
             f"| {st.n_expected} |",
             f"| run directories found | {len(st.runs)} |",
             f"| complete and used | {len(res.per_run)} |",
             f"| failed or unfinished | {len(st.failed)} |",
             f"| expected but no complete run (missing) | {len(st.missing)} |",
             f"| complete but superseded by a newer run of the same setting | {len(st.superseded)} |",
             f"| complete but unusable | {len(res.excluded)} |", ""]
    if len(st.missing):
        lines += ["### Missing runs (expected, no complete result; not in the table)", "", md_table(st.missing), ""]
    if len(st.failed):
        cols = ["run_dir", "status", *[c for c in ("model", "seed") if c in st.failed], "error"]
        f = st.failed[cols].copy()
        f["error"] = f["error"].map(lambda e: (e[:160] + "…") if isinstance(e, str) and len(e) > 160 else e)
        lines += ["### Failed or unfinished runs (not in the table)", "", md_table(f), ""]
    if len(st.superseded):
        lines += ["### Superseded runs (a newer complete run of the same setting is used instead)", "",
                  md_table(st.superseded[["run_dir", "model", "seed"]]), ""]
    if len(res.excluded):
        lines += ["### Complete but unusable runs", "", md_table(res.excluded[["run_dir", "model", "reason"]]), ""]
    lines += ["## Table 3: architectures", "",
              "Mean ± sd (sample sd) over the pooled test cases of each model's complete runs (several seeds: "
              "their cases together; a failed case, whose prediction is empty, has Dice 0 and the study's worst "
              "HD95, and is counted in `failed / cases`); training time (`fit_time_s`) and inference time per "
              "slice are means over the model's runs.", "", md_table(table3(res.table)), "",
              "Runs and cases per model: " + ", ".join(f"{r.model} {r.n_runs} run(s) / {r.n_cases} cases"
                                                       for r in res.table.itertuples(index=False)), "",
              f"![Test Dice per architecture]({figure})", ""]
    lines += design_markdown(find_run_dirs(st.root))
    lines += [findings_markdown(res.findings, intro="Table 3's claims against these runs (unit of analysis: the "
                                "test case, its Dice averaged over a model's seed runs; models are compared paired "
                                "by test case; the semi-automatic tool is the threshold baseline with its user's inner "
                                "abdominal boundary when it was run).")]
    if res.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in res.notes], ""]
    lines += ["## Files", "", "`architectures.csv` (one row per model, recall included), `runs.csv` (every run "
              f"directory and its status), `findings.csv`, `{figure}`.", ""]
    return "\n".join(lines)


def write(study_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the architecture report of ``study_dir`` into ``out_dir`` (default ``<study_dir>/report``)."""
    res = analyze(study_dir)
    out = report_dir(study_dir, out_dir)
    atomic_write_text(out / "architectures.csv", res.table.to_csv(index=False))
    atomic_write_text(out / "runs.csv", res.study.runs.to_csv(index=False))
    write_findings(res.findings, out)
    figure = "fig_architectures.png"
    plot_dice(res.table, out / figure)
    return atomic_write_text(out / "report.md", render_markdown(res, figure))
