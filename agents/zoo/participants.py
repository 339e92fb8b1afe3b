"""The participants of ``nlhf-zoo eval`` and ``tournament`` and the environment they play.

A participant spec (``pi_ref``, ``uniform``, ``zoo:AGENT``, a probability vector, a checkpoint, a
train run folder, an SB3 ``.zip`` or a Hugging Face model folder) becomes the object the arena
plays (:func:`_resolve_participant`); :func:`_match_env` picks the game they all play.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from agents.zoo.common import (
    UserError,
)
from agents.zoo.train import train_run
from nlhf_envs.errors import EnvironmentSetupError


def _recorded_env(path: Path) -> tuple[str, dict[str, Any]] | None:
    """``(env_id, env_kwargs)`` from the ``config.yml`` of the train run holding ``path`` (a
    damaged one is a one-line error naming it: :func:`agents.zoo.train.recorded_env`)."""
    from agents.zoo.train import recorded_env

    for folder in (path.parent, path.parent.parent):  # run/final.npz, run/checkpoints/x.npz
        cfg = folder / "config.yml"
        if cfg.is_file():
            return recorded_env(cfg)
    return None


#: ``nlhf/HFTokenDuel-v0`` arguments that name a folder, and a file, when given as text
HF_FOLDER_ARGS = ("reference", "tokenizer", "judge")
HF_FILE_ARGS = ("prompts", "heldout_prompts", "validation_prompts")

#: what a participant spec may be (the message of a spec that is none of them)
SPEC_KINDS = (
    "expected pi_ref, uniform, zoo:AGENT, a probability vector (0.2,0.3,0.5), a checkpoint file, an "
    "SB3 model (.zip) or a train run folder"
)


def check_paths(specs: list[str], env_id: str | None, env_kwargs: dict[str, Any]) -> None:
    """Refuse, before anything is loaded or imported (torch, ``transformers``), a participant
    path that does not exist, an unknown ``--env`` and, on ``nlhf/HFTokenDuel-v0``, an
    ``--env-kwargs`` folder (``reference``, ``tokenizer``, ``judge``) or prompt file that does not
    exist: one line naming the spec or argument and the path.

    Raises:
        UserError, EnvironmentSetupError: as above (an unknown id: the latter).
    """
    for spec in specs:
        name, sep, value = spec.partition("=")
        value = value if sep else spec
        if value in ("pi_ref", "uniform") or value.startswith("zoo:"):
            continue
        if _probability_vector(value) is None and not Path(value).exists():
            raise UserError(f"participant {spec!r}: {SPEC_KINDS}; {value} does not exist")
    if env_id is None:
        return
    import nlhf_envs
    from nlhf_envs.env_ids import HF_ENV_IDS

    if env_id not in nlhf_envs.registered_ids() and env_id not in HF_ENV_IDS:
        raise EnvironmentSetupError(  # the words of agents.arena.run's own check
            f"unknown environment id {env_id!r}; registered: "
            f"{', '.join(nlhf_envs.registered_ids())}"
        )
    if env_id not in HF_ENV_IDS:
        return
    for key in HF_FOLDER_ARGS + HF_FILE_ARGS:
        value = env_kwargs.get(key)
        if not isinstance(value, str):
            continue
        path = Path(value)
        if key in HF_FOLDER_ARGS and not path.is_dir():
            raise UserError(f"--env-kwargs {key}: no folder at {path}")
        if key in HF_FILE_ARGS and not path.is_file():
            raise UserError(f"--env-kwargs {key}: no file at {path}")


def _resolve_participant(
    spec: str, env_id: str | None, args: argparse.Namespace
) -> tuple[str, Any, tuple[str, dict[str, Any]] | None]:
    """``name=spec`` or ``spec`` -> ``(name, object, recorded env)`` for the tournament runner."""
    name, sep, value = spec.partition("=")
    if not sep:
        name, value = "", spec
    if value in ("pi_ref", "uniform"):
        return name or value, value, None
    if value.startswith("zoo:"):
        agent_name = value[4:]
        train_env = env_id or "nlhf/RPS-v0"
        agent, run_dir = train_run(
            agent_name,
            train_env,
            seed=args.seed,
            log_folder=args.log_folder,
            num_queries=getattr(args, "train_queries", None),
            progress=not args.no_progress,
        )
        return name or agent_name, agent, _recorded_env(run_dir / "final.npz")
    vector = _probability_vector(value)
    if vector is not None:
        return name or "policy", vector, None
    path = Path(value)
    from agents.zoo.hf_participants import load_hf_participant

    hf_model = load_hf_participant(path, spec)  # a Hugging Face model or PEFT adapter folder
    if hf_model is not None:
        return name or path.name, hf_model, None
    if path.is_dir() and (path / "final.npz").exists():
        path = path / "final.npz"
    if not path.exists():
        raise UserError(f"participant {spec!r}: {SPEC_KINDS}")
    if path.suffix == ".zip":
        trust = bool(getattr(args, "trust_pickle", False))
        return name or path.stem, _load_sb3_model(path, spec, trust), None
    import agents

    loaded = agents.load(path)
    return name or getattr(loaded, "name", "") or path.stem, loaded, _recorded_env(path)


def _probability_vector(value: str) -> Any:
    """``"0.2,0.3,0.5"`` (or with brackets) -> a float array; ``None`` when ``value`` is not one.

    Raises:
        UserError: for numbers that are not a probability vector (not finite, negative, or not
            summing to 1 within ``1e-6``).
    """
    import numpy as np

    text = value.strip().strip("[]()")
    parts = [p.strip() for p in text.split(",")]
    if len(parts) < 2:
        return None
    try:
        vector = np.array([float(p) for p in parts])
    except ValueError:
        return None
    bad = np.flatnonzero(~np.isfinite(vector) | (vector < 0))
    if bad.size:
        i = int(bad[0])
        raise UserError(
            f"probability vector {value!r}: entry {i} is {parts[i]}; probabilities must be finite "
            "and >= 0"
        )
    total = float(vector.sum())
    if abs(total - 1.0) > 1e-6:
        raise UserError(f"probability vector {value!r}: sums to {total:.6g}, not 1")
    return vector


def _load_sb3_model(path: Path, spec: str, trust_pickle: bool = False) -> Any:
    """A Stable-Baselines3 PPO, A2C or DQN model saved with ``model.save(path)``, rebuilt without
    unpickling unless ``--trust-pickle`` (:func:`agents.sb3.files.load_sb3_model`)."""
    try:
        from agents.sb3.files import load_sb3_model
    except ImportError:
        raise UserError(
            f"participant {spec!r}: loading an SB3 model needs stable-baselines3"
        ) from None
    return load_sb3_model(path, trust_pickle=trust_pickle)


def _match_env(
    parts: list[tuple[str, Any]],
    recorded: list[tuple[str, dict[str, Any]] | None],
    env_arg: str | None,
    env_kwargs: dict[str, Any],
) -> tuple[str, dict[str, Any]]:
    """The environment a set of participants plays (see ``tournament --help``).

    Participants trained on different games are refused. Without ``--env`` the game they were
    trained on is played: the env id and arguments their run recorded, or ``nlhf/MatrixGame-v0``
    with their game. With ``--env`` that env is played (with the recorded arguments when the id is
    the recorded one and no ``--env-kwargs`` are given); :func:`agents.arena.run` then refuses
    it unless it is the participants' game.
    """
    from nlhf_envs.game import PreferenceGame

    games = [(n, o.game) for n, o in parts if isinstance(getattr(o, "game", None), PreferenceGame)]
    for name, game in games[1:]:
        if game.fingerprint() != games[0][1].fingerprint():
            raise EnvironmentSetupError(
                f"participants were trained on different games: {games[0][0]!r} on "
                f"{games[0][1].describe()}, {name!r} on {game.describe()}"
            )
    envs = {(r[0], yaml.safe_dump(r[1], sort_keys=True)): r for r in recorded if r is not None}
    only = next(iter(envs.values())) if len(envs) == 1 else None
    if env_arg is not None:
        if not env_kwargs and only is not None and only[0] == env_arg:
            return env_arg, dict(only[1])
        return env_arg, env_kwargs
    if only is not None and not env_kwargs:
        return only[0], dict(only[1])
    if games:
        if env_kwargs:
            raise UserError("--env-kwargs needs --env")
        return "nlhf/MatrixGame-v0", {"game": games[0][1]}
    if any(getattr(o, "kind", None) == "text" for _, o in parts):
        return "nlhf/TokenDuel-v0", env_kwargs
    return "nlhf/RPS-v0", env_kwargs
