"""What every strategy shares: the stage context and the datamodule of an earlier site."""
from __future__ import annotations

import copy
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf, open_dict

from musclelab.registry import Registry


@dataclass
class StageContext:
    """A stage ``index >= 1`` of a chain: its config, the strategy's settings and the earlier stages
    (``earlier[j]``: ``{"dataset", "data", "run_dir"}`` of stage ``j``, in training order)."""

    cfg: Any
    index: int
    settings: dict[str, Any]
    earlier: list[dict[str, Any]] = field(default_factory=list)
    #: ``musclelab.train.build_datamodule``, given by ``train()`` (this package never imports ``musclelab.train``,
    #: which imports it: no import cycle)
    build_datamodule: Any = None
    #: what the strategy did beyond its seconds (e.g. EWC's ``fisher_reused``), recorded in ``strategy_cost.json``
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        """2 (slices) or 3 (volumes), as ``train()`` validated it."""
        return int(self.cfg.data.get("spatial_dims", 2))

    def site_datamodule(self, j: int) -> Any:
        """The set-up datamodule of earlier stage ``j``'s data (its own training split), with this stage's
        other data settings (batch size, workers). Built once per process for the same data config
        (:data:`SITE_CACHE`): the chain's later stages, and the other orderings and strategies of the same
        process, reuse it instead of generating / reading and splitting the site again."""
        cfg = copy.deepcopy(self.cfg)
        with open_dict(cfg):
            cfg.data = OmegaConf.create(self.earlier[j]["data"])
            cfg.data.batch_size = self.cfg.data.batch_size
        from musclelab.data.identity import data_identity

        data = OmegaConf.to_container(cfg.data, resolve=True)
        key = json.dumps([data, data_identity(data)], sort_keys=True, default=str)  # files: path, size, mtime
        dm = SITE_CACHE.get(key)
        if dm is None:
            dm = self.build_datamodule(cfg)
            dm.setup("fit")
            SITE_CACHE[key] = dm
            while len(SITE_CACHE) > SITE_CACHE_SIZE:
                SITE_CACHE.popitem(last=False)
        else:
            SITE_CACHE.move_to_end(key)
        return dm


#: set-up datamodules of earlier sites, by their data identity (the resolved data config and, for data read from disk,
#: the identity of its files; a site's data and split depend only on it);
#: the most recently used :data:`SITE_CACHE_SIZE` are kept (a study has a few sites; each holds its training items)
SITE_CACHE: OrderedDict[str, Any] = OrderedDict()
SITE_CACHE_SIZE = 8


class Strategy:
    """One strategy: ``attach`` builds its parts into the task and datamodule of a stage ``>= 1``."""

    name = ""
    has_settings = True   # False: no study.<name> settings (naive, joint)

    def attach(self, ctx: StageContext, task: Any, dm: Any) -> float:
        """Add mixers / loss terms / data; return extra wall seconds spent (Fisher etc.)."""
        raise NotImplementedError


#: every strategy by name (``study.strategy``); the modules of this package register themselves here
STRATEGIES: Registry[type[Strategy]] = Registry("strategy", "study.strategy", "strategies")
