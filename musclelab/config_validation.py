"""Every config field a user can set, checked before any data is loaded: one table of declarative rules.

Why: a wrong value (``data.batch_size=0``, ``optim.lr=-1``, ``seed=abc``) used to surface as a traceback deep
inside PyTorch or Lightning, sometimes only after the data had been loaded. Here each field has one
:class:`Rule` (type, range, allowed names) and :func:`validate` raises :class:`~musclelab.errors.ConfigError`
with one line naming the field, the value given and what is allowed; the CLI prints it and exits 2.

Adding a field = adding one line to :data:`RULES` (a test fails for a config leaf without a rule), e.g.::

    Rule("data.spatial_dims", "choice", choices=(2, 3)),
    Rule("data.spacing", "float_list", gt=0, nullable=True, note="[z, row, col] mm"),
    Rule("data.patch_size", "int_list", ge=8, nullable=True, note="[D, H, W] voxels"),
    Rule("data.patches_per_volume", "int", ge=1),
    Rule("data.crop_foreground", "bool"),
    Rule("data.spacing", "float_list", gt=0, nullable=True),

Kinds: ``int``, ``float`` (ints accepted), ``bool``, ``str``, ``choice`` (``choices``), ``name`` (a
:class:`~musclelab.registry.Registry` or mapping returned by ``registry``, imported lazily), ``int_list``,
``float_list``, ``str_list`` (bounds apply to every element), ``count_or_fraction`` (Lightning's
``limit_*_batches``: an int >= 0 or a fraction in [0, 1]), ``any`` (present but free-form). A rule applies only
when its field is in the config and every ``when`` condition holds (``{"data.name": ("lits", "btcv")}``).

Cross-field checks (``data.fold < data.n_folds``, ...) are the functions in :data:`CHECKS`; unknown keys of
sections passed as keyword arguments (``data``, ``data.source``, ``optim``, ``loss.params``, ``trainer``) are
checked against the receiving signature, so a stray ``+data.foo=1`` also fails with the known names.

:func:`precheck_overrides` composes the command line the way Hydra will (first value of every sweep) so Hydra's
own composition errors (``model=nope``, ``data.batchsize=4``) become the same one-line error, exit 2.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from musclelab.errors import ConfigError

_ABSENT = object()


@dataclass(frozen=True)
class Rule:
    """How one config field may look. ``field`` is the dotted path; see the module docstring for ``kind``."""

    field: str
    kind: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    registry: Callable[[], Any] | None = None
    nullable: bool = False
    when: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""

    # -- description ------------------------------------------------------------------------------------
    def _bounds(self) -> str:
        parts = []
        if self.ge is not None:
            parts.append(f">= {_fmt(self.ge)}")
        if self.gt is not None:
            parts.append(f"> {_fmt(self.gt)}")
        if self.le is not None:
            parts.append(f"<= {_fmt(self.le)}")
        if self.lt is not None:
            parts.append(f"< {_fmt(self.lt)}")
        return " and ".join(parts)

    def describe(self) -> str:
        """What is allowed, in words (``an integer >= 1``, ``one of 1, 3``, ...)."""
        b = self._bounds()
        base = {
            "int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
            "int_list": "a list of integers", "float_list": "a list of numbers", "str_list": "a list of strings",
            "count_or_fraction": "a number of batches (integer >= 0) or a fraction in [0, 1]",
            "any": "a value",
        }.get(self.kind, "")
        if self.kind == "choice":
            base = "one of " + ", ".join(_fmt(c) for c in self.choices or ())
        elif self.kind == "name":
            base = "a known name"
        elif b:
            base += (" with every element " if self.kind.endswith("_list") else " ") + b
        if self.nullable:
            base += " (or null)"
        return base + (f"; {self.note}" if self.note else "")

    # -- checking -----------------------------------------------------------------------------------------
    def check(self, value: Any) -> str | None:
        """``None`` when ``value`` is allowed, else the reason (without the field name)."""
        if value is None:
            return None if self.nullable or self.kind == "any" else f"must be {self.describe()}, not null"
        if self.kind == "any":
            return None
        if self.kind == "name":
            return self._check_name(value)
        if self.kind == "choice":
            ok = any(value == c and type(value) is type(c) or (isinstance(c, float) and _is_num(value) and value == c)
                     for c in self.choices or ())
            return None if ok else f"must be {self.describe()}"
        if self.kind.endswith("_list"):
            if not isinstance(value, (list, tuple, ListConfig)):
                return f"must be {self.describe()}"
            elem = self.kind.removesuffix("_list")
            for v in value:
                if not _type_ok(elem, v) or not self._in_range(v):
                    return f"must be {self.describe()}"
            return None
        if self.kind == "count_or_fraction":
            if isinstance(value, bool) or not _is_num(value):
                return f"must be {self.describe()}"
            if isinstance(value, int):
                return None if value >= 0 else f"must be {self.describe()}"
            return None if 0.0 <= value <= 1.0 else f"must be {self.describe()}"
        if not _type_ok(self.kind, value) or not self._in_range(value):
            return f"must be {self.describe()}"
        return None

    def _in_range(self, v: Any) -> bool:
        if not _is_num(v):
            return True
        if isinstance(v, float) and math.isnan(v):
            return False
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))

    def _check_name(self, value: Any) -> str | None:
        reg = self.registry() if self.registry else ()
        names = list(reg.names()) if hasattr(reg, "names") else sorted(str(k) for k in reg)
        if isinstance(value, str) and value in names:
            return None
        kind = getattr(reg, "kind", self.field.rsplit(".", 1)[-1])
        plural = getattr(reg, "plural", f"{kind}s")
        return f"unknown {kind}; known {plural}: {', '.join(names)}"

    def applies(self, cfg: DictConfig) -> bool:
        for key, allowed in self.when.items():
            got = _get(cfg, key)
            allowed = allowed if isinstance(allowed, (tuple, list, set)) else (allowed,)
            if got is _ABSENT or got not in allowed:
                return False
        return True


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _type_ok(kind: str, v: Any) -> bool:
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "float":
        return _is_num(v)
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "str":
        return isinstance(v, str)
    return True


def _fmt(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v)) if abs(v) >= 1 or v == 0 else str(v)
    return str(v)


def _show(v: Any) -> str:
    if OmegaConf.is_config(v):
        v = OmegaConf.to_container(v, resolve=True)
    if isinstance(v, str):
        return repr(v)
    return _fmt(v) if not isinstance(v, (list, dict)) else str(v)


def _get(cfg: DictConfig, key: str) -> Any:
    """The resolved value at ``key``, or ``_ABSENT`` when the field does not exist (or cannot be resolved)."""
    try:
        value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
    except Exception:  # an interpolation that only resolves inside Hydra's app (e.g. ${hydra:...})
        return _ABSENT
    if OmegaConf.is_config(value):
        return value
    return value


# ---------------------------------------------------------------------------------------------------------------
# the registries, imported only when a rule needs them
# ---------------------------------------------------------------------------------------------------------------


def _sources():
    from musclelab.data.sources import SOURCES
    return SOURCES


def _dataset_names():
    """Every data set, whatever forms it serves (slices, volumes: one registry)."""
    return _Names("dataset", set(_sources().names()))


def _models():
    from musclelab.baselines import BASELINES
    from musclelab.models import MODELS
    return sorted({*MODELS.names(), *BASELINES.names()})


class _Names:
    """A plain name list with a kind, for rules over several registries."""

    def __init__(self, kind: str, names: Iterable[str], plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._names = sorted(names)

    def names(self) -> list[str]:
        return self._names


def _splits():
    from musclelab.data.splits import RENAMED_SPLITS, SPLITS
    return [*SPLITS, *RENAMED_SPLITS]


def _windows():
    from musclelab.data.windowing import WINDOWS
    return WINDOWS


def _losses():
    from musclelab.losses import LOSSES
    return LOSSES


def _optimizers():
    from musclelab.optim import OPTIMIZERS
    return OPTIMIZERS


def _schedulers():
    from musclelab.optim import SCHEDULERS
    return SCHEDULERS


def _inits():
    from musclelab.transfer import INITS
    return INITS


def _phantom_sites():
    from musclelab.phantoms.l3 import SITES
    return _Names("site", SITES)


def _phantom_targets():
    from musclelab.phantoms.l3 import LABEL_MAPS
    return _Names("target", LABEL_MAPS)


def _liver_sites():
    from musclelab.phantoms.abdomen import LIVER_SITES
    return _Names("site", LIVER_SITES)


def _liver_targets():
    from musclelab.phantoms.abdomen import TARGET_ALIASES, TARGETS
    return _Names("target", {*TARGETS, *TARGET_ALIASES})


PHANTOM = {"data.name": "phantom"}
ABDOMEN = {"data.name": "abdomen_phantom"}
LUMBAR = {"data.name": "lumbar_phantom"}
THIGH = {"data.name": "thigh_phantom"}
READER_DATA = {"data.name": ("lits", "btcv", "chaos", "l3_folder", "msd")}
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "64", "transformer-engine")

# One line per field a user can set. Keep sorted by section; see the module docstring for the kinds.
RULES: list[Rule] = [
    # top level
    Rule("seed", "int", ge=0, le=2**32 - 1),
    Rule("cpu_threads", "int", ge=1, nullable=True),
    Rule("resume", "str", nullable=True, note="the directory of an interrupted run"),
    Rule("test", "bool"),
    Rule("task_name", "str"),
    Rule("tags", "str_list"),
    Rule("optimized_metric", "str", nullable=True, note="a logged metric, e.g. val/dice (hparams_search)"),
    Rule("eval.body_composition", "bool"),
    Rule("eval.level", "choice", choices=("slice", "volume", "both")),
    Rule("eval.save_volumes", "bool"),
    Rule("eval.sliding_window.overlap", "float", ge=0, lt=1),
    Rule("eval.sliding_window.mode", "choice", choices=("gaussian", "constant")),
    Rule("eval.sliding_window.sigma_scale", "float", gt=0),
    Rule("eval.sliding_window.sw_batch_size", "int", ge=1),
    Rule("eval.save_predictions", "int", ge=0),
    # data (conf/data/_common.yaml and every data config)
    Rule("data.name", "name", registry=_dataset_names),
    Rule("data.img_size", "int", ge=8, le=4096),
    Rule("data.root", "str", nullable=True),
    Rule("data.cache_dir", "str"),
    Rule("data.window", "name", registry=_windows),
    Rule("data.channels", "choice", choices=(1, 3), note="3 repeats the slice to RGB for ImageNet backbones"),
    Rule("data.split", "name", registry=lambda: _Names("split", _splits())),
    Rule("data.spatial_dims", "choice", choices=(2, 3)),
    Rule("data.spacing", "float_list", gt=0, nullable=True, note="[z, row, col] mm"),
    Rule("data.patch_size", "int_list", ge=8, nullable=True, note="[D, H, W] voxels"),
    Rule("data.patches_per_volume", "int", ge=1),
    Rule("data.crop_foreground", "bool"),
    Rule("data.labels", "str_list", nullable=True, note="class names, e.g. [erector_spinae]"),
    Rule("data.test_set", "choice", choices=("fraction", "patients", "observers")),
    Rule("data.test_patients", "str_list", nullable=True),
    Rule("data.val_fraction", "float", ge=0, lt=1, note="0: no validation set (kawamoto2024 keeps the last epoch)"),
    Rule("data.test_fraction", "float", ge=0, lt=1),
    Rule("data.n_folds", "int", ge=2),
    Rule("data.fold", "int", ge=0),
    Rule("data.n_train", "int", ge=1, nullable=True),
    Rule("data.subset_draw", "int", ge=0),
    Rule("data.split_seed", "int", ge=0),
    Rule("data.batch_size", "int", ge=1),
    Rule("data.eval_batch_size", "int", ge=1, nullable=True),
    Rule("data.num_workers", "int", ge=0, nullable=True, note="null: 0 without a GPU, min(4, cores-1) with one"),
    Rule("data.pin_memory", "bool", nullable=True),
    Rule("data.augment.flip_prob", "float", ge=0, le=1),
    Rule("data.augment.rotate_deg", "float", ge=0, le=180),
    Rule("data.augment.scale", "float", ge=0, lt=1),
    Rule("data.augment.affine_prob", "float", ge=0, le=1),
    Rule("data.augment.elastic_prob", "float", ge=0, le=1),
    Rule("data.augment.elastic_spacing", "float", gt=0),
    Rule("data.augment.elastic_magnitude", "float", ge=0),
    Rule("data.augment.shear_deg", "float", ge=0, lt=90),
    Rule("data.augment.repeats", "int", ge=1),
    Rule("data.augment.rot90_prob", "float", ge=0, le=1, note="3D: in-plane 90-degree rotations"),
    Rule("data.augment.intensity_shift", "float", ge=0, note="3D: offset range of the windowed intensities"),
    # data.source: the built-in phantoms
    Rule("data.source.target", "name", registry=_phantom_targets, when=PHANTOM),
    Rule("data.source.site", "name", registry=_phantom_sites, when=PHANTOM),
    Rule("data.source.test_site", "name", registry=_phantom_sites, when=PHANTOM, nullable=True),
    Rule("data.source.n_cases", "int", ge=3, when=PHANTOM),
    Rule("data.source.n_test_cases", "int", ge=1, when=PHANTOM),
    Rule("data.source.phantom_seed", "int", ge=0),
    Rule("data.source.n_observers", "int", ge=0, when=PHANTOM),
    Rule("data.source.observer_cases", "int", ge=1, nullable=True, when=PHANTOM),
    Rule("data.source.native_size", "int", ge=32, nullable=True, when=PHANTOM,
         note="the acquired slice's size in px (>= data.img_size), or null"),
    Rule("data.source.site", "name", registry=_liver_sites, when=ABDOMEN),
    Rule("data.source.test_site", "name", registry=_liver_sites, when=ABDOMEN, nullable=True),
    Rule("data.source.target", "name", registry=_liver_targets, when=ABDOMEN),
    Rule("data.source.n_volumes", "int", ge=3, when=ABDOMEN),
    Rule("data.source.n_test_volumes", "int", ge=1, when=ABDOMEN),
    # data.source: data sets read from disk (and the liver phantom's slice selection)
    Rule("data.source.slices", "choice", choices=("target", "all"), when={"data.name": (*READER_DATA["data.name"],
                                                                                        "abdomen_phantom")}),
    # data.source: the lumbar phantom (issue 10)
    Rule("data.source.slices", "choice", choices=("all", "l3"), when=LUMBAR),
    Rule("data.source.n_volumes", "int", ge=1, when=THIGH),
    Rule("data.source.size", "int", ge=32, when=THIGH, note="in-plane pixels"),
    Rule("data.source.n_slices", "int", ge=8, when=THIGH),
    Rule("data.source.phantom_seed", "int", ge=0, when=THIGH),
    Rule("data.source.fat_plane_mm", "float", ge=0, when=THIGH),
    Rule("data.source.rater_sd_mm", "float", ge=0, when=THIGH),
    Rule("data.source.n_raters", "int", ge=0, when=THIGH),
    Rule("data.source.site", "str", when=LUMBAR),
    Rule("data.source.n_volumes", "int", ge=3, when=LUMBAR),
    Rule("data.source.thickness_mm", "float", gt=0),
    Rule("data.source.margin", "int", ge=0),
    Rule("data.source.reader", "any", nullable=True, when=READER_DATA),
    # model / init / loss / optim (model.params are checked by the model registry's check_input_size)
    Rule("model.name", "name", registry=lambda: _Names("model", _models())),
    Rule("init.name", "name", registry=_inits),
    Rule("init.lr", "float", gt=0),
    Rule("init.adapt_first_conv", "bool"),
    Rule("init.exclude", "str_list"),
    Rule("init.source_prefix", "str", nullable=True),
    Rule("init.checkpoint", "str", nullable=True),
    Rule("init.weights_path", "str", nullable=True),
    Rule("init.weights", "str", nullable=True),
    Rule("init.pretext.epochs", "int", ge=1),
    Rule("init.pretext.batch_size", "int", ge=1),
    Rule("init.pretext.lr", "float", gt=0),
    Rule("init.pretext.seed", "int", ge=0),
    Rule("init.pretext.patience", "int", ge=1, nullable=True),
    Rule("init.pretext.n_perms", "int", ge=2),
    Rule("init.pretext.perm_method", "choice", choices=("affine", "greedy", "noroozi")),
    Rule("loss.name", "name", registry=_losses),
    Rule("loss.params.lambda_ce", "float", ge=0),
    Rule("loss.params.lambda_dice", "float", ge=0),
    Rule("loss.params.lambda_bce", "float", ge=0),
    Rule("loss.params.include_background", "bool"),
    Rule("loss.params.smooth", "float", ge=0),
    Rule("loss.params.label_smoothing", "float", ge=0, lt=1),
    Rule("loss.params.class_weights", "float_list", ge=0, nullable=True),
    Rule("optim.name", "name", registry=_optimizers),
    Rule("optim.lr", "float", gt=0, le=10),
    Rule("optim.weight_decay", "float", ge=0),
    Rule("optim.momentum", "float", ge=0, lt=1),
    Rule("optim.nesterov", "bool"),
    Rule("optim.scheduler", "name", registry=_schedulers, nullable=True),
    # trainer (Lightning Trainer arguments)
    Rule("trainer.accelerator", "choice", choices=("cpu", "gpu", "cuda", "mps", "tpu", "auto")),
    Rule("trainer.devices", "any", note="a count, -1 (all), 'auto' or a list of device ids"),
    Rule("trainer.precision", "choice", choices=PRECISIONS),
    Rule("trainer.max_epochs", "int", ge=1),
    Rule("trainer.min_epochs", "int", ge=0, nullable=True),
    Rule("trainer.max_steps", "int", ge=-1),
    Rule("trainer.deterministic", "choice", choices=(True, False, "warn"), nullable=True),
    Rule("trainer.benchmark", "bool", nullable=True),
    Rule("trainer.strategy", "str"),
    Rule("trainer.sync_batchnorm", "bool"),
    Rule("trainer.log_every_n_steps", "int", ge=1),
    Rule("trainer.num_sanity_val_steps", "int", ge=-1),
    Rule("trainer.gradient_clip_val", "float", ge=0, nullable=True),
    Rule("trainer.accumulate_grad_batches", "int", ge=1),
    Rule("trainer.check_val_every_n_epoch", "int", ge=1, nullable=True),
    Rule("trainer.limit_train_batches", "count_or_fraction"),
    Rule("trainer.limit_val_batches", "count_or_fraction"),
    Rule("trainer.limit_test_batches", "count_or_fraction"),
    # callbacks
    Rule("callbacks.checkpoint.monitor", "str", nullable=True, note="null: the last epoch is the model"),
    Rule("callbacks.checkpoint.mode", "choice", choices=("min", "max")),
    Rule("callbacks.checkpoint.save_weights_only", "bool"),
    Rule("callbacks.checkpoint.keep_last", "bool"),
    Rule("callbacks.checkpoint.save_weights_only", "bool"),
    Rule("callbacks.checkpoint.keep_last", "bool"),
    Rule("callbacks.early_stopping.enabled", "bool"),
    Rule("callbacks.early_stopping.monitor", "str"),
    Rule("callbacks.early_stopping.mode", "choice", choices=("min", "max")),
    Rule("callbacks.early_stopping.patience", "int", ge=1),
    Rule("callbacks.saturation.enabled", "bool"),
    Rule("callbacks.saturation.monitors", "str_list", note="epoch losses that must all saturate"),
    Rule("callbacks.saturation.patience", "int", ge=1, note="epochs without a min_delta improvement"),
    Rule("callbacks.saturation.min_delta", "float", ge=0, lt=1, note="fraction of the best loss"),
    Rule("callbacks.progress_bar", "bool"),
    Rule("callbacks.overlay_cases", "int", ge=0),
    Rule("callbacks.val_overlays.cases", "int", ge=0),
    Rule("callbacks.val_overlays.every_n_epochs", "int", ge=1),
    Rule("callbacks.extra", "any", note="plug-ins: <key>: {_target_: <Callback class>, ...its arguments}"),
    # logger: one entry per logger (logger=[csv,mlflow]); unknown entries without _target_ fail in _check_loggers
    Rule("logger.wandb.project", "str"),
    Rule("logger.wandb.entity", "str", nullable=True),
    Rule("logger.wandb.group", "str", nullable=True),
    Rule("logger.wandb.mode", "choice", choices=("online", "offline", "disabled"), nullable=True),
    Rule("logger.wandb.log_model", "any"),
    Rule("logger.mlflow.tracking_uri", "str", nullable=True, note="null: sqlite:///<paths.log_dir>/mlflow.db"),
    Rule("logger.mlflow.experiment_name", "str"),
    Rule("logger.mlflow.artifact_location", "str", nullable=True),
    Rule("logger.mlflow.log_model", "any"),
    Rule("logger.csv", "any"),
    Rule("logger.tensorboard", "any"),
    # model=custom (a plug-in network): model._target_ is checked by importing it (musclelab.plugins)
    Rule("model._target_", "str", nullable=True, note="module.Class of an nn.Module on PYTHONPATH"),
]


# ---------------------------------------------------------------------------------------------------------------
# cross-field checks and keyword-argument sections
# ---------------------------------------------------------------------------------------------------------------


def _check_folds(cfg: DictConfig) -> str | None:
    split, fold, n = _get(cfg, "data.split"), _get(cfg, "data.fold"), _get(cfg, "data.n_folds")
    if split != "holdout" and isinstance(fold, int) and isinstance(n, int) and fold >= n:
        return f"data.fold={fold}: must be < data.n_folds ({n}): folds are numbered 0..{n - 1}"
    return None


def _check_fractions(cfg: DictConfig) -> str | None:
    val, test = _get(cfg, "data.val_fraction"), _get(cfg, "data.test_fraction")
    if _get(cfg, "data.split") == "holdout" and _is_num(val) and _is_num(test) and val + test >= 1:
        return (f"data.val_fraction={_fmt(val)} + data.test_fraction={_fmt(test)}: must sum to < 1 "
                "(the rest is the training set)")
    return None


def _kwargs_of(fn: Callable[..., Any], skip: Sequence[str] = ()) -> list[str] | None:
    """Keyword parameter names of ``fn`` (``None`` when it takes ``**kwargs``: anything goes)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return [n for n, p in params.items() if n not in ("self", *skip)
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]


