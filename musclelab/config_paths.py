"""Where the Hydra config tree is: below both the CLI and the study runners, which both compose from it."""
from __future__ import annotations

import os
from pathlib import Path


def config_dir() -> Path:
    """The Hydra config tree: ``$MUSCLELAB_CONF`` or the ``conf/`` folder of the musclelab checkout."""
    path = Path(os.environ.get("MUSCLELAB_CONF") or Path(__file__).resolve().parents[1] / "conf")
    if not (path / "train.yaml").exists():
        raise SystemExit(f"musclelab: no train.yaml in config dir {path}; set MUSCLELAB_CONF to the conf/ folder "
                         "of a musclelab checkout (pip install -e . keeps it in place)")
    return path
