"""Collect the runs of a study from disk: which exist, which finished, which are missing from the sweep.

A study is a directory holding Hydra multirun job directories (found by searching recursively for
``run_status.json``, so a parent of several sweeps works too). Everything is read from files only —
``run_status.json``, ``config_resolved.yaml`` (or ``.hydra/config.yaml``) and each sweep's
``multirun.yaml`` — so a study trained on another machine can be reported anywhere, without torch.

* :func:`collect_runs` — one row per run directory: ``run_dir`` (relative to the study), ``status``,
  ``error``, ``time`` and one column per requested config key;
* :func:`expected_grid` — the cartesian product of every sweep's parameters (``hydra.sweeper.params``,
  plus multi-valued ``hydra.overrides.task`` entries), or ``None`` without a ``multirun.yaml``;
* :func:`missing_runs` — expected combinations with no complete run (annotated with the status of any
  unfinished run of that combination);
* :func:`failed_runs`, :func:`supersede_duplicates` — unfinished runs, and repeated complete runs.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from musclelab.errors import ConfigError
from musclelab.outputs.status import STATUS_FILE, read_status

__all__ = [
    "Study",
    "collect_runs",
    "config_value",
    "expected_grid",
    "failed_runs",
    "find_run_dirs",
    "load_config",
    "load_study",
    "missing_runs",
    "norm_value",
    "parse_sweep_values",
    "supersede_duplicates",
]

MISSING = object()  # a config key absent from a run's config


def report_dir(study_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Where a report goes: ``out_dir``, or ``<study_dir>/report`` by default (created)."""
    out = Path(out_dir) if out_dir is not None else Path(study_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    return out


def find_run_dirs(study_dir: str | Path) -> list[Path]:
    """Every directory under ``study_dir`` (itself included) holding a ``run_status.json``, sorted."""
    root = Path(study_dir)
    found = [Path(dirpath) for dirpath, _, files in os.walk(root) if STATUS_FILE in files]
    return sorted(found, key=lambda p: _natural_key(str(p.relative_to(root))))


def _natural_key(text: str) -> list[Any]:
    """Sort key ordering ``2`` before ``10`` in paths like ``sweep/2`` and ``sweep/10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def load_config(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``config_resolved.yaml`` (falling back to ``.hydra/config.yaml``); ``{}`` when neither exists."""
    run_dir = Path(run_dir)
    for path in (run_dir / "config_resolved.yaml", run_dir / ".hydra" / "config.yaml"):
        if path.exists():
            data = yaml.safe_load(path.read_text())
            return data if isinstance(data, dict) else {}
    return {}


def config_value(cfg: Mapping[str, Any], key: str) -> Any:
    """The value at dotted ``key`` in ``cfg``; a config group (a mapping) stands for its ``name``.

    So the sweep key ``init`` (a group override ``init=imagenet``) and ``init.name`` read the same value.
    Returns :data:`MISSING` when the path does not exist.
    """
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    if isinstance(node, Mapping):
        return node.get("name", MISSING)
    return node


def norm_value(value: Any) -> str:
    """A comparable text form of a config or sweep value (``5``, ``5.0`` and ``'5'`` all give ``'5'``)."""
    if value is MISSING or value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return str(int(value))
    if isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if isinstance(parsed, (int, float, bool)) or parsed is None:
            return norm_value(parsed)
        return value
    return str(value)


def _read_status_file(run_dir: Path) -> tuple[str, str, str]:
    """``(status, error, time)`` of a run; an unreadable status file gives status ``unreadable``."""
    try:
        status = read_status(run_dir) or "unknown"
        data = json.loads((run_dir / STATUS_FILE).read_text())
    except (OSError, ValueError, KeyError, TypeError) as err:
        return "unreadable", f"{type(err).__name__}: {err}", ""
    return str(status), str(data.get("error") or ""), str(data.get("time") or "")


def collect_runs(study_dir: str | Path, columns: Mapping[str, str]) -> pd.DataFrame:
    """One row per run directory under ``study_dir``.

    Args:
        study_dir: the multirun directory of a study (or a parent of several).
        columns: output column name → dotted config key (e.g. ``{"n_train": "data.n_train"}``).

    Returns:
        DataFrame with ``run_dir`` (path relative to ``study_dir``, POSIX style), ``status``, ``error``,
        ``time`` (from ``run_status.json``) and the requested columns (``None`` where the key is absent).

    Raises:
        ConfigError: no ``run_status.json`` anywhere under ``study_dir``.
    """
    root = Path(study_dir)
    if not root.is_dir():
        raise ConfigError(f"study directory {root} does not exist: give the multirun directory of a study")
    dirs = find_run_dirs(root)
    if not dirs:
        raise ConfigError(f"no {STATUS_FILE} under {root}: give the multirun directory of a study")
    rows = []
    for run_dir in dirs:
        status, error, time = _read_status_file(run_dir)
        cfg = load_config(run_dir)
        row: dict[str, Any] = {
            "run_dir": run_dir.relative_to(root).as_posix() or ".",
            "status": status,
            "error": error,
            "time": time,
        }
        for col, key in columns.items():
            value = config_value(cfg, key)
            row[col] = None if value is MISSING else value
        rows.append(row)
    return pd.DataFrame(rows, columns=["run_dir", "status", "error", "time", *columns])


_FUNC = re.compile(r"^\s*(range|choice)\((.*)\)\s*$", re.S)


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets and quotes."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def _scalar(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_sweep_values(spec: Any) -> list[Any]:
    """The values of one sweep parameter: ``"a,b"``, ``"range(0,3)"``, ``"choice(a,b)"`` or a YAML list."""
    if isinstance(spec, (list, tuple)):
        return list(spec)
    if not isinstance(spec, str):
        return [spec]
    m = _FUNC.match(spec)
    if m and m.group(1) == "range":
        args = [int(float(a)) for a in _split_top_level(m.group(2)) if a]
        return list(range(*args))
    if m:
        return [_scalar(v) for v in _split_top_level(m.group(2))]
    return [_scalar(v) for v in _split_top_level(spec)]


def _sweep_params(multirun: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Sweep key → values from one ``multirun.yaml``: ``hydra.sweeper.params``, then multi-valued task overrides."""
    hydra = multirun.get("hydra") or {}
    params: dict[str, list[Any]] = {}
    for key, spec in ((hydra.get("sweeper") or {}).get("params") or {}).items():
        params[str(key).lstrip("+~")] = parse_sweep_values(spec)
    for override in ((hydra.get("overrides") or {}).get("task") or []):
        if "=" not in str(override):
            continue
        key, spec = str(override).split("=", 1)
        key = key.lstrip("+~")
        if key.startswith("hydra") or key in ("resume",):
            continue
        values = parse_sweep_values(spec)
        if len(values) > 1:
            params[key] = values
    return params


def expected_grid(study_dir: str | Path) -> pd.DataFrame | None:
    """Every expected combination of sweep values (one column per sweep key), from all ``multirun.yaml`` files.

    Several sweeps under ``study_dir`` contribute the union of their grids. ``None`` when there is no
    ``multirun.yaml`` (the expected grid is then whatever was found).
    """
    root = Path(study_dir)
    frames = []
    for path in sorted(root.rglob("multirun.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        params = _sweep_params(data) if isinstance(data, dict) else {}
        if not params:
            continue
        keys = list(params)
        combos = list(itertools.product(*(params[k] for k in keys)))
        frames.append(pd.DataFrame(combos, columns=keys))
    if not frames:
        return None
    grid = pd.concat(frames, ignore_index=True)
    return grid.loc[~_norm_frame(grid, list(grid.columns)).duplicated()].reset_index(drop=True)


def _norm_frame(df: pd.DataFrame, cols: Sequence[str]) -> pd.Series:
    """One comparable text key per row from the normalised values of ``cols``."""
    if not len(df):
        return pd.Series([], dtype=str, index=df.index)
    return df[list(cols)].apply(lambda s: s.map(norm_value)).agg("\x1f".join, axis=1)


def missing_runs(
    runs: pd.DataFrame, grid: pd.DataFrame | None, match_cols: Mapping[str, str]
) -> tuple[pd.DataFrame, list[str]]:
    """Expected combinations with no complete run.

    Args:
        runs: :func:`collect_runs` output holding a column for every sweep key used.
        grid: :func:`expected_grid` output (``None`` → nothing can be missing).
        match_cols: sweep key → column of ``runs`` holding that key's value.

    Returns:
        ``(missing, notes)``: the missing grid rows (columns named as in ``runs``, a ``sweep:`` prefix
        dropped) plus a ``found`` column (``"no run directory"`` or the
        statuses of unfinished runs of that combination), and notes on sweep keys that could not be
        matched to the runs' configs (those are left out of the matching rather than flag every run).
    """
    notes: list[str] = []
    if grid is None or grid.empty:
        return pd.DataFrame(columns=["found"]), notes
    keys = []
    for key in grid.columns:
        col = match_cols.get(key)
        if col is None or col not in runs:
            notes.append(f"sweep key `{key}` is not read from the run configs; not used to find missing runs")
            continue
        observed = set(runs[col].map(norm_value)) - {"null"}
        expected = set(grid[key].dropna().map(norm_value))
        if not observed & expected:
            notes.append(f"sweep key `{key}`: no run's config value matches the sweep values "
                         f"{sorted(expected)}; not used to find missing runs")
            continue
        keys.append(key)
    if not keys:
        return pd.DataFrame(columns=[*grid.columns, "found"]), notes
    g = grid[keys]
    g = g.loc[~_norm_frame(g, keys).duplicated()].reset_index(drop=True)  # list values (data.labels) are unhashable
    run_view = runs[[match_cols[k] for k in keys]].set_axis(keys, axis=1)
    run_key = _norm_frame(run_view, keys)
    done = set(run_key[runs["status"] == "complete"])
    grid_key = _norm_frame(g, keys)
    rows = []
    for i, key in enumerate(grid_key):
        if key in done:
            continue
        others = runs.loc[run_key == key]
        found = "; ".join(f"{r.status} ({r.run_dir})" for r in others.itertuples()) or "no run directory"
        rows.append({**g.iloc[i].to_dict(), "found": found})
    names = {k: match_cols[k].removeprefix("sweep:") for k in keys}
    return pd.DataFrame(rows, columns=[*keys, "found"]).rename(columns=names), notes


def failed_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs whose status is not ``complete`` (failed, running/unfinished, unreadable)."""
    return runs.loc[runs["status"] != "complete"].reset_index(drop=True)


def supersede_duplicates(runs: pd.DataFrame, identity: Iterable[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split complete runs into ``(used, superseded)``: for repeated identities keep the newest run only.

    Two complete runs with the same identity (e.g. same init, n, fold, draw and seed; a re-run) would
    otherwise be pooled twice. "Newest" is by the ``time`` of ``run_status.json``, then by path.
    """
    complete = runs.loc[runs["status"] == "complete"].copy()
    ident = [c for c in identity if c in complete]
    if not ident or complete.empty:
        return complete.reset_index(drop=True), complete.iloc[0:0]
    complete["_key"] = _norm_frame(complete, ident)
    complete = complete.sort_values(["time", "run_dir"], kind="stable")
    dup = complete.duplicated("_key", keep="last")
    used = complete.loc[~dup].drop(columns="_key").sort_index().reset_index(drop=True)
    superseded = complete.loc[dup].drop(columns="_key").sort_index().reset_index(drop=True)
    return used, superseded


@dataclass
class Study:
    """The runs of one study as found on disk."""

    root: Path
    runs: pd.DataFrame  # all run directories (collect_runs)
    used: pd.DataFrame  # complete runs that enter the statistics
    superseded: pd.DataFrame  # complete runs replaced by a newer run of the same identity
    failed: pd.DataFrame  # runs not complete
    grid: pd.DataFrame | None  # expected combinations (None without multirun.yaml)
    missing: pd.DataFrame  # expected combinations with no complete run
    notes: list[str] = field(default_factory=list)

    @property
    def n_expected(self) -> int:
        """Expected runs: the grid size, or the number of run directories without a grid."""
        return len(self.grid) if self.grid is not None else len(self.runs)


def load_study(study_dir: str | Path, columns: Mapping[str, str], identity: Sequence[str]) -> Study:
    """Collect runs, the expected grid, missing, failed and superseded runs of ``study_dir``.

    ``columns`` (column → config key) is extended with one column per sweep key so the grid can be matched;
    ``identity`` names the columns that identify one run (for :func:`supersede_duplicates`).
    """
    root = Path(study_dir)
    grid = expected_grid(root)
    key_to_col = {key: col for col, key in columns.items()}
    extra = {}
    if grid is not None:
        for key in grid.columns:
            if key not in key_to_col and f"{key}.name" not in key_to_col:
                extra[f"sweep:{key}"] = key
    runs = collect_runs(root, {**columns, **extra})
    match_cols = {}
    if grid is not None:
        for key in grid.columns:
            match_cols[key] = key_to_col.get(key) or key_to_col.get(f"{key}.name") or f"sweep:{key}"
    missing, notes = missing_runs(runs, grid, match_cols)
    used, superseded = supersede_duplicates(runs, identity)
    return found_by_option(Study(root=root, runs=runs, used=used, superseded=superseded, failed=failed_runs(runs),
                                 grid=grid, missing=missing, notes=notes))


def _launched_option(run_dir: Path, group: str) -> str | None:
    """The config-group option a run was launched with (``hydra.runtime.choices`` in ``.hydra/hydra.yaml``)."""
    try:
        data = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text()) or {}
        value = data["hydra"]["runtime"]["choices"].get(group)
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return None
    return None if value is None else str(value)


def found_by_option(study: Study) -> Study:
    """A sweep over model config options other than the architecture's name (``model=yoon2024_unetr_smoke``, a
    smoke-sized UNETR whose runs record ``model.name: unetr``) is not missing those runs: a grid row counts as run
    when a complete run was launched with that ``model`` option (and the row's other sweep values)."""
    missing = study.missing
    if missing is None or missing.empty or "model" not in missing.columns or study.runs.empty:
        return study
    done = study.runs.loc[study.runs["status"] == "complete"]
    others = [c for c in missing.columns if c not in ("model", "found") and c in done.columns]
    launched = {(_launched_option(study.root / r.run_dir, "model"), *(str(getattr(r, c)) for c in others))
                for r in done.itertuples(index=False)}
    keep = [(str(row["model"]), *(str(row[c]) for c in others)) not in launched for _, row in missing.iterrows()]
    return replace(study, missing=missing.loc[keep].reset_index(drop=True))
