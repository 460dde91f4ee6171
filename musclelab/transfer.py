"""Weight initialisation by transfer learning (McSweeney 2022): scratch / imagenet / coco / pretext / checkpoint.

An initialisation (config group ``init``, chosen by ``init.name``) resolves to a *source* state dict;
:func:`transfer_weights` copies every source tensor whose name and shape match into the target network and
returns a :class:`TransferReport` that lists exactly which tensors were transferred, which source tensors
were skipped (and why, with shapes) and which target tensors keep their random initialisation.
:func:`apply_init` does all of it for a run and writes ``transfer_report.json`` into the run directory.

Why our own code: torchvision and timm load whole state dicts, either strictly (any extra or missing key
fails: an ImageNet classifier never fits a segmentation network) or with ``strict=False``, which silently
ignores every key that does not line up - a prefix mismatch then loads *nothing* and trains from scratch
without a word. nnU-Net's most requested missing transfer feature is a report of exactly which layers were
transferred. Here the name mapping is found automatically, the result is always reported, and a transfer
that fills nothing is an error.

Name matching (:func:`transfer_weights`): a source key ``sp + rest`` lands on the target key ``tp + rest``
for one pair of prefixes ``(sp, tp)`` chosen for the whole transfer. The candidates are the empty prefix
and every dotted prefix of up to :data:`MAX_PREFIX_DEPTH` named components of the source (resp. target)
keys that is followed by at least two more components: a named wrapper holding sub-modules, never a single
layer (two unrelated batch norms must not "match" through their ``weight`` / ``bias`` alone) and never an
element of a list (``layer1.0.`` / ``2.``: one block of an unrelated network must not land on one block of
ours). ``init.source_prefix`` is taken as given, index or not. The pair that transfers the most tensors
wins (name and shape equal; 0-d tensors such as BN ``num_batches_tracked`` fit anywhere and do not count,
so a transfer that would fill only those is "no match"); ties go to the pair with fewer prefix components,
then the shorter, then alphabetical order (deterministic; equivalent pairs such as ``("net.backbone.",
"backbone.")`` and ``("net.", "")`` tie and the shorter is reported). So a classification ResNet
(``conv1.weight``, ``layer1.0...``) maps onto FCN's ``backbone.*`` with ``("", "backbone.")`` (its ``fc.*``
has no counterpart), a COCO FCN onto ours with ``("", "")`` (its 21-class ``classifier.4`` is skipped for
shape, ``aux_classifier.*`` has no counterpart), a Lightning checkpoint of a musclelab run (``net.*``) onto
the bare network with ``("net.", "")``, and a pretext trunk stored under ``trunk.`` / ``encoder.`` /
``model.`` / ``module.`` / ``net.backbone.`` is found without configuration. ``init.source_prefix`` fixes
the source prefix instead (the target prefix is still searched).
"""
from __future__ import annotations

import fnmatch
import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from torch import Tensor, nn

from musclelab.errors import ConfigError
from musclelab.io import atomic_write_json
from musclelab.registry import Registry

__all__ = [
    "INITS",
    "INIT_KEYS",
    "InitSpec",
    "PAPER_LR",
    "PRETEXT_TRUNK_PREFIXES",
    "REPORT_FILE",
    "SkippedTensor",
    "TransferReport",
    "apply_init",
    "check_init_config",
    "expects_imagenet_norm",
    "init_defaults",
    "load_source",
    "paper_lr",
    "transfer_weights",
]

log = logging.getLogger(__name__)

REPORT_FILE = "transfer_report.json"
"""Name of the report :func:`apply_init` writes into the run directory."""

PAPER_LR: dict[str, float] = {"scratch": 3e-3, "transfer": 3e-4}
"""McSweeney 2022 learning rates (Adam): 3e-3 from scratch, 3e-4 when fine-tuning transferred weights."""

MAX_PREFIX_DEPTH = 4
"""Deepest dotted prefix (in components) tried when matching names, e.g. ``module.net.backbone.``."""

CHECKPOINT_DIR, BEST_CKPT = "checkpoints", "best.ckpt"  # run-dir layout written by musclelab.train

