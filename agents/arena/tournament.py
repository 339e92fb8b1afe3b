"""Agent-vs-agent tournaments: round robin, win rates with confidence intervals, Nash averaging.

A tournament plays every pair of participants for ``num_duels`` duels in a PettingZoo preference
environment (seats alternate), and reports

* the win-rate matrix ``M[i, j]`` (fraction of duels ``i`` won against ``j``; ``M[i, i] = 1/2``) with
  95% Wilson confidence intervals;
* **Nash averaging** (Balduzzi et al., "Re-evaluating Evaluation", NeurIPS 2018): the
  maximum-entropy Nash equilibrium ``p`` of the antisymmetric meta-game ``A = M - 1/2`` and each
  participant's Nash-averaged score ``(A p)_i`` (0 for participants in the support, negative for
  the others). Unlike Elo, it is invariant to adding copies of a participant and is meaningful when
  strength is not transitive;
* Bradley-Terry / Elo ratings fitted to the duel counts, with a warning (and ``intransitive=True``)
  when the meta-game has a strict preference cycle, where any rating is misleading;
* the exact exploitability ``Expl_beta`` of every participant whose policy is known (matrix games).

Participants are zoo agents (anything with ``act(observation, deterministic=False)``), paths of saved
agents (:func:`agents.load`), the strings ``"pi_ref"`` and ``"uniform"`` (matrix games), a
probability vector, a Stable-Baselines3 model (anything with ``predict(obs, deterministic=...)``) or
a plain callable ``observation -> action``.

Every match is a pure function of a picklable :class:`MatchSpec` whose seed is derived from the
tournament seed and the pair, so results are identical whether matches run in this process, in any
order, resumed after an interruption, or on a Ray cluster (``use_ray=True``).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from agents.arena.match import MatchResult, MatchSpec, play_match
from agents.arena.participants import (
    Participant,
    as_participant,
    check_same_game,
    matrix_game_of,
    participant_fingerprint,
)
from agents.arena.report import TournamentResult
from agents.arena.stats import (
    IntransitivityWarning,
    bradley_terry_ratings,
    has_cycle,
    nash_averaging,
    wilson_interval,
)
from nlhf_envs.atomic import atomic_open
from nlhf_envs.errors import ConfigError, EnvironmentSetupError
from nlhf_envs.game import PreferenceGame


def _match_seed(seed: int, i: int, j: int) -> int:
    return int(np.random.SeedSequence([seed, i, j]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _fingerprint(
    env_id: str, env_kwargs: Mapping[str, Any], names: Sequence[str], n: int, seed: int
) -> str:
    def default(o: Any) -> Any:
        if isinstance(o, PreferenceGame):
            return o.fingerprint()
        return repr(o)

    blob = json.dumps(
        [env_id, dict(env_kwargs), list(names), n, seed], default=default, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_name(spec: Any) -> str:
    """The table name of a participant given without one: a zoo agent's registry name, a string
    spec itself (a path: its stem), an SB3 model's class name, a function's name, else ``policy``."""
    if isinstance(spec, str):
        return (
            spec if spec in ("pi_ref", "uniform") else os.path.splitext(os.path.basename(spec))[0]
        )
    if isinstance(spec, os.PathLike):
        return os.path.splitext(os.path.basename(os.fspath(spec)))[0]
    if isinstance(spec, Participant):
        return spec.name
    name = getattr(spec, "name", None)
    if isinstance(name, str) and name:
        return name
    if hasattr(spec, "predict") and hasattr(spec, "policy"):
        return type(spec).__name__.lower()
    fn = getattr(spec, "__name__", None)
    if callable(spec) and isinstance(fn, str) and fn != "<lambda>":
        return fn
    return "policy"


def unique_names(items: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Number repeated names (``nash_mp``, ``nash_mp#2``, ...)."""
    seen: dict[str, int] = {}
    out = []
    for name, obj in items:
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f"{name}#{seen[name]}", obj))
    return out


def named_participants(participants: Any) -> list[tuple[str, Any]]:
    """``{name: spec}``, ``[(name, spec), ...]`` or unnamed specs -> ``[(name, spec), ...]``.

    An item is named when it is a ``(str, spec)`` pair; other items are named by
    :func:`default_name`, repeats numbered (:func:`unique_names`). Explicit names are kept as given
    (duplicates among them are an error of :func:`run`).
    """
    if isinstance(participants, Mapping):
        return list(participants.items())
    explicit, items = [], []
    for item in participants:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            explicit.append(True)
            items.append(item)
        else:
            explicit.append(False)
            items.append((default_name(item), item))
    numbered = unique_names([it for it, e in zip(items, explicit, strict=True) if not e])
    it = iter(numbered)
    return [item if e else next(it) for item, e in zip(items, explicit, strict=True)]


