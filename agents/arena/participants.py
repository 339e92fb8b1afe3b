"""Tournament participants: who plays, what identifies them, and which game they were trained on."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.api import AgentBase
from agents.checkpoint import load_agent
from nlhf_envs.errors import ConfigError, EnvironmentSetupError
from nlhf_envs.game import PreferenceGame
from nlhf_envs.players import TablePlayer, as_player


def matrix_game_of(env: Any) -> PreferenceGame | None:
    """The :class:`PreferenceGame` a (wrapped) matrix environment plays, else ``None``."""
    game = getattr(getattr(env, "unwrapped", env), "game", None)
    return game if isinstance(game, PreferenceGame) else None


# ---------------------------------------------------------------------------------- participants
@dataclass
class Participant:
    """A tournament entrant: a name and the :class:`~nlhf_envs.players.Player` that plays for it.

    Attributes:
        name: the label in tables.
        player: who plays the seat (made by :func:`as_participant` from whatever the user passed).
        source: the object the player was made from (agent, model, callable), or ``None`` for a fixed
            policy; its content identifies the participant (:func:`participant_fingerprint`) and the
            game it was trained on (:func:`check_same_game`).
    """

    name: str
    player: Any
    source: Any = None

    @property
    def fixed_policy(self) -> np.ndarray | None:
        """The ``(C, K)`` table of a fixed policy (``pi_ref``, ``uniform``, a vector), else ``None``."""
        return self.player.policy_table() if isinstance(self.player, TablePlayer) else None

    def exact_policy(self, game: PreferenceGame | None) -> np.ndarray | None:
        """The ``(C, K)`` policy if it is known exactly (fixed policies, tabular agents)."""
        if game is None:
            return None
        table = getattr(self.player, "policy_table", None)
        pi = table() if callable(table) else None
        if pi is None:
            return None
        pi = np.asarray(pi, dtype=np.float64)
        if pi.shape in ((game.num_actions,), (1, game.num_actions), game.shape):
            return np.array(game.as_policy(pi.reshape(game.shape)))
        return None

    def exact_token_policy(self, env: Any, split: str = "heldout") -> np.ndarray | None:
        """The exact ``(C, N)`` answer distribution of this participant on an enumerable token duel.

        Rows are the prompts of ``split``, columns the answers of
        :func:`nlhf_envs.text.exact.enumerate_answers`; computed by
        :func:`nlhf_envs.text.exact.sequence_policy` (as a token agent's exact ``nash_metrics``
        does) from the network that plays the seat: a token agent's ``model``, the reference
        player's language model, or any player that gives its next-token probabilities
        (``action_probabilities``, e.g. uniformly random answer words). ``None`` when ``env`` is not
        an enumerable token duel or the policy is not known (it puts mass outside the answers).
        """
        base = getattr(env, "unwrapped", env)
        if getattr(base, "world", None) is None:
            return None
        from nlhf_envs.text.exact import sequence_policy

        model = _token_network(self)
        if model is None:
            return None
        try:
            return sequence_policy(model, base, split)
        except ValueError:  # too many answers to enumerate, or mass outside the answers
            return None

    def act(self, observation: Any, rng: np.random.Generator) -> Any:
        """One action for ``observation``; the match's generator drives every random choice."""
        return self.player.act(observation, rng)

    def __deepcopy__(self, memo: dict[int, Any]) -> Participant:
        """A match plays a deep copy of the player (so it never changes the caller's objects); the
        source only identifies the participant and is shared."""
        return Participant(self.name, copy.deepcopy(self.player, memo), self.source)