def _unknown_keys(cfg: DictConfig, section: str, known: list[str] | None, extra: Sequence[str] = (),
                  what: str = "") -> str | None:
    node = _get(cfg, section)
    if known is None or not isinstance(node, DictConfig):
        return None
    allowed = {*known, *extra}
    for key in node.keys():
        if key not in allowed:
            return f"{section}.{key} is not a parameter of {what}; known parameters: {', '.join(sorted(allowed))}"
    return None


def _check_sections(cfg: DictConfig) -> str | None:
    """Keys of sections that become keyword arguments, against the signature that receives them."""
    # ``data`` itself is not checked here: 2D and 3D datamodules take different fields (Hydra's struct mode
    # already refuses a misspelt key, and the coverage test requires a rule for every shipped one)
    checks: list[tuple[str, list[str] | None, Sequence[str], str]] = []
    name = _get(cfg, "data.name")
    sources = _sources()
    dims = _get(cfg, "data.spatial_dims")
    dims = dims if dims in (2, 3) else 2
    if isinstance(name, str) and name in sources and dims in sources.get(name).forms:
        from musclelab.data.sources import SUPPLIED, source_form

        checks.append(("data.source", _kwargs_of(source_form(name, dims), SUPPLIED), (), f"dataset '{name}'"))
    optim = _get(cfg, "optim.name")
    if isinstance(optim, str) and optim in _optimizers():
        checks.append(("optim", _kwargs_of(_optimizers().get(optim), ("params",)), ("name", "scheduler"),
                       f"optimizer '{optim}'"))
    loss = _get(cfg, "loss.name")
    if isinstance(loss, str) and loss in _losses():
        checks.append(("loss.params", _kwargs_of(_losses().get(loss).__init__, ("num_classes",)), (),
                       f"loss '{loss}'"))
    import pytorch_lightning as pl

    checks.append(("trainer", _kwargs_of(pl.Trainer.__init__), (), "Lightning's Trainer"))
    for section, known, extra, what in checks:
        if (msg := _unknown_keys(cfg, section, known, extra, what)) is not None:
            return msg
    return None


