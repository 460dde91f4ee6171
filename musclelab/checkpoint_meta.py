"""What a musclelab checkpoint carries so that inference needs nothing else, and how to read it back safely.

Every checkpoint a :class:`~musclelab.tasks.SegmentationTask` saves gets a ``"musclelab"`` entry
(:data:`META_KEY`) of plain values only — strings, numbers, lists, dicts — describing:

- the network: ``model`` (registry name and parameters), ``loss`` (name and parameters: they fix the output
  channels and activation), ``in_channels``;
- the labels: ``class_names`` (label value -> name, background first);
- the input mapping: ``window`` (preset name and its HU range and gamma), ``channels`` and ``normalisation``
  (``none``, or ``imagenet`` with its mean/std for 3-channel inputs);
- the geometry: ``spatial_dims`` (2 or 3), ``img_size`` (2D: slices resized to ``img_size`` px per side keeping
  their field of view), ``spacing`` (3D: target spacing in mm), ``patch_size`` and ``sliding_window`` (3D: the
  window's size and blending) and ``crop_foreground`` (3D: volumes cropped to the body before the window);
- where it came from: ``data`` (data set name and source parameters), ``musclelab_version``, ``format``.

A ``best.ckpt`` copied alone to another machine is therefore enough for ``musclelab predict``.
:func:`load_checkpoint` uses ``torch.load(weights_only=True)``: a file holding anything other than tensors
and plain containers is refused with a one-line :class:`~musclelab.errors.ConfigError` (never unpickled), as
is a PyTorch file that is not a musclelab checkpoint.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from musclelab import __version__
from musclelab.errors import ConfigError

META_KEY = "musclelab"
META_FORMAT = 1
NET_PREFIX = "net."
#: fields every checkpoint description must have (the rest have defaults)
REQUIRED = ("model", "class_names", "in_channels", "window", "channels", "spatial_dims")


def _plain(value: Any) -> Any:
    """Containers as plain dict / list (OmegaConf or tuples), so ``weights_only`` loading accepts them."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()  # numpy / torch scalars
    return value


def data_fields(data: Any) -> dict[str, Any]:
    """The inference-relevant part of a ``cfg.data`` section (or a plain dict of it): data set name, source
    parameters, window, channels, image size, and the 3D fields ``spatial_dims``, ``spacing`` (mm) and
    ``patch_size`` (voxels) when the data config has them. Stored in the task's ``meta`` hyperparameter."""
    d = _plain(data)
    out = {"data": d.get("name"), "window": d.get("window", "abdomen"), "channels": int(d.get("channels", 1)),
           "img_size": d.get("img_size"), "source": d.get("source") or {}}
    for key in ("spatial_dims", "spacing", "patch_size", "crop_foreground"):
        if d.get(key) is not None:
            out[key] = d[key]
    return out


