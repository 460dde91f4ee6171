"""The shared findings section: direction judgements and Markdown/CSV rendering."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from musclelab.report.findings import (Finding, direction, findings_frame, findings_markdown, format_p,
                                       not_measurable, write_findings)


def test_direction_signs_margin_and_missing() -> None:
    assert direction(0.05, +1) is True
    assert direction(0.05, +1, margin=0.1) is False
    assert direction(-0.2, -1, margin=0.1) is True
    assert direction(0.2, -1) is False
    assert direction(0.01, 0, margin=0.02) is True
    assert direction(0.05, 0, margin=0.02) is False
    assert direction(None, +1) is None
    assert direction(math.nan, +1) is None
    with pytest.raises(ValueError):
        direction(1.0, 2)


def test_markdown_and_csv(tmp_path) -> None:
    fs = [
        Finding("pretrained beats scratch at n=5", "DSC 0.80 vs 0.70", True, source="Fig. 3",
                test="Mann–Whitney U", statistic=120.0, p_value=0.0004),
        Finding("plateau after n=100", "DSC 0.90 vs 0.91", False, test="Mann–Whitney U", statistic=3.0,
                p_value=0.2),
        not_measurable("imagenet beats jigsaw", "no imagenet runs"),
    ]
    md = findings_markdown(fs)
    assert md.startswith("## Findings")
    assert "1 of 3 claims agree in direction, 1 disagree, 1 cannot be measured" in md
    assert "- **agrees** — pretrained beats scratch at n=5 (Fig. 3): DSC 0.80 vs 0.70; Mann–Whitney U = 120, " \
           "p = <0.001." in md
    assert "**not measurable** — imagenet beats jigsaw: not measured. no imagenet runs" in md
    path = write_findings(fs, tmp_path)
    back = pd.read_csv(path)
    assert back["verdict"].tolist() == ["agrees", "disagrees", "not measurable"]
    assert findings_frame([]).empty
    assert "No findings" in findings_markdown([])
    assert format_p(0.01234) == "0.0123" and format_p(None) == "–"
