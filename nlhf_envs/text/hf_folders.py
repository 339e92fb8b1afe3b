"""A user's Hugging Face folders as data: weights, configs and tokenizers, never the folder's code.

A model folder can ask ``transformers`` to import Python files it carries: ``config.json`` (or
``tokenizer_config.json``) names classes in an ``auto_map``, and a ``model_type`` (or
``tokenizer_class``) that ``transformers`` does not have needs them. Left to its default,
``from_pretrained`` then asks "Do you wish to run the custom code? [y/N]" in a terminal, and one
keystroke runs the folder's code. Every folder nlhf-zoo loads (references, policies, participants,
reward models, tokenizers, LoRA adapters and their base models) goes through the loaders here,
which

* refuse a folder that needs its own code, before ``transformers`` reads it, with one line naming
  the folder and the file that asks for it;
* pass ``trust_remote_code=False`` and ``local_files_only=True`` to every ``from_pretrained``, so
  ``transformers`` never asks and never downloads. A folder whose ``model_type`` is built into
  ``transformers`` loads with the built-in implementation even when it also carries an
  ``auto_map`` (``transformers``' own rule under ``trust_remote_code=False``), with a warning.

A LoRA adapter folder that nlhf-zoo writes records the fingerprint of the weights of the base
model it was trained on (:data:`BASE_RECORD`); :func:`load_adapter` refuses to put the adapter on a
base whose weights differ (a base folder replaced since), naming both.

A small folder cannot make the loader build a huge model: before ``from_pretrained``, the model
that ``config.json`` declares is built on torch's ``meta`` device (no memory) and its parameters
counted; a config declaring more than :data:`PARAMETERS_PER_BYTE` parameters per byte of the
folder's weight files (``n_layer: 100000`` in a config beside a small file) is refused. A pickled
``.bin`` that torch's weights-only loader refuses, and a tokenizer file that does not parse, are
one line each.

Errors are :class:`~nlhf_envs.errors.GameError` unless the caller names another
:class:`~nlhf_envs.errors.NlhfError` class (the zoo raises ``ConfigError``).
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

from nlhf_envs.errors import GameError, NlhfError

__all__ = [
    "BASE_RECORD",
    "FolderCodeWarning",
    "check_no_folder_code",
    "load_adapter",
    "load_causal_lm",
    "load_sequence_classifier",
    "load_tokenizer",
    "suppressed_tokens",
    "weights_fingerprint",
    "write_base_record",
]

#: the file of an adapter folder recording the base model it was trained on
BASE_RECORD = "nlhf_base.json"

#: the most parameters a config may declare per byte of the folder's weight files: 2 (weights
#: stored at 4 bits); a model is never built larger than that
PARAMETERS_PER_BYTE = 2

#: the files that hold a folder's weights
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class FolderCodeWarning(UserWarning):
    """A folder carries custom code (``auto_map``) that nlhf-zoo ignores: the built-in
    ``transformers`` implementation of its ``model_type`` is loaded instead."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _read_json(path: Path, limit: int = 1 << 20) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` when the file is absent or not an object (a
    damaged file is left to ``transformers``, whose error is reported as one line)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(limit)  # a config is a few kB; never read a huge file whole
        data = json.loads(head.decode("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _known_model_type(model_type: Any) -> bool:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return isinstance(model_type, str) and model_type in CONFIG_MAPPING_NAMES


def _known_tokenizer_class(name: Any) -> bool:
    import transformers

    if not isinstance(name, str) or not name:
        return True  # no class named: transformers picks one from the model type
    return hasattr(transformers, name) or hasattr(transformers, name.removesuffix("Fast"))


def check_no_folder_code(
    folder: str | os.PathLike[str], what: str, error: type[NlhfError] = GameError
) -> None:
    """Refuse ``folder`` when loading it would need the Python code it carries.

    Args:
        folder: a model, reward-model, tokenizer or adapter folder.
        what: how the message names it ("the reference", "participant 'a'", "the judge").
        error: the error class raised.

    Raises:
        error: ``config.json`` has an ``auto_map`` and a ``model_type`` unknown to ``transformers``
            (or none), or ``tokenizer_config.json`` has an ``auto_map`` and a tokenizer class
            unknown to ``transformers``.
    """
    path = Path(folder)
    config = _read_json(path / "config.json")
    if config is not None and config.get("auto_map"):
        model_type = config.get("model_type")
        if not _known_model_type(model_type):
            raise error(
                f"{what}: {path} needs its own Python code (config.json has an auto_map and "
                f"model_type {model_type!r} is not built into transformers); nlhf-zoo never runs "
                "code from a model folder: save the model as a built-in architecture"
            )
        warnings.warn(
            f"{what}: {path}/config.json names custom code (auto_map); it is ignored and the "
            f"built-in transformers implementation of {model_type!r} is loaded",
            FolderCodeWarning,
            stacklevel=3,
        )
    tok_config = _read_json(path / "tokenizer_config.json")
    if tok_config is not None and tok_config.get("auto_map"):
        name = tok_config.get("tokenizer_class")
        if not _known_tokenizer_class(name):
            raise error(
                f"{what}: {path} needs its own Python code (tokenizer_config.json has an auto_map "
                f"and tokenizer class {name!r} is not built into transformers); nlhf-zoo never runs "
                "code from a model folder"
            )


def _checked_folder(
    folder: str | os.PathLike[str], what: str, kind: str, error: type[NlhfError]
) -> Path:
    path = Path(folder)
    if not path.is_dir():
        raise error(f"{what}: no {kind} folder at {path}")
    check_no_folder_code(path, what, error)
    return path


def _load(
    loader: Any, path: Path, what: str, kind: str, error: type[NlhfError], **kwargs: Any
) -> Any:
    try:
        if kind != "tokenizer":
            _check_declared_size(loader, path, what, error)
        return loader.from_pretrained(
            path, local_files_only=True, trust_remote_code=False, **kwargs
        )
    except pickle.UnpicklingError as err:  # torch's weights-only loader refused a pickle
        lines = [ln.strip() for ln in str(err).splitlines()]
        detail = next((ln for ln in lines if "Unsupported global" in ln), lines[0] if lines else "")
        raise error(
            f"{what}: {path} holds a pickled torch file with more than weights, which torch's "
            f"weights-only loader refuses ({detail}); nothing in it was run: save the model with "
            "safetensors"
        ) from None
    except Exception as err:
        if isinstance(err, NlhfError):
            raise
        # the tokenizers library reports a malformed tokenizer.json as a plain Exception
        user_data = (OSError, ValueError, KeyError, TypeError)
        if not isinstance(err, user_data) and not (kind == "tokenizer" and type(err) is Exception):
            raise
        raise error(f"{what}: cannot load a {kind} from {path}: {_first_line(err)}") from None


def _weight_bytes(path: Path) -> int:
    return sum(
        f.stat().st_size for f in path.iterdir() if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES)
    )


def declared_parameters(config: Any, loader: Any) -> int:
    """The number of parameters of the model ``loader.from_config(config)`` would build, counted
    on torch's ``meta`` device (nothing allocated). Deep models are counted from one- and
    two-layer copies of the config (the count is affine in the number of layers), so a config
    declaring 100,000 layers costs no more than one declaring two."""
    import torch

    def count(cfg: Any) -> int:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = loader.from_config(cfg)
        return sum(p.numel() for p in model.parameters())

    layers = getattr(config, "num_hidden_layers", None)
    if isinstance(layers, int) and not isinstance(layers, bool) and layers > 2:
        try:
            one, two = copy.deepcopy(config), copy.deepcopy(config)
            one.num_hidden_layers, two.num_hidden_layers = 1, 2
            first, second = count(one), count(two)
        except Exception:  # noqa: BLE001 - a config whose layers are listed: count it whole
            if layers > 1024:
                raise ValueError(
                    f"config.json declares {layers:,} layers and cannot be counted from fewer"
                ) from None
        else:
            return first + (second - first) * (layers - 1)
    return count(config)


def _check_declared_size(loader: Any, path: Path, what: str, error: type[NlhfError]) -> None:
    """Refuse a config that declares far more parameters than the weight files hold (see the
    module docstring), before ``from_pretrained`` builds the model."""
    import transformers

    stored = _weight_bytes(path)
    if stored == 0:
        return  # no weights: from_pretrained says so itself
    config = transformers.AutoConfig.from_pretrained(
        path, local_files_only=True, trust_remote_code=False
    )
    declared = declared_parameters(config, loader)
    if declared > PARAMETERS_PER_BYTE * stored:
        raise error(
            f"{what}: {path / 'config.json'} declares a model of {declared:,} parameters, but the "
            f"folder's weight files hold {stored:,} bytes (at most {PARAMETERS_PER_BYTE * stored:,} "
            "parameters): refusing to build it (a damaged or edited config.json?)"
        )


def load_causal_lm(
    folder: str | os.PathLike[str],
    what: str = "the model",
    error: type[NlhfError] = GameError,
    **kwargs: Any,
) -> Any:
    """``AutoModelForCausalLM.from_pretrained(folder)`` without the folder's code (module docstring).

    ``kwargs`` go to ``from_pretrained`` (``torch_dtype=...``, say).
    """
    import transformers

    path = _checked_folder(folder, what, "model", error)
    return _load(transformers.AutoModelForCausalLM, path, what, "causal LM", error, **kwargs)


def load_sequence_classifier(
    folder: str | os.PathLike[str],
    what: str = "the judge",
    error: type[NlhfError] = GameError,
    **kwargs: Any,
) -> Any:
    """``AutoModelForSequenceClassification.from_pretrained(folder)`` without the folder's code."""
    import transformers

    path = _checked_folder(folder, what, "model", error)
    return _load(
        transformers.AutoModelForSequenceClassification, path, what, "reward model", error, **kwargs
    )


def load_tokenizer(
    folder: str | os.PathLike[str],
    what: str = "the tokenizer",
    error: type[NlhfError] = GameError,
    **kwargs: Any,
) -> Any:
    """``AutoTokenizer.from_pretrained(folder)`` without the folder's code."""
    import transformers

    path = _checked_folder(folder, what, "tokenizer", error)
    return _load(transformers.AutoTokenizer, path, what, "tokenizer", error, **kwargs)


def load_adapter(
    base_model: Any,
    folder: str | os.PathLike[str],
    what: str = "the adapter",
    error: type[NlhfError] = GameError,
    **kwargs: Any,
) -> Any:
    """``peft.PeftModelForCausalLM.from_pretrained(base_model, folder)`` (a LoRA adapter's
    weights and config; PEFT runs no code of the folder, which is checked like the others).

    An adapter folder holding :data:`BASE_RECORD` (nlhf-zoo writes it) is put only on a base
    model with the recorded weights.

    Raises:
        error: the folder cannot be loaded, or ``base_model``'s weights are not those of the base
            the adapter was trained on (both named).
    """
    import peft

    path = _checked_folder(folder, what, "adapter", error)
    _check_base(base_model, path, what, error)
    try:
        # PEFT runs no code of the folder (trust_remote_code is not a PEFT argument)
        return peft.PeftModelForCausalLM.from_pretrained(base_model, path, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as err:
        if isinstance(err, NlhfError):
            raise
        raise error(f"{what}: cannot load a LoRA adapter from {path}: {_first_line(err)}") from None


def weights_fingerprint(model: Any) -> str:
    """The fingerprint of a model's weights (names, shapes and values), as a base's record
    holds it (take it before an adapter's layers are added: they change the names)."""
    from nlhf_envs.text.models import module_digest

    return module_digest(model)


def write_base_record(folder: str | os.PathLike[str], base_path: Any, fingerprint: str) -> None:
    """Record in the adapter ``folder`` the base model it was trained on: ``base_path`` and the
    :func:`weights_fingerprint` of its weights (:data:`BASE_RECORD`, JSON)."""
    data = {"base_model": str(base_path), "weights_fingerprint": fingerprint}
    (Path(folder) / BASE_RECORD).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _check_base(base_model: Any, folder: Path, what: str, error: type[NlhfError]) -> None:
    """Refuse ``base_model`` when the adapter in ``folder`` records another base."""
    record = folder / BASE_RECORD
    if not record.is_file():
        return  # an adapter from elsewhere: PEFT checks only the shapes
    data = _read_json(record)
    want = None if data is None else data.get("weights_fingerprint")
    if not isinstance(want, str):
        raise error(f"{what}: {record} is damaged (no weights_fingerprint); restore the folder")
    have = weights_fingerprint(base_model)
    if have != want:
        now = getattr(base_model, "name_or_path", None) or "the base model given"
        raise error(
            f"{what}: the adapter {folder} was trained on the base model "
            f"{data.get('base_model')} with weights fingerprint {want}, but the base model now "
            f"loaded ({now}) has {have}: refusing to play the adapter on another base (restore "
            "that base model, or train the adapter again)"
        )


#: the largest ``generation_config.json`` read (a suppressed-token list of a 256k vocabulary
#: takes about 2 MB)
MAX_GENERATION_CONFIG_BYTES = 16 * 2**20


def suppressed_tokens(folder: str | os.PathLike[str]) -> list[int]:
    """The token ids a saved model never emits: ``suppress_tokens`` of the folder's
    ``generation_config.json`` (what ``transformers``' ``generate`` masks; nlhf-zoo writes the
    complement of an env's answer alphabet there), ``[]`` when it names none.

    Raises:
        GameError: for a ``suppress_tokens`` that is not a list of non-negative integers.
    """
    path = Path(folder) / "generation_config.json"
    if path.is_file() and path.stat().st_size > MAX_GENERATION_CONFIG_BYTES:
        raise GameError(
            f"{path} holds {path.stat().st_size} bytes; a generation config takes at most "
            f"{MAX_GENERATION_CONFIG_BYTES}"
        )
    data = _read_json(path, MAX_GENERATION_CONFIG_BYTES)
    if data is None and path.is_file():
        raise GameError(f"{path} is not a JSON object")
    tokens = None if data is None else data.get("suppress_tokens")
    if tokens is None:
        return []
    if not isinstance(tokens, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens
    ):
        raise GameError(f"{path}: suppress_tokens must be a list of token ids")
    return sorted(set(tokens))
