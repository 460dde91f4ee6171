"""Markdown tables for reports (GitHub flavour), shared by every report kind."""
from __future__ import annotations

import math

import pandas as pd


def md_table(df: pd.DataFrame, index: bool = False, missing: str = "–") -> str:
    """A GitHub Markdown table of ``df``: cells as text, ``|`` escaped, None/NaN shown as ``missing``."""
    if index:
        df = df.reset_index()

    def cell(value: object) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return missing
        return str(value).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(cell(c) for c in df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])