INIT_KEYS: dict[str, str] = {
    "name": "scratch | imagenet | coco | autoencoder | jigsaw | checkpoint",
    "weights": "torchvision weight name, e.g. ResNet101_Weights.IMAGENET1K_V1 (imagenet, coco)",
    "weights_path": "local weights file (.pth / .ckpt); for imagenet / coco: the same tensors, no download",
    "checkpoint": "earlier run directory (uses checkpoints/best.ckpt) or .ckpt file",
    "source_prefix": "prefix of the source keys to transfer (stripped); null = found automatically",
    "exclude": "source / target key prefixes or glob patterns never transferred, e.g. [classifier.]",
    "adapt_first_conv": "fill a first conv with other input channels from the RGB filters (summed)",
}
"""Every key of the ``init`` config group, with what it means."""

_FIELD = "init"


def _f(key: str) -> str:
    return f"`{_FIELD}.{key}`"


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkippedTensor:
    """A source tensor that was not used: ``reason`` is ``missing`` (no target tensor of that name),
    ``shape`` (shapes differ), ``excluded`` (``init.exclude``) or ``outside_prefix`` (not under
    ``init.source_prefix``). ``target`` is the name it would have had in the network (None if none)."""

    name: str
    reason: str
    source_shape: tuple[int, ...]
    target: str | None = None
    target_shape: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "reason": self.reason,
            "source_shape": list(self.source_shape),
            "target": self.target,
            "target_shape": None if self.target_shape is None else list(self.target_shape),
        }


