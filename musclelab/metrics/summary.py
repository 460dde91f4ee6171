"""Aggregate per-case metric rows into the per-run summary (mean, sd, median, counts).

NaN marks an undefined value (e.g. a surface distance when exactly one mask is empty);
statistics ignore NaNs and report how many there were, so a run summary states both
the score and on how many cases it is defined.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["summarize"]


def summarize(rows: Sequence[Mapping[str, Any]] | pd.DataFrame) -> dict[str, dict[str, float | int]]:
    """Per-metric ``{"mean", "sd", "median", "n", "n_nan"}`` over cases, NaN-aware.

    ``rows`` is one dict per case (e.g. from :func:`case_metrics`, possibly with extra
    keys such as a case id) or an equivalent DataFrame. Only numeric, non-boolean columns
    are summarised; a key missing from some rows counts as NaN there. ``sd`` uses
    ``ddof=1`` (sample SD). ``n`` counts non-NaN values, ``n_nan`` the rest. Statistics
    with too few values (mean/median with ``n == 0``, sd with ``n < 2``) are NaN; write the
    result with ``json.dump(..., allow_nan=True)`` (the default) or map NaN to null.
    """
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    out: dict[str, dict[str, float | int]] = {}
    for col in df.columns:
        s = df[col]
        if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
            continue
        v = s.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = v[~np.isnan(v)]
        n = int(finite.size)
        out[str(col)] = {
            "mean": float(finite.mean()) if n else math.nan,
            "sd": float(finite.std(ddof=1)) if n > 1 else math.nan,
            "median": float(np.median(finite)) if n else math.nan,
            "n": n,
            "n_nan": int(v.size - n),
        }
    return out
