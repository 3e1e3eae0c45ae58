"""Derived values keyed on everything they depend on, so that they can never be stale.

A :class:`Memo` entry is valid while every tensor it was computed from is the *same object*
at the *same version* (PyTorch bumps a tensor's version on every in-place change, optimizer
steps and ``copy_`` included), every other dependency is the same object, and the settings
compare equal. The entry holds strong references to its tensors, so their ids cannot be
reused by new tensors while it lives. Nothing is cached while autograd may need the graph
(a dependency requires grad and grad mode is on) or when a dependency cannot be tracked (an
encoder that is a plain function rather than a ``torch.nn.Module``, an inference tensor) or
is not repeatable (dropout or batch norm in training mode: a second call would draw anew).

Known limits: writes through ``tensor.data`` bypass the version counter (a documented PyTorch
hazard); plain Python attributes inside an encoder (a ``LeakyReLU``'s slope) are not
compared; and an encoder with randomness of its own making (not torch's dropout layers)
looks repeatable; :meth:`Memo.clear` (``Bridge.clear_cache``) drops every entry.
"""

import torch
from torch import nn

# Layers whose training-mode output is not a function of their input and state (torch's base
# classes of Dropout*, AlphaDropout, BatchNorm*, SyncBatchNorm, LazyBatchNorm*).
_NOT_REPEATABLE = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


class Untrackable(Exception):
    """A dependency whose changes cannot be detected: compute without caching."""


def module_state(module):
    """The tensors and settings a module's output depends on: parameters, buffers, the
    submodules themselves and their train mode, and a critic's ``similarity``."""
    if not isinstance(module, nn.Module):
        raise Untrackable(type(module).__name__)
    tensors = tuple(module.parameters()) + tuple(t for t in module.buffers() if t is not None)
    for child in (getattr(module, "encoder_x", None), getattr(module, "encoder_y", None)):
        if child is not None and not isinstance(child, nn.Module):
            raise Untrackable(type(child).__name__)
    for m in module.modules():
        # a random draw (dropout) or the batch's statistics (batch norm) in training mode: the
        # output is not a function of the inputs and the state, so it is never reused
        if m.training and isinstance(m, _NOT_REPEATABLE):
            raise Untrackable(f"{type(m).__name__} in training mode")
    # which modules (an encoder swapped for a parameter-free one changes no tensor), their
    # train flags, and the critic's similarity
    flags = tuple((m, m.training) for m in module.modules())
    return tensors, flags + (getattr(module, "similarity", None),)


class Memo:
    """A small store of derived values, each keyed on its dependencies (see module docs)."""

    def __init__(self):
        self._entries = {}

    def clear(self):
        self._entries.clear()

    def __len__(self):
        return len(self._entries)

    def get(self, name, compute, *, tensors=(), objects=(), settings=()):
        """The value ``compute()`` for these dependencies, reusing a valid earlier one.

        :param str name: which derived value.
        :param callable compute: computes it (called when no valid entry exists).
        :param tensors: tensors it depends on (identity and version are compared).
        :param objects: other objects it depends on (identity is compared).
        :param settings: hashable settings it depends on (equality is compared).
        """
        tensors = tuple(t for t in tensors if t is not None)
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return compute()
        try:
            versions = tuple(t._version for t in tensors)
        except RuntimeError:  # inference tensors have no version counter
            return compute()
        entry = self._entries.get(name)
        if entry is not None and _same(entry, tensors, versions, objects, settings):
            return entry[-1]
        value = compute()
        self._entries[name] = (tensors, versions, tuple(objects), settings, value)
        return value


def _same(entry, tensors, versions, objects, settings):
    old_tensors, old_versions, old_objects, old_settings, _ = entry
    return (
        len(old_tensors) == len(tensors)
        and all(a is b for a, b in zip(old_tensors, tensors, strict=True))
        and old_versions == versions
        and len(old_objects) == len(objects)
        and all(a is b for a, b in zip(old_objects, objects, strict=True))
        and old_settings == settings
    )
