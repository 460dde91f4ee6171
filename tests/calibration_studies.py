"""Simulated studies for calibrating the findings: run directories whose per-case scores carry no effect (null)
or an effect of the size a paper reports (planted), written with the same files real runs write, so the report
kinds read them through their own loaders. Seeded: the same seed writes the same study.

Used by ``tests/test_findings_calibration.py`` (how often each finding agrees over many simulated studies) and by
``benchmarks/calibrate_findings.py`` (which prints the rates, also for an older checkout of the code).
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

# --------------------------------------------------------------------------------------------------- McSweeney
MC_INITS = ("scratch", "coco")
MC_NS = (5, 100, 125)
MC_FOLDS = (0, 1)
MC_CASES = 20   # one fixed hold-out test set, scored by every run (the paper: 37)


def mcsweeney_study(root: Path, seed: int, planted: bool) -> Path:
    """2 inits × n ∈ {5, 100, 125} × 2 folds, 20 shared test cases, 2 observers per case.

    Null: no init effect, the models' DSC equal to the observers', the RMS-DTA 0.1 cm (the equivalence margin)
    above the observers' at every n, and DSC at n=125 0.02 (the plateau margin) above n=100 — each finding's null
    is the boundary of what it claims. Planted (the paper's sizes): coco beats scratch at n=5 by 0.15 DSC and
    0.3 cm RMS-DTA, that gap closes by n=100, models beat the observers' DSC by 0.04 from n=100 (0.94 vs 0.90),
    RMS-DTA equal to the observers', no change from n=100 to n=125.
    """
    rng = np.random.default_rng(seed)
    case_dsc = 0.90 + rng.normal(0, 0.03, MC_CASES)     # how hard each test case is
    case_rms = 0.32 + rng.normal(0, 0.05, MC_CASES)
    ids = [f"t{i:02d}" for i in range(MC_CASES)]
    root.mkdir(parents=True)
    obs_rows = []
    for i, o in itertools.product(range(MC_CASES), ("o1", "o2")):
        obs_rows.append({"case_id": ids[i], "observer": o, "dice": case_dsc[i] + rng.normal(0, 0.01),
                         "rms_dta_cm": case_rms[i] + rng.normal(0, 0.02), "sma_diff": 0.0, "smd_diff": 0.0})
    observers = pd.DataFrame(obs_rows)
    for job, (init, n, fold) in enumerate(itertools.product(MC_INITS, MC_NS, MC_FOLDS)):
        if planted:
            gain = 0.15 if (init == "coco" and n == 5) else 0.0
            dsc_shift = (-0.30 if n == 5 else 0.04) + gain
            rms_shift = (0.6 if n == 5 else 0.0) - (0.3 if gain else 0.0)
        else:
            dsc_shift = 0.02 if n == 125 else 0.0
            rms_shift = 0.1
        run = root / str(job)
        run.mkdir()
        (run / "config_resolved.yaml").write_text(yaml.safe_dump(
            {"init": {"name": init}, "data": {"name": "phantom", "n_train": n, "fold": fold, "subset_draw": 0},
             "seed": 0, "model": {"name": "unet"}}))
        dsc = np.clip(case_dsc + dsc_shift + rng.normal(0, 0.02, MC_CASES), 0, 1)
        rms = np.maximum(case_rms + rms_shift + rng.normal(0, 0.04, MC_CASES), 0.01)
        sma_true, smd_true = 150.0 + 10 * case_dsc, 35.0 + 5 * case_rms
        pd.DataFrame({"case_id": ids, "dice": dsc, "rms_dta_cm": rms, "sma_pred": sma_true + rng.normal(0, 2, MC_CASES),
                      "sma_true": sma_true, "smd_pred": smd_true + rng.normal(0, 1, MC_CASES),
                      "smd_true": smd_true}).to_csv(run / "test_cases.csv", index=False)
        observers.to_csv(run / "observers.csv", index=False)
        (run / "run_status.json").write_text(json.dumps({"status": "complete", "time": "2024-01-01T00:00:00"}))
    return root


# ---------------------------------------------------------------------------------------------------- Yoon chains
YOON_DATASETS = ("lits", "btcv", "chaos")


#: simulated learning curves: epochs per stage; a stage's training Dice after epoch e (from 1) is its final Dice
#: × (1 − exp(−e / tau)) + noise (sd 0.005); from scratch tau = 2.5 (95 % of the best at epoch ~8)
YOON_EPOCHS = 12
YOON_TAU_SCRATCH, YOON_TAU_PLANTED = 2.5, 1.0


def _yoon_curve(rng: np.random.Generator, top: float, tau: float) -> np.ndarray:
    e = np.arange(1, YOON_EPOCHS + 1)
    return np.clip(top * (1 - np.exp(-e / tau)) + rng.normal(0, 0.005, YOON_EPOCHS), 0, 1)


def yoon_chains_study(root: Path, seed: int, planted: bool, model: str = "vnet") -> Path:
    """Yoon's 15 orderings of LiTS, BTCV and CHAOS (3 single, 6 of two, 6 of three) for one model.

    Each data set scores ~0.85-0.93 right after it is trained; a later stage changes an earlier data set's Dice by
    its forgetting plus noise (sd 0.03 per ordering). Null: no forgetting anywhere, a transferred stage learns at
    the from-scratch speed and its Dice is 0.02 (the "similar" margin) below training the data set alone. Planted
    (Table 7, VNet; Figs. 8-10): LiTS loses 0.08, CHAOS 0.025, BTCV nothing; a transferred stage learns faster
    (tau 1 vs 2.5 epochs) and ends 0.01 above the data set trained alone. Learning curves are per-epoch training
    Dice only (``train_dice``: the liver design has no validation set), ``YOON_EPOCHS`` a stage.
    """
    rng = np.random.default_rng(seed)
    fresh = {"lits": 0.894, "btcv": 0.811, "chaos": 0.931}
    loss = {"lits": 0.08, "btcv": 0.0, "chaos": 0.025} if planted else dict.fromkeys(YOON_DATASETS, 0.0)
    gain, tau = (0.01, YOON_TAU_PLANTED) if planted else (-0.02, YOON_TAU_SCRATCH)
    orders = [p for k in (1, 2, 3) for p in itertools.permutations(YOON_DATASETS, k)]
    scratch: dict[str, float] = {}   # the single-data-set chains' Dice (written first: k = 1 comes first)
    summary = []
    for seq in orders:
        out = root / "-".join(seq)
        out.mkdir(parents=True)
        T = len(seq)
        R = np.full((T, len(YOON_DATASETS)), np.nan)
        curves = []
        for i, d in enumerate(seq):
            top = fresh[d] + (gain if i else 0.0)
            R[i, YOON_DATASETS.index(d)] = top + rng.normal(0, 0.01)
            curve = _yoon_curve(rng, R[i, YOON_DATASETS.index(d)], tau if i else YOON_TAU_SCRATCH)
            curves += [{"stage": i, "dataset": d, "epoch": e, "train_dice": v} for e, v in enumerate(curve)]
            for j in range(i):   # earlier data sets after stage i
                e = YOON_DATASETS.index(seq[j])
                R[i, e] = R[j, e] - loss[seq[j]] * (i - j) / max(T - 1 - j, 1) + rng.normal(0, 0.03)
            for e, other in enumerate(YOON_DATASETS):
                if other not in seq[: i + 1]:
                    R[i, e] = 0.4 + rng.normal(0, 0.05)
        if T == 1:
            scratch[seq[0]] = float(R[0, YOON_DATASETS.index(seq[0])])
        m = pd.DataFrame(R, columns=list(YOON_DATASETS))
        m.insert(0, "stage", range(T))
        m.insert(1, "trained", list(seq))
        m.insert(2, "final", [i == T - 1 for i in range(T)])
        m.to_csv(out / "forgetting_matrix.csv", index=False)
        pd.DataFrame(curves).to_csv(out / "learning_curves.csv", index=False)
        idx = [YOON_DATASETS.index(d) for d in seq]
        acc = float(np.mean([R[T - 1, e] for e in idx]))
        bwt = float(np.mean([R[T - 1, idx[j]] - R[j, idx[j]] for j in range(T - 1)])) if T > 1 else float("nan")
        fgt = float(np.mean([max(R[k, idx[j]] for k in range(j, T - 1)) - R[T - 1, idx[j]]
                             for j in range(T - 1)])) if T > 1 else float("nan")
        metrics = {"acc": acc, "bwt": bwt, "avg_forgetting": fgt}
        if T > 1:
            metrics["avg_scratch_gain"] = float(np.mean([R[j, idx[j]] - scratch[seq[j]] for j in range(1, T)]))
        (out / "chain_metrics.json").write_text(json.dumps(metrics))
        stages = [{"index": i, "dataset": d, "key": f"k{i}", "run_dir": f"/stages/{d}"} for i, d in enumerate(seq)]
        (out / "chain.json").write_text(json.dumps({"sequence": list(seq), "datasets": list(YOON_DATASETS),
                                                    "stages": stages, "model": model}))
        summary.append("-".join(seq))
    pd.DataFrame({"sequence": summary}).to_csv(root / "study_summary.csv", index=False)
    return root


# ------------------------------------------------------------------------------------------------ strategies
STRATEGIES = ("naive", "replay", "ewc", "lwf", "joint")
#: planted forgetting per strategy (an earlier data set's Dice lost by the end of the ordering): naive as Yoon's
#: VNet on LiTS, the strategies between it and joint training, which forgets nothing
STRATEGY_LOSS = {"naive": 0.08, "replay": 0.03, "ewc": 0.04, "lwf": 0.04, "joint": 0.0}


def strategies_study(root: Path, seed: int, planted: bool, model: str = "unet") -> Path:
    """One model × the five strategies × the 12 orderings of two or three of LiTS, BTCV and CHAOS, as a
    multirun: ``<strategy>/<a-b-c>/`` chain directories (chain.json ``strategy``, per-stage ``train_seconds``).

    An ordering has its own effect on every cell of its matrix (sd 0.03, the same under every strategy: the
    pairing), each strategy's chain its own noise (sd 0.02). Null: every strategy forgets as naive (0.06 by the end)
    and replay / EWC / LwF have every fresh Dice 0.02 (the ACC margin) below naive's. Planted:
    :data:`STRATEGY_LOSS`, equal fresh Dice.
    """
    rng = np.random.default_rng(50_000 + seed)
    fresh = {"lits": 0.894, "btcv": 0.811, "chaos": 0.931}
    orders = [p for k in (2, 3) for p in itertools.permutations(YOON_DATASETS, k)]
    effect = {seq: rng.normal(0, 0.03, (3, 3)) for seq in orders}
    for strategy in STRATEGIES:
        loss = STRATEGY_LOSS[strategy] if planted else 0.06
        shift = -0.02 if (not planted and strategy in ("replay", "ewc", "lwf")) else 0.0
        for seq in orders:
            out = root / strategy / "-".join(seq)
            out.mkdir(parents=True)
            T = len(seq)
            R = np.full((T, len(YOON_DATASETS)), 0.4)
            for i, d in enumerate(seq):
                R[i, YOON_DATASETS.index(d)] = fresh[d] + shift + effect[seq][i, i] + rng.normal(0, 0.02)
                for j in range(i):
                    e = YOON_DATASETS.index(seq[j])
                    R[i, e] = (R[j, e] - loss * (i - j) / max(T - 1 - j, 1) + effect[seq][i, j]
                               + rng.normal(0, 0.02))
            m = pd.DataFrame(R, columns=list(YOON_DATASETS))
            m.insert(0, "stage", range(T))
            m.insert(1, "trained", list(seq))
            m.insert(2, "final", [i == T - 1 for i in range(T)])
            m.to_csv(out / "forgetting_matrix.csv", index=False)
            (out / "chain_metrics.json").write_text(json.dumps({"acc": None, "bwt": None, "avg_forgetting": None,
                                                                "fwt": None}))
            stages = [{"index": i, "dataset": d, "key": ">".join(seq[: i + 1]) + (f"|{strategy}" if i else ""),
                       "train_seconds": 10.0 * (1 + i * (strategy == "joint"))} for i, d in enumerate(seq)]
            (out / "chain.json").write_text(json.dumps({
                "sequence": list(seq), "datasets": list(YOON_DATASETS), "stages": stages, "model": model,
                "strategy": {"name": strategy, "settings": {}}}))
    return root


# ------------------------------------------------------------------------------------------------------ Kawamoto
KW_Q, KW_P, KW_E = "quadratus_lumborum", "psoas_major", "erector_spinae"
KW_FOLDS = 3
KW_VOLUMES = 10   # test volumes per fold (the paper: 3-fold, 20 train / 10 test)


def kawamoto_study(root: Path, seed: int, planted: bool) -> Path:
    """Label sets Q, Q&E, P, P&E, E, Q&P over 3 folds of 10 test volumes (per-volume scores, ``level=volume``).

    A volume's Dice = the muscle's level + the volume's difficulty (sd 0.05; the ESM 0.015) + run noise (sd 0.01).
    Null: w/ESM =
    wo/ESM, the ESM partner = the other partner, and the ESM's own Dice 0.02 (the equivalence margin) lower when
    paired. Planted (Table 1): Q 0.381 → 0.832, P 0.901 → 0.913 w/ESM; the ESM partner 0.05 better than P for Q
    (Table 2); the ESM 0.930 alone, 0.925 paired.
    """
    rng = np.random.default_rng(seed)
    level = {(KW_Q, "alone"): 0.381, (KW_Q, "w/ESM"): 0.832 if planted else 0.381,
             (KW_Q, "with P"): 0.782 if planted else 0.832,
             (KW_P, "alone"): 0.901, (KW_P, "w/ESM"): 0.913 if planted else 0.901, (KW_P, "with Q"): 0.90,
             (KW_E, "alone"): 0.930, (KW_E, "w/ESM"): 0.925 if planted else 0.910}
    if not planted:
        level[(KW_Q, "with P")] = level[(KW_Q, "w/ESM")]
    sets = [(KW_Q,), (KW_Q, KW_E), (KW_P,), (KW_P, KW_E), (KW_E,), (KW_Q, KW_P)]
    # the ESM sits near Dice 0.93: a smaller spread keeps it off the ceiling of 1, which would shrink the null's
    # difference below the equivalence margin
    hard = {(f, v, m): rng.normal(0, 0.015 if m == KW_E else 0.05) for f in range(KW_FOLDS)
            for v in range(KW_VOLUMES) for m in (KW_Q, KW_P, KW_E)}
    job = 0
    for labels, fold in itertools.product(sets, range(KW_FOLDS)):
        run = root / str(job)
        job += 1
        run.mkdir(parents=True)
        (run / "run_status.json").write_text(json.dumps({"status": "complete"}))
        (run / "config_resolved.yaml").write_text(yaml.safe_dump(
            {"data": {"name": "lumbar_phantom", "labels": list(labels), "fold": fold}, "seed": 0,
             "loss": {"name": "kawamoto"}, "init": {"name": "scratch"}, "tags": ["kawamoto2024"]}))
        rows = []
        for v in range(KW_VOLUMES):
            row = {"case_id": f"f{fold}-v{v}", "level": "volume"}
            for m in labels:
                others = [x for x in labels if x != m]
                mode = "alone" if not others else ("w/ESM" if others == [KW_E] else
                                                  "with " + ("P" if others == [KW_P] else "Q"))
                if m == KW_E and others:
                    mode = "w/ESM"
                d = float(np.clip(level[(m, mode)] + hard[(fold, v, m)] + rng.normal(0, 0.01), 0, 1))
                row.update({f"dice_{m}": d, f"recall_{m}": d, f"precision_{m}": d})
            rows.append(row)
        pd.DataFrame(rows).to_csv(run / "test_cases.csv", index=False)
    return root


def kawamoto_merged(seed: int, planted: bool) -> pd.DataFrame:
    """A merged-region Dice table (as :func:`musclelab.report.kawamoto.merged_dice` returns): 30 test volumes,
    w/ESM mean 0.902 (planted, the paper's value) or 0.882 (null: the non-inferiority bound), sd 0.03; wo/ESM
    rows equal (null) or 0.05 lower (planted)."""
    rng = np.random.default_rng(10_000 + seed)
    mean = 0.902 if planted else 0.882
    alone = mean - (0.05 if planted else 0.0)   # the paper gives no wo/ESM merged value; shown, not tested
    rows = [{"mode": mode, "fold": f, "case_id": f"f{f}-v{v}", "n_muscles": 2, "muscles": "P, Q",
             "dice": float(np.clip(m + rng.normal(0, 0.03), 0, 1))}
            for mode, m in (("w/ESM", mean), ("alone", alone)) for f in range(KW_FOLDS) for v in range(KW_VOLUMES)]
    return pd.DataFrame(rows)
