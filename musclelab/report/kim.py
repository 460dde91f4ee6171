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

No torch import.
"""
from __future__ import annotations

import json
import shutil
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

from .findings import Finding, direction, findings_markdown, not_measurable, write_findings  # noqa: E402
from .markdown import md_table  # noqa: E402
from .runs import config_value, find_run_dirs, load_config, report_dir  # noqa: E402

KIND = "kim"
TITLE = "Kim et al. 2024: individual thigh-muscle segmentation in 3D (UNETR vs 3D U-Net)"
SOURCE = "Kim 2024"
ICC_FORM = "ICC(2,1)"
PAPER_MEAN_DICE = {"unetr": 0.84, "unet": 0.69}   # the paper's abstract / Fig. 5 averages


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
    """model name -> {"rows": test_cases, "summary": test_summary, "run": run dir} (the last run per model)."""
    models: dict[str, dict[str, Any]] = {}
    for run, cfg in _runs(study_dir):
        name = str(config_value(cfg, "model.name"))
        models[name] = {"rows": pd.read_csv(run / "test_cases.csv"), "run": run,
                        "summary": json.loads((run / "test_summary.json").read_text())}
    return models


def figure5(models: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per (class, model): DC, ASSD, HD, HD95, RAVD (means over volumes) and VC over volumes."""
    out = []
    for model, d in models.items():
        rows = d["rows"]
        for c in _classes(rows):
            rec = {"class": c, "model": model, "n": len(rows)}
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


def findings(fig5: pd.DataFrame, icc_t: pd.DataFrame, sarc: pd.DataFrame) -> list[Finding]:
    out: list[Finding] = []
    muscles = set(_groups()) - {"bones"}
    musc = fig5[fig5["class"].isin([m for g in muscles for m in _groups()[g]])]
    means = musc.groupby("model")["DC"].mean()
    if {"unetr", "unet"} <= set(means.index):
        diff = float(means["unetr"] - means["unet"])
        out.append(Finding("UNETR segments the individual muscles better than the 3D U-Net (mean DC 0.84 vs 0.69)",
                           f"mean DC over muscles: UNETR {means['unetr']:.3f}, 3D U-Net {means['unet']:.3f}",
                           direction(diff, +1), SOURCE + ", Fig. 5"))
    else:
        out.append(not_measurable("UNETR beats the 3D U-Net", "the study lacks one of the two models", SOURCE))
    vc = musc.groupby("model")["VC"].mean()
    if len(vc.dropna()):
        best = vc.idxmax()
        out.append(Finding("predicted muscle volumes correlate highly with the reference (VC 0.968)",
                           f"mean VC: {', '.join(f'{k} {v:.3f}' for k, v in vc.items())}",
                           direction(float(vc[best]) - 0.9, +1), SOURCE + ", Fig. 5",
                           note="agrees when the best model's mean VC exceeds 0.9"))
    if not sarc.empty:
        ref_m = sarc[(sarc.source == "reference") & (sarc.sex == "M")]
        if len(ref_m) and ref_m["n_sarcopenic"].max() > 0 and np.isfinite(ref_m["r"]).any():
            r = float(np.nanmean(ref_m["r"]))
            out.append(Finding("in men, muscle volume / height² correlates negatively with sarcopenia",
                               f"mean r over muscles (reference volumes, men, n={int(ref_m['n'].max())}): {r:.2f}",
                               direction(r, -1), SOURCE + ", Fig. 7"))
        else:
            out.append(not_measurable("in men, volume / height² correlates negatively with sarcopenia",
                                      "too few scored men with both sarcopenia states", SOURCE + ", Fig. 7"))
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
    fnd = findings(fig5, icc_t, sarc)
    write_findings(fnd, out)
    wide = fig5.pivot(index="class", columns="model", values=["DC", "ASSD", "HD", "RAVD", "VC"])
    wide.columns = [f"{m} {k}" for k, m in wide.columns]
    order = [c for c in fig5["class"].drop_duplicates()]
    wide = wide.reindex(order).reset_index()
    icc_mean = icc_t.drop(columns=["class", "form"]).groupby("model").mean(numeric_only=True).reset_index()
    md = [f"# {TITLE}", "", f"Study: `{study}`; models: {', '.join(models)}; scored volumes per model: "
          f"{', '.join(str(len(d['rows'])) for d in models.values())}.", "",
          "## Figure 5: per class (DC, ASSD mm, HD mm, RAVD %, VC)", "", md_table(_fmt(wide)), "",
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