@dataclass
class TransferReport:
    """What an initialisation did to a network.

    ``transferred``: target tensor names filled from the source (``adapted`` is the subset filled after
    adapting input channels); ``skipped``: source tensors not used; ``new``: target tensors that keep their
    random initialisation. ``source`` is None for ``scratch`` (no transfer at all).
    """

    init: str
    source: str | None
    model: str
    source_prefix: str = ""
    target_prefix: str = ""
    transferred: list[str] = field(default_factory=list)
    skipped: list[SkippedTensor] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    source_tensors: int = 0
    target_tensors: int = 0
    transferred_numel: int = 0
    target_numel: int = 0

    @property
    def counts(self) -> dict[str, int]:
        return {
            "transferred": len(self.transferred),
            "skipped": len(self.skipped),
            "new": len(self.new),
            "adapted": len(self.adapted),
            "source_tensors": self.source_tensors,
            "target_tensors": self.target_tensors,
        }

    def summary_line(self) -> str:
        """One line for the log, e.g. ``transfer imagenet: 314 transferred, 2 skipped, 8 new``."""
        if self.source is None:
            return (f"transfer {self.init}: no transfer, all {self.target_tensors} tensors of {self.model} "
                    f"keep their random initialisation")
        line = (f"transfer {self.init}: {len(self.transferred)} transferred, {len(self.skipped)} skipped, "
                f"{len(self.new)} new")
        return line + (f" ({len(self.adapted)} adapted)" if self.adapted else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: identity, prefixes, counts, then the three name lists."""
        fraction = self.transferred_numel / self.target_numel if self.target_numel else 0.0
        return {
            "init": self.init,
            "source": self.source,
            "model": self.model,
            "summary": self.summary_line(),
            "source_prefix": self.source_prefix,
            "target_prefix": self.target_prefix,
            "counts": self.counts,
            "transferred_numel": self.transferred_numel,
            "target_numel": self.target_numel,
            "transferred_fraction_of_target_elements": fraction,
            "transferred": list(self.transferred),
            "adapted": list(self.adapted),
            "skipped": [s.to_dict() for s in self.skipped],
            "new": list(self.new),
        }

    def write(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON, atomically (the file is complete or absent)."""
        return atomic_write_json(path, self.to_dict())


# --------------------------------------------------------------------------------------------------
# transfer
# --------------------------------------------------------------------------------------------------


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _prefixes(keys: Sequence[str]) -> list[str]:
    """``""`` plus dotted prefixes of named components (<= MAX_PREFIX_DEPTH, no list index such as ``0``)
    followed by >= 2 more components."""
    out = {""}
    for key in keys:
        parts = key.split(".")
        for depth in range(1, min(MAX_PREFIX_DEPTH, len(parts) - 2) + 1):
            if parts[depth - 1].isdigit():
                break
            out.add(".".join(parts[:depth]) + ".")
    return sorted(out)


def _strip(keys: Sequence[str], prefix: str) -> dict[str, str]:
    """``{rest: key}`` for keys starting with ``prefix``."""
    n = len(prefix)
    return {k[n:]: k for k in keys if k.startswith(prefix)}


def _norm_prefix(prefix: str | None) -> str | None:
    if prefix is None:
        return None
    prefix = str(prefix)
    return prefix if not prefix or prefix.endswith(".") else prefix + "."


def _excluded(name: str, patterns: Sequence[str]) -> bool:
    """A pattern with glob characters is matched with fnmatch, any other as a name prefix."""
    for pattern in patterns:
        if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(name, pattern):
            return True
        if name.startswith(pattern):
            return True
    return False


def _first_conv(own: Mapping[str, Tensor]) -> str | None:
    """The first 4-D tensor of the target state dict (the stem conv weight of a CNN), if any."""
    return next((k for k, v in own.items() if v.ndim == 4), None)


def _adaptable(src: tuple[int, ...], tgt: tuple[int, ...]) -> bool:
    return len(src) == 4 == len(tgt) and src[0] == tgt[0] and src[2:] == tgt[2:] and src[1] != tgt[1]


def _top_prefixes(keys: Sequence[str], n: int = 6) -> str:
    heads = sorted({k.split(".")[0] for k in keys})
    return ", ".join(h + "." for h in heads[:n]) + (", ..." if len(heads) > n else "")


def transfer_weights(
    target: nn.Module,
    source: Mapping[str, Tensor],
    *,
    source_prefix: str | None = None,
    exclude: Sequence[str] = (),
    adapt_first_conv: bool = False,
    init: str = "custom",
    source_name: str = "the source state dict",
    model_name: str | None = None,
) -> TransferReport:
    """Copy every ``source`` tensor whose (prefix-mapped) name and shape match into ``target``, in place.

    Parameters and buffers (BN running statistics) are treated alike. The prefix pair is chosen as
    described in the module docstring; ``source_prefix`` fixes the source side (``""``: keys as they are,
    no search on that side; None: searched). ``exclude`` lists key
    prefixes or glob patterns (matched against source and target names) that are never transferred.
    With ``adapt_first_conv`` the target's first conv weight, if only its input channels differ from the
    source's, is filled from the source filters (:func:`musclelab.models.registry.adapt_conv_weight`).
    Raises :class:`ConfigError` when nothing matches; ``init`` / ``source_name`` / ``model_name`` only
    label the report and messages.
    """
    from musclelab.models.registry import adapt_conv_weight

    model_name = model_name or type(target).__name__
    exclude = [str(p) for p in (exclude or ())]
    src = {k: v for k, v in source.items() if isinstance(v, Tensor)}
    if not src:
        raise ConfigError(f"init '{init}': {source_name} holds no tensors")
    own = target.state_dict()
    src_shape = {k: tuple(v.shape) for k, v in src.items()}
    own_shape = {k: tuple(v.shape) for k, v in own.items()}
    skipped: list[SkippedTensor] = []

    usable: list[str] = []
    fixed = _norm_prefix(source_prefix)
    if fixed and not any(k.startswith(fixed) for k in src):
        raise ConfigError(
            f"init '{init}': {_f('source_prefix')}={source_prefix!r} matches no key of {source_name}; "
            f"its keys start with {_top_prefixes(list(src))}"
        )
    for k in src:
        if _excluded(k, exclude):
            skipped.append(SkippedTensor(k, "excluded", src_shape[k]))
        elif fixed and not k.startswith(fixed):
            skipped.append(SkippedTensor(k, "outside_prefix", src_shape[k]))
        else:
            usable.append(k)
    targets = [k for k in own if not _excluded(k, exclude)]
    first = _first_conv(own)
    stem = first if adapt_first_conv else None

    def fits(s: str, t: str) -> bool:
        return src_shape[s] == own_shape[t] or (t == stem and _adaptable(src_shape[s], own_shape[t]))

    # choose the prefix pair: evaluate in order of the upper bound min(|S|, |T|), stop when it cannot win
    src_maps = {p: _strip(usable, p) for p in ([fixed] if fixed is not None else _prefixes(usable))}
    tgt_maps = {p: _strip(targets, p) for p in _prefixes(targets)}
    pairs = sorted(
        ((min(len(sm), len(tm)), sp, tp) for sp, sm in src_maps.items() for tp, tm in tgt_maps.items()),
        key=lambda x: -x[0],
    )
    best: tuple[Any, ...] | None = None
    for bound, sp, tp in pairs:
        if best is not None and bound < -best[0]:
            break
        sm, tm = src_maps[sp], tgt_maps[tp]
        count = sum(1 for rest in sm.keys() & tm.keys() if src_shape[sm[rest]] and fits(sm[rest], tm[rest]))
        if count == 0:
            continue
        rank = (-count, sp.count(".") + tp.count("."), len(sp) + len(tp), sp, tp)
        if best is None or rank < best:
            best = rank
    if best is None:
        raise ConfigError(
            f"init '{init}': no tensor of {source_name} matches {model_name}: wrong init for this model, or "
            f"wrong source_prefix ({_f('source_prefix')}); source keys start with "
            f"{_top_prefixes(usable or list(src))}, {model_name} keys with {_top_prefixes(list(own))}"
        )
    sp, tp = best[3], best[4]

    state: dict[str, Tensor] = {}
    adapted: list[str] = []
    for k in usable:
        if not k.startswith(sp):
            skipped.append(SkippedTensor(k, "missing", src_shape[k]))
            continue
        t = tp + k[len(sp):]
        if t not in own:
            skipped.append(SkippedTensor(k, "missing", src_shape[k]))
        elif _excluded(t, exclude):
            skipped.append(SkippedTensor(k, "excluded", src_shape[k], t, own_shape[t]))
        elif src_shape[k] == own_shape[t]:
            state[t] = src[k]
        elif t == stem and _adaptable(src_shape[k], own_shape[t]):
            state[t] = adapt_conv_weight(src[k], own_shape[t][1])
            adapted.append(t)
        else:
            skipped.append(SkippedTensor(k, "shape", src_shape[k], t, own_shape[t]))
            if t == first and _adaptable(src_shape[k], own_shape[t]):
                log.warning(
                    "init '%s': %s has %d input channels, the source %d: it keeps its random init. Set "
                    "`data.channels=3` (the paper's setting) or `init.adapt_first_conv=true`",
                    init, t, own_shape[t][1], src_shape[k][1],
                )
    result = target.load_state_dict(state, strict=False)
    if result.unexpected_keys:  # pragma: no cover - every key was taken from the target's own state dict
        raise RuntimeError(f"transfer produced keys the network lacks: {result.unexpected_keys[:5]}")

    order = {k: i for i, k in enumerate(own)}
    transferred = sorted(state, key=order.__getitem__)
    report = TransferReport(
        init=init, source=source_name, model=model_name, source_prefix=sp, target_prefix=tp,
        transferred=transferred, skipped=skipped, new=[k for k in own if k not in state],
        adapted=adapted, source_tensors=len(src), target_tensors=len(own),
        transferred_numel=sum(_numel(own_shape[k]) for k in transferred),
        target_numel=sum(_numel(s) for s in own_shape.values()),
    )
    if len(transferred) < len(usable) / 2:
        log.warning("%s: under half of the %d source tensors fit %s (see the report's `skipped`)",
                    report.summary_line(), len(usable), model_name)
    return report


# --------------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InitSpec:
    """One ``init`` entry: ``load(cfg)`` returns ``(state dict, description)`` or None (scratch).

    ``keys`` are the ``init.*`` keys it uses (besides ``name``); ``defaults`` its config-group values;
    ``imagenet_norm`` whether the source was trained on 3-channel ImageNet-normalised images;
    ``trunk_prefixes``: with ``init.source_prefix`` null, the first of these that some source key starts
    with becomes the source prefix (before the general search), so only the pretrained trunk transfers.
    """

    name: str
    load: Callable[[Mapping[str, Any]], tuple[dict[str, Tensor], str]] | None
    keys: tuple[str, ...]
    defaults: Mapping[str, Any]
    imagenet_norm: bool
    summary: str
    trunk_prefixes: tuple[str, ...] = ()


INITS: Registry[InitSpec] = Registry("init", "init.name")

_TRANSFER_KEYS = ("source_prefix", "exclude", "adapt_first_conv")

PRETEXT_TRUNK_PREFIXES = ("net.trunk.", "net.backbone.", "trunk.", "backbone.")
"""Where musclelab.pretext checkpoints keep the trunk: Lightning ``net.trunk.*`` (jigsaw) / ``net.backbone.*``
(autoencoder, whose FCN head is not transferred by default), ``save_trunk`` files ``backbone.*``."""


def _read(path: str | os.PathLike[str], field_name: str, init: str) -> dict[str, Tensor]:
    """The tensors of a local file; ConfigError naming ``init.<field_name>`` if unreadable."""
    from musclelab.models.registry import read_state_dict

    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise ConfigError(f"init '{init}': {_f(field_name)}={str(path)!r} is not a file")
    try:
        return read_state_dict(p, f"init '{init}': {_f(field_name)}")
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise ConfigError(
            f"init '{init}': cannot read {_f(field_name)}={str(path)!r} as a PyTorch state dict "
            f"(torch.load with weights_only=True): {exc}"
        ) from exc


def _run_checkpoint(path: str, field_name: str, init: str) -> Path:
    """A run directory -> ``<dir>/checkpoints/best.ckpt``; a file -> itself."""
    p = Path(os.path.expanduser(str(path)))
    if p.is_dir():
        best = p / CHECKPOINT_DIR / BEST_CKPT
        if not best.is_file():
            raise ConfigError(
                f"init '{init}': {_f(field_name)}={str(path)!r} is a directory without {CHECKPOINT_DIR}/{BEST_CKPT}; "
                f"give a musclelab run directory or a .ckpt file"
            )
        return best
    if not p.is_file():
        raise ConfigError(f"init '{init}': {_f(field_name)}={str(path)!r} is neither a run directory nor a file")
    return p


def _weight_member(name: str, init: str, segmentation: bool) -> Any:
    """``torchvision.models.get_weight(name)`` with the error naming ``init.weights`` (no download)."""
    import torchvision.models

    if not isinstance(name, str) or not name:
        raise ConfigError(f"init '{init}': {_f('weights')} must be a torchvision weight name, got {name!r}")
    try:
        member = torchvision.models.get_weight(name)
    except (ValueError, KeyError, AttributeError) as exc:
        raise ConfigError(
            f"init '{init}': unknown {_f('weights')}={name!r}; give a torchvision weight name such as "
            f"{INITS.get(init).defaults['weights']} (see torchvision.models.list_models / get_model_weights)"
        ) from exc
    if isinstance(member, torchvision.models.WeightsEnum):
        module = type(member).__module__
        is_seg = module.startswith("torchvision.models.segmentation")
        is_cls = module.count(".") == 2  # torchvision.models.<family>: the classification models
        if segmentation and not is_seg:
            raise ConfigError(f"init '{init}': {_f('weights')}={name!r} is not a torchvision segmentation weight")
        if not segmentation and not is_cls:
            raise ConfigError(
                f"init '{init}': {_f('weights')}={name!r} is not a torchvision classification weight"
                + (" (use init=coco for segmentation weights)" if is_seg else "")
            )
    return member


def _torchvision_loader(init: str, segmentation: bool) -> Callable[[Mapping[str, Any]], tuple[dict[str, Tensor], str]]:
    def load(cfg: Mapping[str, Any]) -> tuple[dict[str, Tensor], str]:
        name = cfg.get("weights") or INITS.get(init).defaults["weights"]
        member = _weight_member(name, init, segmentation)
        path = cfg.get("weights_path")
        if path:
            return _read(path, "weights_path", init), f"{name} from {path}"
        try:
            from musclelab.models.registry import hub_state_dict

            state = hub_state_dict(member)  # weights_only=True: a hub file is never unpickled as code
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            url = getattr(member, "url", "?")
            raise ConfigError(
                f"init '{init}': could not download {name} ({url}): {exc}. Offline: download that file on a "
                f"machine with internet and set {_f('weights_path')} to it"
            ) from exc
        return dict(state), name

    return load


def _file_loader(init: str) -> Callable[[Mapping[str, Any]], tuple[dict[str, Tensor], str]]:
    def load(cfg: Mapping[str, Any]) -> tuple[dict[str, Tensor], str]:
        given = [k for k in ("checkpoint", "weights_path") if cfg.get(k)]
        if not given:
            raise ConfigError(
                f"init '{init}' needs {_f('checkpoint')} (a run directory or .ckpt file) or {_f('weights_path')}"
            )
        if len(given) > 1:
            raise ConfigError(f"init '{init}': set only one of {_f('checkpoint')} and {_f('weights_path')}")
        path = _run_checkpoint(str(cfg[given[0]]), given[0], init)
        return _read(path, given[0], init), str(path)

    return load


def _register(spec: InitSpec) -> None:
    INITS.register(spec.name)(spec)


_COMMON_DEFAULTS = {"source_prefix": None, "exclude": [], "adapt_first_conv": False}
_register(InitSpec("scratch", None, (), {}, False, "random initialisation, no transfer"))
_register(InitSpec(
    "imagenet", _torchvision_loader("imagenet", segmentation=False), ("weights", "weights_path", *_TRANSFER_KEYS),
    {"weights": "ResNet101_Weights.IMAGENET1K_V1", "weights_path": None, **_COMMON_DEFAULTS}, True,
    "torchvision ImageNet classification weights (backbone only)",
))
_register(InitSpec(
    "coco", _torchvision_loader("coco", segmentation=True), ("weights", "weights_path", *_TRANSFER_KEYS),
    {"weights": "FCN_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1", "weights_path": None, **_COMMON_DEFAULTS}, True,
    "torchvision COCO segmentation weights (backbone + head but the class layer)",
))
for _pretext, _what, _trunk_prefixes in (
    # the autoencoder transfers its whole FCN (encoder and decoder: every tensor whose name and shape match);
    # a Lightning checkpoint keeps it under net.*, a pretrain file (save_trunk) at the top level
    ("autoencoder", "encoder and decoder", ("net.",)),
    ("jigsaw", "trunk", PRETEXT_TRUNK_PREFIXES),
):
    _register(InitSpec(
        _pretext, _file_loader(_pretext), ("checkpoint", "weights_path", *_TRANSFER_KEYS),
        {"checkpoint": None, "weights_path": None, **_COMMON_DEFAULTS}, False,
        f"{_what} of a {_pretext} pretext run (run directory, .ckpt or state dict file)", _trunk_prefixes,
    ))
_register(InitSpec(
    "checkpoint", _file_loader("checkpoint"), ("checkpoint", "weights_path", *_TRANSFER_KEYS),
    {"checkpoint": None, "weights_path": None, **_COMMON_DEFAULTS}, False,
    "an earlier musclelab run (run directory or .ckpt), e.g. trained on another data set",
))


# --------------------------------------------------------------------------------------------------
# public helpers
# --------------------------------------------------------------------------------------------------


def init_defaults(name: str) -> dict[str, Any]:
    """The ``conf/init/<name>.yaml`` content: ``name`` plus the entry's keys with their defaults."""
    spec = INITS.get(name)
    return {"name": name, **{k: (list(v) if isinstance(v, list) else v) for k, v in spec.defaults.items()}}


def expects_imagenet_norm(init_name: str) -> bool:
    """Whether ``init_name`` transfers weights trained on 3-channel ImageNet-normalised images (imagenet,
    coco): the data should then use ``data.channels=3``."""
    return INITS.get(init_name).imagenet_norm


def paper_lr(init_name: str) -> float:
    """McSweeney 2022's learning rate for ``init_name``: 3e-3 for scratch, 3e-4 for any transfer."""
    INITS.get(init_name)
    return PAPER_LR["scratch" if init_name == "scratch" else "transfer"]


def _plain(cfg: Any) -> dict[str, Any]:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if cfg is None:
        return {"name": "scratch"}
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"`{_FIELD}` must be a mapping with a `name`, got {cfg!r}")
    return dict(cfg)


