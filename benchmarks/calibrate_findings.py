"""How often each finding agrees on simulated studies: null (no effect, or a true difference at the stated margin
for claims of no difference) and planted (an effect of the size the paper reports).

    PYTHONPATH=$PWD python benchmarks/calibrate_findings.py --sims 100

Writes each simulated study as run directories (``tests/calibration_studies.py``) and runs the report kind's
``analyze`` on it, so it measures whatever ``musclelab`` is first on ``PYTHONPATH`` — also an older checkout
(``PYTHONPATH=/path/to/old:$PWD``) for a before/after comparison; older versions without the same claim texts
simply print theirs. Prints one line per claim: agrees / judged for null and planted studies. Not a test: the
bounded version with fixed sample sizes is ``tests/test_findings_calibration.py``.
"""
from __future__ import annotations

import argparse
import inspect
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import calibration_studies as cs  # noqa: E402


def _findings(kind: str, root: Path, seed: int, planted: bool) -> list:
    from musclelab.report import chains, kawamoto, mcsweeney

    if kind == "mcsweeney":
        kw = {"intervals": False} if "intervals" in inspect.signature(mcsweeney.analyze).parameters else {}
        return mcsweeney.analyze(cs.mcsweeney_study(root, seed, planted), **kw).findings
    if kind == "yoon":
        return chains.analyze(cs.yoon_chains_study(root, seed, planted)).findings
    if kind == "strategies":
        return chains.analyze(cs.strategies_study(root, seed, planted)).findings
    res = kawamoto.analyze(cs.kawamoto_study(root, seed, planted))
    merged = kawamoto.compute_findings(res.scores[res.scores["level"] == res.level], res.wilcoxon,
                                       cs.kawamoto_merged(seed, planted))
    return merged


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sims", type=int, default=40)
    p.add_argument("--kinds", default="mcsweeney,yoon,strategies,kawamoto")
    ns = p.parse_args()
    import musclelab

    print(f"musclelab from {Path(musclelab.__file__).parent}; {ns.sims} simulated studies per row")
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ns.kinds.split(","):
            counts: dict[str, dict[bool, list[int]]] = {}
            for planted in (False, True):
                for seed in range(ns.sims):
                    root = Path(tmp) / f"{kind}-{planted}-{seed}"
                    for f in _findings(kind, root, seed, planted):
                        c = counts.setdefault(f.claim, {False: [0, 0], True: [0, 0]})[planted]
                        c[0] += f.verdict == "agrees"
                        c[1] += f.verdict != "not measurable"
            print(f"\n{kind}: agrees / judged  (null | planted)")
            for claim, c in counts.items():
                rate = {k: f"{a}/{n} ({a / n:.0%})" if n else "–" for k, (a, n) in c.items()}
                print(f"  {rate[False]:>14} | {rate[True]:>14}  {claim}")


if __name__ == "__main__":
    main()