def describe(hparams: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint description of a :class:`~musclelab.tasks.SegmentationTask` from its hyperparameters
    (``meta`` holds the data fields of :func:`data_fields`)."""
    from musclelab.data.windowing import IMAGENET_MEAN, IMAGENET_STD, WINDOWS

    hp = _plain(dict(hparams))
    meta = hp.get("meta") or {}
    window_name = meta.get("window", "abdomen")
    win = WINDOWS.get(window_name)
    channels = int(meta.get("channels", hp.get("in_channels", 1)))
    spatial_dims = int(hp.get("spatial_dims") or meta.get("spatial_dims", 2))
    norm: dict[str, Any] = {"name": "none"}
    if channels == 3:
        norm = {"name": "imagenet", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    return {
        "format": META_FORMAT,
        "musclelab_version": __version__,
        "task": "segmentation",
        "model": {"name": hp["model"], "params": hp.get("model_params") or {}},
        "loss": {"name": hp.get("loss", "ce_dice"), "params": hp.get("loss_params") or {}},
        "in_channels": int(hp["in_channels"]),
        "class_names": list(hp["class_names"]),
        "window": {"name": window_name, "hu_min": win.hu_min, "hu_max": win.hu_max, "gamma": win.gamma},
        "channels": channels,
        "normalisation": norm,
        "spatial_dims": spatial_dims,
        "img_size": hp.get("img_size", meta.get("img_size")),
        "spacing": meta.get("spacing"),
        "patch_size": hp.get("patch_size") or meta.get("patch_size"),
        "sliding_window": hp.get("sliding_window") or {},
        "crop_foreground": bool(meta.get("crop_foreground", True)),
        "data": {"name": meta.get("data"), "source": meta.get("source") or {}},
    }


def add_to_checkpoint(checkpoint: dict[str, Any], hparams: dict[str, Any]) -> None:
    """Write :func:`describe` into ``checkpoint`` (the ``on_save_checkpoint`` hook of the task)."""
    checkpoint[META_KEY] = describe(hparams)


@dataclass
class LoadedCheckpoint:
    """A checkpoint read for inference: its description and the network's weights (``net.`` prefix removed)."""

    path: Path
    meta: dict[str, Any]
    net_state: dict[str, torch.Tensor]


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory's ``checkpoints/best.ckpt`` (``last.ckpt`` if there is no best)."""
    p = Path(path).expanduser()
    if p.is_dir():
        for cand in (p / "checkpoints" / "best.ckpt", p / "best.ckpt", p / "checkpoints" / "last.ckpt"):
            if cand.is_file():
                return cand
        raise ConfigError(f"{p} holds no checkpoints/best.ckpt: give a run directory made by `musclelab train` or "
                          "a .ckpt file")
    if not p.is_file():
        raise ConfigError(f"checkpoint {p} does not exist: give a run directory or a .ckpt file")
    return p


def load_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Read a musclelab checkpoint (file or run directory) with ``torch.load(weights_only=True)`` on the CPU.

    Raises :class:`ConfigError` (one line) for a file PyTorch cannot read, one holding arbitrary Python
    objects (refused, never unpickled), or a PyTorch file without a musclelab description.
    """
    p = resolve_checkpoint(path)
    with open(p, "rb") as f:
        head = f.read(2)
    if not (zipfile.is_zipfile(p) or head[:1] == b"\x80"):  # torch's zip format or a legacy pickle
        raise ConfigError(f"{p} is not a PyTorch checkpoint (neither a zip archive nor a pickle); give a run "
                          "directory or a .ckpt written by `musclelab train`")
    try:
        ckpt = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = f"e.g. {found.group(1)}" if found else type(err).__name__
        raise ConfigError(f"{p} is not a musclelab checkpoint: it holds Python objects that safe loading refuses "
                          f"({what}); use a best.ckpt written by `musclelab train`") from None
    except Exception as err:  # torch raises RuntimeError, EOFError, KeyError, ... for non-checkpoint files
        raise ConfigError(f"{p} is not a PyTorch checkpoint ({type(err).__name__}: "
                          f"{str(err).strip().splitlines()[0][:160] if str(err).strip() else 'unreadable'}); "
                          "give a .ckpt written by `musclelab train`") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConfigError(f"{p} is not a musclelab checkpoint (no state_dict): use a best.ckpt written by "
                          "`musclelab train`")
    meta = ckpt.get(META_KEY)
    if meta is None:
        hp = ckpt.get("hyper_parameters")
        if not (isinstance(hp, dict) and {"model", "class_names", "in_channels"} <= set(hp)):
            raise ConfigError(f"{p} is a PyTorch checkpoint but not a musclelab one (no '{META_KEY}' description): "
                              "use a best.ckpt written by `musclelab train`")
        meta = describe(hp)  # written before checkpoints described themselves: same fields from the hparams
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ConfigError(f"{p}: the musclelab description lacks {', '.join(missing)}; the checkpoint is damaged "
                          "or from an incompatible version")
    state = {k[len(NET_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(NET_PREFIX)}
    if not state:
        raise ConfigError(f"{p}: no network weights (state_dict keys starting with '{NET_PREFIX}')")
    return LoadedCheckpoint(p, meta, state)


def build_network(loaded: LoadedCheckpoint) -> torch.nn.Module:
    """The network of a loaded checkpoint, weights in place, in eval mode, on the CPU."""
    from musclelab.losses import build_loss
    from musclelab.models import build_model

    from musclelab.models.registry import PRETRAINED_PARAMS

    meta = loaded.meta
    out_channels = build_loss(meta["loss"]["name"], len(meta["class_names"]), **meta["loss"]["params"]).out_channels
    size = meta["patch_size"] if meta["spatial_dims"] == 3 and meta.get("patch_size") else meta["img_size"]
    # the trained weights come from the checkpoint: pretrained sources named in the description (a weights file of
    # the training machine, a download) are neither read nor fetched again
    params = {k: (None if k in PRETRAINED_PARAMS else v) for k, v in meta["model"]["params"].items()}
    net = build_model(meta["model"]["name"], int(meta["in_channels"]), out_channels, size,
                      spatial_dims=int(meta["spatial_dims"]), **params)
    net.load_state_dict(loaded.net_state, strict=True)
    return net.eval()
