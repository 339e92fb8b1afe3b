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

Every match is a pure function of a picklable :class:`MatchSpec`. Its seats and seed depend only
on the tournament seed and the two participants' names (:func:`canonical_pair`, :func:`match_seed`:
a SHA-256 digest, not list positions), so results are identical whether matches run in this
process, in any order, resumed after an interruption, or on a Ray cluster (``use_ray=True``); the
participants may be listed in any order (the win rate of ``(a, b)`` is ``1 -`` that of ``(b, a)``),
and a tournament with more participants reuses the matches of the old pairs from the match log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from agents.arena.match import MAX_DUELS, MatchResult, MatchSpec, play_match
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
from nlhf_envs.progress import Progress, reporter

#: The version tag hashed into every match seed and record (bump it if the derivation changes).
_SEED_TAG = "nlhf-zoo/arena/match/v2"

#: The Hugging Face token duel, whose matches are played in batches (:mod:`agents.arena.batched`)
HF_DUEL = "nlhf/HFTokenDuel-v0"
#: hashed into the records of its matches: a log written by the episode loop is replayed
BATCHED_PLAY = "batched-v1"


class MatchLogWarning(UserWarning):
    """A record of a tournament's ``matches.jsonl`` is damaged: its match is replayed."""


def canonical_pair(first: str, second: str) -> tuple[str, str]:
    """The seat order of a match between two named participants: sorted by name.

    Whatever the order of the participant list, the participant whose name sorts first sits as
    ``player_0`` in the match's even duels, so a match (and its seed, :func:`match_seed`) depends
    only on the two names.
    """
    if first == second:
        raise ValueError(f"a match needs two different participants; got {first!r} twice")
    return (first, second) if first < second else (second, first)


def match_seed(seed: int, first: str, second: str) -> int:
    """The seed of the match between the participants named ``first`` and ``second``.

    A SHA-256 digest of the tournament seed and the canonically ordered pair of names
    (:func:`canonical_pair`), cut to 63 bits: the same for any order of the participant list and
    in any tournament holding both names, so a superset tournament reuses the matches already
    played, and stable across Python processes and versions (unlike the salted ``hash()``).
    """
    a, b = canonical_pair(first, second)
    blob = json.dumps([_SEED_TAG, int(seed), a, b], ensure_ascii=True).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") >> 1