def _prepare(
    participants: Mapping[str, Any] | Sequence[tuple[str, Any]],
    env: str,
    env_kwargs: Mapping[str, Any] | None,
    num_duels: int,
) -> tuple[list[tuple[str, Any]], list[Participant], Any, PreferenceGame | None, dict[str, Any]]:
    """Validate a tournament's arguments and build its participants and a probe environment."""
    import pettingzoo

    import nlhf_envs

    items = named_participants(participants)
    names = [str(n) for n, _ in items]
    if len(items) < 2:
        raise ConfigError(f"a tournament needs at least two participants; got {len(items)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"participant names must be unique; got {names}")
    if isinstance(num_duels, bool) or not isinstance(num_duels, (int, np.integer)) or num_duels < 1:
        raise ConfigError(f"num_duels must be a positive integer; got {num_duels!r}")
    from nlhf_envs.env_ids import HF_ENV_IDS

    if env not in nlhf_envs.registered_ids() and env not in HF_ENV_IDS:
        raise EnvironmentSetupError(
            f"unknown environment id {env!r}; registered: {', '.join(nlhf_envs.registered_ids())}"
        )
    env_kwargs = dict(env_kwargs or {})
    from agents.registry import user_env_kwargs

    with user_env_kwargs(env, env_kwargs):
        probe = pettingzoo.make("parallel", env, **env_kwargs)
    game = matrix_game_of(probe)
    players = [as_participant(name, spec, game, probe) for name, spec in items]
    check_same_game(players, probe, env)
    return items, players, probe, game, env_kwargs


def validate(
    participants: Mapping[str, Any] | Sequence[tuple[str, Any]],
    env: str = "nlhf/RPS-v0",
    *,
    env_kwargs: Mapping[str, Any] | None = None,
    num_duels: int = 200,
) -> None:
    """Check a tournament's arguments as :func:`run` does, without playing or writing anything.

    Raises:
        ConfigError, EnvironmentSetupError, GameValidationError: as :func:`run`.
    """
    _prepare(participants, env, env_kwargs, num_duels)


def run(
    participants: Mapping[str, Any] | Sequence[tuple[str, Any]],
    env: str = "nlhf/RPS-v0",
    *,
    env_kwargs: Mapping[str, Any] | None = None,
    num_duels: int = 200,
    seed: int = 0,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    use_ray: bool = False,
    ray_address: str | None = None,
    on_match: Callable[[MatchResult], None] | None = None,
) -> TournamentResult:
    """Round-robin tournament among ``participants`` on environment ``env``.

    Args:
        participants: ``{name: spec}``, ``[(name, spec), ...]`` or unnamed specs ``[agent_a,
            agent_b, ...]`` (named by :func:`default_name`; see :func:`as_participant`).
        env: a registered PettingZoo id (``"nlhf/RPS-v0"``, ``"nlhf/TokenDuel-v0"``, ...).
        env_kwargs: keyword arguments of the environment (e.g. ``game=PreferenceGame(...)``).
        num_duels: duels per pair (seats alternate).
        seed: tournament seed; each match's seed is derived from it and the pair.
        out_dir: if given, finished matches are appended to ``out_dir/matches.jsonl`` as they end
            (an interrupted tournament resumes from there without replaying them) and the
            markdown, CSV, JSON and heatmap outputs are written at the end.
        resume: reuse finished matches found in ``out_dir`` (only those of the same tournament:
            same env, kwargs, names, duels and seed, and only when both participants' content
            (:func:`participant_fingerprint`) is unchanged; a partial last line of the log is
            dropped first, see :func:`repair_match_log`).
        use_ray: distribute the matches over a Ray cluster (:func:`agents.arena.distributed.ray_map`).
        ray_address: the cluster address (``None``: start or reuse a local cluster).
        on_match: called with each :class:`MatchResult` as it finishes (progress bars).

    Returns:
        The :class:`TournamentResult`. Warns :class:`IntransitivityWarning` when the meta-game is
        intransitive.

    Raises:
        ValueError: fewer than two participants, duplicate names, ``num_duels < 1`` or a bad spec.
        EnvironmentSetupError: a participant was trained on another game than ``env`` plays.
    """
    items, players, probe, game, env_kwargs = _prepare(participants, env, env_kwargs, num_duels)
    names = [str(n) for n, _ in items]
    n = len(players)

    fingerprint = _fingerprint(env, env_kwargs, names, int(num_duels), int(seed))
    contents = [participant_fingerprint(p) for p in players]
    done: dict[tuple[int, int], MatchResult] = {}
    log_path = None
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        log_path = os.path.join(os.fspath(out_dir), "matches.jsonl")
        if resume and os.path.exists(log_path):
            repair_match_log(log_path)
            done = _read_match_log(log_path, fingerprint, contents)
        elif os.path.exists(log_path):
            os.remove(log_path)

    specs = [
        MatchSpec(
            i, j, players[i], players[j], env, env_kwargs, int(num_duels), _match_seed(seed, i, j)
        )
        for i in range(n)
        for j in range(i + 1, n)
        if (i, j) not in done
    ]

    def finished(result: MatchResult) -> None:
        done[(result.i, result.j)] = result
        if log_path is not None:
            with open(log_path, "a") as f:
                row = {
                    "fingerprint": fingerprint,
                    "participants": [contents[result.i], contents[result.j]],
                    **asdict(result),
                }
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
        if on_match is not None:
            on_match(result)

    if use_ray:
        from agents.arena.distributed import ray_map

        # results are logged as their tasks finish, so an interrupted Ray run resumes too
        ray_map(play_match, specs, address=ray_address, on_result=finished)
    else:
        for spec in specs:
            finished(play_match(spec))

    result = _summarise(names, done, n, env, int(seed), players, game)
    if result.intransitive:
        warnings.warn(
            "the tournament's meta-game is intransitive: Elo/Bradley-Terry ratings are "
            "misleading; rank by the Nash-averaged scores",
            IntransitivityWarning,
            stacklevel=2,
        )
    if out_dir is not None:
        result.write(out_dir)
    return result


def repair_match_log(path: str | os.PathLike[str]) -> int:
    """Drop the lines of a match log that are not complete JSON records; returns how many.

    An interrupted write can leave a partial last line (no newline); appending to it would glue
    the next record onto it. The log is rewritten atomically when something is dropped.
    """
    with open(path, "rb") as f:
        raw = f.read()
    keep: list[bytes] = []
    dropped = 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
            ok = isinstance(row, dict)
        except (UnicodeDecodeError, json.JSONDecodeError):
            ok = False
        if ok:
            keep.append(line)
        else:
            dropped += 1
    if dropped or (raw and not raw.endswith(b"\n")):
        with atomic_open(path, "wb") as f:
            f.write(b"".join(line + b"\n" for line in keep))
    return dropped


def _read_match_log(
    path: str, fingerprint: str, contents: Sequence[str | None]
) -> dict[tuple[int, int], MatchResult]:
    """Finished matches of this tournament whose two participants are unchanged."""
    done = {}
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # cannot happen after repair_match_log; replay to be safe
            if not isinstance(row, dict) or row.pop("fingerprint", None) != fingerprint:
                continue
            used = row.pop("participants", None)
            try:
                res = MatchResult(**row)
            except TypeError:
                continue
            if not (0 <= res.i < res.j < len(contents)):
                continue
            now = [contents[res.i], contents[res.j]]
            if None in now or used != now:
                continue  # a participant changed (or cannot be fingerprinted): replay
            done[(res.i, res.j)] = res
    return done


def _summarise(
    names: list[str],
    done: Mapping[tuple[int, int], MatchResult],
    n: int,
    env_id: str,
    seed: int,
    players: list[Participant],
    game: PreferenceGame | None,
) -> TournamentResult:
    W = np.zeros((n, n))
    N = np.zeros((n, n), dtype=np.int64)
    for (i, j), r in done.items():
        W[i, j] += r.wins
        W[j, i] += r.duels - r.wins
        N[i, j] = N[j, i] = r.duels
    with np.errstate(invalid="ignore", divide="ignore"):
        M = np.where(N > 0, W / np.maximum(N, 1), 0.5)
    np.fill_diagonal(M, 0.5)
    lo = np.full((n, n), 0.5)
    hi = np.full((n, n), 0.5)
    for i in range(n):
        for j in range(n):
            if i != j and N[i, j] > 0:
                lo[i, j], hi[i, j] = wilson_interval(W[i, j], int(N[i, j]))
    policies = [p.exact_policy(game) for p in players]
    exact_M = None
    if game is not None and all(pi is not None for pi in policies):
        # every policy is known: the meta-game is computed exactly, free of duel noise
        stack = np.stack(policies)  # (n, C, K)
        exact_M = np.einsum("x,ixk,xkl,jxl->ij", game.rho, stack, game.P, stack)
    nash, score = nash_averaging(exact_M if exact_M is not None else M)
    if exact_M is not None:
        intransitive = has_cycle(exact_M, margin=1e-9)
    else:  # a cycle among pairs whose preference is significant at 95%
        intransitive = has_cycle(np.where(lo > 0.5, 1.0, 0.0), margin=0.0)
    elo = bradley_terry_ratings(W, N)
    expl: list[float | None] = []
    for pi in policies:
        if pi is None or game is None:
            expl.append(None)
        else:
            from nlhf_envs.solvers import exploitability

            expl.append(float(exploitability(game, pi)))
    matches = [done[k] for k in sorted(done)]
    return TournamentResult(
        names, M, lo, hi, N, nash, score, elo, intransitive, expl, env_id, seed, matches, exact_M
    )
