"""The preference game: the data every nlhf-zoo matrix environment, solver and agent works on.

A (contextual) preference game is a set of contexts ``x`` drawn from ``rho``, ``K`` responses, and one
preference matrix ``P_x`` per context with ``P_x[y, y'] = P(y > y' | x)``, ``P_x + P_x^T = 1`` and
``diag(P_x) = 1/2`` (Munos et al. 2024, §2; ``equations.md`` §1). Together with a reference policy
``pi_ref`` and a strength ``beta > 0`` it defines the beta-regularised constant-sum game

    P_beta(pi > pi') = P(pi > pi') - beta KL(pi || pi_ref) + beta KL(pi' || pi_ref),

whose unique Nash equilibrium ``pi*_beta`` is what the agents of :mod:`agents` learn.

This module is pure numpy (no torch).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nlhf_envs.errors import GameError

__all__ = ["PreferenceGame", "GameValidationError", "check_int"]

ArrayLike = np.ndarray | Sequence[float] | Sequence[Sequence[float]]


class GameValidationError(GameError):
    """A preference game's data violates a property of the game (named in the message)."""


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an ``int`` if it is an integer (Python or numpy, not bool) ``>= minimum``.

    Raises:
        GameValidationError: naming ``name`` for a float (even ``3.0``), a string, a bool or a value
            below ``minimum`` (nothing is truncated or coerced).
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise GameValidationError(
            f"{name} must be an integer >= {minimum}; got {value!r} ({type(value).__name__})"
        )
    if value < minimum:
        raise GameValidationError(f"{name} must be >= {minimum}; got {value}")
    return int(value)


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


