"""The Kim et al. 2024 report: individual thigh-muscle volumes in 3D, UNETR vs the 3D U-Net.

Reads the complete runs of ``experiment=kim2024_thigh`` (+ ``_smoke``): each run is one model (``model.name``)
with ``test_cases.csv`` (one row per scored volume: per-class Dice, ASSD, HD, HD95 in mm, predicted / reference /
rater volumes in mL, signed RAVD in %, sex, height, sarcopenia), ``volume_agreement.csv`` and ``test_summary.json``
(sliding-window seconds per scan). Writes into ``<study>/report/``:

* **Figure 5** (``figure5.csv``): per class and model DC, ASSD, HD, RAVD (mean over the scored volumes) and VC
  (Pearson r of predicted vs reference volumes over the volumes);
* a per-group summary (anterior, medial, posterior, gluteal, other, bones): the class means averaged per group;
* the ICC table (``icc.csv``): ICC(2,1) of the volumes — model vs reference, model vs each rater, rater vs rater;
* the sarcopenia figure (``sarcopenia.png``, ``sarcopenia.csv``): per sex, Pearson r of volume / height² vs the
  AWGS 2019 sarcopenia flag per muscle, for the reference and each model's predictions (Kim 2024 Fig. 7);
* three orthogonal overlay views of a test case per model (copied from the runs' ``test_overlay.png``);
* inference seconds per scan per model; a findings section computed from the numbers.

Every complete run of a model is used: with several seeds, a case's values are averaged over the model's runs
(the unit of analysis is the scanned volume). A failed class (Dice 0: nothing predicted where the reference has
the muscle) keeps its Dice 0 and gets the worst ASSD / HD / HD95 of the study instead of NaN; Figure 5 counts the
failures per class and model (``failed``).

No torch import.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from musclelab.io import atomic_write_text  # noqa: E402
from musclelab.metrics.agreement import icc, sarcopenia_correlation, volume_correlation  # noqa: E402
from musclelab.outputs.figures import save_figure  # noqa: E402

from musclelab.metrics.statistics import ClaimTest, compare, noninferiority, worst_value  # noqa: E402

from .design import design_markdown  # noqa: E402
from .findings import Finding, findings_markdown, not_measurable, judged, write_findings  # noqa: E402
from .markdown import md_table  # noqa: E402
from .runs import config_value, find_run_dirs, load_config, report_dir  # noqa: E402

KIND = "kim"
TITLE = "Kim et al. 2024: individual thigh-muscle segmentation in 3D (UNETR vs 3D U-Net)"
SOURCE = "Kim 2024"
ICC_FORM = "ICC(2,1)"
PAPER_MEAN_DICE = {"unetr": 0.84, "unet": 0.69}   # the paper's abstract / Fig. 5 averages
PAPER_VC = 0.968            # UNETR's mean volume correlation (Fig. 5)
VC_MARGIN = 0.03            # non-inferiority margin of the VC test: VC above 0.968 − 0.03 = 0.938
DISTANCES = ("assd", "hd", "hd95")
PAPER = {
    "dice": "UNETR achieved a mean Dice of 0.84 across the thigh muscles, outperforming the 3D U-Net (0.69)",
    "vc": "the volumes predicted by UNETR correlated highly with the reference volumes (VC 0.968)",
    "sarc": "in men, muscle volume normalised by height² correlated negatively with sarcopenia (Fig. 7)",
}


def _groups() -> dict[str, tuple[str, ...]]:
    from musclelab.phantoms.thigh import GROUPS

    return {**GROUPS, "bones": ("femur", "iliac")}


def _runs(study_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for run in find_run_dirs(study_dir):
        status = run / "run_status.json"
        if not (run / "test_cases.csv").exists() or not status.exists():
            continue
        if json.loads(status.read_text()).get("status") != "complete":
            continue
        cfg = load_config(run)
        if config_value(cfg, "data.spatial_dims") == 3:
            out.append((run, cfg))
    return out


def detect(study_dir: str | Path) -> bool:
    """A study of complete 3D runs with per-volume agreement tables (``volume_agreement.csv``)."""
    runs = _runs(Path(study_dir))
    return bool(runs) and all((r / "volume_agreement.csv").exists() for r, _ in runs)


def _classes(rows: pd.DataFrame) -> list[str]:
    return [c[len("vol_ref_"):-len("_ml")] for c in rows.columns if c.startswith("vol_ref_") and c.endswith("_ml")]


def load(study_dir: Path) -> dict[str, dict[str, Any]]:
    """model name -> {"rows": test_cases averaged per case over the model's runs, "failed": class -> failed
    (run, case) rows, "n_rows": run × case rows, "summary": inference numbers averaged over runs, "run": first run
    dir, "runs": all run dirs}. Every seed of a model is kept; failed classes are scored (module docstring)."""
    raw: dict[str, list[tuple[Path, pd.DataFrame, dict]]] = {}
    for run, cfg in _runs(study_dir):
        name = str(config_value(cfg, "model.name"))
        summary = json.loads((run / "test_summary.json").read_text()) if (run / "test_summary.json").exists() else {}
        raw.setdefault(name, []).append((run, pd.read_csv(run / "test_cases.csv"), summary))
    every = pd.concat([r for runs in raw.values() for _, r, _ in runs], ignore_index=True) if raw else pd.DataFrame()
    worst = {m: worst_value(every[[c for c in every.columns if c.startswith(f"{m}_")]].to_numpy(float).ravel(),
                            higher_is_better=False) for m in DISTANCES} if len(every) else {}
    models: dict[str, dict[str, Any]] = {}
    for name, runs in raw.items():
        frames, failed = [], {}
        for _, rows, _ in runs:
            rows = rows.copy()
            for c in _classes(rows):
                bad = (pd.to_numeric(rows.get(f"dice_{c}"), errors="coerce") == 0) if f"dice_{c}" in rows \
                    else pd.Series(False, index=rows.index)
                failed[c] = failed.get(c, 0) + int(bad.sum())
                for m in DISTANCES:
                    col = f"{m}_{c}"
                    if col in rows and np.isfinite(worst.get(m, np.nan)):
                        rows.loc[bad & rows[col].isna(), col] = worst[m]
            frames.append(rows.assign(case_id=rows["case_id"].astype(str)) if "case_id" in rows
                          else rows.assign(case_id=[str(i) for i in range(len(rows))]))
        allrows = pd.concat(frames, ignore_index=True)
        num = allrows.select_dtypes("number").columns
        rest = [c for c in allrows.columns if c not in num and c != "case_id"]
        mean = allrows.groupby("case_id", sort=False)[list(num)].mean()
        first = allrows.groupby("case_id", sort=False)[rest].first() if rest else None
        rows = (mean.join(first) if first is not None else mean).reset_index()
        sums = [s for _, _, s in runs]
        summary = {"inference_s_per_scan": float(np.nanmean([float(s.get("inference_s_per_scan") or np.nan)
                                                             for s in sums])) if sums else None,
                   "n_cases": len(rows)}
        models[name] = {"rows": rows, "failed": failed, "n_rows": len(allrows), "summary": summary,
                        "run": runs[0][0], "runs": [r for r, _, _ in runs]}
    return models


def figure5(models: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per (class, model): DC, ASSD, HD, HD95, RAVD (means over volumes, each averaged over the model's
    runs), VC over volumes, and ``failed`` (failed run × volume rows / all, scored not dropped)."""
    out = []
    for model, d in models.items():
        rows = d["rows"]
        for c in _classes(rows):
            rec = {"class": c, "model": model, "n": len(rows), "runs": len(d.get("runs", [1])),
                   "failed": f"{d.get('failed', {}).get(c, 0)}/{d.get('n_rows', len(rows))}"}
            for key, col in (("DC", "dice"), ("ASSD", "assd"), ("HD", "hd"), ("HD95", "hd95"), ("RAVD", "ravd")):
                v = rows.get(f"{col}_{c}")
                rec[key] = float(np.nanmean(v)) if v is not None and np.isfinite(v).any() else float("nan")
            rec["VC"] = volume_correlation(rows[f"vol_pred_{c}_ml"], rows[f"vol_ref_{c}_ml"])
            out.append(rec)
    return pd.DataFrame(out)


