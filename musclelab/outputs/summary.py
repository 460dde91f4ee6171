"""The short summary table printed at the end of a run (rich), read back from the run's own files."""
from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

HEADLINE = ("dice", "precision", "recall", "hd95", "assd", "rms_dta")


def print_summary(run_dir: Path, result: dict[str, float], console: Console | None = None) -> None:
    """Print headline test metrics (mean ± sd over cases; distances in mm) and where the outputs are."""
    console = console or Console()
    table = Table(title=f"musclelab run: {run_dir}", show_lines=False)
    table.add_column("metric")
    table.add_column("mean ± sd", justify="right")
    table.add_column("n", justify="right")
    summary_file = run_dir / "test_summary.json"
    if summary_file.exists():
        metrics = json.loads(summary_file.read_text())["metrics"]
        for key in HEADLINE:
            if key in metrics:
                m = metrics[key]
                unit = " mm" if key in ("hd95", "assd", "rms_dta") else ""
                mean = "nan" if m["mean"] is None else f"{m['mean']:.3f}"
                sd = "nan" if m.get("sd") is None else f"{m['sd']:.3f}"
                table.add_row(f"test {key}{unit}", f"{mean} ± {sd}", str(m["n"]))
    if result.get("best_score") is not None:
        table.add_row("best val score", f"{result['best_score']:.4f}", "")
    console.print(table)
    console.print(f"outputs: {run_dir}")
