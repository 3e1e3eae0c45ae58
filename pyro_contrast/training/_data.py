"""Training data for :func:`~pyro_contrast.training.fit.fit`: aligned columns or a
``DataLoader``, a held-out split, and mini-batches drawn by a local generator."""

import numbers

import torch
from torch.utils.data import DataLoader

from pyro_contrast._validation import as_float_tensor, check_finite


class Dataset:
    """Tensors (or a DataLoader) of one aligned data set, its split and its batch order."""

    def __init__(self, columns=None, loader=None, held_out=None, num_columns=None):
        self.columns, self.loader, self.held_out = columns, loader, held_out
        self.num_columns = num_columns
        self.size = None if columns is None else len(columns[0])
        self.order, self.pos, self._iter = None, 0, None

    def split(self, fraction, batch_size, gen):
        n = self.size
        n_val = int(round(fraction * n)) if self.held_out is None else 0
        if self.held_out is None and fraction > 0 and n_val < 2:
            raise ValueError(
                f"validation={fraction} leaves {n_val} held-out pair(s) of {n}; "
                "use 0 or a larger fraction"
            )
        perm = torch.randperm(n, generator=gen)
        if n_val:
            self.held_out = tuple(col[perm[:n_val]] for col in self.columns)
        self.train_idx = perm[n_val:]
        if batch_size > len(self.train_idx):
            raise ValueError(
                f"batch_size={batch_size} exceeds the {len(self.train_idx)} training pairs"
            )

    def next_batch(self, batch_size, gen):
        if self.loader is not None:
            return self._next_loader_batch()
        if self.order is None or self.pos + batch_size > len(self.order):
            self.order = self.train_idx[torch.randperm(len(self.train_idx), generator=gen)]
            self.pos = 0
        idx = self.order[self.pos : self.pos + batch_size]
        self.pos += batch_size
        return tuple(col[idx] for col in self.columns)

    def _next_loader_batch(self):
        for _ in range(2):
            if self._iter is None:
                self._iter = iter(self.loader)
            try:
                return _check_columns(next(self._iter), self.num_columns, "DataLoader batch")
            except StopIteration:
                self._iter = None
        raise ValueError("data DataLoader yields no batches")


def prepare_data(data, validation, mode, batch_size, gen):
    if mode is None:
        layout, tasks = [2], [(0, 0, 1)]
    elif mode == "oracle":
        layout, tasks = [3], [(0, 0, 2)]
    elif _is_pair_of_pairs(data):
        layout, tasks = [2, 2], [(0, 0, 1), (1, 0, 1)]
    else:
        layout, tasks = [3], [(0, 0, 1), (0, 1, 2)]
    held = _split_sets(validation, layout) if isinstance(validation, (tuple, list)) else None
    if isinstance(data, DataLoader):
        if len(layout) != 1:
            raise ValueError("a DataLoader must yield (a, b, c) triplets for this mode")
        if isinstance(validation, numbers.Real) and validation:
            raise ValueError("with a DataLoader pass validation=0 or held-out arrays")
        datasets = [Dataset(loader=data, held_out=held[0] if held else None, num_columns=layout[0])]
    else:
        sets = _split_sets(data, layout, "data")
        datasets = [
            Dataset(cols, held_out=held[i] if held else None) for i, cols in enumerate(sets)
        ]
        for ds in datasets:
            ds.split(validation if held is None else 0.0, batch_size, gen)
    return tasks, datasets


def _split_sets(data, layout, name="validation"):
    if len(layout) == 2:
        if not _is_pair_of_pairs(data):
            raise ValueError(f"{name} must be ((a, b), (b2, c)) like data")
        return [_check_columns(part, 2, f"{name}[{i}]") for i, part in enumerate(data)]
    return [_check_columns(data, layout[0], name)]


def _is_pair_of_pairs(data):
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(p, (tuple, list)) for p in data)
    )


def _check_columns(columns, count, name):
    if not isinstance(columns, (tuple, list)) or len(columns) != count:
        raise ValueError(f"{name} must be a tuple of {count} arrays, got {type(columns).__name__}")
    columns = tuple(
        check_finite(as_float_tensor(c, f"{name}[{i}]"), f"{name}[{i}]")
        for i, c in enumerate(columns)
    )
    lengths = [len(c) if c.dim() else 0 for c in columns]
    if len(set(lengths)) != 1:
        raise ValueError(f"{name} arrays have mismatched lengths {lengths}")
    if lengths[0] < 2:
        raise ValueError(f"{name} needs at least 2 aligned rows, got {lengths[0]}")
    return columns
