r"""Banks of bridge-modality samples, in memory or streamed chunk by chunk."""

import math
import numbers

import numpy as np
import torch
from torch import nn

from pyro_contrast._validation import (
    as_float_tensor,
    check_finite,
    ignore_jit_warnings,
    is_validation_enabled,
)

DEFAULT_CHUNK_SIZE = 16384


class Bank(nn.Module):
    r"""A bank of :math:`M` samples :math:`b_m \sim p(b)` of a bridge modality.

    The bank is what the bridge marginalizes over. Each adjacent critic sees the items
    through its own *view*: a bank of raw inputs is one view shared by all critics (each
    encodes it with its own encoder), while ``views=(emb_ab, emb_bc)`` holds the same
    :math:`M` items as embedded by two different pretrained models, one per adjacent
    critic (left critic first).

    A view may be a tensor, a NumPy array (including ``np.memmap``, streamed without being
    read whole), a ``dask.array`` (reduced on the active ``dask.distributed`` client), or a
    re-iterable of chunks (a list of arrays, or a function returning a fresh iterator).

    Optional ``log_weights`` (unnormalized) weight the items:
    :math:`p(m \mid x) \propto w_m \exp f(x, b_m)`; the default is uniform. They are
    normalized and kept in float64 (``bank.log_weights`` has ``logsumexp == 0``), so adding a
    constant to them changes nothing. They must not be NaN or :math:`+\infty`
    nor all :math:`-\infty`, and must have one entry per item (for an iterable bank,
    checked on the first full pass); the value checks follow Pyro's validation switch.

    A bank is a ``torch.nn.Module``: in-memory views and the weights are buffers
    (``view0``, ``view1``, ..., ``log_weights``), so they move with ``.to()`` and save with
    ``state_dict`` (of the bank, or of a :class:`~pyro_contrast.Bridge` holding it).

    :param items: raw items or embeddings shared by every adjacent critic.
    :param tuple views: one source per adjacent critic, each with the same ``M`` rows.
    :param log_weights: optional (M,) log importance weights.

    >>> bank = Bank(torch.randn(100, 8))
    >>> len(bank), bank.num_views
    (100, 1)
    """

    def __init__(self, items=None, *, views=None, log_weights=None):
        super().__init__()
        # shape checks of a bank built inside a traced model are valid for the trace
        with ignore_jit_warnings():
            self._build(items, views, log_weights)

    def _build(self, items, views, log_weights):
        if (items is None) == (views is None):
            raise ValueError("Bank needs exactly one of items or views=")
        if views is not None:
            if not isinstance(views, (tuple, list)) or len(views) < 1:
                raise TypeError("views must be a non-empty tuple of arrays, one per critic")
            sources = tuple(_source(v, f"views[{i}]") for i, v in enumerate(views))
        else:
            sources = (_source(items, "items"),)
        kinds = {s.kind for s in sources}
        if len(kinds) > 1:
            raise TypeError(f"all views of a bank must be the same kind of source, got {kinds}")
        lengths = {len(s) for s in sources if s.length is not None}
        if len(lengths) > 1:
            raise ValueError(f"bank views have different numbers of rows: {sorted(lengths)}")
        if lengths and lengths == {0}:
            raise ValueError("bank is empty (0 items)")
        self.kind = sources[0].kind
        if self.kind == "tensor":
            # In-memory views live in buffers (moved by .to(), saved by state_dict); the
            # sources read them back by name, so there is one copy of each tensor.
            for i, source in enumerate(sources):
                self.register_buffer(f"view{i}", source.data)
                source.data = None
                source.owner, source.name = self, f"view{i}"
        self._sources = sources
        if log_weights is not None:
            log_weights = _normalized(log_weights)
            if lengths and log_weights.shape[0] != next(iter(lengths)):
                raise ValueError(
                    f"log_weights has {log_weights.shape[0]} entries, bank has "
                    f"{next(iter(lengths))} items"
                )
        self.register_buffer("log_weights", log_weights)

    @property
    def num_views(self):
        return len(self._sources)

    def __len__(self):
        if self.kind == "tensor":
            return self.view0.shape[0]
        length = self._sources[0].length
        if length is None:
            length = sum(chunk[0].shape[0] for chunk in self.chunks())
            for source in self._sources:
                source.length = length
        return length

    def __repr__(self):
        return f"Bank(kind={self.kind!r}, num_views={self.num_views})"

    def view(self, index):
        """The source seen by the ``index``-th adjacent critic (a single view serves all)."""
        source = self._sources[index if self.num_views > 1 else 0]
        return source.data

    def check_views(self, num_critics):
        if self.num_views not in (1, num_critics):
            raise ValueError(
                f"bank has {self.num_views} views but {num_critics} adjacent critics use it"
            )

    def materialize(self):
        """Load every view into memory: a tuple of tensors (one per view)."""
        if self.kind == "tensor":
            return tuple(s.data for s in self._sources)
        parts = list(self.chunks())
        return tuple(torch.cat([p[i] for p in parts]) for i in range(self.num_views))

    def chunks(self, chunk_size=None):
        """Yield tuples of tensors (one per view) of at most ``chunk_size`` rows, and the
        matching slice of ``log_weights`` as the last element (``None`` if unweighted)."""
        chunk_size = _check_chunk_size(chunk_size)
        if self.kind == "iterable":
            iterators = [s.iterate() for s in self._sources]
            start = 0
            for parts in zip(*iterators, strict=True):
                parts = tuple(_to_tensor(p, f"bank chunk {start}") for p in parts)
                if len({p.shape[0] for p in parts}) > 1:
                    raise ValueError(f"bank views yield chunks of different sizes at row {start}")
                yield parts + (self._weights(start, start + parts[0].shape[0]),)
                start += parts[0].shape[0]
            if start == 0:
                raise ValueError("bank is empty (its iterable yielded no chunks)")
            if self.log_weights is not None and self.log_weights.shape[0] != start:
                raise ValueError(
                    f"log_weights has {self.log_weights.shape[0]} entries, but the bank's "
                    f"iterable yielded {start} items"
                )
            return
        length = len(self)
        for start in range(0, length, chunk_size):
            stop = min(start + chunk_size, length)
            parts = tuple(_to_tensor(s.data[start:stop], "bank") for s in self._sources)
            yield parts + (self._weights(start, stop),)

    def _weights(self, start, stop):
        if self.log_weights is None:
            return None
        if stop > self.log_weights.shape[0]:
            raise ValueError(
                f"log_weights has {self.log_weights.shape[0]} entries, fewer than the bank's "
                f"items (at least {stop})"
            )
        return self.log_weights[start:stop]


