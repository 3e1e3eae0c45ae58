"""Marginalization: integrating bridge modalities out of a chain of critics.

Modules: :mod:`~pyro_contrast.marginals.bank` (:class:`Bank`, samples of a bridge modality,
in memory, memory-mapped, streamed or on Dask), :mod:`~pyro_contrast.marginals.bridge`
(:class:`Bridge`, the ``torch.nn.Module`` front end with the ``exact``, ``lse``, ``direct``
and ``analytic`` methods), :mod:`~pyro_contrast.marginals.chain` (log-space message passing
over banks), :mod:`~pyro_contrast.marginals.analytic` (closed forms on the sphere and for
Gaussians) and :mod:`~pyro_contrast.marginals.distributed` (tree reductions on a Dask
cluster). This layer may import distributions, critics and ops, never training, studies,
diagnostics or the command line.
"""

from pyro_contrast.marginals.analytic import analytic_log_ratio, resolve_marginal

__all__ = ["analytic_log_ratio", "resolve_marginal"]
