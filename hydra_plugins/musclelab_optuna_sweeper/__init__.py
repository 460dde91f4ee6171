"""musclelab's resumable Optuna sweeper (``hparams_search=optuna``): hydra-optuna-sweeper's sweeper, whose
stored study (SQLite in the sweep directory) a relaunch into the same sweep directory continues; see
:mod:`musclelab.hparams_search`. It lives here because Hydra loads sweepers only from the ``hydra_plugins``
package."""
from __future__ import annotations

import logging

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import OmegaConf

from musclelab.hparams_search import storage_file, stored_trials

log = logging.getLogger(__name__)

__all__ = ["ResumableOptunaSweeper"]


class ResumableOptunaSweeper(OptunaSweeper):
    """hydra-optuna-sweeper's sweeper, resumable (see the module docstring)."""

    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        file = storage_file(impl.storage)
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
        existing, done = stored_trials(impl.storage, impl.study_name)
        if existing:
            impl.job_idx = max(impl.job_idx, existing)
            remaining = max(0, impl.n_trials - done)
            log.info(f"continuing study '{impl.study_name}' ({impl.storage}): {done} finished trials of "
                     f"{impl.n_trials}, {remaining} to run; new jobs are numbered from {impl.job_idx}")
            if remaining == 0:
                self._write_results()
                return None
            impl.n_trials = remaining
        return impl.sweep(arguments)

    def _write_results(self) -> None:
        """optimization_results.yaml of a study that needs no more trials (the plug-in writes it after a launch)."""
        import optuna  # here, not at the top: Hydra imports every plug-in module at each start (about 1 s)

        impl = self.sweeper
        best = optuna.load_study(study_name=impl.study_name, storage=impl.storage).best_trial
        OmegaConf.save(OmegaConf.create({"name": "optuna", "best_params": best.params, "best_value": best.value}),
                       f"{impl.config.hydra.sweep.dir}/optimization_results.yaml")