def _spec_fingerprint(
    env_id: str, env_kwargs: Mapping[str, Any], n: int, seed: int, content: str | None = None
) -> str:
    """What every match of a tournament shares (env, its arguments, duels per pair, seed) and the
    content of the game it plays (``content``: the matrix game's or the env's own fingerprint, so a
    model or judge folder whose files changed under the same path is not reused)."""

    def default(o: Any) -> Any:
        if isinstance(o, PreferenceGame):
            return o.fingerprint()
        return repr(o)

    blob = json.dumps(
        [_SEED_TAG, env_id, dict(env_kwargs), int(n), int(seed), content],
        default=default,
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _record_digest(row: Mapping[str, Any]) -> str:
    """A checksum of a match record's fields (all but ``check``), to detect damaged lines."""
    body = {k: v for k, v in row.items() if k != "check"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


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
    env_instance: Any = None,
) -> tuple[list[tuple[str, Any]], list[Participant], Any, PreferenceGame | None, dict[str, Any]]:
    """Validate a tournament's arguments and build its participants and its environment (the
    one every match plays: built here unless ``env_instance`` is given)."""
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
    if num_duels > MAX_DUELS:
        raise ConfigError(f"num_duels must be at most {MAX_DUELS:,} per pair; got {num_duels:,}")
    from nlhf_envs.env_ids import HF_ENV_IDS

    if env not in nlhf_envs.registered_ids() and env not in HF_ENV_IDS:
        raise EnvironmentSetupError(
            f"unknown environment id {env!r}; registered: {', '.join(nlhf_envs.registered_ids())}"
        )
    env_kwargs = dict(env_kwargs or {})
    from agents.registry import user_env_kwargs

    if env_instance is not None:
        probe = env_instance
    else:
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
) -> Any:
    """Check a tournament's arguments as :func:`run` does, without playing or writing anything.

    Returns:
        The environment built for the check: pass it to :func:`run` as ``env_instance`` so the
        tournament does not build it (and load its models) again.

    Raises:
        ConfigError, EnvironmentSetupError, GameValidationError: as :func:`run`.
    """
    return _prepare(participants, env, env_kwargs, num_duels)[2]


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
    env_instance: Any = None,
    progress: Progress = None,
) -> TournamentResult:
    """Round-robin tournament among ``participants`` on environment ``env``.

    The environment is built once (its reference model and judge loaded once) and every local
    match is played in it; each participant is loaded once by whoever passes it. On the Hugging
    Face token duel the duels of a match are played in batches (:mod:`agents.arena.batched`).

    Args:
        participants: ``{name: spec}``, ``[(name, spec), ...]`` or unnamed specs ``[agent_a,
            agent_b, ...]`` (named by :func:`default_name`; see :func:`as_participant`).
        env: a registered PettingZoo id (``"nlhf/RPS-v0"``, ``"nlhf/TokenDuel-v0"``, ...).
        env_kwargs: keyword arguments of the environment (e.g. ``game=PreferenceGame(...)``).
        num_duels: duels per pair (seats alternate).
        seed: tournament seed; each match's seed is derived from it and the two participants'
            names (:func:`match_seed`).
        out_dir: if given, finished matches are appended to ``out_dir/matches.jsonl`` as they end
            (an interrupted tournament resumes from there without replaying them) and the
            markdown, CSV, JSON and heatmap outputs are written at the end. The folder is locked
            while the tournament runs (:func:`lock_folder`): a second tournament writing into it
            at the same time is refused.
        resume: reuse finished matches found in ``out_dir``: those of a tournament with the same
            env, kwargs, duels per pair and seed, between two participants of this one (by name,
            in any order, so a superset tournament reuses them) whose content
            (:func:`participant_fingerprint`) is unchanged. Every record is checked first (its
            checksum, ``0 <= wins <= duels``, whole wins where duels score 0 or 1, the duel count,
            the probabilities and the match seed); a damaged one is replayed with a
            :class:`MatchLogWarning` naming the file and line (see :func:`repair_match_log` for a
            partial last line).
        use_ray: distribute the matches over a Ray cluster (:func:`agents.arena.distributed.ray_map`).
        ray_address: the cluster address (``None``: start or reuse a local cluster).
        on_match: called with each :class:`MatchResult` as it finishes (progress bars).
        env_instance: the environment ``env`` with ``env_kwargs`` already built (e.g. by
            :func:`validate`), played instead of building another one. Ray workers build their
            own (once per match).
        progress: ``None`` (silent), ``True`` (a bar on stderr) or a callable receiving
            :class:`~nlhf_envs.progress.ProgressEvent` objects (task ``"tournament"``, unit
            ``"matches"``: the matches to play, those reused from ``out_dir`` excluded).

    Returns:
        The :class:`TournamentResult`. Warns :class:`IntransitivityWarning` when the meta-game is
        intransitive.

    Raises:
        ValueError: fewer than two participants, duplicate names, ``num_duels < 1`` or a bad spec.
        EnvironmentSetupError: a participant was trained on another game than ``env`` plays, or
            another tournament is writing into ``out_dir``.
    """
    items, players, probe, game, env_kwargs = _prepare(
        participants, env, env_kwargs, num_duels, env_instance
    )
    names = [str(n) for n, _ in items]
    with contextlib.ExitStack() as stack:
        if out_dir is not None:
            os.makedirs(out_dir, exist_ok=True)
            stack.enter_context(lock_folder(out_dir))
        result = _play(
            names,
            players,
            probe,
            game,
            env,
            env_kwargs,
            int(num_duels),
            int(seed),
            out_dir,
            resume,
            use_ray,
            ray_address,
            on_match,
            progress,
        )
        if out_dir is not None:
            result.write(out_dir)
    if result.intransitive:
        warnings.warn(
            "the tournament's meta-game is intransitive: Elo/Bradley-Terry ratings are "
            "misleading; rank by the Nash-averaged scores",
            IntransitivityWarning,
            stacklevel=2,
        )
    return result


