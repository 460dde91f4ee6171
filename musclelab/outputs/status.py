"""``run_status.json``: whether a run is running, complete or failed, so a crashed run never looks finished.

Reports and resumes trust a run only when its status is ``complete``; that status is written last.
"""
from __future__ import annotations

import datetime as dt
import json
import traceback
from pathlib import Path

from musclelab.io import atomic_write_json

STATUS_FILE = "run_status.json"


def _now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


def write_status(run_dir: str | Path, status: str, **extra: object) -> Path:
    """Record ``status`` (running | complete | failed) with a timestamp and any extra fields."""
    return atomic_write_json(Path(run_dir) / STATUS_FILE, {"status": status, "time": _now(), **extra})


def mark_failed(run_dir: str | Path, err: BaseException) -> Path:
    """Record a failure with the error type and message (and the last traceback lines)."""
    tb = traceback.format_exception(type(err), err, err.__traceback__)
    return write_status(run_dir, "failed", error=f"{type(err).__name__}: {err}", traceback="".join(tb[-3:]))


def read_status(run_dir: str | Path) -> str | None:
    """The recorded status, or None when the run has none."""
    path = Path(run_dir) / STATUS_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())["status"]
