"""Typed agent configurations and their validation.

Every agent has one dataclass of hyper-parameters (a subclass of :class:`AgentConfig`) whose fields
are documented in its docstring. Values may come from Python (``agents.make(..., eta=0.2)``), from a
YAML file of the zoo or from the command line; all of them go through :func:`build_config`, which

* rejects unknown keys (naming the key, the valid keys and where the value came from);
* checks types: ``bool``, ``int``, ``float``, ``str``, ``None``, ``X | None`` (``Optional[X]``),
  ``Literal[...]``, ``list[X]`` (a YAML sequence, each item checked as ``X``) and nested config
  dataclasses (a YAML mapping, built and checked by :func:`build_config`; a block class may
  name other libraries' spellings of its fields in ``ALIASES`` and convert other objects with a
  ``from_value`` class method, as :class:`agents.text.backend.LoraSettings` does for a
  ``peft.LoraConfig``); an ``int`` is
  accepted for a ``float`` field, a ``bool`` is never accepted for a number, a string is never
  converted to a number except plain scientific notation such as ``3e-4`` (which PyYAML's YAML 1.1
  resolver reads as a string), and a ``float`` must be finite (``.inf`` and ``.nan`` are refused for
  every field of every agent);
* runs the config's own range checks (``__post_init__``), which raise :class:`ConfigError`
  naming the key.

Example:
    >>> from agents.config import build_config
    >>> from agents.nash_mp import NashMPConfig
    >>> build_config(NashMPConfig, {"eta": 0.2}, source="zoo_configs/nash_mp.yml").eta
    0.2
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar, Union

import numpy as np

from nlhf_envs.errors import ConfigError

__all__ = [
    "AgentConfig",
    "PGConfig",
    "ConfigError",
    "build_config",
    "check_regularized_step",
    "config_to_dict",
    "check_population_weights",
]


C = TypeVar("C", bound="AgentConfig")


def _where(source: str | None) -> str:
    return f" (in {source})" if source else ""


@dataclass
class AgentConfig:
    """Fields shared by every agent.

    Attributes:
        mode: how the agent observes preferences. ``"exact"``: the exact win-rate oracle
            ``game.win_rates`` (one evaluation = one counted query); ``"sampled"``: Bernoulli
            preference outcomes only, ``batch_size`` queries per win-rate estimate (unbiased);
            ``"pg"``: a softmax policy trained by stochastic policy-gradient steps on sampled
            outcomes (only agents whose paper has such a form). The valid modes of each agent are
            in its config's ``MODES``.
        batch_size: ``sampled`` mode: preference queries per estimated win-rate vector.
        stratified: ``sampled`` mode: draw the first responses ``y`` of a batch as a stratified
            (randomly offset round-robin) sweep of the ``K`` responses instead of i.i.d. uniform.
            Both designs give unbiased estimates; stratification has lower variance.
        init: initial policy: ``"ref"`` (``pi_ref``), ``"uniform"`` or ``"random"`` (softmax of
            standard-normal logits drawn from the agent's seed).
        log_every: compute the metrics (history, TensorBoard) every ``log_every`` iterations;
            ``0`` disables them (for timing); ``None`` (default): two significant digits of the
            iteration count, i.e. every iteration up to 100, every 10th up to 1,000, every 100th up
            to 10,000, ... (:func:`agents.api.logs_iteration`): log-spaced rows for log-scale
            curves at a cost that grows with the logarithm of the run's length.
    """

    MODES: ClassVar[tuple[str, ...]] = ("exact", "sampled")

    mode: str = "exact"
    batch_size: int = 256
    stratified: bool = True
    init: str = "ref"
    log_every: int | None = None

    def __post_init__(self) -> None:
        _finite_fields(self)
        if self.mode not in self.MODES:
            raise ConfigError(
                f"mode: {self.mode!r} is not a mode of {type(self).__name__}; "
                f"expected one of {', '.join(map(repr, self.MODES))}"
            )
        _positive_int(self, "batch_size")
        if self.init not in ("ref", "uniform", "random"):
            raise ConfigError(f"init: expected 'ref', 'uniform' or 'random'; got {self.init!r}")
        if self.log_every is not None and self.log_every < 0:
            raise ConfigError(
                f"log_every: must be >= 0 (or None for the default); got {self.log_every}"
            )


@dataclass
class PGConfig(AgentConfig):
    """Fields of agents with a ``pg`` mode (in addition to :class:`AgentConfig`'s).

    Attributes:
        inner_steps: ``M``, stochastic policy-gradient steps per optimisation problem (per prox
            half-step for Nash-MP, per iteration for INPO; Online IPO makes one step per iteration).
        pg_batch_size: preference queries (sampled pairs) per policy-gradient step.
        pg_lr: step size of the softmax-logit gradient ascent; ``None`` picks the agent's documented
            default.
        pg_average: return the Polyak-Ruppert average of the logits over the second half of the
            inner steps instead of the last inner iterate (reduces the noise floor of constant-step
            SGD without biasing it).
    """

    MODES: ClassVar[tuple[str, ...]] = ("exact", "sampled", "pg")

    inner_steps: int = 20
    pg_batch_size: int = 32
    pg_lr: float | None = None
    pg_average: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int(self, "inner_steps")
        _positive_int(self, "pg_batch_size")
        _positive_or_none(self, "pg_lr")


def _finite_fields(cfg: Any) -> None:
    """Refuse a non-finite ``float`` in any field (``inf`` or ``nan`` steps turn every later policy
    into ``nan``); also for configs built directly rather than through :func:`build_config`."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{f.name}: must be a finite number; got {value}")


def _positive_int(cfg: Any, key: str) -> None:
    v = getattr(cfg, key)
    if v < 1:
        raise ConfigError(f"{key}: must be an integer >= 1; got {v}")


def _positive_or_none(cfg: Any, key: str) -> None:
    v = getattr(cfg, key)
    if v is not None and not v > 0:
        raise ConfigError(f"{key}: must be > 0 (or None for the default); got {v}")


def check_regularized_step(
    agent: str, key: str, lam: float | None, beta: float, default: float
) -> None:
    """Refuse a step ``lam`` that makes a beta-regularised logit update overflow.

    The updates of OMWU, EGPO and Online IPO all have the form
    ``l_{t+1} = (1 - lam beta) l_t + lam beta l_ref + lam u_t`` with a bounded payoff term ``u_t``
    (``|u_t| <= 3/2``). The logits are multiplied by ``1 - lam beta`` every iteration: for
    ``0 < lam beta < 2`` that factor has modulus below 1 and the logits stay bounded; for
    ``lam beta >= 2`` they grow geometrically with alternating sign until ``exp`` overflows and the
    policy becomes ``nan``. The range is therefore ``0 < lam < 2 / beta`` (checked when the agent is
    built, because ``beta`` belongs to the game, not the config).

    Args:
        agent: the agent's name, for the message.
        key: the config key of the step.
        lam: the configured step (``None``: the default is used, which is always in range).
        beta: the game's regularisation strength (``> 0``).
        default: the agent's default step, named in the message.

    Raises:
        ConfigError: ``lam * beta >= 2``.
    """
    if lam is None or lam * beta < 2.0:
        return
    raise ConfigError(
        f"{key}: {lam:g} is out of range for beta = {beta:g}: {agent} needs 0 < {key} < 2 / beta "
        f"= {2.0 / beta:g} (the update scales the logits by 1 - {key} beta = {1.0 - lam * beta:g} "
        f"each iteration and overflows); the default is {default:.4g}"
    )


#: a decimal float literal with an exponent and no dot, which PyYAML (YAML 1.1) reads as a string
_FLOAT_LITERAL = re.compile(r"[-+]?\d+[eE][-+]?\d+")


def _check_value(value: Any, tp: Any, key: str, source: str | None) -> Any:
    """Return ``value`` converted to ``tp`` or raise :class:`ConfigError` naming ``key``."""
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        non_none = [a for a in args if a is not type(None)]
        for arg in non_none:
            try:
                return _check_value(value, arg, key, source)
            except ConfigError as err:
                errors.append(err)
        if len(non_none) == 1:
            raise errors[0]
        names = " | ".join(_type_name(a) for a in args)
        raise ConfigError(f"{key}: expected {names}; got {value!r}{_where(source)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(
                f"{key}: expected one of {', '.join(map(repr, choices))}; got {value!r}"
                f"{_where(source)}"
            )
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, (list, tuple)):
            return [_check_value(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
        raise ConfigError(
            f"{key}: expected a list of {_type_name(item_tp)}; got {value!r}{_where(source)}"
        )
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):  # a nested block (e.g. ``lora``)
        if isinstance(value, tp):
            return value
        convert = getattr(tp, "from_value", None)  # e.g. a peft.LoraConfig for ``lora``
        if convert is not None and not isinstance(value, Mapping):
            try:
                converted = convert(value)
            except ConfigError as err:
                raise ConfigError(f"{key}: {err}{_where(source)}") from None
            value = value if converted is None else converted
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{key}: expected a mapping of {tp.__name__} fields; got {value!r}{_where(source)}"
            )
        try:
            return build_config(tp, value, source)
        except ConfigError as err:  # "lora.rank: ..." for a field, "lora: ..." otherwise
            text = str(err)
            names = {f.name for f in dataclasses.fields(tp)}
            sep = "." if text.split(":", 1)[0] in names else ": "
            raise ConfigError(f"{key}{sep}{text}") from None
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{key}: expected None; got {value!r}{_where(source)}")
        return None
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected a bool; got {value!r}{_where(source)}")
    if tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        raise ConfigError(f"{key}: expected an int; got {value!r}{_where(source)}")
    if tp is float:
        number: float | None = None
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int beyond the float range
                number = math.inf if value > 0 else -math.inf
        elif isinstance(value, str) and _FLOAT_LITERAL.fullmatch(value.strip()):
            # plain scientific notation (1e-3): a float in YAML 1.2 and on command lines, a string
            # to PyYAML's YAML 1.1 resolver
            number = float(value)
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f"{key}: must be a finite number; got {value!r}{_where(source)}")
            return number
        hint = " (a string, not a number)" if isinstance(value, str) else ""
        raise ConfigError(f"{key}: expected a float; got {value!r}{hint}{_where(source)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a str; got {value!r}{_where(source)}")
    raise ConfigError(f"{key}: unsupported field type {tp!r}{_where(source)}")