def _play(
    names: list[str],
    players: list[Participant],
    probe: Any,
    game: PreferenceGame | None,
    env: str,
    env_kwargs: dict[str, Any],
    num_duels: int,
    seed: int,
    out_dir: str | os.PathLike[str] | None,
    resume: bool,
    use_ray: bool,
    ray_address: str | None,
    on_match: Callable[[MatchResult], None] | None,
    progress: Progress = None,
) -> TournamentResult:
    """Play (or reuse from the log) every match of a tournament and summarise it."""
    n = len(players)
    own = getattr(probe, "fingerprint", None)
    content = game.fingerprint() if game is not None else own() if callable(own) else None
    if getattr(getattr(probe, "unwrapped", probe), "metadata", {}).get("name") == HF_DUEL:
        content = f"{content}/{BATCHED_PLAY}"  # matches played in batches: older records replay
    spec_fp = _spec_fingerprint(env, env_kwargs, num_duels, seed, content)
    contents = {name: participant_fingerprint(p) for name, p in zip(names, players, strict=True)}
    index = {name: k for k, name in enumerate(names)}
    # every pair once, in its canonical seat order (names sorted): (first index, second index)
    pairs = []
    for i in range(n):
        for j in range(i + 1, n):
            a, b = canonical_pair(names[i], names[j])
            pairs.append((index[a], index[b]))
    done: dict[tuple[int, int], MatchResult] = {}
    log_path = None
    if out_dir is not None:
        log_path = os.path.join(os.fspath(out_dir), "matches.jsonl")
        if resume and os.path.exists(log_path):
            repair_match_log(log_path)
            expected = _Expected(spec_fp, num_duels, seed, contents, _integral_wins(probe))
            for (a, b), res in _read_match_log(log_path, expected).items():
                if a in index and b in index:
                    i, j = index[a], index[b]
                    done[(i, j)] = dataclasses.replace(res, i=i, j=j)
        elif os.path.exists(log_path):
            os.remove(log_path)

    specs = [
        MatchSpec(
            i,
            j,
            players[i],
            players[j],
            env,
            env_kwargs,
            num_duels,
            match_seed(seed, names[i], names[j]),
        )
        for i, j in pairs
        if (i, j) not in done
    ]

    def finished(result: MatchResult) -> None:
        done[(result.i, result.j)] = result
        if log_path is not None:
            a, b = names[result.i], names[result.j]
            row: dict[str, Any] = {
                "format": _LOG_FORMAT,
                "spec": spec_fp,
                "names": [a, b],
                "participants": [contents[a], contents[b]],
                "seed": result.seed,
                "wins": result.wins,
                "duels": result.duels,
                "mean_prob": result.mean_prob,
                "mean_true_prob": result.mean_true_prob,
            }
            row["check"] = _record_digest(row)
            with open(log_path, "a") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
        if on_match is not None:
            on_match(result)
        bar.advance()

    with reporter(progress, "tournament", len(specs), "matches") as bar:
        if use_ray:
            from agents.arena.distributed import ray_map

            # results are logged as their tasks finish, so an interrupted Ray run resumes too
            ray_map(play_match, specs, address=ray_address, on_result=finished)
        else:
            for spec in specs:  # every match in the one environment of the tournament
                finished(play_match(spec, env=probe))

    return _summarise(names, done, n, env, seed, players, game, probe)


