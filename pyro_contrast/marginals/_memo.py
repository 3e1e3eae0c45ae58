"""Derived values keyed on everything they depend on, so that they can never be stale.

A :class:`Memo` entry is valid while every tensor it was computed from is the *same object*
at the *same version* over the *same storage* (PyTorch bumps a tensor's version on every
in-place change, optimizer steps and ``copy_`` included; ``module.to(dtype)`` swaps the
storage instead), every other dependency is the same object, the settings compare equal,
and inference mode is as it was. The entry holds strong references to its tensors and
their storages, so neither ids nor addresses can be reused while it lives. Nothing is
cached while autograd may need the graph (a dependency requires grad and grad mode is on)
or when a dependency cannot be tracked (an encoder that is a plain function rather than a
``torch.nn.Module``, an inference tensor) or is not repeatable (dropout, batch norm or
RReLU in training mode: a second call would draw anew). A copy of a memo (``deepcopy``,
pickling, ``torch.save``) starts empty: its tensors' version counters start anew.

Known limits: writes through ``tensor.data``, or through a NumPy array that shares a
tensor's memory (``torch.from_numpy``), bypass the version counter (a documented PyTorch
hazard); plain Python attributes inside an encoder (a ``LeakyReLU``'s slope) are not
compared; and an encoder with randomness of its own making (not torch's layers above) looks
repeatable. :meth:`Memo.clear` (``Bridge.clear_cache``) drops every entry.
"""

import torch
from torch import nn

# Layers whose training-mode output is not a function of their input and state (torch's base
# classes of Dropout*, AlphaDropout, BatchNorm*, SyncBatchNorm, LazyBatchNorm*; RReLU draws
# its slopes).
_NOT_REPEATABLE = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm, nn.RReLU)


def needs_graph(*tensors):
    """Whether autograd may need a graph through any of these tensors (None are skipped)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


class Untrackable(Exception):
    """A dependency whose changes cannot be detected: compute without caching."""


def module_state(module):
    """The tensors and settings a module's output depends on: parameters, buffers, the
    submodules themselves, their train mode and forward hooks, and a critic's
    ``similarity``."""
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
    # train flags and hooks (by handle id), and the critic's similarity
    flags = tuple(
        (m, m.training, tuple(m._forward_pre_hooks), tuple(m._forward_hooks))
        for m in module.modules()
    )
    return tensors, flags + (getattr(module, "similarity", None),)


class Memo:
    """A small store of derived values, each keyed on its dependencies (see module docs)."""

    def __init__(self):
        self._entries = {}

    def __getstate__(self):
        # A copy's tensors restart their version counters: an entry would match after an edit.
        return {"_entries": {}}

    def clear(self):
        self._entries.clear()

    def __len__(self):
        return len(self._entries)

    def get(self, name, compute, *, tensors=(), objects=(), settings=()):
        """The value ``compute()`` for these dependencies, reusing a valid earlier one.

        :param str name: which derived value.
        :param callable compute: computes it (called when no valid entry exists).
        :param tensors: tensors it depends on (identity, version and storage are compared).
        :param objects: other objects it depends on (identity is compared).
        :param settings: hashable settings it depends on (equality is compared).
        """
        tensors = tuple(t for t in tensors if t is not None)
        if needs_graph(*tensors):
            return compute()
        try:
            versions = tuple(_version(t) for t in tensors)
        except RuntimeError:  # inference tensors have no version counter
            return compute()
        key = (name, torch.is_inference_mode_enabled())
        entry = self._entries.get(key)
        if entry is not None and _same(entry, tensors, versions, objects, settings):
            return entry[-1]
        value = compute()
        storages = tuple(t.untyped_storage() for t in tensors)  # their addresses stay taken
        self._entries[key] = (tensors, versions, storages, tuple(objects), settings, value)
        return value

    def holds(self, name, value):
        """Whether ``value`` is the entry kept for ``name`` (in the current inference mode)."""
        entry = self._entries.get((name, torch.is_inference_mode_enabled()))
        return entry is not None and entry[-1] is value


def _version(tensor):
    return (
        tensor._version,
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tensor.dtype,
        tuple(tensor.shape),
    )


def _same(entry, tensors, versions, objects, settings):
    old_tensors, old_versions, _, old_objects, old_settings, _ = entry
    return (
        len(old_tensors) == len(tensors)
        and all(a is b for a, b in zip(old_tensors, tensors, strict=True))
        and old_versions == versions
        and len(old_objects) == len(objects)
        and all(a is b for a, b in zip(old_objects, objects, strict=True))
        and old_settings == settings
    )


class CappedStore(dict):
    """A dict of derived tensors that holds at most ``cap`` elements beyond a source's own.

    :meth:`put` counts the elements of an entry's tensors that live outside the given
    source tensors' storages (an identity encoder's output is the bank's own memory); past
    the cap the store empties and keeps nothing more (``full``).
    """

    def __init__(self, cap):
        super().__init__()
        self.cap, self.elements, self.full = cap, 0, False

    def put(self, key, entry, sources):
        if self.full:
            return
        shared = {s.untyped_storage().data_ptr() for s in sources}
        old = self.get(key)
        self.elements += _extra_elements(entry, shared) - _extra_elements(old, shared)
        if self.elements > self.cap:
            self.clear()
            self.full = True
            return
        self[key] = entry


def _extra_elements(value, shared):
    """Elements of the tensors in ``value`` (nested tuples, lists) outside ``shared``."""
    if isinstance(value, torch.Tensor):
        return 0 if value.untyped_storage().data_ptr() in shared else value.numel()
    if isinstance(value, (tuple, list)):
        return sum(_extra_elements(v, shared) for v in value)
    return 0
