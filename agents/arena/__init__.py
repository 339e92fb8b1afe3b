"""The arena: agent-vs-agent tournaments, match play and meta-game statistics.

Layers inside the arena (each imports only those before it):

* :mod:`agents.arena.participants`: who plays (:class:`Participant`, a name and a
  :class:`~nlhf_envs.players.Player`), content fingerprints and the game a participant was trained on;
* :mod:`agents.arena.match`: one match, a pure function of a picklable :class:`MatchSpec`;
* :mod:`agents.arena.stats`: meta-game statistics as pure functions (Wilson intervals, cycle
  detection, Nash averaging, Bradley-Terry/Elo);
* :mod:`agents.arena.report`: :class:`TournamentResult` (markdown, CSV, JSON, heatmap);
* :mod:`agents.arena.tournament`: orchestration (:func:`run`, :func:`validate`, the resumable match
  log) and :mod:`agents.arena.distributed` (Ray).

    >>> from agents import arena
    >>> result = arena.run({"pi_ref": "pi_ref", "uniform": "uniform"}, "nlhf/BiasedRPS-v0",
    ...                    num_duels=100, seed=0)
"""

from agents.arena.match import MatchResult, MatchSpec, play_match
from agents.arena.participants import (
    Participant,
    as_participant,
    check_same_game,
    game_identity,
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
from agents.arena.tournament import (
    MatchLogWarning,
    canonical_pair,
    default_name,
    lock_folder,
    match_seed,
    named_participants,
    repair_match_log,
    run,
    unique_names,
    validate,
)

__all__ = [
    "MatchSpec",
    "MatchResult",
    "TournamentResult",
    "Participant",
    "IntransitivityWarning",
    "MatchLogWarning",
    "as_participant",
    "play_match",
    "run",
    "nash_averaging",
    "bradley_terry_ratings",
    "wilson_interval",
    "has_cycle",
    "participant_fingerprint",
    "game_identity",
    "check_same_game",
    "repair_match_log",
    "validate",
    "default_name",
    "named_participants",
    "unique_names",
    "canonical_pair",
    "match_seed",
    "lock_folder",
]