def _check_loggers(cfg: DictConfig) -> str | None:
    """Every ``logger`` entry a known logger or a ``_target_`` plug-in."""
    section = _get(cfg, "logger")
    if section is _ABSENT:
        return None
    from musclelab.loggers import check_loggers

    try:
        check_loggers(section)
    except ConfigError as err:
        return str(err)
    return None


#: Lightning strategies that start their ranks from the running process (spawn / fork): the others launch the
#: script again per rank with the original command line, sweep arguments included (Lightning #11300, Hydra #2070)
IN_PROCESS_STRATEGIES = ("ddp_spawn", "ddp_spawn_find_unused_parameters_false", "ddp_spawn_find_unused_parameters_true",
                         "ddp_fork", "ddp_fork_find_unused_parameters_false", "ddp_fork_find_unused_parameters_true",
                         "ddp_notebook", "single_device")


def _n_devices(devices: Any, accelerator: Any) -> int | None:
    """How many devices ``trainer.devices`` asks for (None: all of them / unknown until run time)."""
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices)
    if isinstance(devices, str):
        text = devices.strip()
        if text == "auto":
            return 1 if accelerator == "cpu" else None
        if "," in text:
            return len([d for d in text.split(",") if d.strip()])
        try:
            devices = int(text)
        except ValueError:
            return 1
    if isinstance(devices, int) and not isinstance(devices, bool):
        return None if devices == -1 else devices
    return 1


