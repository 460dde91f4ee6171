"""The "Design" section every study report shares: where the paper is silent or where we deliberately differ.

Each paper experiment (``conf/experiment/<paper>.yaml``) carries a ``design`` record, saved with every run's
resolved config::

    design:
      network:                                    # the setting
        paper: '"3×3 convolution is applied twice ..." (Methods, II.B)'   # the paper's words and section
        value: ${model.name} ${model.params.features}   # what this config runs (interpolations: never stale)
        why: why we do it this way (or "as the paper")

The report renders it as one table from the first run that has one (all runs of a study share the design; the
smoke experiments override ``value`` through their own config fields). No torch import.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .markdown import md_table
from .runs import load_config

FIELDS = ("paper", "value", "why")


def design_record(cfg: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """``cfg['design']`` as setting -> {paper, value, why} (strings; missing fields empty); {} without one.

    Interpolations left in the record (a job's unresolved ``.hydra/config.yaml``) are resolved against ``cfg``;
    an entry that cannot be resolved there is shown as written."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    raw = cfg.get("design") if isinstance(cfg, Mapping) else None
    if not isinstance(raw, Mapping):
        return {}
    whole = OmegaConf.create(dict(cfg))
    out: dict[str, dict[str, str]] = {}
    for key, entry in raw.items():
        try:
            entry = OmegaConf.to_container(whole.design[key], resolve=True)
        except (OmegaConfBaseException, ValueError, KeyError):
            pass
        out[str(key)] = {f: "" if not isinstance(entry, Mapping) or entry.get(f) is None else str(entry.get(f))
                         for f in FIELDS}
    return out


def job_dirs(study_dir: str | Path) -> list[Path]:
    """Every directory under ``study_dir`` holding a run's or a Hydra job's config (sorted)."""
    root = Path(study_dir)
    found = {p.parent for p in root.rglob("config_resolved.yaml")}
    found |= {p.parent.parent for p in root.rglob(".hydra/config.yaml")}
    return sorted(found)


def design_markdown(run_dirs: Iterable[str | Path]) -> list[str]:
    """The "Design" section (a heading and a table) from the first run whose config has a design record;
    [] when none has."""
    import pandas as pd

    for run_dir in run_dirs:
        record = design_record(load_config(run_dir))
        if record:
            table = pd.DataFrame([{"setting": k, "the paper (section)": v["paper"], "this study": v["value"],
                                   "why": v["why"]} for k, v in record.items()])
            return ["## Design", "", "Where the paper is silent or where this study differs from it (the "
                    "experiment config's `design` record, as run).", "", md_table(table), ""]
    return []
