"""``nlhf-zoo list``: registered environment ids, game families, agents and zoo configs."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_list(args: argparse.Namespace) -> int:
    """``nlhf-zoo list``: print the environment ids, game families, agents and zoo configs;
    ``0``.

    Raises:
        ConfigError: for a ``--conf-dir`` that is not a folder (before anything is printed).
    """
    import nlhf_envs
    from agents.zoo import configs as zoo
    from nlhf_envs.errors import ConfigError

    if args.conf_dir and not Path(args.conf_dir).is_dir():
        raise ConfigError(f"--conf-dir {args.conf_dir}: no such folder")

    print("Environment ids (pettingzoo.make('parallel' | 'aec', ID)):")
    for env_id in nlhf_envs.registered_ids():
        print(f"  {env_id}")
    print("Game families (nlhf_envs.make_game):")
    print("  " + ", ".join(nlhf_envs.FAMILIES))
    import agents

    print("Agents (agents.make):")
    for kind in ("matrix", "text"):
        names = agents.available(kind)
        if names:
            print(f"  {kind}: " + ", ".join(names))
    folder = Path(args.conf_dir) if args.conf_dir else zoo.default_config_dir()
    print(f"Zoo configs ({folder}):")
    for path in sorted(folder.glob("*.yml")):
        entries = [k for k in zoo.load_yaml(path) if k != "default"]
        print(f"  {path.stem}: default, " + ", ".join(entries))
    return 0
