"""OpenSpiel interop: symmetric constant-sum matrix games to preference games and back.

Needs the optional extra ``openspiel`` (``pip install 'nlhf-zoo[openspiel]'``); ``pyspiel`` is imported
only when a function here is called, and a missing installation raises an :class:`ImportError`
naming the extra. The entry points are :meth:`nlhf_envs.game.PreferenceGame.from_pyspiel` and
:meth:`nlhf_envs.game.PreferenceGame.to_pyspiel`, which call :func:`preference_matrix` and
:func:`to_pyspiel` (this module imports no other nlhf-zoo module than :mod:`nlhf_envs.errors`, so
the two methods of the game do not make an import cycle).

**OpenSpiel to preferences.** A two-player normal-form game with row payoffs ``R`` and column
payoffs ``Q`` (``Q[i, j]``: the column player's payoff when the row player plays ``i`` and the
column player ``j``) is accepted when it is

* *constant-sum*: ``R + Q = c`` for one constant ``c``, and
* *symmetric*: ``Q = R^T`` (the column player's payoffs are the row player's, seats swapped).

Then ``u = R - c/2`` is antisymmetric (``u + u^T = R + Q - c = 0``, so ``diag(u) = 0``) and

    P = 1/2 + u / (2 s),    s = payoff_scale (default ``max |u|``; 1 when ``u = 0``),

is a preference matrix: ``P + P^T = 1``, ``diag(P) = 1/2`` and ``P`` in ``[0, 1]`` iff
``s >= max |u|``. The map is affine and increasing, so it keeps best responses and Nash equilibria:
``P pi = 1/2 + u pi / (2 s)`` on the simplex. A payoff advantage ``u = s`` means "always preferred"
(``P = 1``). OpenSpiel's ``matrix_rps`` gives the zoo's ``rps`` and ``matrix_brps`` its
``biased_rps`` (``P = 1/2 + M / 100``) exactly.

**Preferences to OpenSpiel.** :func:`to_pyspiel` builds the zero-sum matrix game with row payoffs

    u = s (A - A^T),    A = P_x - 1/2,    column payoffs -u = u^T,

i.e. ``u = 2 s (P_x - 1/2)`` (default ``s = 1/2``: the payoff is the win-rate advantage
``P_x - 1/2``), written exactly antisymmetric in float64 so that OpenSpiel infers a zero-sum game.
The zero-sum form (rather than the constant-sum ``(P, 1 - P)``) is chosen because it is
OpenSpiel's own form of ``matrix_rps``/``matrix_brps`` and the game value is 0; OpenSpiel's
exploitability subtracts ``utility_sum()`` and gives the same number for either form. For a policy
``pi`` played by both seats, OpenSpiel's ``exploitability`` (NashConv / 2) is then

    exploitability_OpenSpiel(pi) = max_y (u pi)_y = 2 s (max_y (P_x pi)_y - 1/2)
                                 = 2 s * nlhf_envs.solvers.unregularized_exploitability(game, pi),

equal for the default ``s = 1/2`` (``tests/nlhf_envs/test_openspiel.py`` asserts it to ``1e-9``).
``from_pyspiel(to_pyspiel(g, payoff_scale=s), payoff_scale=s)`` gives back ``P`` (to rounding).

What does not carry over: ``beta`` and ``pi_ref`` (the KL-regularised game is not a matrix game: the
regularised payoff is not bilinear in the mixed strategies), ``rho`` and the other contexts (a
matrix game is one context: :func:`to_pyspiel` converts the context it is given), and action names
(OpenSpiel's names are not kept by a :class:`~nlhf_envs.game.PreferenceGame`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from nlhf_envs.errors import GameError

__all__ = [
    "INSTALL_HINT",
    "OpenSpielGameError",
    "import_pyspiel",
    "preference_matrix",
    "to_pyspiel",
]

#: how to install what this module needs
INSTALL_HINT = "pip install 'nlhf-zoo[openspiel]'"


class OpenSpielGameError(GameError):
    """An OpenSpiel game, or a conversion asked of a preference game, that the interop cannot do
    (the message names the property that fails: players, normal form, actions, constant sum,
    symmetry, payoff scale, context)."""


class _PreferenceGameLike(Protocol):
    """What :func:`to_pyspiel` reads of a :class:`~nlhf_envs.game.PreferenceGame`."""

    P: np.ndarray
    name: str


def import_pyspiel() -> Any:
    """The ``pyspiel`` module.

    Raises:
        ImportError: naming the extra to install (``pip install 'nlhf-zoo[openspiel]'``) when
            OpenSpiel is not installed.
    """
    try:
        import pyspiel
    except ImportError as exc:
        raise ImportError(
            f"OpenSpiel interop needs the optional extra 'openspiel': {INSTALL_HINT} "
            f"(importing pyspiel failed: {exc})"
        ) from exc
    return pyspiel


def _describe(game: Any) -> str:
    try:
        t = game.get_type()
        return (
            f"{t.short_name!r} ({type(game).__name__}, {t.dynamics}, {game.num_players()} players)"
        )
    except Exception:  # not a pyspiel game at all
        return f"a {type(game).__name__}"


def _load(game: Any) -> Any:
    pyspiel = import_pyspiel()
    if isinstance(game, str):
        try:
            game = pyspiel.load_game(game)
        except pyspiel.SpielError as exc:
            first = str(exc).splitlines()[0].split(" Available games")[0] or "unknown game"
            raise OpenSpielGameError(f"OpenSpiel cannot load {game!r}: {first}") from None
    if not isinstance(game, pyspiel.Game):
        raise OpenSpielGameError(
            f"expected a pyspiel game or an OpenSpiel game name; got {_describe(game)}"
        )
    if game.num_players() != 2:
        raise OpenSpielGameError(
            f"a preference game has two players; OpenSpiel game {_describe(game)} has "
            f"{game.num_players()}"
        )
    if not isinstance(game, pyspiel.MatrixGame):
        raise OpenSpielGameError(
            f"a preference game is a normal-form (matrix) game; {_describe(game)} is not a "
            "pyspiel.MatrixGame (a small two-player extensive-form game can be converted first "
            "with pyspiel.extensive_to_matrix_game)"
        )
    return game


def preference_matrix(
    game: Any, *, payoff_scale: float | None = None, atol: float = 1e-9
) -> tuple[np.ndarray, str]:
    """The preference matrix ``P = 1/2 + (R - c/2) / (2 s)`` of an OpenSpiel matrix game.

    Used by :meth:`nlhf_envs.game.PreferenceGame.from_pyspiel` (see the module docstring for the
    map and why it keeps Nash equilibria).

    Args:
        game: a ``pyspiel.MatrixGame`` or the name of one (``"matrix_rps"``, ``"matrix_brps"``).
        payoff_scale: ``s``, the payoff advantage that means "always preferred"; default
            ``max |R - c/2|`` (the largest advantage maps to probability 1), 1 for a game of ties.
        atol: tolerance of the constant-sum and symmetry checks, relative to the largest
            ``|payoff|`` (at least 1).

    Returns:
        ``(P, name)``: the ``(K, K)`` float64 matrix and the game's OpenSpiel short name.

    Raises:
        ImportError: OpenSpiel is not installed (the message names the extra).
        OpenSpielGameError: not two players, not a matrix game, different action counts, payoffs
            not finite, not constant-sum, not symmetric, or ``payoff_scale`` not a finite number
            ``>= max |R - c/2|``; the message names the property and the entry where it fails.
    """
    game = _load(game)
    name = str(game.get_type().short_name)
    R = np.array(game.row_utilities(), dtype=np.float64)
    Q = np.array(game.col_utilities(), dtype=np.float64)
    if R.shape[0] != R.shape[1]:
        raise OpenSpielGameError(
            f"{name}: both players must have the same actions; the row player has {R.shape[0]} "
            f"and the column player {R.shape[1]}"
        )
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(Q))):
        raise OpenSpielGameError(f"{name}: payoffs must be finite")
    tol = atol * max(1.0, float(np.abs(R).max()), float(np.abs(Q).max()))
    total = R + Q
    c = float(total[0, 0])
    dev = np.abs(total - c)
    if dev.max() > tol:
        i, j = np.unravel_index(int(np.argmax(dev)), dev.shape)
        raise OpenSpielGameError(
            f"{name} is not constant-sum: row + column payoffs are {c:g} at (0, 0) but "
            f"{total[i, j]:g} at ({i}, {j}); a preference game is a constant-sum game"
        )
    dev = np.abs(Q - R.T)
    if dev.max() > tol:
        i, j = np.unravel_index(int(np.argmax(dev)), dev.shape)
        raise OpenSpielGameError(
            f"{name} is not symmetric: the column player's payoff at ({i}, {j}) is {Q[i, j]:g} but "
            f"the row player's at ({j}, {i}) is {R[j, i]:g}; a preference game needs column "
            "payoffs = transposed row payoffs"
        )
    u = R - 0.5 * c
    u = 0.5 * (u - u.T)  # exactly antisymmetric (the checks above bound the change by tol)
    largest = float(np.abs(u).max())
    if payoff_scale is None:
        scale = largest if largest > 0.0 else 1.0
    else:
        if (
            isinstance(payoff_scale, (bool, np.bool_))
            or not isinstance(payoff_scale, (int, float, np.integer, np.floating))
            or not np.isfinite(payoff_scale)
            or payoff_scale <= 0
        ):
            raise OpenSpielGameError(
                f"payoff_scale must be a finite number > 0; got {payoff_scale!r}"
            )
        scale = float(payoff_scale)
        if largest > scale + tol:
            raise OpenSpielGameError(
                f"{name}: payoff_scale {scale:g} is below the largest payoff advantage "
                f"max |R - c/2| = {largest:g}; the preferences would leave [0, 1]"
            )
    P = np.clip(0.5 + u / (2.0 * scale), 0.0, 1.0)
    return P, name


def to_pyspiel(
    game: _PreferenceGameLike,
    context: int | None = None,
    *,
    payoff_scale: float = 0.5,
    action_names: Sequence[str] | None = None,
) -> Any:
    """One context of a preference game as a zero-sum ``pyspiel.MatrixGame``.

    Row payoffs ``u = s (A - A^T)`` with ``A = P_x - 1/2`` (that is ``2 s (P_x - 1/2)``, exactly
    antisymmetric), column payoffs ``-u = u^T``; OpenSpiel's exploitability of a policy ``pi`` played
    by both seats is ``2 s`` times :func:`nlhf_envs.solvers.unregularized_exploitability` (equal for
    the default ``s = 1/2``). ``beta``, ``pi_ref`` and ``rho`` are not part of a matrix game.

    Args:
        game: a :class:`~nlhf_envs.game.PreferenceGame` (a matrix game, a contextual game, the
            exact token game of :func:`nlhf_envs.text.exact.exact_game`).
        context: which context to convert; required for a contextual game, optional (0) otherwise.
        payoff_scale: ``s > 0``, the payoff of a sure win (``P = 1``); default 1/2.
        action_names: ``K`` distinct names (default ``y0, y1, ...``).

    Raises:
        ImportError: OpenSpiel is not installed (the message names the extra).
        OpenSpielGameError: a contextual game without ``context``, a context out of range, a bad
            ``payoff_scale`` or bad action names.
    """
    P_all = np.asarray(game.P, dtype=np.float64)
    if P_all.ndim == 2:
        P_all = P_all[None]
    C, K = P_all.shape[0], P_all.shape[1]
    label = getattr(game, "name", "the game")
    if context is None:
        if C > 1:
            raise OpenSpielGameError(
                f"{label} has {C} contexts and a pyspiel matrix game is one: pass "
                f"context=0..{C - 1} to convert that context's matrix"
            )
        context = 0
    if isinstance(context, (bool, np.bool_)) or not isinstance(context, (int, np.integer)):
        raise OpenSpielGameError(f"context must be an integer; got {context!r}")
    if not 0 <= int(context) < C:
        raise OpenSpielGameError(f"context must lie in [0, {C}) for {label}; got {context}")
    if (
        isinstance(payoff_scale, (bool, np.bool_))
        or not isinstance(payoff_scale, (int, float, np.integer, np.floating))
        or not np.isfinite(payoff_scale)
        or payoff_scale <= 0
    ):
        raise OpenSpielGameError(f"payoff_scale must be a finite number > 0; got {payoff_scale!r}")
    if action_names is None:
        names = [f"y{i}" for i in range(K)]
    else:
        names = [str(a) for a in action_names]
        if len(names) != K or len(set(names)) != K:
            raise OpenSpielGameError(
                f"action_names must be {K} distinct names; got {len(names)} "
                f"({len(set(names))} distinct)"
            )
    A = P_all[int(context)] - 0.5
    u = float(payoff_scale) * (A - A.T)
    pyspiel = import_pyspiel()
    short = "nlhf_" + re.sub(r"[^a-z0-9_]+", "_", str(label).lower()).strip("_")
    if C > 1:
        short += f"_context{int(context)}"
    long_name = (
        f"nlhf-zoo preference game {label} (context {int(context)} of {C}), "
        f"row payoff {float(payoff_scale):g} * (2 P - 1)"
    )
    return pyspiel.create_matrix_game(short, long_name, names, names, u.tolist(), (-u).tolist())