class PreferenceGame:
    """A validated (contextual) preference game with reference policy and regularisation.

    Args:
        P: preference matrix of shape ``(K, K)``, or ``(C, K, K)`` for ``C`` contexts, with
            ``P[x, y, y'] = P(y > y' | x)``. Must be finite, in [0, 1], with ``P + P^T = 1``
            (tolerance ``atol``) and diagonal ``1/2``.
        pi_ref: reference policy, shape ``(K,)`` (shared by all contexts) or ``(C, K)``; strictly
            positive rows summing to 1. Default: uniform.
        beta: KL-regularisation strength, ``> 0``.
        rho: context distribution, shape ``(C,)``; default uniform.
        name: a label used in tables and ``repr``.
        atol: tolerance of the ``P + P^T = 1``, diagonal and normalisation checks.

    Raises:
        GameValidationError: naming the violated property and where it is violated.

    Attributes:
        P: the matrices as a read-only float64 array of shape ``(C, K, K)`` (``C = 1`` for a matrix game).
        pi_ref: read-only ``(C, K)`` array.
        rho: read-only ``(C,)`` array.
        beta: the regularisation strength.
        queries: number of preference queries answered by :meth:`win_rates` (one per evaluation of
            the win-rate vector), :meth:`sample` (one per Bernoulli outcome) and :meth:`duel` (one
            per environment round). The game is the one counting oracle: agents never edit it.
    """

    def __init__(
        self,
        P: ArrayLike,
        pi_ref: ArrayLike | None = None,
        beta: float = 0.1,
        rho: ArrayLike | None = None,
        *,
        name: str = "custom",
        atol: float = 1e-9,
    ) -> None:
        P_arr = np.array(P, dtype=np.float64)
        if P_arr.ndim == 2:
            P_arr = P_arr[None]
            self.contextual = False
        elif P_arr.ndim == 3:
            self.contextual = P_arr.shape[0] > 1
        else:
            raise GameValidationError(
                f"P must have shape (K, K) or (C, K, K); got an array of shape {P_arr.shape}"
            )
        C, K, K2 = P_arr.shape

        def where(idx: tuple) -> tuple[int, ...]:
            # positions are reported as (y, y') for a matrix game and (x, y, y') for a contextual one
            idx = tuple(int(i) for i in idx)
            return idx if self.contextual else idx[1:]

        if K != K2 or K == 0:
            raise GameValidationError(f"P must be square: got matrices of shape ({K}, {K2})")
        if C == 0:
            raise GameValidationError("P must have at least one context; got C = 0")
        if not np.all(np.isfinite(P_arr)):
            idx = _first_index(~np.isfinite(P_arr))
            raise GameValidationError(f"P must be finite: found {P_arr[idx]} at {where(idx)}")
        if P_arr.min() < 0.0 or P_arr.max() > 1.0:
            bad = (P_arr < 0.0) | (P_arr > 1.0)
            idx = _first_index(bad)
            raise GameValidationError(
                f"P entries must lie in [0, 1]: found {P_arr[idx]:.6g} at {where(idx)}"
            )
        diag = np.diagonal(P_arr, axis1=1, axis2=2)
        ddev = np.abs(diag - 0.5)
        if ddev.max() > atol:
            c, k = np.unravel_index(int(np.argmax(ddev)), ddev.shape)
            raise GameValidationError(
                f"the diagonal of P must be 1/2 (P(y > y) = 1/2); found {diag[c, k]:.6g} at "
                f"{where((c, k, k))}"
            )
        dev = np.abs(P_arr + np.swapaxes(P_arr, 1, 2) - 1.0)
        if dev.max() > atol:
            idx = np.unravel_index(int(np.argmax(dev)), dev.shape)
            raise GameValidationError(
                f"P + P.T must equal 1 (P(y > y') + P(y' > y) = 1); max deviation "
                f"{dev.max():.3g} at {where(idx)}"
            )
        if not np.isscalar(beta) and np.ndim(beta) != 0:
            raise GameValidationError(f"beta must be a positive scalar; got {beta!r}")
        if isinstance(beta, (str, bytes, bool, np.bool_)) or not np.issubdtype(
            np.asarray(beta).dtype, np.number
        ):
            raise GameValidationError(
                f"beta must be a real number, not {type(beta).__name__}; got {beta!r}"
            )
        beta_f = float(beta)
        if not np.isfinite(beta_f) or beta_f <= 0.0:
            raise GameValidationError(f"beta must be a finite number > 0; got {beta!r}")

        if pi_ref is None:
            ref = np.full((C, K), 1.0 / K)
        else:
            ref = np.array(pi_ref, dtype=np.float64)
            if ref.ndim == 1:
                if ref.shape != (K,):
                    raise GameValidationError(
                        f"pi_ref must have shape ({K},) or ({C}, {K}); got {ref.shape}"
                    )
                ref = np.broadcast_to(ref, (C, K)).copy()
            elif ref.shape != (C, K):
                raise GameValidationError(
                    f"pi_ref must have shape ({K},) or ({C}, {K}); got {ref.shape}"
                )
            self._check_distribution(ref, "pi_ref", atol, strictly_positive=True)

        if rho is None:
            rho_arr = np.full(C, 1.0 / C)
        else:
            rho_arr = np.array(rho, dtype=np.float64)
            if rho_arr.shape != (C,):
                raise GameValidationError(
                    f"rho must have shape ({C},) (one probability per context); got {rho_arr.shape}"
                )
            self._check_distribution(rho_arr[None], "rho", atol, strictly_positive=False)

        for arr in (P_arr, ref, rho_arr):
            arr.setflags(write=False)
        self.P: np.ndarray = P_arr
        self.pi_ref: np.ndarray = ref
        self.rho: np.ndarray = rho_arr
        self.beta: float = beta_f
        self.name: str = name
        self.queries: int = 0
        self._P_flat = P_arr.reshape(-1)

    @staticmethod
    def _check_distribution(arr: np.ndarray, what: str, atol: float, strictly_positive: bool):
        if not np.all(np.isfinite(arr)):
            idx = _first_index(~np.isfinite(arr))
            raise GameValidationError(f"{what} must be finite: found {arr[idx]} at {idx}")
        if strictly_positive and arr.min() <= 0.0:
            idx = _first_index(arr <= 0.0)
            raise GameValidationError(
                f"{what} must be strictly positive (KL to it must be finite); found {arr[idx]} at "
                f"{idx if arr.shape[0] > 1 else idx[1:]}"
            )
        if arr.min() < 0.0:
            idx = _first_index(arr < 0.0)
            raise GameValidationError(f"{what} must be non-negative; found {arr[idx]} at {idx}")
        sums = arr.sum(axis=-1)
        bad = np.abs(sums - 1.0) > max(atol, 1e-9) * arr.shape[-1]
        if np.any(bad):
            r = int(np.argmax(bad))
            raise GameValidationError(
                f"{what} must be a probability distribution (sum to 1); row {r} sums to {sums[r]:.9g}"
            )

    # ------------------------------------------------------------------ shape helpers
    @property
    def num_contexts(self) -> int:
        """Number of contexts ``C`` (1 for a matrix game)."""
        return int(self.P.shape[0])

    @property
    def num_actions(self) -> int:
        """Number of responses ``K``."""
        return int(self.P.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        """``(C, K)``: the shape of a policy over all contexts."""
        return self.num_contexts, self.num_actions

    def as_policy(self, pi: ArrayLike, what: str = "pi") -> np.ndarray:
        """Return ``pi`` as a ``(C, K)`` float64 array; a ``(K,)`` policy is shared by all contexts.

        Raises:
            ValueError: if the shape does not fit the game.
        """
        arr = np.asarray(pi, dtype=np.float64)
        C, K = self.shape
        if arr.shape == (K,):
            return np.broadcast_to(arr, (C, K))
        if arr.shape == (C, K):
            return arr
        raise ValueError(
            f"{what} must have shape ({K},) or ({C}, {K}) for this game; got {arr.shape}"
        )

    def squeeze(self, arr: np.ndarray) -> np.ndarray:
        """Drop the context axis of a ``(C, ...)`` result for a non-contextual game."""
        return arr[0] if self.num_contexts == 1 else arr

    # ------------------------------------------------------------------ oracles
    def win_rates(self, pi: ArrayLike, context: int | None = None) -> np.ndarray:
        """The exact win-rate vector ``g_pi(y | x) = sum_y' P_x[y, y'] pi(y' | x)`` (``P @ pi``).

        Counts one preference query per call (the exact-oracle model of Tiapkin et al. 2025).

        Args:
            pi: policy of shape ``(K,)`` or ``(C, K)``.
            context: if given, only that context's vector (shape ``(K,)``) is computed.

        Returns:
            ``(K,)`` for a non-contextual game or a single context, else ``(C, K)``.
        """
        self.queries += 1
        if context is not None:
            arr = np.asarray(pi, dtype=np.float64)
            if arr.ndim == 2:
                arr = arr[context]
            return self.P[context] @ arr
        return self.squeeze(self.win_rates_all(self.as_policy(pi)))

    def win_rates_all(self, pi: np.ndarray) -> np.ndarray:
        """``(C, K)`` win rates of a ``(C, K)`` policy, without counting a query (for metrics)."""
        if self.num_contexts == 1:
            return (self.P[0] @ pi[0])[None]
        return np.matmul(self.P, pi[..., None])[..., 0]  # BLAS per context

    def sample(
        self,
        y: np.ndarray,
        y_prime: np.ndarray,
        rng: np.random.Generator,
        contexts: np.ndarray | None = None,
    ) -> np.ndarray:
        """Vectorised Bernoulli preference queries ``o ~ Bernoulli(P_x[y, y'])``.

        Args:
            y: array of first responses (any shape, integers in ``[0, K)``).
            y_prime: array of second responses, same shape.
            rng: the generator that draws the outcomes (never the global state).
            contexts: contexts of the same shape; required when ``C > 1``, default context 0.

        Returns:
            ``uint8`` array of outcomes (1 when ``y`` is preferred), the shape of ``y``.

        Raises:
            ValueError: on mismatched shapes or out-of-range indices.
        """
        y = np.asarray(y)
        y_prime = np.asarray(y_prime)
        if y.shape != y_prime.shape:
            raise ValueError(
                f"y and y_prime must have the same shape; got {y.shape} and {y_prime.shape}"
            )
        K = self.num_actions
        flat = y * K + y_prime
        if contexts is not None:
            contexts = np.asarray(contexts)
            if contexts.shape != y.shape:
                raise ValueError(
                    f"contexts must have the shape of y {y.shape}; got {contexts.shape}"
                )
            flat = flat + contexts * (K * K)
        elif self.num_contexts > 1:
            raise ValueError("contexts are required for a contextual game (C > 1)")
        if y.size:
            lo = min(int(y.min()), int(y_prime.min()))
            hi = max(int(y.max()), int(y_prime.max()))
            if lo < 0 or hi >= K:
                raise ValueError(f"responses must lie in [0, {K}); got values in [{lo}, {hi}]")
            if contexts is not None and (contexts.min() < 0 or contexts.max() >= self.num_contexts):
                raise ValueError(
                    f"contexts must lie in [0, {self.num_contexts}); got values in "
                    f"[{int(contexts.min())}, {int(contexts.max())}]"
                )
        self.queries += int(y.size)
        p = self._P_flat.take(flat)
        return (rng.random(p.shape) < p).view(np.uint8)

    def sample_contexts(self, n: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """Draw contexts ``x ~ rho`` (all zero for a matrix game)."""
        if self.num_contexts == 1:
            return np.zeros(n, dtype=np.int64)
        return rng.choice(self.num_contexts, size=n, p=self.rho)

    # ------------------------------------------------------------------ misc
    def duel(
        self, context: int, y: int, y_prime: int, rng: np.random.Generator
    ) -> tuple[float, float]:
        """One counted preference query: ``(p, o)`` with ``p = P_x[y, y']`` and
        ``o ~ Bernoulli(p)`` drawn from ``rng`` (one ``rng.random()``).

        The environments resolve every round through it, so whoever steps an env on this game
        (an agent's rollouts, a tournament) is counted in :attr:`queries` by the game itself.
        Arguments are trusted (the envs validate actions first).
        """
        K = self.num_actions
        p = float(self._P_flat[(context * K + y) * K + y_prime])
        o = float(rng.random() < p)
        self.queries += 1
        return p, o

    def fingerprint(self) -> str:
        """A short content hash of the game (shape, ``P``, ``pi_ref``, ``rho``, ``beta``).

        Two games with equal fingerprints play identically; the name is not part of it.
        """
        import hashlib

        h = hashlib.sha256(repr((self.shape, float(self.beta))).encode())
        for arr in (self.P, self.pi_ref, self.rho):
            h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> str:
        """``name (K=.., C=.., beta=.., fingerprint ..)`` for error messages."""
        C, K = self.shape
        return f"{self.name} (K={K}, contexts={C}, beta={self.beta:g}, fingerprint {self.fingerprint()})"

    def with_beta(self, beta: float) -> PreferenceGame:
        """A copy of this game with another regularisation strength."""
        return PreferenceGame(self.P, self.pi_ref, beta, self.rho, name=self.name)

    def __repr__(self) -> str:
        C, K = self.shape
        ctx = f", C={C}" if C > 1 else ""
        return f"PreferenceGame(name={self.name!r}, K={K}{ctx}, beta={self.beta:g})"

    # ------------------------------------------------------------------ OpenSpiel (extra)
    @classmethod
    def from_pyspiel(
        cls,
        game: object,
        *,
        beta: float = 0.1,
        pi_ref: ArrayLike | None = None,
        name: str | None = None,
        payoff_scale: float | None = None,
    ) -> PreferenceGame:
        """The preference game ``P = 1/2 + (R - c/2) / (2 s)`` of a two-player symmetric
        constant-sum OpenSpiel matrix game (``"matrix_rps"``, ``"matrix_brps"`` or a
        ``pyspiel.MatrixGame``); see :func:`nlhf_envs.openspiel.preference_matrix` for the checks
        and errors. Needs ``pip install 'nlhf-zoo[openspiel]'``."""
        from nlhf_envs.openspiel import preference_matrix

        P, default_name = preference_matrix(game, payoff_scale=payoff_scale)
        return cls(P, pi_ref, beta, name=default_name if name is None else name)

    def to_pyspiel(
        self,
        context: int | None = None,
        *,
        payoff_scale: float = 0.5,
        action_names: Sequence[str] | None = None,
    ) -> object:
        """One context as a zero-sum ``pyspiel.MatrixGame`` with row payoffs ``2 s (P_x - 1/2)``,
        ``s = payoff_scale``; see :func:`nlhf_envs.openspiel.to_pyspiel`. Needs
        ``pip install 'nlhf-zoo[openspiel]'``."""
        from nlhf_envs.openspiel import to_pyspiel

        return to_pyspiel(self, context, payoff_scale=payoff_scale, action_names=action_names)
