"""The one packaging step pyproject.toml cannot say: the Hydra config tree stays at the repository root
(``conf/``, our layout) and goes into the wheel as the package data ``musclelab/conf/``, where
:func:`musclelab.compose.config_dir` finds it outside a checkout. Every folder of the tree is listed as a
package of YAML files (so setuptools ships them as data without warnings); the machine-specific, git-ignored
``conf/local/`` is left out. Everything else is in pyproject.toml."""
from pathlib import Path

from setuptools import find_packages, setup

CONF = Path(__file__).resolve().parent / "conf"
conf_packages = ["musclelab.conf"] + sorted(
    "musclelab.conf." + ".".join(d.relative_to(CONF).parts) for d in CONF.rglob("*")
    if d.is_dir() and d.relative_to(CONF).parts[0] != "local")

# hydra_plugins.musclelab_optuna_sweeper: Hydra loads sweepers only from the hydra_plugins namespace
setup(packages=[*find_packages(include=["musclelab", "musclelab.*"]), "hydra_plugins.musclelab_optuna_sweeper",
                *conf_packages],
      package_dir={"musclelab.conf": "conf"},
      package_data={p: ["*.yaml"] for p in conf_packages})