def as_participant(
    name: str, spec: Any, game: PreferenceGame | None = None, env: Any = None
) -> Participant:
    """Normalise a participant spec (see the module docstring) through
    :func:`nlhf_envs.players.as_player`; ``"pi_ref"`` and ``"uniform"`` are the matrix game's fixed
    policies, and on the token duel (``env`` with a ``world``) its reference policy and uniformly
    random answer words (:mod:`nlhf_envs.text.players`).

    Raises:
        ConfigError: (a ``ValueError``) for a string that is neither ``"pi_ref"``, ``"uniform"`` nor a
            saved agent, a fixed policy of the wrong shape, or an object that cannot act.
    """
    if isinstance(spec, Participant):
        return spec
    if isinstance(spec, str):
        if spec in ("pi_ref", "uniform"):
            fixed = getattr(getattr(env, "unwrapped", env), "fixed_player", None)
            if game is None and callable(fixed):  # an env that seats them itself (HF token duel)
                seated = fixed(spec)
                return Participant(name, seated, seated)
            world = getattr(getattr(env, "unwrapped", env), "world", None)
            if game is None and world is not None:
                from nlhf_envs.text.players import ReferencePlayer, UniformAnswerPlayer

                seated = ReferencePlayer(world) if spec == "pi_ref" else UniformAnswerPlayer(world)
                return Participant(name, seated, seated)
            if game is None:
                raise ConfigError(
                    f"participant {name!r}: {spec!r} needs a matrix game or the token duel (for "
                    "other games pass an agent or a callable)"
                )
            C, K = game.shape
            pi = np.array(game.pi_ref) if spec == "pi_ref" else np.full((C, K), 1.0 / K)
            return Participant(name, TablePlayer(pi))
        if os.path.exists(spec):
            source = _detached(load_agent(spec))
            return Participant(name, as_player(source), source)
        raise ConfigError(
            f"participant {name!r}: {spec!r} is not 'pi_ref', 'uniform' or an existing checkpoint"
        )
    if isinstance(spec, (np.ndarray, list, tuple)):
        if game is None:
            raise ConfigError(f"participant {name!r}: a probability vector needs a matrix game")
        pi = np.asarray(spec, dtype=np.float64)
        try:
            pi = np.array(game.as_policy(pi))
        except ValueError as exc:
            raise ConfigError(f"participant {name!r}: {exc}") from None
        if pi.min() < 0 or np.abs(pi.sum(axis=1) - 1).max() > 1e-6:
            raise ConfigError(f"participant {name!r}: the policy must be a probability vector")
        return Participant(name, TablePlayer(pi))
    if hasattr(spec, "act") or hasattr(spec, "predict") or callable(spec):
        source = _detached(spec)
        try:
            player = as_player(source)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"participant {name!r}: {exc}") from None
        return Participant(name, player, source)
    raise ConfigError(
        f"participant {name!r}: cannot play a {type(spec).__name__} (expected an agent, a saved "
        "agent's path, 'pi_ref', 'uniform', a probability vector, an SB3 model or a callable)"
    )


def _token_network(participant: Participant) -> Any:
    """A policy with the token engine's signature (``policy(ids, attention_mask) -> (logits, _)``)
    that draws what ``participant`` plays in a token duel, else ``None``."""
    import torch

    source = participant.source
    model = getattr(source, "model", None)
    if getattr(source, "kind", None) == "text" and isinstance(model, torch.nn.Module):
        return model  # a token agent's seat samples from softmax(model logits) (its ``act``)
    player = participant.player
    if isinstance(getattr(player, "model", None), torch.nn.Module):
        return player.model  # the reference player
    if callable(getattr(player, "action_probabilities", None)):
        return _NextTokenPolicy(player)
    return None


class _NextTokenPolicy:
    """A token-duel player's ``action_probabilities`` as a policy of the engine's signature: the
    last-position log-probabilities of each row (prompt and answer prefix) of a batch."""

    def __init__(self, player: Any) -> None:
        self.player = player

    def __call__(self, input_ids: Any, attention_mask: Any = None) -> tuple[Any, None]:
        import torch

        ids = input_ids.cpu().numpy()
        mask = (
            np.ones_like(ids) if attention_mask is None else attention_mask.cpu().numpy()
        ).astype(np.int64)
        rows = []
        for k in range(ids.shape[0]):
            p = self.player.action_probabilities(np.stack([ids[k], mask[k]]))
            if p is None:
                raise ValueError("the player does not give its next-token probabilities")
            with np.errstate(divide="ignore"):
                rows.append(np.log(np.asarray(p, dtype=np.float64)))
        return torch.as_tensor(np.stack(rows))[:, None, :], None


def _detached(obj: Any) -> Any:
    """A zoo agent as a shallow copy without its TensorBoard logger (which holds locks and cannot be
    pickled); anything else (an SB3 model's ``logger`` is SB3's own, read-only) unchanged."""
    if isinstance(obj, AgentBase) and obj.logger is not None:
        obj = copy.copy(obj)
        obj.logger = None
    return obj