def _type_name(tp: Any) -> str:
    return "None" if tp is type(None) else getattr(tp, "__name__", repr(tp))


def build_config(
    cls: type[C], mapping: Mapping[str, Any] | None = None, source: str | None = None
) -> C:
    """Build and validate a config dataclass from a mapping of overrides.

    Args:
        cls: a dataclass (normally an :class:`AgentConfig` subclass).
        mapping: field values; missing fields keep their documented defaults.
        source: where the values come from (``"agents.make('nash_mp')"``,
            ``"zoo_configs/nash_mp.yml[nlhf/RPS-v0]"``, ``"--config"``); it is named in errors.

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: for an unknown key (naming it and the valid keys), a value of the wrong type
            (naming the key and the expected type) or a value out of range (naming the key).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"build_config needs a dataclass type; got {cls!r}")
    mapping = dict(mapping or {})
    for old, new in getattr(
        cls, "RENAMED", {}
    ).items():  # keys renamed since (old files still load)
        if old in mapping:
            if new in mapping:
                raise ConfigError(
                    f"{old!r} is the old name of {new!r}; give one of them{_where(source)}"
                )
            mapping[new] = mapping.pop(old)
    for alias, name in getattr(cls, "ALIASES", {}).items():  # other libraries' names of a field
        if alias in mapping:
            if name in mapping:
                raise ConfigError(
                    f"{alias!r} and {name!r} name the same setting; give one of them"
                    f"{_where(source)}"
                )
            mapping[name] = mapping.pop(alias)
    for key, word in getattr(cls, "FALSE_MEANS", {}).items():
        # YAML 1.1 reads off/no/false as a boolean: for a field whose word for "none" is one of
        # those (``nash_eval: off``), False means that word; True is refused with the reason
        if mapping.get(key) is False:
            mapping[key] = word
        elif mapping.get(key) is True:
            raise ConfigError(
                f"{key}: got True (YAML reads on, yes and true as a boolean); give the value by "
                f"name (off, no and false mean {word!r}){_where(source)}"
            )
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(k for k in mapping if k not in fields)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(map(repr, unknown))} for {cls.__name__}"
            f"{_where(source)}; valid keys: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    values = {k: _check_value(v, hints[k], k, source) for k, v in mapping.items()}
    try:
        return cls(**values)
    except ConfigError as err:
        raise ConfigError(f"{err}{_where(source)}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """The resolved config as a plain ``{field: value}`` dict (JSON/YAML serialisable; a nested
    block such as ``lora`` becomes a dict)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = config_to_dict(value) if dataclasses.is_dataclass(value) else value
    return out


