"""The error types of nlhf-zoo: one small hierarchy, so callers can tell a user's mistake from a bug.

Every error nlhf-zoo raises on purpose derives from :class:`NlhfError`; the command-line tool turns
them into one line on stderr (exit status 2) and lets any other exception keep its traceback,
because an unexpected exception is a bug to report, not a message to hide.

* :class:`GameError`: a game's data or arguments violate a property of the game;
  :class:`JudgeError`, one of them: a judge returned something that is not a probability per pair
  (NaN, infinity, a value outside [0, 1], the wrong number of values);
* :class:`ConfigError`: an agent configuration, a zoo file or a command-line value is invalid;
* :class:`CheckpointError`: a checkpoint file is missing, corrupt, foreign or inconsistent;
* :class:`EnvironmentSetupError`: the environment or machine cannot provide what was asked (an
  unknown environment id, an unavailable torch device, participants of different games);
* :class:`SolverError`: an exact solver could not verify its answer (it never returns an
  unverified one).

The first four also derive from :class:`ValueError` (and the last from :class:`ArithmeticError`),
so code written against the built-in types keeps working. This module imports nothing.
"""

from __future__ import annotations

__all__ = [
    "NlhfError",
    "GameError",
    "JudgeError",
    "ConfigError",
    "CheckpointError",
    "EnvironmentSetupError",
    "SolverError",
]


class NlhfError(Exception):
    """Base class of every error nlhf-zoo raises on purpose (the message says what and where)."""


class GameError(NlhfError, ValueError):
    """A game's data or arguments violate a property of the game (named in the message)."""


class JudgeError(GameError):
    """A judge's output is not one probability per pair (the message names the judge and the
    value); ``nlhf-zoo train`` stops on it as on Ctrl-C, with its state saved."""


class ConfigError(NlhfError, ValueError):
    """An agent configuration is invalid; the message names the key and the source."""


class CheckpointError(NlhfError, ValueError):
    """A checkpoint file is missing, corrupt, truncated, foreign or inconsistent (path and field named)."""


class EnvironmentSetupError(NlhfError, ValueError):
    """An environment or device cannot be set up as asked (unknown id, unavailable device, mismatch)."""


class SolverError(NlhfError, ArithmeticError):
    """An exact solver did not reach a verified solution (the message names the parameters)."""
