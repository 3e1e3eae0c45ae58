r"""Exact bank reductions on a ``dask.distributed`` cluster.

A bank marginal is a sum over bank items, so it splits over disjoint row blocks: each block
gives log-space partial sums (for instance :math:`\log \sum_{m \in \text{block}}
e^{F_{nm} + G_{mk}}`, shape (N, K), and :math:`\log \sum_{m \in \text{block}} e^{F_{nm}}`,
shape (N,)), and partials combine by an elementwise ``logsumexp``, which is exact and
stable (the largest partial is factored out). Blocks are computed where the data lives and
combined in a tree, so no machine holds more than a few (N, K) tensors.

**References**

1. Che & Eysenbach (2025), *The "Law" of the Unconscious Contrastive Learner: Probabilistic
   Alignment of Unpaired Modalities* (the bridge marginal as a sum over the bank).
"""

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

_INSTALL = 'pip install -e ".[dask]"'


def _import_dask():
    try:
        import dask
        import dask.array
        import distributed
    except ImportError as error:
        raise ImportError(
            f"logsumexp_reduce_blocks needs dask[array,distributed] ({error}); "
            f"install the extra with: {_INSTALL}"
        ) from error
    return dask, distributed


def _as_tensor(block):
    block = np.asarray(block)
    if not block.flags.writeable:  # memmaps opened read-only; torch wants writable memory
        block = block.copy()
    return torch.from_numpy(block)


def _apply(fn, chunk_size, split_every, *blocks):
    """Run ``fn`` on one row block of every array (on a worker), ``chunk_size`` rows at a
    time so its temporaries stay cache-sized, and combine the pieces like blocks."""
    levels = [[]]  # a tree of combinations built as pieces arrive: O(log) partials held
    for start in range(0, blocks[0].shape[0], chunk_size):
        pieces = (_as_tensor(b[start : start + chunk_size]) for b in blocks)
        part, depth = _check_parts(fn(*pieces)), 0
        while True:
            levels[depth].append(part)
            if len(levels[depth]) < split_every:
                break
            part, levels[depth] = _combine(*levels[depth]), []
            depth += 1
            if depth == len(levels):
                levels.append([])
    rest = [part for level in levels for part in level]
    return _combine(*rest) if len(rest) > 1 else rest[0]


def _check_parts(parts):
    if isinstance(parts, torch.Tensor) or not isinstance(parts, Sequence):
        raise TypeError(f"fn must return a tuple of tensors, got {type(parts).__name__}")
    if not parts or not all(isinstance(p, torch.Tensor) for p in parts):
        kinds = [type(p).__name__ for p in parts]
        raise TypeError(f"fn must return a non-empty tuple of tensors, got ({', '.join(kinds)})")
    return tuple(p.detach() for p in parts)


def _combine(*partials):
    """Elementwise ``logsumexp`` of several tuples of log-space partials."""
    lengths = {len(p) for p in partials}
    if len(lengths) != 1:
        raise ValueError(f"fn returned tuples of different lengths across blocks: {lengths}")
    return tuple(
        torch.logsumexp(torch.stack(torch.broadcast_tensors(*parts)), dim=0)
        for parts in zip(*partials, strict=True)
    )


def _row_blocks(arrays, dask):
    if isinstance(arrays, dask.array.Array) or not isinstance(arrays, Sequence) or not arrays:
        raise TypeError("arrays must be a non-empty sequence (list or tuple) of dask arrays")
    for i, array in enumerate(arrays):
        if not isinstance(array, dask.array.Array):
            raise TypeError(f"arrays[{i}] must be a dask array, got {type(array).__name__}")
        if array.ndim < 1 or array.shape[0] == 0:
            raise ValueError(f"arrays[{i}] must have rows, got shape {array.shape}")
        if array.chunks[0] != arrays[0].chunks[0]:
            raise ValueError(
                f"arrays[{i}] has row chunks {array.chunks[0]} but arrays[0] has "
                f"{arrays[0].chunks[0]}; rechunk them alike, e.g. a.rechunk({{0: ...}})"
            )
    # One task per row block: every other dim in a single chunk.
    return [
        a.rechunk({d: -1 for d in range(1, a.ndim)}).to_delayed().reshape(-1).tolist()
        for a in arrays
    ]


def logsumexp_reduce_blocks(
    arrays, fn, *, client=None, progress=False, split_every=8, chunk_size=16384
):
    r"""Compute log-space partials per row block on a dask cluster and combine them exactly.

    With row blocks :math:`B_1, \ldots, B_J` shared by all ``arrays`` (e.g. the views of
    one bank, each of shape :math:`(M, d_i)`), returns for every output :math:`t` of ``fn``

    .. math::

        \mathrm{out}_t = \log \sum_j \exp \mathrm{fn}(\mathrm{arrays}[B_j])_t

    elementwise. ``fn`` runs on the workers of the active ``dask.distributed`` client (or
    ``client``) and receives one CPU torch tensor per array, holding ``chunk_size`` rows of
    a block at a time (pieces of a block are partials too, so they combine the same way and
    the temporaries stay cache-sized however large the blocks); the partials travel up a
    tree of ``split_every``-ary ``logsumexp`` combinations, also on the workers. ``fn``
    must be picklable (a module-level function, or a closure, which cloudpickle ships by
    value) and import only what the workers have installed.

    **References**

    1. Che & Eysenbach (2025), *The "Law" of the Unconscious Contrastive Learner:
       Probabilistic Alignment of Unpaired Modalities*.

    :param arrays: sequence of dask arrays with identical row chunking.
    :param callable fn: ``fn(*blocks) -> tuple`` of log-space partial tensors.
    :param client: a ``distributed.Client`` (default: the active one).
    :param bool progress: show a progress bar over blocks (hidden when not a TTY).
    :param int split_every: fan-in of the reduction tree.
    :param int chunk_size: rows per call of ``fn`` within a block.
    :returns: tuple of combined tensors, one per output of ``fn``.
    :rtype: tuple

    >>> import dask.array as da
    >>> from distributed import Client, LocalCluster
    >>> cluster = LocalCluster(processes=False, n_workers=1, dashboard_address="127.0.0.1:0")
    >>> client = Client(cluster)
    >>> bank = da.arange(8.0, chunks=3).reshape(8, 1)
    >>> logsumexp_reduce_blocks([bank], lambda z: (torch.logsumexp(z[:, 0], 0),), client=client)
    (tensor(7.4583, dtype=torch.float64),)
    >>> client.close(); cluster.close()
    """
    dask, distributed = _import_dask()
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if isinstance(split_every, bool) or not isinstance(split_every, int) or split_every < 2:
        raise ValueError(f"split_every must be an int >= 2, got {split_every!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    blocks = _row_blocks(arrays, dask)
    if client is None:
        try:
            client = distributed.default_client()
        except ValueError as error:
            raise ValueError(
                "no active dask.distributed client: create one, e.g. "
                "distributed.Client(distributed.LocalCluster()), or pass client="
            ) from error
    elif not isinstance(client, distributed.Client):
        raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
    block_futures = [client.compute(column) for column in blocks]
    fn_future = client.scatter(fn, broadcast=True, hash=False)
    level = [
        client.submit(_apply, fn_future, chunk_size, split_every, *row, pure=False)
        for row in zip(*block_futures, strict=True)
    ]
    if progress:
        done = distributed.as_completed(level)
        for _ in tqdm(done, total=len(level), desc="bank blocks", disable=None):
            pass
    while len(level) > 1:
        level = [
            client.submit(_combine, *level[i : i + split_every], pure=False)
            for i in range(0, len(level), split_every)
        ]
    return level[0].result()