def group_summary(fig5: pd.DataFrame) -> pd.DataFrame:
    out = []
    for g, names in _groups().items():
        sub = fig5[fig5["class"].isin(names)]
        for model, s in sub.groupby("model"):
            out.append({"group": g, "model": model, "n_classes": int(s["class"].nunique()),
                        **{k: float(s[k].mean()) for k in ("DC", "ASSD", "HD", "RAVD", "VC")}})
    return pd.DataFrame(out)


def icc_table(models: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Per class: ICC(2,1) of volumes, model vs reference / each rater, and between the raters."""
    out = []
    for model, d in models.items():
        rows = d["rows"]
        raters = sorted({c.split("_")[1] + "_" + c.split("_")[2] for c in rows.columns if c.startswith("vol_rater_")})
        for c in _classes(rows):
            rec = {"class": c, "model": model, "form": ICC_FORM,
                   "model_vs_reference": icc(np.c_[rows[f"vol_pred_{c}_ml"], rows[f"vol_ref_{c}_ml"]])["icc"]}
            for r in raters:
                rec[f"model_vs_{r}"] = icc(np.c_[rows[f"vol_pred_{c}_ml"], rows[f"vol_{r}_{c}_ml"]])["icc"]
            if len(raters) >= 2:
                rec["rater_vs_rater"] = icc(np.column_stack([rows[f"vol_{r}_{c}_ml"] for r in raters]))["icc"]
            out.append(rec)
    return pd.DataFrame(out)


def sarcopenia(models: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Per sex and muscle: r of volume / height² vs the sarcopenia flag, for the reference and each model."""
    from musclelab.phantoms.thigh import MUSCLE_NAMES

    frames = []
    first = next(iter(models.values()))["rows"]
    if not {"sex", "height_m", "sarcopenic"} <= set(first.columns):
        return pd.DataFrame()
    muscles = [m for m in MUSCLE_NAMES if f"vol_ref_{m}_ml" in first]
    frames.append(sarcopenia_correlation(first, {m: f"vol_ref_{m}_ml" for m in muscles}).assign(source="reference"))
    for model, d in models.items():
        frames.append(sarcopenia_correlation(d["rows"], {m: f"vol_pred_{m}_ml" for m in muscles})
                      .assign(source=model))
    return pd.concat(frames, ignore_index=True)


def plot_sarcopenia(table: pd.DataFrame, path: Path) -> Path | None:
    if table.empty:
        return None
    sources, sexes = list(dict.fromkeys(table["source"])), sorted(table["sex"].unique())
    muscles = list(dict.fromkeys(table["structure"]))
    fig, axes = plt.subplots(1, len(sexes), figsize=(5 + 4 * len(sexes), 0.35 * len(muscles) + 2), squeeze=False)
    for ax, sex in zip(axes[0], sexes):
        m = np.full((len(muscles), len(sources)), np.nan)
        for j, s in enumerate(sources):
            sub = table[(table.sex == sex) & (table.source == s)].set_index("structure")["r"]
            m[:, j] = [sub.get(mu, np.nan) for mu in muscles]
        im = ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
        ax.set_xticks(range(len(sources)), sources, fontsize=7)
        ax.set_yticks(range(len(muscles)), muscles, fontsize=6)
        n = int(table[(table.sex == sex)]["n"].max())
        ax.set_title(f"sex {sex} (n={n}): r(volume/height², sarcopenia)", fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.6)
    return save_figure(fig, path)


def _fmt(df: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    return df.map(lambda v: round(v, digits) if isinstance(v, float) else v)


def _muscle_classes() -> list[str]:
    return [m for g, names in _groups().items() if g != "bones" for m in names]


def _case_mean_dice(rows: pd.DataFrame, classes: list[str]) -> pd.Series:
    cols = [f"dice_{c}" for c in classes if f"dice_{c}" in rows]
    return pd.Series(rows[cols].mean(axis=1).to_numpy(float), index=rows["case_id"].astype(str)) if cols \
        else pd.Series(dtype=float)


def findings(fig5: pd.DataFrame, icc_t: pd.DataFrame, sarc: pd.DataFrame,
             models: dict[str, dict[str, Any]] | None = None) -> list[Finding]:
    """Kim 2024's claims, tested (verdicts by :func:`musclelab.report.findings.judge`):

    * UNETR beats the 3D U-Net: per scanned volume, the mean Dice over the muscle classes (averaged over each
      model's runs), Wilcoxon signed-rank paired by volume;
    * UNETR's volumes correlate highly with the reference (VC 0.968): per muscle class, Fisher's z of UNETR's VC;
      one-sided t-test over the classes that the mean z exceeds z(0.968 − :data:`VC_MARGIN`) (non-inferiority to
      the paper's value; the unit is the muscle class);
    * in men, volume / height² correlates negatively with sarcopenia — on each model's *predicted* volumes (the
      reference volumes define the phantom's flag, so they would hold by construction): point-biserial r of the
      total predicted thigh-muscle volume / height² with the flag over the men, two-sided.
    """
    from scipy import stats

    models = models or {}
    out: list[Finding] = []
    muscles = _muscle_classes()
    musc = fig5[fig5["class"].isin(muscles)] if len(fig5) else fig5
    claim = "UNETR segments the individual muscles better than the 3D U-Net (mean DC 0.84 vs 0.69)"
    if {"unetr", "unet"} <= set(models):
        a = _case_mean_dice(models["unetr"]["rows"], muscles)
        b = _case_mean_dice(models["unet"]["rows"], muscles)
        r = compare(a, b, "scanned volume (mean DC over muscles, mean over runs)")
        r = ClaimTest(r.test, r.unit, r.n, r.estimate, r.statistic, r.p_value,
                       n_failed=sum(models[m]["failed"].get(c, 0) for m in ("unetr", "unet") for c in muscles))
        out.append(judged(claim, f"mean DC over muscles: UNETR {a.mean():.3f}, 3D U-Net {b.mean():.3f}", r,
                          "difference", +1, SOURCE + ", Fig. 5", PAPER["dice"]))
    else:
        out.append(not_measurable(claim, "the study lacks one of the two models", SOURCE, PAPER["dice"]))
    claim = f"UNETR's predicted muscle volumes correlate highly with the reference (VC {PAPER_VC})"
    vc = musc[musc["model"] == "unetr"]["VC"].to_numpy(float) if len(musc) else np.array([])
    vc = vc[np.isfinite(vc)]
    if vc.size >= 2:
        z = np.arctanh(np.clip(vc, -0.999999, 0.999999))
        z0 = float(np.arctanh(PAPER_VC - VC_MARGIN))
        r = replace(noninferiority(z, z0, 0.0, "muscle class (Fisher z of its VC over the volumes)"),
                    test=f"one-sided t-test of Fisher z(VC) > z({PAPER_VC - VC_MARGIN:.3f}) over muscle classes")
        n_vol = int(musc[musc["model"] == "unetr"]["n"].max())
        out.append(judged(claim, f"UNETR VC over {vc.size} muscle classes: mean {vc.mean():.3f}, min {vc.min():.3f} "
                                 f"({n_vol} volumes)", r, "non-inferiority", +1, SOURCE + ", Fig. 5", PAPER["vc"],
                          note=f"agrees when the classes' mean Fisher z is significantly above "
                               f"z({PAPER_VC} − {VC_MARGIN}) = z({PAPER_VC - VC_MARGIN:.3f}) (one-sided); the "
                               "volumes' spread between subjects alone makes VC high, so a value well below the "
                               "paper's is what fails"))
    else:
        out.append(not_measurable(claim, "no UNETR run, or fewer than two muscle classes with a VC (needs 3 or more "
                                         "scanned volumes)", SOURCE + ", Fig. 5", PAPER["vc"]))
    claim_t = "in men, predicted muscle volume / height² correlates negatively with sarcopenia ({model})"
    for model, d in models.items():
        rows = d["rows"]
        claim = claim_t.format(model=model)
        cols = [f"vol_pred_{m}_ml" for m in muscles if f"vol_pred_{m}_ml" in rows]
        if not cols or not {"sex", "height_m", "sarcopenic"} <= set(rows.columns):
            out.append(not_measurable(claim, "no sex / height / sarcopenia metadata or no predicted volumes",
                                      SOURCE + ", Fig. 7", PAPER["sarc"]))
            continue
        men = rows[rows["sex"].astype(str) == "M"]
        x = (men[cols].sum(axis=1) / men["height_m"].astype(float) ** 2).to_numpy(float)
        y = men["sarcopenic"].astype(float).to_numpy()
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < 3 or np.std(y[ok]) == 0 or np.std(x[ok]) == 0:
            out.append(not_measurable(claim, f"too few scored men with both sarcopenia states ({int(ok.sum())} men, "
                                             f"{int(np.nansum(y))} sarcopenic)", SOURCE + ", Fig. 7", PAPER["sarc"]))
            continue
        rr, p = stats.pearsonr(x[ok], y[ok])
        ref_cols = [c.replace("vol_pred_", "vol_ref_") for c in cols]
        ref_note = ""
        if all(c in men for c in ref_cols):
            xr = (men[ref_cols].sum(axis=1) / men["height_m"].astype(float) ** 2).to_numpy(float)
            if np.std(xr[ok]) > 0:
                ref_note = (f"With the reference volumes r = {stats.pearsonr(xr[ok], y[ok])[0]:.2f} — on the "
                            "phantom the flag is computed from them, so only the predicted volumes test the model.")
        r = ClaimTest("Pearson (point-biserial) r, two-sided", "man (scanned volume, mean over runs)", int(ok.sum()),
                       float(rr), float(rr), float(p))
        out.append(judged(claim, f"r(total predicted thigh-muscle volume / height², sarcopenia) = {rr:.2f} over "
                                 f"{int(ok.sum())} men ({int(y[ok].sum())} sarcopenic)", r, "difference", -1,
                          SOURCE + ", Fig. 7", PAPER["sarc"], note=ref_note))
    return out


def write(study_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    study = Path(study_dir)
    out = report_dir(study, out_dir)
    models = load(study)
    if not models:
        raise ValueError(f"no complete 3D runs with test_cases.csv under {study}")
    fig5 = figure5(models)
    groups = group_summary(fig5)
    icc_t = icc_table(models)
    sarc = sarcopenia(models)
    for name, df in (("figure5", fig5), ("groups", groups), ("icc", icc_t), ("sarcopenia", sarc)):
        atomic_write_text(out / f"{name}.csv", df.to_csv(index=False))
    sarc_png = plot_sarcopenia(sarc, out / "sarcopenia.png")
    overlays = []
    for model, d in models.items():
        src = d["run"] / "test_overlay.png"
        if src.exists():
            dst = out / f"overlay_{model}.png"
            shutil.copyfile(src, dst)
            overlays.append((model, dst.name))
    speed = pd.DataFrame([{"model": m, "inference_s_per_scan": d["summary"].get("inference_s_per_scan"),
                           "n_scans": d["summary"].get("n_cases")} for m, d in models.items()])
    fnd = findings(fig5, icc_t, sarc, models)
    write_findings(fnd, out)
    wide = fig5.pivot(index="class", columns="model", values=["DC", "ASSD", "HD", "RAVD", "VC", "failed"])
    wide.columns = [f"{m} {k}" for k, m in wide.columns]
    order = [c for c in fig5["class"].drop_duplicates()]
    wide = wide.reindex(order).reset_index()
    icc_mean = icc_t.drop(columns=["class", "form"]).groupby("model").mean(numeric_only=True).reset_index()
    runs_text = ", ".join(f"{m} {len(d['runs'])}" for m, d in models.items())
    md = [f"# {TITLE}", "", f"Study: `{study}`; models: {', '.join(models)}; scored volumes per model: "
          f"{', '.join(str(len(d['rows'])) for d in models.values())}; runs (seeds) per model: "
          f"{runs_text} (a volume's values are "
          "averaged over a model's runs; failed classes are scored: Dice 0, the study's worst distance).", "",
          *design_markdown(find_run_dirs(study)),
          "## Figure 5: per class (DC, ASSD mm, HD mm, RAVD %, VC; failed = failed / run × volume rows)", "",
          md_table(_fmt(wide)), "",
          "## Per group (means of the classes)", "", md_table(_fmt(groups)), "",
          f"## ICC of the volumes ({ICC_FORM}: two-way random, absolute agreement, single rater), mean over classes",
          "", md_table(_fmt(icc_mean)), "", "Per class: `icc.csv`.", "",
          "## Sarcopenia: r(volume / height², AWGS 2019 flag) per sex", "",
          (f"![sarcopenia]({sarc_png.name})" if sarc_png else "no sex / height / sarcopenia metadata in the runs"),
          "", "## Inference seconds per scan (sliding window)", "", md_table(_fmt(speed)), "",
          "## Test case overlays (axial, coronal, sagittal)", ""]
    md += [f"**{m}**\n\n![{m}]({f})\n" for m, f in overlays]
    md.append(findings_markdown(fnd))
    path = out / "report.md"
    atomic_write_text(path, "\n".join(md) + "\n")
    return path