class _Source:
    def __init__(self, data, kind, length):
        self._data, self.kind, self.length = data, kind, length
        self.owner = self.name = None

    @property
    def data(self):
        return self._data if self.owner is None else getattr(self.owner, self.name)

    @data.setter
    def data(self, value):
        self._data = value

    def __len__(self):
        return self.length

    def iterate(self):
        return iter(self.data()) if callable(self.data) else iter(self.data)


def _source(value, name):
    if isinstance(value, torch.Tensor):
        value = check_finite(as_float_tensor(value, name), name)
        if value.dim() < 1:
            raise ValueError(f"{name} must have a leading item dimension, got a scalar")
        return _Source(value, "tensor", value.shape[0])
    if isinstance(value, np.ndarray):
        if value.ndim < 1:
            raise ValueError(f"{name} must have a leading item dimension, got a scalar")
        if not np.issubdtype(value.dtype, np.number):
            raise TypeError(f"{name} must hold numbers, got dtype {value.dtype}")
        return _Source(value, "array", value.shape[0])
    if type(value).__module__.startswith("dask"):
        if value.ndim < 1:
            raise ValueError(f"{name} must have a leading item dimension")
        return _Source(value, "dask", int(value.shape[0]))
    if callable(value) or (hasattr(value, "__iter__") and iter(value) is not value):
        return _Source(value, "iterable", None)
    if hasattr(value, "__iter__"):
        raise TypeError(
            f"{name} is a one-shot iterator; the bridge reads a bank more than once, so pass "
            "a list of chunks or a function returning a fresh iterator"
        )
    raise TypeError(f"{name} must be a tensor, array, dask array or iterable of chunks")


def _normalized(log_weights):
    log_weights = as_float_tensor(log_weights, "log_weights")
    if log_weights.dim() != 1:
        raise ValueError(f"log_weights must be 1-D (M,), got {tuple(log_weights.shape)}")
    if log_weights.shape[0] == 0:
        raise ValueError("log_weights is empty")
    # float64 first: a constant shift of -1e5 would otherwise cost ~1e-2 of precision
    wide = log_weights.double()
    total = torch.logsumexp(wide, 0)
    if is_validation_enabled():
        if torch.isnan(wide).any() or (wide == math.inf).any():
            raise ValueError("log_weights contains NaN or +inf")
        if total == -math.inf:
            raise ValueError("log_weights are all -inf: every item has zero weight")
    return wide - total


def _to_tensor(chunk, name):
    chunk = as_float_tensor(
        np.asarray(chunk) if not isinstance(chunk, torch.Tensor) else chunk, name
    )
    return check_finite(chunk, name)


def _check_chunk_size(chunk_size):
    if chunk_size is None:
        return DEFAULT_CHUNK_SIZE
    if not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)