def check_init_config(init_cfg: Mapping[str, Any] | None, source_pending: bool = False) -> dict[str, Any]:
    """Validate an ``init`` config without loading anything; returns it as a plain dict with defaults.

    ``source_pending``: the weights file will come from a pretext pretraining stage that has not run yet, so
    a missing ``checkpoint``/``weights_path`` is not an error.

    Unknown names raise ``UnknownNameError``; unknown keys, keys the chosen init does not use (set to
    a non-empty value) and missing / bad paths raise :class:`ConfigError`. ``None`` means scratch.
    """
    cfg = _plain(init_cfg)
    name = cfg.get("name") or "scratch"
    spec = INITS.get(str(name))
    unknown = sorted(set(cfg) - set(INIT_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown init key(s) {', '.join(_f(k) for k in unknown)}; accepted: "
            + "; ".join(f"{k} ({v})" for k, v in INIT_KEYS.items())
        )
    unused = sorted(k for k, v in cfg.items() if k != "name" and k not in spec.keys and v not in (None, False, [], ""))
    if unused:
        raise ConfigError(
            f"init '{name}' does not use {', '.join(_f(k) for k in unused)}"
            + (f"; it uses {', '.join(_f(k) for k in spec.keys)}" if spec.keys else "; it transfers nothing")
        )
    out = {**dict(spec.defaults), **{k: v for k, v in cfg.items() if v is not None or k not in spec.defaults}}
    out["name"] = spec.name
    exclude = out.get("exclude") or []
    if isinstance(exclude, str):
        exclude = [exclude]
    if not isinstance(exclude, (list, tuple)) or not all(isinstance(p, str) and p for p in exclude):
        raise ConfigError(f"{_f('exclude')} must be a list of key prefixes / glob patterns, got {exclude!r}")
    if "exclude" in out or "exclude" in spec.keys:
        out["exclude"] = list(exclude)
    if not isinstance(out.get("adapt_first_conv", False), bool):
        raise ConfigError(f"{_f('adapt_first_conv')} must be true or false, got {out['adapt_first_conv']!r}")
    sp = out.get("source_prefix")
    if sp is not None and not isinstance(sp, str):
        raise ConfigError(f"{_f('source_prefix')} must be a string or null, got {sp!r}")
    if "weights" in spec.keys:
        _weight_member(out.get("weights") or spec.defaults["weights"], spec.name, spec.name == "coco")
    for key in ("weights_path", "checkpoint"):
        path = out.get(key)
        if path and not os.path.exists(os.path.expanduser(str(path))):
            raise ConfigError(f"init '{name}': {_f(key)}={str(path)!r} does not exist")
    if (spec.load is not None and "checkpoint" in spec.keys and not source_pending
            and not (out.get("checkpoint") or out.get("weights_path"))):
        raise ConfigError(
            f"init '{name}' needs {_f('checkpoint')} (a run directory or .ckpt file) or {_f('weights_path')}"
        )
    return out


def load_source(init_cfg: Mapping[str, Any] | None) -> tuple[dict[str, Tensor], str] | None:
    """The source state dict of an ``init`` config and its description; None for scratch.

    ``imagenet`` / ``coco`` without ``weights_path`` call ``torchvision.models.get_weight(weights)
    .get_state_dict(progress=True, weights_only=True)`` (downloads into the torch hub cache once).
    """
    cfg = check_init_config(init_cfg)
    spec = INITS.get(cfg["name"])
    return None if spec.load is None else spec.load(cfg)


def apply_init(
    net: nn.Module, init_cfg: Mapping[str, Any] | None, run_dir: str | Path | None, model_name: str
) -> TransferReport | None:
    """Initialise ``net`` in place as ``init_cfg`` says, write ``<run_dir>/transfer_report.json`` and log
    the summary line. Returns the report, or None for scratch (whose report file says so)."""
    cfg = check_init_config(init_cfg)
    spec = INITS.get(cfg["name"])
    loaded = None if spec.load is None else spec.load(cfg)
    if loaded is None:
        own = net.state_dict()
        report = TransferReport(
            init=spec.name, source=None, model=model_name, new=list(own), source_tensors=0,
            target_tensors=len(own), target_numel=sum(v.numel() for v in own.values()),
        )
    else:
        state, description = loaded
        prefix = cfg.get("source_prefix")
        if prefix is None:
            prefix = next((p for p in spec.trunk_prefixes if any(k.startswith(p) for k in state)), None)
            if prefix is not None:
                log.info("init '%s': transferring the pretext trunk under %r (set init.source_prefix to "
                         "change)", spec.name, prefix)
        report = transfer_weights(
            net, state, source_prefix=prefix, exclude=cfg.get("exclude") or (),
            adapt_first_conv=bool(cfg.get("adapt_first_conv")), init=spec.name, source_name=description,
            model_name=model_name,
        )
    if run_dir is not None:
        report.write(Path(run_dir) / REPORT_FILE)
    log.info(report.summary_line())
    return None if loaded is None else report
