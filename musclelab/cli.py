"""The ``musclelab`` command: ``musclelab <sub-command> ...``.

* ``musclelab train [overrides] [-m]`` — the Hydra training app (any Hydra override or multirun works);
  ``musclelab train resume=<run dir>`` continues an interrupted run in its own directory.
* ``musclelab phantom --out DIR --n 50 --site b`` — write phantom cases to disk as NIfTI + meta.csv
  (``--kind abdomen --site lits|btcv|chaos``: 3D liver CT volumes in the LiTS layout).
* ``musclelab transfer study=phantom_sites [study.sequence=all] [-m]`` — sequential transfer chains with a
  prefix cache, forgetting matrix and backward transfer.
* ``musclelab pretrain init=autoencoder|jigsaw [overrides]`` — run (or reuse) the cached pretext stage alone.
* ``musclelab report <study dir> [--out DIR]`` — the paper's tables and figures from finished runs.
* ``musclelab predict <run dir or checkpoint> <input> --out DIR`` — a trained model on new scans (DICOM, NIfTI,
  NRRD): masks in each scan's geometry, predictions.csv with areas/volumes, HU, SMA/SMD/SMI, overlays.
* ``musclelab data verify <dataset> --root DIR [overrides]`` — integrity checks; exits 1 on errors.
* ``musclelab data prepare <dataset> --root DIR [overrides]`` — build the 2D slice cache training will use.
* ``musclelab --version`` — the installed version.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

SUBCOMMANDS = ("train", "transfer", "pretrain", "report", "phantom", "data", "predict")




def _quote(value: str) -> str:
    """Quote a value for a Hydra override when it holds characters the override grammar treats specially."""
    if re.fullmatch(r"[A-Za-z0-9_./\-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def own_config_roots() -> set[str]:
    """Top-level names of musclelab's own config: its groups (``conf/<group>/``, except ``hydra``) and the keys of
    ``train.yaml`` and of the experiments (which add a few, e.g. ``source_run``)."""
    from musclelab.compose import config_dir

    root = config_dir()
    names = {d.name for d in root.iterdir() if d.is_dir() and d.name != "hydra"}
    for f in [root / "train.yaml", *sorted((root / "experiment").glob("*.yaml"))]:
        try:
            doc = yaml.safe_load(f.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(doc, dict):
            names |= {str(k) for k in doc if k not in ("defaults", "hydra")}
    return names


def is_own_override(override: str, roots: set[str] | None = None) -> bool:
    """Whether a saved Hydra override sets one of musclelab's own settings (what ``resume=`` replays): not
    ``hydra.*`` / ``hydra/...`` (callbacks, launchers, job logging that Hydra itself instantiates) and a top-level
    name of :func:`own_config_roots`."""
    key = override.split("=", 1)[0].lstrip("+~").strip()
    parts = re.split(r"[./@]", key)
    if not key or parts[0] == "hydra":
        return False
    return parts[0] in (own_config_roots() if roots is None else roots)


def resume_overrides(args: list[str]) -> list[str]:
    """Turn ``resume=<run dir>`` into that run's saved overrides plus the user's new ones, logging into the
    same directory; other arguments pass through unchanged."""
    resume = [a for a in args if a.startswith("resume=")]
    if not resume or resume[-1] in ("resume=null", "resume="):
        return args
    run_dir = Path(resume[-1].split("=", 1)[1].strip("'\"")).expanduser().resolve()
    saved_file = run_dir / ".hydra" / "overrides.yaml"
    if not saved_file.exists():
        raise SystemExit(f"musclelab train: resume={run_dir}: no .hydra/overrides.yaml there; "
                         "give the directory of a run made by `musclelab train`")
    if "-m" in args or "--multirun" in args:
        raise SystemExit("musclelab train: resume= continues one run; run it once per run directory, without -m")
    saved = [o for o in (yaml.safe_load(saved_file.read_text()) or [])
             if isinstance(o, str) and not o.startswith(("resume=", "hydra.run.dir="))]
    roots = own_config_roots()
    dropped = [o for o in saved if not is_own_override(o, roots)]
    if dropped:  # a shared or downloaded run directory must not make Hydra instantiate anything
        print(f"musclelab train: resume={run_dir}: ignoring saved overrides that are not musclelab settings: "
              f"{', '.join(dropped)}", file=sys.stderr)
    saved = [o for o in saved if is_own_override(o, roots)]
    plugins = [o for o in saved if "_target_" in o.split("=", 1)[0]]
    if plugins:  # musclelab's own plug-ins (musclelab.plugins) are part of the run: say which code they import
        print(f"musclelab train: resume={run_dir}: the run's plug-ins are imported again: {', '.join(plugins)}",
              file=sys.stderr)
    extra = [a for a in args if not a.startswith("resume=")]
    keys = {a.split("=", 1)[0] for a in extra}
    kept = [o for o in saved if o.split("=", 1)[0] not in keys]
    return kept + extra + [f"resume={_quote(str(run_dir))}", f"hydra.run.dir={_quote(str(run_dir))}"]


def run_train(args: list[str]) -> None:
    """Run the Hydra training app with ``args`` as its command line."""
    from musclelab.compose import run_app

    def job(cfg):  # torch, Lightning and MONAI load here, not for --help or a refused resume= (start-up time)
        from musclelab.hparams_search import objective
        from musclelab.train import train

        # a sweeper gets optimized_metric (hparams_search=optuna), else the best checkpoint score
        return objective(cfg, train(cfg))

    run_app("train", resume_overrides(args), job)


def _print_help(command: str, args: list[str]) -> bool:
    """``-h``/``--help`` of ``musclelab pretrain`` (no Hydra app of its own): print it; True if so."""
    from musclelab.cli_help import hydra_command_help, wants_help
    from musclelab.compose import compose_raw, config_dir

    if not wants_help(args):
        return False
    print(hydra_command_help(command, args, str(config_dir()), compose_raw))
    return True



def run_phantom(args: list[str]) -> None:
    """``musclelab phantom``: write phantom cases as NIfTI plus meta.csv: ``--kind l3`` (default) single L3
    slices with muscle masks, ``--kind abdomen`` 3D abdominal volumes with liver/tumour labels (LiTS layout)."""
    from musclelab.phantoms.abdomen import LIVER_SITES, write_abdomen_dataset
    from musclelab.phantoms.l3 import SITES, write_phantom_dataset

    p = argparse.ArgumentParser(prog="musclelab phantom", description="Write synthetic CT cases to disk: L3 "
                                "slices with muscle masks (--kind l3) or abdominal volumes with liver/tumour labels "
                                "in the LiTS layout (--kind abdomen).")
    p.add_argument("--out", required=True, type=Path, help="new (or empty) output directory")
    p.add_argument("--kind", default="l3", choices=("l3", "abdomen", "thigh"),
                   help="l3: L3 slices; abdomen: 3D liver CT; thigh: hip-to-knee CT, 30 classes (MSD layout)")
    p.add_argument("--n", type=int, default=50, help="number of cases (l3: one slice each; abdomen: volumes)")
    p.add_argument("--site", default=None, help=f"acquisition site (l3: {'|'.join(sorted(SITES))}, default a; "
                   f"abdomen: {'|'.join(LIVER_SITES)}, default lits)")
    p.add_argument("--size", type=int, default=128, help="pixels per side")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", default="nifti", help="l3 only: comma-separated image formats, nifti,dicom,nrrd "
                   "(dicom/<id>.dcm and nrrd/<id>.nrrd next to images/ NIfTI; e.g. for musclelab predict)")
    ns = p.parse_args(args)
    known = sorted(SITES) if ns.kind == "l3" else list(LIVER_SITES)
    site = ns.site or ("a" if ns.kind == "l3" else "lits")
    if ns.kind == "thigh":
        from musclelab.phantoms.thigh import write_thigh_dataset

        try:  # one site; --size is the in-plane size (48 slices at the CPU default 64)
            out = write_thigh_dataset(ns.out, n=ns.n, size=ns.size, seed=ns.seed)
        except (FileExistsError, ValueError) as err:
            raise SystemExit(f"musclelab phantom: error: {err}") from None
        print(f"wrote {ns.n} thigh phantom volumes (MSD layout) to {out}; train on them with "
              f"data=msd data.spatial_dims=3 data.root={out}")
        return
    if site not in known:
        raise SystemExit(f"musclelab phantom: error: unknown site '{site}' for --kind {ns.kind}; known sites: "
                         f"{', '.join(known)}")
    try:
        if ns.kind == "l3":
            from musclelab.data.export import check_formats, export_phantom_formats

            formats = check_formats(ns.format)  # before anything is written
            out = write_phantom_dataset(ns.out, n=ns.n, size=ns.size, site=site, seed=ns.seed)
            export_phantom_formats(out, formats)
        else:
            out = write_abdomen_dataset(ns.out, n=ns.n, size=ns.size, site=site, seed=ns.seed)
    except (FileExistsError, ValueError) as err:
        raise SystemExit(f"musclelab phantom: error: {err}") from None
    what = "phantom cases" if ns.kind == "l3" else "abdomen phantom volumes (LiTS layout)"
    print(f"wrote {ns.n} {what} (site {site}, {ns.size}x{ns.size}) to {out}")


def run_data(args: list[str]) -> None:
    """``musclelab data verify|prepare <dataset> --root DIR [Hydra overrides]``."""
    from musclelab.compose import compose_train_config
    from musclelab.errors import ConfigError
    from musclelab.train import validate_config

    p = argparse.ArgumentParser(
        prog="musclelab data", description="Check a data set, or build the slice cache training reads. Extra "
        "arguments are Hydra overrides of the training config (e.g. data.img_size=224), so the cache built here "
        "is the one `musclelab train` with the same overrides uses.")
    p.add_argument("action", choices=("verify", "prepare"))
    p.add_argument("dataset", help="data config name: lits, btcv, chaos, l3_folder, msd")
    p.add_argument("--root", required=True, type=Path, help="the data set's folder (read only)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data.source.slices=all")
    ns = p.parse_intermixed_args(args)
    try:
        cfg = compose_train_config([f"data={ns.dataset}", f"data.root={_quote(str(ns.root.resolve()))}",
                                    *ns.overrides])
        validate_config(cfg)
        if ns.action == "verify":
            _verify(cfg)
        else:
            _prepare(cfg)
    except ConfigError as err:
        raise SystemExit(f"musclelab data {ns.action}: error: {err}") from None


def _verify(cfg) -> None:
    from omegaconf import OmegaConf

    from musclelab.data.readers import build_reader
    from musclelab.data.verify import verify_dataset

    reader = cfg.data.source.get("reader")
    reader_params = OmegaConf.to_container(reader, resolve=True) if reader is not None else {}
    report = verify_dataset(build_reader(cfg.data.name, cfg.data.root, **reader_params), decode=True)
    if int(cfg.data.get("spatial_dims", 2)) == 3:  # volumes: every image 3D with a positive spacing
        from musclelab.data.volumes import volume_problems

        report.problems += volume_problems(build_reader(cfg.data.name, cfg.data.root, **reader_params))
    print(report.table())
    if not report.ok:
        raise SystemExit(1)


def _prepare(cfg) -> None:
    from musclelab.train import build_datamodule

    dm = build_datamodule(cfg)
    dm.setup("fit")
    info = {k: len(getattr(v, "volumes", v)) for k, v in dm.datasets.items()}
    held = dm.datasets["train"]
    held = held.volumes if hasattr(held, "volumes") else held.slices
    cache = held.meta.attrs.get("cache_dir", "(no cache: generated data)")
    print(f"{cfg.data.name}: {'volumes' if hasattr(dm.datasets['train'], 'volumes') else 'slices'} per split "
          f"{info}; cache: {cache}")


def run_pretrain(args: list[str]) -> None:
    """``musclelab pretrain``: the pretext stage of ``init=autoencoder|jigsaw`` for a data split, cached by hash
    (the same cache training uses); prints the trunk weights file."""
    from musclelab.compose import compose_train_config
    from musclelab.errors import ConfigError
    from musclelab.pretext import PRETEXT_TASKS
    from musclelab.pretext.pretrain import pretrained_trunk
    from musclelab.train import build_datamodule, validate_config

    if _print_help("pretrain", args):
        return
    try:
        cfg = compose_train_config(args)
        validate_config(cfg)
        PRETEXT_TASKS.get(cfg.init.name)
        dm = build_datamodule(cfg)
        dm.setup("fit")
        print(f"pretext {cfg.init.name}: trunk weights {pretrained_trunk(cfg, dm)}")
    except (ConfigError, KeyError) as err:
        raise SystemExit(f"musclelab pretrain: error: {err}") from None


def run_transfer(args: list[str]) -> None:
    """``musclelab transfer``: see :mod:`musclelab.studies`."""
    from musclelab.studies import main_transfer

    main_transfer(args)


def run_predict(args: list[str]) -> None:
    """``musclelab predict``: see :mod:`musclelab.predict`."""
    from musclelab.predict import main_predict

    main_predict(args)


def run_report(args: list[str]) -> None:
    """``musclelab report <study dir>``: see :mod:`musclelab.report`."""
    from musclelab.report import main_report

    main_report(args)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``musclelab`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-V"]):
        from musclelab import __version__

        print(f"musclelab {__version__}")
        return
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            raise SystemExit(f"musclelab: unknown sub-command '{argv[0]}'; known: {', '.join(SUBCOMMANDS)}")
        return
    cmd, rest = argv[0], argv[1:]
    {"train": run_train, "transfer": run_transfer, "pretrain": run_pretrain, "report": run_report, "phantom": run_phantom,
     "data": run_data, "predict": run_predict}[cmd](rest)


if __name__ == "__main__":
    main()
