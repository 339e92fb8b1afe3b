"""The ``transformers`` KV cache as the duel engine uses it: room reserved for an answer, and a copy
that a cache's in-place changes leave intact (extra ``hf``; imported only once a ``transformers``
cache exists, so the engine needs nothing of it otherwise)."""

from __future__ import annotations

import copy
import functools
from typing import Any

import torch

__all__ = ["copy_cache", "reserve_layers"]


def reserve_layers(cache: Any, extra: int) -> None:
    """Give every plain ``DynamicLayer`` of the ``transformers`` cache ``cache`` buffers with room
    for ``extra`` more positions (see :func:`nlhf_envs.text.engine.reserve_cache`), in place.

    A layer of another class (sliding windows, quantised, static), an empty layer and a layer
    whose keys require gradients while autograd records are left as they are; so is every layer
    under transformers releases without ``DynamicLayer`` (before 4.56).
    """
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # pragma: no cover - transformers before 4.56
        return
    reserved = _reserved_layer_class(DynamicLayer)
    for i, layer in enumerate(cache.layers):
        if type(layer) is reserved:
            layer.reserve(extra)
            continue
        if type(layer) is not DynamicLayer or not layer.is_initialized:
            continue
        keys, values = layer.keys, layer.values
        if keys.dim() != 4 or keys.shape != values.shape or keys.shape[-2] == 0:
            continue
        if torch.is_grad_enabled() and (keys.requires_grad or values.requires_grad):
            continue
        new = reserved.__new__(reserved)
        new.__dict__.update(layer.__dict__)
        new.reserve(extra)
        cache.layers[i] = new


def copy_cache(cache: Any) -> Any | None:
    """A copy of the ``transformers`` cache ``cache`` that its in-place changes leave intact: the
    cache object and its layers are copied, the key and value tensors are shared (every change
    a ``DynamicLayer`` makes replaces them: a concatenation, a row gather). ``None`` unless every
    layer is a plain, filled ``DynamicLayer`` (whose other kinds change tensors in place)."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # pragma: no cover - transformers before 4.56
        return None
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, list) or not layers:
        return None
    if any(type(layer) is not DynamicLayer or not layer.is_initialized for layer in layers):
        return None
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in layers]
    return out


@functools.cache
def _reserved_layer_class(dynamic_layer: type) -> type:
    """The ``DynamicLayer`` subclass of :func:`reserve_layers` (made once, on first use, so this
    module imports without ``transformers.cache_utils``)."""

    class ReservedDynamicLayer(dynamic_layer):  # type: ignore[misc, valid-type]
        """A ``DynamicLayer`` whose keys and values are the filled part of preallocated buffers:
        ``update`` writes new positions in place while they fit, and falls back to
        ``DynamicLayer.update`` (a concatenation) when they do not, when the keys were replaced
        (reordered, selected) or while autograd records."""

        _room: tuple[torch.Tensor, torch.Tensor] | None

        def reserve(self, extra: int) -> None:
            keys, values = self.keys, self.values
            n = keys.shape[-2]
            b, h, _, d = keys.shape
            k_buf = keys.new_empty(b, h, n + extra, d)
            v_buf = values.new_empty(b, values.shape[1], n + extra, values.shape[-1])
            k_buf[:, :, :n].copy_(keys)
            v_buf[:, :, :n].copy_(values)
            self._room = (k_buf, v_buf)
            self.keys, self.values = k_buf[:, :, :n], v_buf[:, :, :n]

        def _in_room(self, key_states: torch.Tensor) -> bool:
            if self._room is None or torch.is_grad_enabled() and key_states.requires_grad:
                return False
            k_buf = self._room[0]
            keys = self.keys
            return (
                keys.data_ptr() == k_buf.data_ptr()
                and keys.stride() == k_buf.stride()
                and key_states.shape[:2] == keys.shape[:2]
                and key_states.shape[-1] == keys.shape[-1]
                and keys.shape[-2] + key_states.shape[-2] <= k_buf.shape[-2]
            )

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
            if not self._in_room(key_states):
                self._room = None
                return super().update(key_states, value_states, *args, **kwargs)
            k_buf, v_buf = self._room
            n, m = self.keys.shape[-2], key_states.shape[-2]
            k_buf[:, :, n : n + m].copy_(key_states)
            v_buf[:, :, n : n + m].copy_(value_states)
            self.keys, self.values = k_buf[:, :, : n + m], v_buf[:, :, : n + m]
            return self.keys, self.values

    return ReservedDynamicLayer