#: tolerance of the "weights sum to 1" check
WEIGHT_SUM_ATOL = 1e-9


def check_population_weights(weights: Sequence[float] | np.ndarray, history: int) -> np.ndarray:
    """The population weights ``lambda_0..lambda_{H-1}`` of MNPO (:mod:`agents.mnpo`, token level
    :mod:`agents.text.mnpo`) as a float64 array, validated.

    Args:
        weights: one weight per history policy, ``weights[0]`` for the newest (``pi_t``).
        history: ``H``, the number of history policies.

    Raises:
        ConfigError: (one line) for a wrong length, a non-finite or negative weight, or weights
            that do not sum to 1 (within ``1e-9``).
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (history,):
        raise ConfigError(
            f"weights: need one weight per history policy ({history}); got {w.size}: {w.tolist()}"
        )
    if not np.all(np.isfinite(w)):
        raise ConfigError(f"weights: must be finite; got {w.tolist()}")
    if np.any(w < 0):
        j = int(np.argmax(w < 0))
        raise ConfigError(f"weights: must be non-negative; weights[{j}] = {w[j]:g}")
    if abs(w.sum() - 1.0) > WEIGHT_SUM_ATOL:
        raise ConfigError(f"weights: must sum to 1; they sum to {w.sum():.12g}")
    return w