@contextlib.contextmanager
def lock_folder(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on a tournament's output folder (``.tournament.lock``) while inside.

    The lock is a non-blocking ``fcntl.flock`` on a file in the folder: released by the operating
    system when the holder exits, even after a kill, so a stale lock file never blocks anyone. On a
    platform without ``fcntl`` (Windows) nothing is locked.

    Raises:
        EnvironmentSetupError: another process (or another tournament of this process) holds the
            folder; the message names it.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover (Windows)
        yield
        return
    path = os.path.join(os.fspath(folder), ".tournament.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EnvironmentSetupError(
                f"another tournament is writing to {os.fspath(folder)} (it holds {path}); wait "
                "for it to finish or choose another output folder"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def repair_match_log(path: str | os.PathLike[str]) -> int:
    """Drop the lines of a match log that are not complete JSON records; returns how many.

    An interrupted write can leave a partial last line (no newline); appending to it would glue
    the next record onto it, so it is dropped silently (its match is replayed). An unreadable line
    elsewhere is damage, not an interruption: it is dropped with a :class:`MatchLogWarning` naming
    the file and line and kept in ``matches.rejected.jsonl`` beside the log. The log is rewritten
    atomically when something is dropped.
    """
    with open(path, "rb") as f:
        raw = f.read()
    keep: list[bytes] = []
    bad: list[tuple[int, bytes]] = []
    lines = raw.split(b"\n")
    for lineno, line in enumerate(lines, 1):
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
            bad.append((lineno, line))
    partial = raw and not raw.endswith(b"\n")
    damaged = [(k, line) for k, line in bad if not (partial and k == len(lines))]
    if damaged:
        warnings.warn(
            f"{os.fspath(path)}: line(s) {', '.join(str(k) for k, _ in damaged)} are not match "
            "records (damaged); their matches are replayed and the lines moved to "
            "matches.rejected.jsonl",
            MatchLogWarning,
            stacklevel=3,
        )
        with open(_rejected_path(os.fspath(path)), "ab") as f:
            f.write(b"".join(line + b"\n" for _, line in damaged))
            f.flush()
            os.fsync(f.fileno())
    if bad or partial:
        with atomic_open(path, "wb") as f:
            f.write(b"".join(line + b"\n" for line in keep))
    return len(bad)


_LOG_FORMAT = 2
_RECORD_KEYS = frozenset(
    {
        "format",
        "spec",
        "names",
        "participants",
        "seed",
        "wins",
        "duels",
        "mean_prob",
        "mean_true_prob",
        "check",
    }
)


@dataclasses.dataclass(frozen=True)
class _Expected:
    """What a reusable record of this tournament must hold."""

    spec: str
    num_duels: int
    seed: int
    contents: Mapping[str, str | None]
    integral: bool


def _integral_wins(env: Any) -> bool:
    """Whether every duel of ``env`` scores 0 or 1 (one round, outcome rewards): wins are whole."""
    base = getattr(env, "unwrapped", env)
    return (
        getattr(base, "reward_mode", "outcome") in ("outcome", "centered")
        and getattr(base, "num_rounds", 1) == 1
    )


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _record_problem(row: dict[str, Any], exp: _Expected) -> str | None:
    """Why a record of this tournament (its ``spec`` matches) cannot be reused, else ``None``."""
    if set(row) != _RECORD_KEYS:
        return f"unexpected fields {sorted(set(row) ^ _RECORD_KEYS)}"
    if row["check"] != _record_digest(row):
        return "its checksum does not match its content (the line was edited or damaged)"
    names = row["names"]
    if not (
        isinstance(names, list)
        and len(names) == 2
        and all(isinstance(x, str) for x in names)
        and names[0] < names[1]
    ):
        return f"names must be two participant names in sorted order; got {names!r}"
    duels, wins = row["duels"], row["wins"]
    if not isinstance(duels, int) or isinstance(duels, bool) or duels != exp.num_duels:
        return f"duels must be {exp.num_duels} (the tournament's duels per pair); got {duels!r}"
    if not _is_number(wins) or not math.isfinite(wins) or not 0 <= wins <= duels:
        return f"wins must be a number in [0, {duels}]; got {wins!r}"
    if exp.integral and float(wins) != int(wins):
        return f"wins must be a whole number (every duel scores 0 or 1); got {wins!r}"
    for key in ("mean_prob", "mean_true_prob"):
        v = row[key]
        if not _is_number(v) or not (math.isnan(v) or 0.0 <= v <= 1.0):
            return f"{key} must be a probability or NaN; got {v!r}"
    if row["seed"] != match_seed(exp.seed, names[0], names[1]):
        return f"seed {row['seed']!r} is not the match seed of {names[0]!r} vs {names[1]!r}"
    return None


def _read_match_log(path: str, exp: _Expected) -> dict[tuple[str, str], MatchResult]:
    """Finished matches of this tournament, keyed by their canonical pair of names.

    A record is reused when it belongs to this tournament (same env, kwargs, duels and seed), both
    participants' content is unchanged and it passes :func:`_record_problem`. Records of other
    tournaments, of a participant that changed or of an older log format are skipped silently
    (they are replayed). A damaged record (checksum, counts, probabilities or seed wrong) is
    replayed with a :class:`MatchLogWarning` naming the file and line; the damaged lines are moved
    out of the log into ``matches.rejected.jsonl`` beside it, so nothing is lost and the warning
    is not repeated.
    """
    done: dict[tuple[str, str], MatchResult] = {}
    keep: list[str] = []
    rejected: list[str] = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for lineno, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None  # cannot happen after repair_match_log
        if not isinstance(row, dict) or row.get("format") != _LOG_FORMAT:
            keep.append(line)
            continue  # an older log format: its matches are replayed
        if row.get("spec") != exp.spec:
            keep.append(line)
            continue  # another tournament's match
        problem = _record_problem(row, exp)
        if problem is not None:
            warnings.warn(
                f"{path}:{lineno}: damaged match record ({problem}); the match is replayed and "
                f"the line moved to {os.path.basename(_rejected_path(path))}",
                MatchLogWarning,
                stacklevel=4,
            )
            rejected.append(line)
            continue
        keep.append(line)
        a, b = row["names"]
        now = [exp.contents.get(a), exp.contents.get(b)]
        if None in now or row["participants"] != now:
            continue  # a participant changed, cannot be fingerprinted or is absent: replay
        done[(a, b)] = MatchResult(
            -1,
            -1,
            float(row["wins"]),
            int(row["duels"]),
            float(row["mean_prob"]),
            int(row["seed"]),
            float(row["mean_true_prob"]),
        )
    if rejected:
        with open(_rejected_path(path), "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in rejected))
            f.flush()
            os.fsync(f.fileno())
        with atomic_open(path, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in keep))
    return done


def _rejected_path(path: str) -> str:
    return os.path.join(os.path.dirname(path), "matches.rejected.jsonl")


def _summarise(
    names: list[str],
    done: Mapping[tuple[int, int], MatchResult],
    n: int,
    env_id: str,
    seed: int,
    players: list[Participant],
    game: PreferenceGame | None,
    probe: Any = None,
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
    if game is None and probe is not None:
        expl = _token_exploitability(players, probe)
    matches = [done[k] for k in sorted(done)]
    return TournamentResult(
        names, M, lo, hi, N, nash, score, elo, intransitive, expl, env_id, seed, matches, exact_M
    )


def _token_exploitability(players: list[Participant], env: Any) -> list[float | None]:
    """Exact ``Expl_beta`` of each participant on an enumerable token duel, else ``None`` each.

    The exact game is the duel's own (:func:`nlhf_envs.text.exact.exact_game`: held-out prompts,
    the judge the env pays, the env's ``beta``), the game a token agent's exact ``nash_metrics``
    measures with the zoo's default ``payer="judge"``; each participant's answer distribution comes
    from :meth:`Participant.exact_token_policy`.
    """
    base = getattr(env, "unwrapped", env)
    if getattr(base, "world", None) is None:
        return [None] * len(players)
    from nlhf_envs.solvers import exploitability
    from nlhf_envs.text.exact import exact_game

    try:
        token_game = exact_game(base, "heldout")
    except ValueError:  # too many answers to enumerate: no exact figure
        return [None] * len(players)
    out: list[float | None] = []
    for p in players:
        pi = p.exact_token_policy(base, "heldout")
        out.append(None if pi is None else float(exploitability(token_game, pi)))
    return out