def _update_hash(h: Any, value: Any) -> bool:
    """Feed one attribute value into ``h``; ``False`` when its content cannot be hashed."""
    if isinstance(value, np.ndarray):
        h.update(repr((value.dtype.str, value.shape)).encode())
        h.update(np.ascontiguousarray(value).tobytes())
        return True
    if isinstance(value, (bool, int, float, str, type(None))):
        h.update(repr(value).encode())
        return True
    if isinstance(value, np.random.Generator):
        h.update(json.dumps(value.bit_generator.state, sort_keys=True, default=str).encode())
        return True
    if isinstance(value, PreferenceGame):
        h.update(value.fingerprint().encode())
        return True
    if isinstance(value, (list, tuple)):
        h.update(f"{type(value).__name__}:{len(value)}".encode())
        return all(_update_hash(h, item) for item in value)
    if isinstance(value, dict):
        h.update(f"dict:{len(value)}".encode())
        return all(
            _update_hash(h, str(k)) and _update_hash(h, v)
            for k, v in sorted(value.items(), key=str)
        )
    if hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
        # field by field (a config's values; a dataclass holding objects hashes only when each of
        # them has hashable content: never a repr, which would hash memory addresses)
        h.update(type(value).__qualname__.encode())
        return all(
            _update_hash(h, f) and _update_hash(h, getattr(value, f))
            for f in value.__dataclass_fields__
        )
    torch = __import__("sys").modules.get("torch")
    if torch is not None:
        if isinstance(value, torch.nn.Module):
            for key, tensor in value.state_dict().items():
                h.update(key.encode())
                h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            return True
        if isinstance(value, torch.Generator):
            h.update(value.get_state().numpy().tobytes())
            return True
    return False


def participant_fingerprint(participant: Participant) -> str | None:
    """A content hash of what a participant plays, or ``None`` when it cannot be known.

    Fixed policies hash their probabilities; agents and models hash every array, number, string,
    config dataclass, generator state and torch module they hold (the learned policy, the acting
    generator, the counters); a plain function hashes its code and constants. A tournament reuses
    a logged match only when both participants' fingerprints are unchanged, so a participant that
    was retrained (or replaced by another run under the same name) is replayed. ``None`` (an object
    with no hashable content) means its matches are always replayed.
    """
    h = hashlib.sha256()
    if participant.fixed_policy is not None:
        h.update(b"fixed-policy")
        _update_hash(h, np.asarray(participant.fixed_policy, dtype=np.float64))
        return h.hexdigest()[:16]
    obj = participant.source
    h.update(f"{type(obj).__module__}.{type(obj).__qualname__}".encode())
    code = getattr(obj, "__code__", None)
    if code is not None:  # a plain function or lambda
        h.update(code.co_code)
        h.update(repr(code.co_consts).encode())
        h.update(repr(getattr(obj, "__defaults__", None)).encode())
        return h.hexdigest()[:16]
    found = False
    for key, value in sorted(getattr(obj, "__dict__", {}).items()):
        if key in ("logger", "history"):
            continue  # not what the participant plays
        h.update(key.encode())
        found = _update_hash(h, value) or found
    return h.hexdigest()[:16] if found else None


def game_identity(obj: Any) -> tuple[str, str] | None:
    """``(fingerprint, description)`` of the game an agent or environment plays, if known.

    A matrix game is identified by :meth:`PreferenceGame.fingerprint` (shape, ``P``, ``pi_ref``,
    ``rho``, ``beta``); a text environment by its class, vocabulary, answer length and, when it
    provides one, its own ``fingerprint()``.
    """
    game = getattr(obj, "game", None)
    if game is None:
        game = matrix_game_of(obj) if hasattr(obj, "possible_agents") else None
    if isinstance(game, PreferenceGame):
        return game.fingerprint(), game.describe()
    env = obj if hasattr(obj, "possible_agents") else getattr(obj, "env", None)
    env = getattr(env, "unwrapped", env)
    if env is None or not hasattr(env, "possible_agents"):
        return None
    own = getattr(env, "fingerprint", None)
    space = env.action_space(env.possible_agents[0])
    parts = (
        type(env).__qualname__,
        int(getattr(space, "n", 0)),
        getattr(env, "max_new_tokens", None),
        own() if callable(own) else None,
    )
    digest = hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
    return (
        digest,
        f"{parts[0]} (vocabulary {parts[1]}, max_new_tokens={parts[2]}, fingerprint {digest})",
    )


def check_same_game(players: Sequence[Participant], env: Any, env_id: str) -> None:
    """Refuse participants trained on another game than the one ``env`` plays.

    Raises:
        EnvironmentSetupError: naming the participant, the game it was trained on and the game of
            ``env_id``.
    """
    played = game_identity(env)
    for p in players:
        own = game_identity(p.source) if p.source is not None else None
        if own is None or played is None:
            continue
        if own[0] != played[0]:
            raise EnvironmentSetupError(
                f"participant {p.name!r} was trained on {own[1]}, but {env_id} plays {played[1]}; "
                "every participant must share the tournament's game"
            )