def _check_devices(cfg: DictConfig) -> str | None:
    """Several devices need a strategy that does not re-run the command line per rank."""
    n = _n_devices(_get(cfg, "trainer.devices"), _get(cfg, "trainer.accelerator"))
    strategy = _get(cfg, "trainer.strategy")
    strategy = "auto" if strategy is _ABSENT or strategy is None else str(strategy)
    if n == 1 or strategy in IN_PROCESS_STRATEGIES:
        return None
    return (f"trainer.devices={_get(cfg, 'trainer.devices')} with trainer.strategy={strategy}: that strategy "
            "starts every other rank by running the whole command line again (sweep arguments included); use "
            "trainer=ddp or trainer=ddp_cpu, or set trainer.strategy=ddp_spawn")


# Functions of the whole config returning a one-line problem or None; add yours here.
CHECKS: list[Callable[[DictConfig], str | None]] = [_check_folds, _check_fractions, _check_sections, _check_loggers,
                                                    _check_devices]


def problems(cfg: DictConfig) -> list[str]:
    """Every problem of ``cfg`` as one line each (empty when the config is valid)."""
    out: list[str] = []
    for rule in RULES:
        value = _get(cfg, rule.field)
        if value is _ABSENT or not rule.applies(cfg):
            continue
        if OmegaConf.is_config(value) and rule.kind not in ("any",) and not rule.kind.endswith("_list"):
            out.append(f"{rule.field}={_show(value)}: must be {rule.describe()}")
            continue
        reason = rule.check(value)
        if reason is not None:
            out.append(f"{rule.field}={_show(value)}: {reason}")
    if not out:
        for check in CHECKS:
            if (msg := check(cfg)) is not None:
                out.append(msg)
    return out


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` (one line: field, value, what is allowed) for the first invalid field."""
    found = problems(cfg)
    if found:
        raise ConfigError(found[0])


# ---------------------------------------------------------------------------------------------------------------
# the command line, before Hydra runs it
# ---------------------------------------------------------------------------------------------------------------

MAX_COMPOSES = 64


def _one_line(err: BaseException) -> str:
    """Hydra's composition errors as one line: the first line, plus the options or keys that are known."""
    text = str(err).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return type(err).__name__
    head = lines[0]
    if "Available options" in text:  # unknown group option: list them on the same line
        start = next(i for i, ln in enumerate(lines) if ln.startswith("Available options")) + 1
        opts = []
        for ln in lines[start:]:
            if ln.startswith("Config search path"):
                break
            if not ln.startswith("_"):  # _common and other internal files are not choices
                opts.append(ln)
        return f"{head}; known options: {', '.join(opts)}"
    return head


def _parent_keys(cfg: DictConfig, key: str) -> list[str]:
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return sorted(str(k) for k in node.keys()) if isinstance(node, DictConfig) else []


def precheck_overrides(args: Sequence[str], compose: Callable[[list[str]], DictConfig],
                       check: Callable[[DictConfig], None] | None = None) -> None:
    """Compose ``args`` (Hydra overrides; flags are ignored) and :func:`validate` the result (and ``check`` it:
    the job's inputs, e.g. ``init.checkpoint`` exists), before Hydra's app runs: for a sweep, every value of every
    swept key is composed once (with the others at their first value, at most :data:`MAX_COMPOSES`
    compositions). Raises :class:`ConfigError` with one line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [a for a in args if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise ConfigError(f"bad override: {_one_line(err)}") from None
    base: list[str] = []
    sweeps: list[tuple[int, list[str]]] = []
    for i, ov in enumerate(parsed):
        if ov.is_sweep_override():
            try:
                values = list(ov.sweep_string_iterator())
            except Exception:  # glob, range with odd bounds, ...: let Hydra expand it
                values = []
            if not values:
                base.append(None)  # type: ignore[arg-type]
                continue
            sweeps.append((i, values))
            base.append(f"{ov.get_key_element()}={values[0]}")
        else:
            base.append(overrides[i])
    variants = [base]
    for i, values in sweeps:
        for v in values[1:]:
            variant = list(base)
            variant[i] = f"{parsed[i].get_key_element()}={v}"
            variants.append(variant)
    for variant in variants[:MAX_COMPOSES]:
        ovs = [o for o in variant if o is not None]
        try:
            cfg = compose(ovs)
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigError(compose_error(err, ovs, compose)) from None
        validate(cfg)
        if check is not None:
            check(cfg)


def compose_error(err: BaseException, overrides: list[str], compose: Callable[[list[str]], DictConfig]) -> str:
    """A one-line message for a failed composition, listing the known keys when a key is unknown."""
    msg = _one_line(err)
    if "Could not override" in msg or "not in struct" in str(err):
        key = msg.split("'")[1] if "'" in msg else ""
        try:  # the keys that exist next to the unknown one
            others = [o for o in overrides if not o.startswith(key + "=")]
            known = _parent_keys(compose(others), key)
        except Exception:
            known = []
        if key and known:
            return f"{key}: unknown field; known fields: {', '.join(known)} (add a new one with +{key}=...)"
    return msg
