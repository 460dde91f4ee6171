"""``--help`` of the sub-commands that take Hydra overrides (``train``, ``transfer``, ``pretrain``).

Hydra's own ``--help`` titles every app after ``hydra.help.app_name`` (one config tree, so ``transfer`` would
say "musclelab train"), lists internal files (``data: _common``) as choices, and does not exist for commands
that compose the config without Hydra's app (``pretrain`` passed ``--help`` to the override parser). This
module prints one help for all three: the command's title and usage, the config groups with their options
(files whose name starts with ``_`` are internal and hidden), and the composed config for the given overrides.
``--hydra-help`` still shows Hydra's own options.
"""
from __future__ import annotations

from typing import Callable

HELP_FLAGS = ("-h", "--help")

#: one line per sub-command: what it does
SUMMARIES = {
    "train": "train and test one model on the phantom or your data: a complete run directory (metrics.csv, "
             "checkpoints, test_cases.csv, plots); -m runs a sweep (a grid, or hparams_search=optuna)",
    "transfer": "sequential transfer chains across data sets (study=...): every stage trained once and cached, "
                "forgetting matrix, learning curves, backward transfer",
    "pretrain": "run (or reuse) the cached pretext stage of init=autoencoder|jigsaw for a data split and print "
                "the trunk weights file",
}

#: one example command line per sub-command
EXAMPLES = {
    "train": "musclelab train model=vnet trainer.max_epochs=30 | musclelab train -m seed=0,1,2",
    "transfer": "musclelab transfer study=phantom_sites study.sequence=all",
    "pretrain": "musclelab pretrain init=jigsaw data.n_train=8",
}

#: groups users do not choose on the command line (Hydra's own, and the study runner's internal ones)
_SKIP_GROUPS = ("hydra",)


def wants_help(args: list[str]) -> bool:
    """Whether ``args`` ask for this help (``-h``/``--help``; ``--hydra-help`` is Hydra's and passes through)."""
    return any(a in HELP_FLAGS for a in args)


def config_groups(config_dir: str) -> dict[str, list[str]]:
    """Every user-facing config group (nested ones as ``a/b``) and its options, internal ``_*`` files hidden,
    as Hydra's config loader sees them (plug-in groups included)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        groups: dict[str, list[str]] = {}

        def walk(parent: str) -> None:
            for name in sorted(loader.list_groups(parent)):
                group = f"{parent}/{name}" if parent else name
                if group.split("/")[0] in _SKIP_GROUPS:
                    continue
                options = sorted(o for o in loader.get_group_options(group) if not o.startswith("_"))
                if options:
                    groups[group] = options
                walk(group)

        walk("")
    return groups


def hydra_command_help(command: str, args: list[str], config_dir: str,
                       compose: Callable[[list[str]], object]) -> str:
    """The help text of ``musclelab <command>``: title, usage, config groups and the config ``args`` compose
    to (help flags and ``-m`` dropped)."""
    from omegaconf import OmegaConf

    overrides = [a for a in args if a not in (*HELP_FLAGS, "-m", "--multirun")]
    lines = [f"musclelab {command}: {SUMMARIES[command]}", "",
             f"usage: musclelab {command} [group=option ...] [key=value ...]"
             + (" [-m]" if command != "pretrain" else ""),
             f"  e.g. {EXAMPLES[command]}",
             *(["  --hydra-help: Hydra's own options (--cfg job, --info, -cd DIR, ...)"] if command != "pretrain" else []),
             "", "== Configuration groups (group=option) =="]
    lines += [f"{group}: {', '.join(options)}" for group, options in config_groups(config_dir).items()]
    lines += ["", "== Config (override any field: key=value; add one: +key=value) =="]
    try:
        cfg = compose(overrides)
        lines.append(OmegaConf.to_yaml(cfg).rstrip())
    except Exception as err:  # a bad override: say so, the groups above still help
        lines.append(f"(not composed: {str(err).splitlines()[0] if str(err) else type(err).__name__})")
    return "\n".join(lines)
