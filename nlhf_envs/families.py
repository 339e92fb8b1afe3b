"""Built-in families of preference games, deterministic given a seed.

Each factory returns a validated :class:`~nlhf_envs.game.PreferenceGame` and accepts the common
keyword arguments ``beta`` (default 0.1) and ``pi_ref`` (default uniform). The random families also
accept ``num_contexts`` (``C > 1`` gives a contextual game with an independent matrix per context
and a uniform ``rho``) and ``seed``.

| family | name | transitive? | known Nash |
| --- | --- | --- | --- |
| rock-paper-scissors | ``rps`` | no (a 3-cycle) | uniform (regularised too, with uniform pi_ref) |
| cyclic n-action RPS | ``cyclic`` | no | uniform (circulant P) |
| biased RPS | ``biased_rps`` | no | unregularised (1/16, 10/16, 5/16) |
| uniform random | ``uniform`` | no (generically) | none in closed form |
| skew-Gaussian | ``skew_gaussian`` | no | none in closed form |
| Bradley-Terry | ``bradley_terry`` | yes | unregularised: the Condorcet winner (argmax score) |
| Condorcet population | ``condorcet`` | no (majority cycles) | none in closed form |
| disc game | ``disc`` | no (rotational) | none in closed form |

Use :func:`make_game` (``make_game("uniform", num_actions=10, seed=0)``) or the factories directly;
:data:`FAMILIES` maps names to factories.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import expit

from nlhf_envs.game import GameValidationError, PreferenceGame, check_int

#: the largest preference tensor (C * K * K float64 values, in bytes) a family builds: 2 GiB.
MAX_GAME_BYTES = 2**31


def check_game_size(num_actions: int, num_contexts: int) -> None:
    """Refuse a game whose ``(C, K, K)`` tensor would exceed :data:`MAX_GAME_BYTES`.

    Raises:
        GameValidationError: naming K, C and the size, before anything is allocated.
    """
    nbytes = 8 * int(num_contexts) * int(num_actions) ** 2
    if nbytes > MAX_GAME_BYTES:
        raise GameValidationError(
            f"num_actions={num_actions} with {num_contexts} context(s) needs a "
            f"{nbytes / 2**30:.1f} GiB preference tensor; the limit is "
            f"{MAX_GAME_BYTES / 2**30:.0f} GiB (nlhf_envs.families.MAX_GAME_BYTES)"
        )


__all__ = [
    "FAMILIES",
    "make_game",
    "rock_paper_scissors",
    "cyclic",
    "biased_rps",
    "uniform_game",
    "skew_gaussian",
    "bradley_terry",
    "condorcet",
    "disc_game",
]


def _antisymmetric_to_preference(A: np.ndarray) -> np.ndarray:
    """``P = 1/2 + A`` with exact symmetry ``P + P^T = 1`` restored after rounding."""
    P = 0.5 + A
    return 0.5 * (P + 1.0 - np.swapaxes(P, -1, -2))


def rock_paper_scissors(*, beta: float = 0.1, pi_ref: Any = None) -> PreferenceGame:
    """Rock-paper-scissors as a preference game: the winner is preferred with probability 1.

    Actions (rock, paper, scissors); ``P[paper, rock] = P[scissors, paper] = P[rock, scissors] = 1``.
    The unique Nash equilibrium, regularised (with uniform ``pi_ref``) or not, is uniform.
    """
    return cyclic(3, beta=beta, pi_ref=pi_ref, name="rps")


def cyclic(
    num_actions: int = 5, *, beta: float = 0.1, pi_ref: Any = None, name: str | None = None
) -> PreferenceGame:
    """The cyclic n-action generalisation of rock-paper-scissors.

    Action ``i`` beats the ``floor((n - 1) / 2)`` actions after it (mod n) with probability 1 and
    loses to the ones before; for even ``n`` the opposite action ``i + n/2`` ties (1/2). P is
    circulant, so the uniform policy has win rate 1/2 against everything: it is the Nash equilibrium
    (and the regularised one when ``pi_ref`` is uniform).
    """
    n = check_int("num_actions", num_actions, 0)
    if n < 2:
        raise GameValidationError(f"cyclic needs num_actions >= 2; got {n}")
    check_game_size(n, 1)
    P = np.full((n, n), 0.5)
    for i in range(n):
        for d in range(1, n):
            j = (i + d) % n
            if 2 * d < n:
                P[j, i] = 1.0  # j comes d steps after i: j beats i (paper after rock)
                P[i, j] = 0.0
    return PreferenceGame(P, pi_ref, beta, name=name or f"cyclic{n}")


def biased_rps(*, beta: float = 0.1, pi_ref: Any = None) -> PreferenceGame:
    """Biased rock-paper-scissors (OpenSpiel's ``matrix_brps``) as a preference game.

    Row payoffs (R, P, S) ``M = [[0, -25, 50], [25, 0, -5], [-50, 5, 0]]`` map to
    ``P = 1/2 + M / 100``. The unregularised Nash equilibrium is ``(1/16, 10/16, 5/16)``.
    """
    M = np.array([[0.0, -25.0, 50.0], [25.0, 0.0, -5.0], [-50.0, 5.0, 0.0]])
    return PreferenceGame(0.5 + M / 100.0, pi_ref, beta, name="biased_rps")


def _stack(
    make_one: Callable[[np.random.Generator], np.ndarray],
    num_contexts: int,
    seed: int | None,
    K: int,
) -> np.ndarray:
    num_contexts = check_int("num_contexts", num_contexts, 1)
    check_game_size(K, num_contexts)
    rng = np.random.default_rng(seed)
    mats = np.stack([make_one(rng) for _ in range(int(num_contexts))])
    return mats if num_contexts > 1 else mats[0]


def _check_k(num_actions: int, minimum: int = 2) -> int:
    return check_int("num_actions", num_actions, minimum)


def uniform_game(
    num_actions: int = 10,
    *,
    seed: int | None = 0,
    num_contexts: int = 1,
    beta: float = 0.1,
    pi_ref: Any = None,
) -> PreferenceGame:
    """The "uniform" random game: upper triangle ``P[i, j] ~ U(0, 1)`` (i < j), the rest by symmetry.

    The common synthetic NLHF benchmark (Tiapkin et al. 2025, experiments). Generically intransitive.
    """
    K = _check_k(num_actions)

    def one(rng: np.random.Generator) -> np.ndarray:
        U = rng.random((K, K))
        P = np.triu(U, 1)
        P = P + np.tril(1.0 - P.T, -1)
        np.fill_diagonal(P, 0.5)
        return P

    return PreferenceGame(_stack(one, num_contexts, seed, K), pi_ref, beta, name=f"uniform{K}")


def skew_gaussian(
    num_actions: int = 10,
    *,
    scale: float = 1.0,
    seed: int | None = 0,
    num_contexts: int = 1,
    beta: float = 0.1,
    pi_ref: Any = None,
) -> PreferenceGame:
    """Intransitive skew-Gaussian game ``P = sigmoid(S)``, ``S = scale (G - G^T) / sqrt(2)``, G Gaussian.

    ``S`` is antisymmetric with standard-normal off-diagonal entries (times ``scale``), so
    ``sigmoid(S) + sigmoid(S^T) = 1`` exactly.
    """
    K = _check_k(num_actions)

    def one(rng: np.random.Generator) -> np.ndarray:
        G = rng.standard_normal((K, K))
        S = scale * (G - G.T) / np.sqrt(2.0)
        return _antisymmetric_to_preference(expit(S) - 0.5)

    return PreferenceGame(
        _stack(one, num_contexts, seed, K), pi_ref, beta, name=f"skew_gaussian{K}"
    )


def bradley_terry(
    num_actions: int = 10,
    *,
    scale: float = 1.0,
    seed: int | None = 0,
    num_contexts: int = 1,
    beta: float = 0.1,
    pi_ref: Any = None,
) -> PreferenceGame:
    """Transitive Bradley-Terry game ``P[i, j] = sigmoid(s_i - s_j)``, scores ``s ~ N(0, scale^2)``.

    The Condorcet winner ``argmax s`` beats every other response; it is the unregularised Nash
    equilibrium, and ``pi*_beta`` concentrates on it as ``beta -> 0``.
    """
    K = _check_k(num_actions)

    def one(rng: np.random.Generator) -> np.ndarray:
        s = scale * rng.standard_normal(K)
        return _antisymmetric_to_preference(expit(s[:, None] - s[None, :]) - 0.5)

    return PreferenceGame(
        _stack(one, num_contexts, seed, K), pi_ref, beta, name=f"bradley_terry{K}"
    )


def condorcet(
    num_actions: int = 10,
    *,
    num_annotators: int = 3,
    sharpness: float = 8.0,
    seed: int | None = 0,
    num_contexts: int = 1,
    beta: float = 0.1,
    pi_ref: Any = None,
) -> PreferenceGame:
    """A Condorcet population game: the mean of several annotators' sharp Bradley-Terry preferences.

    Annotator ``a`` has scores ``s_a ~ N(0, 1)`` and prefers ``sigmoid(sharpness (s_a,i - s_a,j))``;
    the population preference is the mean over annotators. Each annotator is transitive, but their
    majority generically is not (Condorcet's paradox), which is why NLHF targets a Nash equilibrium.
    """
    K = _check_k(num_actions)
    num_annotators = check_int("num_annotators", num_annotators, 1)

    def one(rng: np.random.Generator) -> np.ndarray:
        s = rng.standard_normal((int(num_annotators), K))
        d = sharpness * (s[:, :, None] - s[:, None, :])
        return _antisymmetric_to_preference(expit(d).mean(axis=0) - 0.5)

    return PreferenceGame(_stack(one, num_contexts, seed, K), pi_ref, beta, name=f"condorcet{K}")


def disc_game(
    num_actions: int = 10,
    *,
    seed: int | None = 0,
    num_contexts: int = 1,
    beta: float = 0.1,
    pi_ref: Any = None,
) -> PreferenceGame:
    """Balduzzi et al.'s disc game: responses are points ``u`` in the unit disc,
    ``P[i, j] = (1 + u_i^T [[0, -1], [1, 0]] u_j) / 2``.

    Purely rotational (intransitive): every response beats the ones a half-turn clockwise of it.
    Balduzzi et al., "Open-ended Learning in Symmetric Zero-sum Games", ICML 2019.
    """
    K = _check_k(num_actions)

    def one(rng: np.random.Generator) -> np.ndarray:
        r = np.sqrt(rng.random(K))
        theta = 2 * np.pi * rng.random(K)
        u = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
        phi = u[:, 1][None, :] * u[:, 0][:, None] - u[:, 0][None, :] * u[:, 1][:, None]
        # phi[i, j] = u_i^T [[0, -1], [1, 0]] u_j = -u_i0 u_j1 + u_i1 u_j0
        return _antisymmetric_to_preference(-0.5 * phi)

    return PreferenceGame(_stack(one, num_contexts, seed, K), pi_ref, beta, name=f"disc{K}")


FAMILIES: dict[str, Callable[..., PreferenceGame]] = {
    "rps": rock_paper_scissors,
    "cyclic": cyclic,
    "biased_rps": biased_rps,
    "uniform": uniform_game,
    "skew_gaussian": skew_gaussian,
    "bradley_terry": bradley_terry,
    "condorcet": condorcet,
    "disc": disc_game,
}


def make_game(name: str, **kwargs: Any) -> PreferenceGame:
    """Build a game of the family ``name`` (a key of :data:`FAMILIES`) with the factory's kwargs.

    Raises:
        GameValidationError: (a ``ValueError``) for an unknown family name, an argument the family
            does not take, a non-integer size or a game too large to allocate.
    """
    if name not in FAMILIES:
        raise GameValidationError(
            f"unknown game family {name!r}; expected one of {', '.join(FAMILIES)}"
        )
    factory = FAMILIES[name]
    params = inspect.signature(factory).parameters
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        raise GameValidationError(
            f"game family {name!r} takes no argument(s) {', '.join(map(repr, unknown))}; "
            f"it takes {', '.join(params)}"
        )
    return factory(**kwargs)
